"""Fresh data at the pull: ``python -m benchmarks.freshness``.

A simulated day against the local stand-in over loopback: stats.json regenerated
on the quarter hours, each generation taking a random 5-60 s (generatedAt stamped
when it finishes). Measures the data's age at each pull that got a new snapshot
(pull time minus generatedAt) and stats.json requests per accepted snapshot, for
hourly and 15-minute ``leaderboard_interval``, over several seeds.
Targets: median age <= 3 minutes, <= 1.2 requests per accepted snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario

START = datetime(2026, 1, 5, 10, 7, 13, tzinfo=UTC)  # not on a quarter hour


@attrs.define
class Clock:
    now: datetime = START


@attrs.frozen
class Freshness:
    ages_s: list[float]  # age of the data at each pull that got a new snapshot
    requests: int  # stats.json requests
    accepted: int  # distinct snapshots served to the source

    @property
    def per_snapshot(self) -> float:
        return self.requests / max(1, self.accepted)


async def simulate_day(
    interval: timedelta, seed: int, hours: float = 24.0, db_dir: str | None = None
) -> Freshness:
    """One simulated day; the source drives its own schedule (sleeps until due)."""
    clock = Clock()
    scenario = Scenario(users=40, seed=seed, generation_seconds=(5, 60), align_stats=True)
    standin = PxlsStandIn(scenario, lambda: clock.now)
    url = await standin.start()
    with tempfile.TemporaryDirectory(dir=db_dir) as tmp:
        settings = PxlsSettings(
            base_url=url,
            db_path=str(Path(tmp) / "fresh.sqlite3"),
            leaderboard_interval=interval,
            token=None,
            cf_auth=None,
        )
        source = PxlsSource(settings, rng=random.Random(seed))
        until = START + timedelta(hours=hours)
        try:
            while clock.now < until:
                await source.on_tick(clock.now)
                await source.collect_deltas()
                due = source.next_due_at(clock.now)
                clock.now = (
                    min(until, due)
                    if due and due > clock.now
                    else clock.now + timedelta(milliseconds=1)
                )
        finally:
            await source.on_shutdown()
            await standin.stop()
    ages, seen = [], set()
    for at, generated in standin.stats_served:
        if generated not in seen:
            seen.add(generated)
            ages.append((at - generated).total_seconds())
    return Freshness(ages[1:], len(standin.stats_served), len(seen))  # first: start-up


async def measure(seeds: int) -> dict[str, list[Freshness]]:
    out: dict[str, list[Freshness]] = {}
    for label, interval in (("hourly", timedelta(hours=1)), ("15 min", timedelta(minutes=15))):
        out[label] = [await simulate_day(interval, seed) for seed in range(1, seeds + 1)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.seeds))
    print(
        "| interval | median data age at pull, s (min / median / max over seeds) | "
        "max age, s | stats.json requests per accepted snapshot (min / median / max) |"
    )
    print("|---|---|---|---|")
    for label, runs in results.items():
        medians = sorted(statistics.median(r.ages_s) for r in runs)
        worst = max(max(r.ages_s) for r in runs)
        ratios = sorted(r.per_snapshot for r in runs)
        print(
            f"| {label} | {medians[0]:.0f} / {statistics.median(medians):.0f} / {medians[-1]:.0f}"
            f" | {worst:.0f} | {ratios[0]:.2f} / {statistics.median(ratios):.2f} / "
            f"{ratios[-1]:.2f} |"
        )


if __name__ == "__main__":
    main()
