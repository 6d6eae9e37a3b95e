"""Crash safety: the real host in a subprocess, SIGKILLed again and again."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls import EloDelta, jsonlines
from neuro_chat_elo_pxls.errors import MalformedDataError
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario, SimClock

from .helpers import T0, Ledger, check_holds_latest

pytestmark = pytest.mark.integration
SPEED = 3600.0  # one simulated hour per real second
SWEEP_INTERVAL = timedelta(hours=6)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[PxlsStandIn, SimClock, list[str]]]:
    clock = SimClock(start=T0, speed=SPEED, epoch=time.time())
    scenario = Scenario(users=150, seed=9, resets=[T0 + timedelta(hours=20, minutes=5)])
    standin = PxlsStandIn(scenario, clock.now)
    standin.catch_up(T0)
    standin.schedule_rename(
        T0 + timedelta(hours=6, minutes=5), standin.visible()[3].name, "renamed_survivor"
    )
    await standin.start()
    config = tmp_path / "host.toml"
    config.write_text(
        f'[pxls]\nbase_url = "{standin.base_url}"\ndb_path = "{tmp_path / "pxls.sqlite3"}"\n'
        'delivery = "ack"\nrequest_timeout = 5\n'
        # a daily sweep every 6 simulated hours: several sweeps meet the kills, and the
        # clean run needs only one interval to finish one
        f"sweep_interval = {SWEEP_INTERVAL.total_seconds():.0f}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "neuro_chat_elo_pxls.cli",
        "--log-level",
        "WARNING",
        "run",
        "--config",
        str(config),
        "--out",
        str(tmp_path / "deltas.jsonl"),
        "--speed",
        str(SPEED),
        "--sim-start",
        T0.isoformat(),
        "--sim-epoch",
        str(clock.epoch),
    ]
    yield standin, clock, cmd
    await standin.stop()


async def _spawn(cmd: list[str], log: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PXLS_TOKEN": "standin-token"}
    with log.open("ab") as err:
        return await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.DEVNULL, stderr=err, env=env
        )


def _read_deltas(path: Path) -> tuple[list[EloDelta], int, int]:
    """Deltas de-duplicated by seq (as a host must), duplicates and torn lines counted."""
    by_seq: dict[int, EloDelta] = {}
    duplicates = torn = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            delta = jsonlines.loads(line)
        except MalformedDataError:
            torn += 1
            continue
        if delta.seq in by_seq:
            assert by_seq[delta.seq] == delta, "a re-delivered seq must be identical"
            duplicates += 1
        by_seq[delta.seq] = delta
    return [by_seq[s] for s in sorted(by_seq)], duplicates, torn


def _peek(db: Path, sql: str) -> tuple[Any, ...] | None:
    """One row from the running host's database, read-only (WAL: readers do not block it).

    None while the database does not exist yet, is busy, or lacks the table.
    """
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row: tuple[Any, ...] | None = conn.execute(sql).fetchone()
        return row
    except sqlite3.OperationalError:
        return None
    finally:
        conn.close()


def _sweep_idle_and_all_enriched(db: Path) -> bool:
    row = _peek(
        db,
        "SELECT (SELECT value FROM state WHERE key = 'sweep_finished_at'), "
        "(SELECT COUNT(*) FROM users WHERE enriched = 0 AND missing = 0)",
    )
    return row is not None and bool(row[0]) and row[1] == 0


async def test_sigkill_at_random_points_loses_and_repeats_nothing(
    world: tuple[PxlsStandIn, SimClock, list[str]], tmp_path: Path
) -> None:
    standin, clock, cmd = world
    rng = random.Random(2024)
    log = tmp_path / "host.log"
    kills = 0
    while kills < 22:
        proc = await _spawn(cmd, log)
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        kills += 1
    killed_until = clock.now()
    # a last, clean run through the end of a daily sweep, then SIGTERM
    proc = await _spawn(cmd, log)
    # one sweep interval and an hour after the kills, past the reset (20:05)
    end = max(killed_until + SWEEP_INTERVAL + timedelta(hours=1), T0 + timedelta(hours=21))
    await asyncio.sleep(clock.real_seconds(end - clock.now()))
    # A sweep may have started shortly before `end`; how much simulated time it takes
    # depends on real request latency (one simulated hour is one real second here), so
    # wait in real time for it to finish instead of betting on a simulated deadline.
    db = tmp_path / "pxls.sqlite3"
    for _ in range(600):  # at most 60 real seconds
        if _sweep_idle_and_all_enriched(db):
            break
        await asyncio.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 30) == 0

    deltas, duplicates, torn = _read_deltas(tmp_path / "deltas.jsonl")
    print(
        f"kills={kills} simulated={killed_until - T0} deltas={len(deltas)} "
        f"redelivered={duplicates} torn_lines={torn}"
    )
    ledger = Ledger(deltas)
    ledger.check_conservation()
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1)), "a delta was lost"
    snapshot = parse_stats(standin.served_stats)
    assert standin.canvas == "87"
    check_holds_latest(ledger, snapshot, "87")
    conn = sqlite3.connect(tmp_path / "pxls.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    assert (
        conn.execute("SELECT COUNT(*) FROM users WHERE enriched = 0 AND missing = 0").fetchone()[0]
        == 0
    )
    state = dict(conn.execute("SELECT key, value FROM state").fetchall())
    assert int(state["sweep_number"]) >= 4  # sweeps every 6 h over at least 27 h
    assert state.get("sweep_finished_at"), "the daily sweep finished"
    assert standin.max_in_flight == 1
    assert "Traceback" not in log.read_text()


async def test_second_process_on_same_database_refuses(
    world: tuple[PxlsStandIn, SimClock, list[str]], tmp_path: Path
) -> None:
    _, _, cmd = world
    first = await _spawn(cmd, tmp_path / "first.log")
    try:
        for _ in range(300):  # until the first holds the lock and has migrated: ≤ 30 s
            if (row := _peek(tmp_path / "pxls.sqlite3", "PRAGMA user_version")) and row[0] > 0:
                break
            await asyncio.sleep(0.1)
        assert first.returncode is None
        second = await _spawn(cmd, tmp_path / "second.log")
        assert await asyncio.wait_for(second.wait(), 20) == 2
        assert "already in use" in (tmp_path / "second.log").read_text()
        assert first.returncode is None  # the first keeps running
    finally:
        first.send_signal(signal.SIGTERM)
        await first.wait()


async def _until(
    proc: asyncio.subprocess.Process, condition: Any, what: str, seconds: float = 60
) -> None:
    """Poll a condition of the running host (a guard against a hang, not a timer the
    outcome depends on); the host exiting meanwhile fails at once."""
    for _ in range(int(seconds * 10)):
        if condition():
            return
        assert proc.returncode is None, f"the host exited ({proc.returncode}) before: {what}"
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds:g} real seconds: {what}")


async def test_sighup_reopens_the_output_file_and_loses_nothing(
    world: tuple[PxlsStandIn, SimClock, list[str]], tmp_path: Path
) -> None:
    """Issue 21, item 6: SIGHUP (logrotate's postrotate) killed ``run`` with exit 129
    and the file was never reopened. Now: the file moved away, SIGHUP, the lines go
    to a new file, the run goes on, and the two files hold every seq exactly once."""
    _, _, cmd = world
    cmd = [("INFO" if part == "WARNING" else part) for part in cmd]
    out, rotated, log = tmp_path / "deltas.jsonl", tmp_path / "deltas.jsonl.1", tmp_path / "h.log"
    proc = await _spawn(cmd, log)
    try:
        await _until(proc, lambda: out.exists() and out.stat().st_size > 0, "the first deltas")
        out.rename(rotated)  # logrotate's default "create" mode
        proc.send_signal(signal.SIGHUP)
        await _until(proc, lambda: "reopened" in log.read_text(), "the reopen log line")
        written = lambda: out.exists() and out.stat().st_size > 0  # noqa: E731
        await _until(proc, written, "deltas in the new file")
        assert proc.returncode is None  # still running
    finally:
        proc.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(proc.wait(), 30)
    assert status == 0
    before, dup_before, torn_before = _read_deltas(rotated)
    after, dup_after, torn_after = _read_deltas(out)
    assert (dup_before, torn_before, dup_after, torn_after) == (0, 0, 0, 0)
    seqs = [d.seq for d in before] + [d.seq for d in after]
    assert seqs == list(range(1, len(seqs) + 1)), "a delta was lost or written twice"
    assert before and after
    assert "Traceback" not in log.read_text()
