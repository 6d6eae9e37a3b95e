"""The real host + source + local stand-in over loopback HTTP, 50 simulated hours."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import jsonlines
from neuro_chat_elo_pxls.host import run_host
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario
from neuro_chat_elo_pxls.util.logs import JsonLogFormatter
from neuro_chat_elo_pxls.util.times import us

from .helpers import T0, Ledger, check_holds_latest

pytestmark = pytest.mark.integration


@pytest.fixture
async def standin_and_clock() -> AsyncIterator[tuple[PxlsStandIn, JumpClock]]:
    clock = JumpClock(T0)
    scenario = Scenario(users=300, seed=3, resets=[T0 + timedelta(hours=30, minutes=10)])
    standin = PxlsStandIn(scenario, clock.now)
    await standin.start()
    yield standin, clock
    await standin.stop()


@pytest.mark.no_cover  # a long run: see tests/conftest.py
async def test_fifty_hours_through_the_host(
    standin_and_clock: tuple[PxlsStandIn, JumpClock],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    standin, clock = standin_and_clock
    standin.catch_up(T0)
    renamed = standin.visible()[5].name
    standin.schedule_rename(T0 + timedelta(hours=6, minutes=5), renamed, "renamed_person")
    banned = standin.visible()[8].name
    standin.schedule_ban(T0 + timedelta(hours=2), banned, timedelta(hours=5))
    monkeypatch.setenv("PXLS_TOKEN", standin.scenario.token)
    db = str(tmp_path / "pxls.sqlite3")
    config = {"pxls": {"base_url": standin.base_url, "db_path": db}}
    out = io.StringIO()
    stop = asyncio.Event()
    # run 24 h + 2 min (mid-sweep), stop, restart on the same database, run to 50 h
    await run_host(
        config, clock=clock, out=out, stop=stop, until=T0 + timedelta(hours=24, minutes=2)
    )
    mid = (
        sqlite3.connect(db)
        .execute("SELECT value FROM state WHERE key='sweep_finished_at'")
        .fetchone()
    )
    assert mid is None or mid[0] is None, "the restart must happen in the middle of sweep 2"
    await run_host(config, clock=clock, out=out, stop=stop, until=T0 + timedelta(hours=50))
    _check_logs(caplog.records, db)

    ledger = Ledger()
    ledger.add([jsonlines.loads(line) for line in out.getvalue().splitlines()])
    ledger.check_conservation()  # per user and canvas; seq strictly increasing, no repeats

    # what the host holds equals the last stats.json the source read
    snapshot = parse_stats(standin.served_stats)
    assert standin.canvas == "87"
    check_holds_latest(ledger, snapshot, "87")
    # the reset: canvas 86 deltas then canvas 87; no negative delta except rename moves
    assert {d.canvas for d in ledger.deltas} == {"86", "87"}
    negatives = [d for d in ledger.deltas if d.delta < 0]
    assert all(d.score == 0 and d.user == renamed for d in negatives)
    # the rename: the person keeps one identity, the old name ends at 0
    person = {d.pxls_id for d in ledger.deltas if d.user in (renamed, "renamed_person")}
    assert len(person) == 1
    assert ledger.score(renamed, "86") == 0

    profile_reqs = [r for r in standin.requests if r.path.startswith("/api/v1/profile")]
    # politeness: never two requests in flight, profiles >= 1 s apart in host time
    assert standin.max_in_flight == 1
    assert all(r.in_flight == 1 for r in standin.requests)
    gaps = [b.at - a.at for a, b in itertools.pairwise(profile_reqs)]
    assert min(gaps) >= timedelta(seconds=1)
    # every user refreshed once per sweep: 3 sweeps (the first was empty) → at most 3,
    # and one more read after the reset for those active on 86 since their pairing
    per_user = Counter(r.path.split("=", 1)[1] for r in profile_reqs)
    assert max(per_user.values()) <= 3 + 1
    # (the stand-in publishes every step before its reset: nothing is left to settle)
    assert not [d for d in ledger.deltas if d.via == "reset"]
    conn = sqlite3.connect(db)
    unchecked = conn.execute(
        "SELECT COUNT(*) FROM users WHERE last_profile_check < ? AND missing = 0",
        (us(T0 + timedelta(hours=24)),),
    ).fetchone()[0]
    assert unchecked == 0, "every user was re-checked by the second sweep"
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    state = dict(conn.execute("SELECT key, value FROM state").fetchall())
    assert state["sweep_number"] == "3"


def _check_logs(records: list[logging.LogRecord], db: str) -> None:
    """One record per line, no table unless asked; the shutdown line says what the
    database holds (not only this run's totals); JSON logs carry the event fields."""
    assert all("\n" not in r.getMessage() for r in records)
    assert not any("table" in r.getMessage() for r in records)
    stopped = [r.getMessage() for r in records if r.getMessage().startswith("host stopped")]
    assert len(stopped) == 2
    assert f"({db}) holds " in stopped[-1] and "PxlsSource(" not in stopped[-1]  # by name
    assert "deltas not yet collected, last pull 2026-" in stopped[-1]
    pulls = [r for r in records if getattr(r, "pxls_event", None) == "pull"]
    assert pulls
    entry = json.loads(JsonLogFormatter().format(pulls[-1]))
    assert entry["event"] == "pull" and entry["canvas"] == "87"
    assert {"seen", "new", "deltas", "held", "unchanged", "generated_at"} <= set(entry)
    assert isinstance(entry["seen"], int) and entry["message"].startswith("pull at ")
    sweeps = [r for r in records if getattr(r, "pxls_event", None) == "sweep_progress"]
    assert sweeps
    progress = json.loads(JsonLogFormatter().format(sweeps[-1]))
    assert progress["done"] <= progress["total"] and progress["eta_s"] >= 0
