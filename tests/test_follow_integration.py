"""Following the casual board's people over loopback: 3,000 users, a 1,000-row
toplist, 300 swarm members (faction 3680, most outside it), 30 simulated hours with a
canvas reset. Every followed user's total on the final canvas equals the truth."""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import jsonlines
from neuro_chat_elo_pxls.host import run_host
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario

from .helpers import T0, Ledger

pytestmark = pytest.mark.integration


@pytest.mark.no_cover  # a long run: see tests/conftest.py
async def test_swarm_followed_beyond_the_top_1000(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = JumpClock(T0)
    scenario = Scenario(
        users=3000,
        seed=11,
        swarm_share=0.1,
        new_users_per_hour=0,
        resets=[T0 + timedelta(hours=12, minutes=10)],
        quiet_after=T0 + timedelta(hours=27),  # then 3 h to settle: everything must be in
    )
    standin = PxlsStandIn(scenario, clock.now)
    await standin.start()
    try:
        standin.catch_up(T0)
        swarm = sorted(n for n, u in standin.users.items() if u.faction and u.faction[0] == 3680)
        listed = {u.name for u in standin.visible()}
        monkeypatch.setenv("PXLS_TOKEN", scenario.token)
        config = {
            "pxls": {
                "base_url": standin.base_url,
                "db_path": str(tmp_path / "pxls.sqlite3"),
                "follow": swarm,  # the swarm's name list, as the Rust module had
                "follow_factions": [3680],
                "sweep_interval": 48 * 3600,
            }
        }
        out = io.StringIO()
        await run_host(
            config, clock=clock, out=out, stop=asyncio.Event(), until=T0 + timedelta(hours=30)
        )
    finally:
        await standin.stop()
    ledger = Ledger()
    ledger.add([jsonlines.loads(line) for line in out.getvalue().splitlines()])
    ledger.check_conservation()
    canvas = standin.canvas
    assert canvas == "87"
    outside = [n for n in swarm if n not in listed]
    assert len(swarm) >= 250 and len(outside) >= 0.7 * len(swarm)
    # the truth at the end: each followed user's count on the final canvas
    last = ledger.last_scores()  # once: it reads every delta
    wrong = {
        name: (last.get((name, canvas)), standin.users[name].score)
        for name in swarm
        if standin.users[name].score and last.get((name, canvas)) != standin.users[name].score
    }
    assert not wrong, sorted(wrong.items())[:10]
    via_profile = [d for d in ledger.deltas if d.via == "profile"]
    assert len({d.user for d in via_profile} & set(outside)) >= 0.8 * len(
        [n for n in outside if standin.users[n].score]
    )
    profiles = sorted(r.at for r in standin.requests if "profile" in r.path)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(profiles)]
    assert min(gaps) >= 1.0 and standin.max_in_flight == 1
    per_hour = len(profiles) / 30
    print(
        f"followed={len(swarm)} outside={len(outside)} deltas_via_profile={len(via_profile)} "
        f"profile_requests_per_hour={per_hour:.0f} median_gap={statistics.median(gaps):.2f}s "
        f"last_follow_lag_bound=follow_interval+15min"
    )
