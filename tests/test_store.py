"""The SQLite store: migrations, locking, outbox atomicity."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls.engine.state import EngineState
from neuro_chat_elo_pxls.errors import SchemaTooNewError, StoreError, StoreLockedError
from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
from neuro_chat_elo_pxls.store.schema import MIGRATIONS, SCHEMA_VERSION, split_sql
from neuro_chat_elo_pxls.store.writer import Store
from neuro_chat_elo_pxls.util.times import ts, us

from .helpers import T0


async def test_fresh_db_is_migrated_to_current_version_with_wal(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    store = await Store.open(path)
    await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"users", "outbox", "state"} <= tables
    conn.close()


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    store = await Store.open(path)
    await store.ingest(
        "86", Snapshot.from_rows(T0, (ToplistRow("a", 5),)), T0, hold_new=False, state=None
    )
    await store.close()
    store = await Store.open(path)
    deltas = await store.outbox().drain()
    assert [(d.user, d.delta) for d in deltas] == [("a", 5)]
    assert await store.outbox().drain() == []
    await store.close()


async def test_newer_schema_gives_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNewError, match="upgrade"):
        await Store.open(path)
    # the lock was released: a second attempt fails the same way, not as "locked"
    with pytest.raises(SchemaTooNewError):
        await Store.open(path)


async def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        await Store.open(str(path))


async def test_second_store_on_same_file_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    store = await Store.open(path)
    with pytest.raises(StoreLockedError, match="already in use"):
        await Store.open(path)
    await store.close()
    again = await Store.open(path)  # free again after close
    await again.close()


async def test_failed_ingest_writes_nothing(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "db.sqlite3"))
    await store.ingest(
        "86", Snapshot.from_rows(T0, (ToplistRow("a", 5),)), T0, hold_new=False, state=None
    )
    await store.outbox().drain()

    class Unbindable(EngineState):
        def to_rows(self) -> dict[str, Any]:
            return {"x": object()}

    # a state value that cannot be bound makes the last statement of the transaction fail
    with pytest.raises(sqlite3.ProgrammingError):
        await store.ingest(
            "86",
            Snapshot.from_rows(T0, (ToplistRow("a", 9), ToplistRow("b", 1))),
            T0,
            hold_new=False,
            state=Unbindable(),
        )
    assert await store.outbox().drain() == []
    counts = await store.counts()
    assert counts["users"] == 1
    await store.close()


async def test_held_user_seen_again_keeps_only_the_latest_held_score(tmp_path: Path) -> None:
    """The one-statement upsert: a held user's new pixels replace the held score (no
    delta), a known user gets ``new - old``, and the release hands out the latest."""
    store = await Store.open(str(tmp_path / "db.sqlite3"))
    snap = Snapshot.from_rows
    first = await store.ingest("86", snap(T0, (ToplistRow("a", 5),)), T0, hold_new=True, state=None)
    assert (first.new, first.deltas, first.held) == (1, 0, 1)
    later = T0 + timedelta(hours=1)
    second = await store.ingest(
        "86",
        snap(later, (ToplistRow("a", 8), ToplistRow("b", 2))),
        later,
        hold_new=True,
        state=None,
    )
    assert (second.new, second.deltas, second.held) == (1, 0, 2)
    assert await store.outbox().drain() == []
    assert await store.release_held(None) == 2
    released = {d.user: (d.delta, d.score, d.observed_at) for d in await store.outbox().drain()}
    assert released == {"a": (8, 8, later), "b": (2, 2, later)}
    third = await store.ingest(
        "86",
        snap(later + timedelta(hours=1), (ToplistRow("a", 6),)),
        later,
        hold_new=True,
        state=None,
    )
    assert (third.new, third.deltas, third.held) == (0, 1, 0)
    assert [(d.user, d.delta, d.score) for d in await store.outbox().drain()] == [("a", -2, 6)]
    await store.close()


def _schema_2_database(path: str) -> sqlite3.Connection:
    """A database as the previous release left it (migrations 1 and 2 only)."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        for statement in split_sql(script):
            conn.execute(statement)
    conn.execute("PRAGMA user_version=2")
    return conn


async def test_migration_3_converts_times_exactly_and_keeps_seq(tmp_path: Path) -> None:
    """A schema-2 file (ISO text times, pending and drained outbox rows) opened by this
    version: every time survives to the microsecond, NULLs stay NULL, seq goes on."""
    path = str(tmp_path / "db.sqlite3")
    conn = _schema_2_database(path)
    seen, checked = T0 + timedelta(microseconds=123_456), T0 + timedelta(minutes=5, microseconds=1)
    obs = T0 - timedelta(minutes=30)
    conn.execute(
        "INSERT INTO users (name, score, canvas, observed_at, last_profile_check, first_seen, "
        "last_seen) VALUES ('known', 5, '86', ?, ?, ?, ?)",
        (ts(obs), ts(checked), ts(T0), ts(seen)),
    )
    conn.execute(
        "INSERT INTO users (name, held_score, held_canvas, held_observed_at, held_since, "
        "first_seen, last_seen) VALUES ('held', 7, '86', ?, ?, ?, ?)",
        (ts(obs), ts(seen), ts(seen), ts(seen)),
    )
    conn.execute("DELETE FROM outbox WHERE seq = 1")  # drained: seq 1 must not come back
    conn.execute("UPDATE users SET score = 9, observed_at = ? WHERE name = 'known'", (ts(seen),))
    conn.close()

    store = await Store.open(path)
    assert await store.earliest_hold() == seen
    pending = await store.outbox().drain()
    assert [(d.seq, d.user, d.delta, d.observed_at) for d in pending] == [(2, "known", 4, seen)]
    assert await store.release_held(None) == 1
    released = await store.outbox().drain()
    assert [(d.seq, d.user, d.delta, d.observed_at) for d in released] == [(3, "held", 7, obs)]
    await store.close()
    conn = sqlite3.connect(path)
    row = conn.execute(
        "SELECT first_seen, last_seen, last_profile_check, held_since FROM users "
        "WHERE name = 'known'"
    ).fetchone()
    assert row == (us(T0), us(seen), us(checked), None)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


async def test_migration_3_with_drained_outbox_does_not_reuse_seq(tmp_path: Path) -> None:
    path = str(tmp_path / "db.sqlite3")
    conn = _schema_2_database(path)
    for score in (1, 2, 3):  # seq 1..3, all delivered
        conn.execute(
            "INSERT INTO users (name, score, canvas, first_seen, last_seen) VALUES (?, ?, '86', "
            "?, ?) ON CONFLICT (name) DO UPDATE SET score = excluded.score",
            ("a", score, ts(T0), ts(T0)),
        )
    conn.execute("DELETE FROM outbox")
    conn.close()
    store = await Store.open(path)
    await store.ingest(
        "86", Snapshot.from_rows(T0, (ToplistRow("a", 10),)), T0, hold_new=False, state=None
    )
    assert [(d.seq, d.delta, d.score) for d in await store.outbox().drain()] == [(4, 7, 10)]
    await store.close()


async def test_a_read_only_database_names_the_likely_cause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21, item 5: a database SQLite may not write (as in a read-only directory,
    where WAL cannot create its ``-shm`` file) said only "not a usable SQLite
    database: attempt to write a readonly database". The file is opened read-only
    here (tests run as root, whom chmod does not stop), through the real open path."""
    import aiosqlite

    path = tmp_path / "ro.sqlite3"
    sqlite3.connect(path).close()  # an empty database file
    connect = aiosqlite.connect

    def read_only(database: str, **kwargs: Any) -> aiosqlite.Connection:
        return connect(f"file:{database}?mode=ro", uri=True, **kwargs)

    monkeypatch.setattr(aiosqlite, "connect", read_only)
    with pytest.raises(StoreError) as caught:
        await Store.open(str(path))
    message = str(caught.value)
    assert "readonly" in message and "its directory must be writable" in message
    assert "ro.sqlite3-wal and -shm" in message


async def test_a_database_serves_one_instance(tmp_path: Path) -> None:
    """DESIGN 9: two instances on one database file are refused (their seqs and scores
    would mix); the same instance opens it again."""
    from neuro_chat_elo_pxls import PxlsSettings, PxlsSource

    db = str(tmp_path / "one.sqlite3")
    first = PxlsSource(PxlsSettings(db_path=db, token=None))
    await first.open()
    await first.on_shutdown()
    again = PxlsSource(PxlsSettings(db_path=db, token=None, instance="pxls.space"))
    await again.open()  # the default instance of https://pxls.space is "pxls.space"
    await again.on_shutdown()
    other = PxlsSource(PxlsSettings(db_path=db, token=None, base_url="https://event.example"))
    with pytest.raises(StoreError, match=r"belongs to pxls instance pxls\.space, not event\."):
        await other.open()
    await other.on_shutdown()


#: migrations 1 and 2 as commits edea021 and 3fc6975 wrote them (their migration 2 was
#: rewritten later under the same number), literally
EARLY_SCHEMA_2 = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    pxls_id INTEGER UNIQUE,
    discord TEXT,
    faction_id INTEGER,
    faction_tag TEXT,
    faction_name TEXT,
    faction_color INTEGER,
    score INTEGER NOT NULL DEFAULT 0,
    canvas TEXT,
    held_score INTEGER,
    held_canvas TEXT,
    held_observed_at TEXT,
    held_since TEXT,
    dirty INTEGER NOT NULL DEFAULT 1,
    missing INTEGER NOT NULL DEFAULT 0,
    enriched INTEGER NOT NULL DEFAULT 0,
    last_profile_check TEXT,
    swept_in INTEGER NOT NULL DEFAULT 0,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE INDEX users_sweep ON users (swept_in, dirty, id);
CREATE INDEX users_held ON users (held_since) WHERE held_score IS NOT NULL;
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    pxls_id INTEGER,
    discord TEXT,
    faction_id INTEGER,
    faction_tag TEXT,
    faction_name TEXT,
    faction_color INTEGER,
    delta INTEGER NOT NULL,
    score INTEGER NOT NULL,
    canvas TEXT NOT NULL,
    observed_at TEXT NOT NULL
);
CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);
DROP INDEX IF EXISTS users_sweep;
CREATE INDEX users_dirty ON users (dirty, id);
"""


async def test_an_early_schema_2_database_is_migrated(tmp_path: Path) -> None:
    """Issue item 14: a ``user_version`` 2 file of the early migration 2 (schema 1's
    tables plus an index on ``dirty``) was refused with the bare SQL error "no such
    column: observed_at". It is recognised and migrated: the users, their scores, the
    pending outbox row and the seq all survive, and the next pull counts only what
    changed."""
    path = str(tmp_path / "db.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in split_sql(EARLY_SCHEMA_2):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=2")
    conn.execute(
        "INSERT INTO users (name, score, canvas, dirty, first_seen, last_seen) "
        "VALUES ('a', 5, '86', 0, ?, ?)",
        (ts(T0), ts(T0)),
    )
    old_row = "INSERT INTO outbox (user, delta, score, canvas, observed_at) VALUES (?,?,?,?,?)"
    conn.execute(old_row, ("gone", 3, 3, "86", ts(T0)))  # seq 1, delivered
    conn.execute(old_row, ("a", 5, 5, "86", ts(T0)))  # seq 2, not yet collected
    conn.execute("DELETE FROM outbox WHERE seq = 1")
    conn.close()

    store = await Store.open(path)  # raised StoreError: no such column: observed_at
    try:
        pending = await store.outbox().drain()
        assert [(d.seq, d.user, d.delta, d.score) for d in pending] == [(2, "a", 5, 5)]
        await store.ingest(
            "86", Snapshot.from_rows(T0, (ToplistRow("a", 9),)), T0, hold_new=False, state=None
        )
        later = await store.outbox().drain()
        assert [(d.seq, d.user, d.delta, d.score) for d in later] == [(3, "a", 4, 9)]
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
