"""The hourly pull costs the same with 1,000 or 1,000,000 known users: no statement on
its path scans a whole table (checked with EXPLAIN QUERY PLAN), and its log counts
are right."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls.models import Snapshot
from neuro_chat_elo_pxls.store.rows import UPSERT_HOLD, UPSERT_RELEASE
from neuro_chat_elo_pxls.store.writer import Store

from .helpers import T0

#: every statement a steady pull and a tick run, with sample parameters
HOURLY_PATH = [
    (UPSERT_HOLD, {"rows": '{"a":1}', "canvas": "86", "obs": 0, "now": 0}),
    (UPSERT_RELEASE, {"rows": '{"a":1}', "canvas": "86", "obs": 0, "now": 0}),
    ("SELECT COALESCE(MAX(seq), 0) FROM outbox", ()),
    ("SELECT COALESCE(MAX(id), 0) FROM users", ()),
    ("SELECT COUNT(*) FROM outbox WHERE seq > ?", (0,)),
    ("SELECT COUNT(*) FROM users WHERE id > ?", (0,)),
    ("SELECT COUNT(*) FROM users WHERE held_score IS NOT NULL", ()),
    (
        "UPDATE users SET score = held_score WHERE held_score IS NOT NULL AND (held_canvas != ?)",
        ("86",),
    ),
    ("SELECT MIN(held_since) FROM users WHERE held_score IS NOT NULL", ()),
    (
        "SELECT id FROM users WHERE held_score IS NOT NULL ORDER BY held_since, id LIMIT ?",
        (16,),
    ),
]


@pytest.mark.parametrize(("sql", "params"), HOURLY_PATH, ids=lambda v: str(v)[:40])
async def test_no_statement_on_the_hourly_path_scans_a_table(
    tmp_path: Path, sql: str, params: tuple[object, ...] | dict[str, object]
) -> None:
    path = tmp_path / "plan.sqlite3"
    async with await Store.open(str(path)):
        pass
    conn = sqlite3.connect(path)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    finally:
        conn.close()
    full_scans = [step for step in plan if step in ("SCAN users", "SCAN outbox")]
    assert not full_scans, plan


@pytest.mark.parametrize("hold_new", [True, False])
async def test_pull_counts_are_right(tmp_path: Path, hold_new: bool) -> None:
    async with await Store.open(str(tmp_path / "c.sqlite3")) as store:
        first = await store.ingest(
            "86",
            Snapshot.from_scores(T0, {f"u{i}": i + 1 for i in range(1000)}),
            T0,
            hold_new=hold_new,
            state=None,
        )
        assert (first.seen, first.new) == (1000, 1000)
        assert first.deltas == (0 if hold_new else 1000)
        assert first.held == (1000 if hold_new else 0)
        assert first.unchanged == 0
        await store.release_held(None)
        later = T0 + timedelta(hours=1)
        scores = {f"u{i}": i + 1 + (i % 2) for i in range(1000)}  # half changed
        scores["newcomer"] = 5
        second = await store.ingest(
            "86", Snapshot.from_scores(later, scores), later, hold_new=hold_new, state=None
        )
        assert (second.seen, second.new) == (1001, 1)
        assert second.deltas == 500 + (0 if hold_new else 1)
        assert second.unchanged == 500
