"""Fresh data at the pull (DESIGN 8): the schedule follows stats.json's regenerations."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from benchmarks.freshness import simulate_day
from neuro_chat_elo_pxls import PxlsSource

from .helpers import FakeClock, FakePxls, drive


@pytest.mark.integration
@pytest.mark.parametrize("interval", [timedelta(hours=1), timedelta(minutes=15)])
async def test_a_simulated_day_pulls_data_a_minute_or_two_old(
    interval: timedelta, tmp_path: Path
) -> None:
    day = await simulate_day(interval, seed=3, db_dir=str(tmp_path))
    expected = 24 if interval == timedelta(hours=1) else 96
    assert len(day.ages_s) >= expected - 2, "a pull for every interval of the day"
    assert statistics.median(day.ages_s) <= 180
    assert max(day.ages_s) <= 15 * 60
    assert day.per_snapshot <= 1.2


async def test_nothing_newer_looks_again_after_minutes_not_an_interval(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("a_user", 10)
    source = make_source(token=None)
    await drive(source, clock, clock.now + timedelta(seconds=1))
    start = clock.now
    # the regeneration is late: the same file for 30 minutes after the due time
    await drive(source, clock, start + timedelta(hours=1, minutes=30))
    stats = [at for kind, _, at in fake.requests if kind == "stats"][1:]
    gaps = [(b - a).total_seconds() / 60 for a, b in itertools.pairwise(stats)]
    assert stats[0] - fake.generated_at == timedelta(hours=1, seconds=90)  # type: ignore[operator]
    assert gaps[:3] == [3, 6, 12]  # looks again soon, then less often
    assert all(gap <= 15 for gap in gaps)
