"""``Store``: the SQLite cache (aiosqlite) of users, the delta outbox and scheduler state.

Contracts:

* One writer: :meth:`Store.open` takes an exclusive lock on the database file
  (:mod:`.lockfile`), so a second source (any process, any name of the file) fails
  with :class:`StoreLockedError`. :class:`StoreReader` reads without the lock
  (``status``/``export`` while a source runs) and has no write method.
* WAL journal; every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` unit. A score
  update and the outbox rows it produces commit together (conservation across
  crashes). Units and reads are serialised and run shielded from the caller's
  cancellation: a cancelled hook never leaves a transaction open, never sees
  another unit's uncommitted rows, and what a cancelled drain took is handed out
  by the next one.
* Schema and migrations live in :mod:`.schema`.
* Accounting: ``users.score`` is the last score handed out on ``users.canvas``; the
  sum of the outbox deltas of a user on a canvas always equals it. A new user's
  first score waits in ``held_*`` until released.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from . import schema
from .errors import SchemaTooNewError, StoreError
from .lockfile import DatabaseLock
from .models import EloDelta, Profile, Snapshot
from .state import SchedulerState
from .tables import (
    _UPSERT_HOLD,
    _UPSERT_RELEASE,
    _USER_COLS,
    DIRTY,
    EXPORT_FIELDS,
    IngestResult,
    ProfileOutcome,
    UserRow,
    outbox_rows,
)
from .times import from_us, us

T = TypeVar("T")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Done callback: a unit whose caller was cancelled still has its error read."""
    if not task.cancelled():
        task.exception()


class StoreReader:
    """Read access to a database. :meth:`open` opens an existing, current file
    read-only (no lock, no migration); use as ``async with await StoreReader.open(p)``.
    """

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._gate = asyncio.Lock()  # one unit (read or transaction) at a time

    @classmethod
    async def open(cls, path: str) -> Self:
        """Open ``path`` for reading. :class:`StoreError` if missing, not SQLite or not
        at this version's schema; the connection is closed on every error."""
        if not os.path.isfile(path):  # noqa: ASYNC240 - one stat, before any I/O
            raise StoreError(f"{path}: no such database (has the source run yet?)")
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"  # noqa: ASYNC240
        try:
            conn = await aiosqlite.connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        reader = cls(conn, path)
        try:
            await reader._check_version()
            await reader.count_outbox()  # reads a page: fails now on a damaged file
        except BaseException as exc:
            await reader.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{path}: not a usable SQLite database: {exc}") from exc
            raise
        return reader

    async def _check_version(self) -> None:
        version = await schema.user_version(self._conn)
        if version > schema.SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"{self.path} has schema version {version}; this version of "
                f"neuro-chat-elo-pxls knows up to {schema.SCHEMA_VERSION}: upgrade the package"
            )
        if version < schema.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}: run the source once to migrate it"
            )

    async def close(self) -> None:
        """Close the connection (after a unit in progress). Idempotent."""
        async with self._gate:
            # already closed, or its thread is gone: nothing left to close
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._conn.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _unit(
        self,
        fn: Callable[[aiosqlite.Connection], Awaitable[T]],
        write: bool,
        on_commit: Callable[[T], object] | None = None,
    ) -> T:
        """Run ``fn`` alone on the connection, as a transaction if ``write``.

        The unit runs in its own task, shielded: if the caller is cancelled it still
        ends with COMMIT or ROLLBACK before the next unit starts. ``on_commit`` gets
        the result once committed, even when the caller is gone.
        """

        async def unit() -> T:
            async with self._gate:
                if not write:
                    return await fn(self._conn)
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await fn(self._conn)
                    await self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:  # (SQLite may have rolled back itself)
                        await self._conn.execute("ROLLBACK")
                    raise
                if on_commit is not None:
                    on_commit(result)
                return result

        task = asyncio.ensure_future(unit())
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    async def _read(self, fn: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        return await self._unit(fn, write=False)

    @staticmethod
    async def _scalar(conn: aiosqlite.Connection, sql: str, *params: Any) -> int:
        async with conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    async def _rows(self, sql: str, *params: Any) -> list[Any]:
        async def fetch(conn: aiosqlite.Connection) -> list[Any]:
            async with conn.execute(sql, params) as cur:
                return list(await cur.fetchall())

        return await self._read(fetch)

    @staticmethod
    async def _fetch_users(
        conn: aiosqlite.Connection, where: str, params: Sequence[Any] = ()
    ) -> list[UserRow]:
        async with conn.execute(f"SELECT {_USER_COLS} FROM users {where}", params) as cur:
            return [UserRow(*row) for row in await cur.fetchall()]

    # -- reads -----------------------------------------------------------------

    async def load_state(self) -> SchedulerState:
        """The scheduler state last committed."""
        rows = await self._rows("SELECT key, value FROM state")
        return SchedulerState.from_rows({row[0]: row[1] for row in rows})

    async def get_user(self, user_id: int) -> UserRow | None:
        users = await self._read(lambda conn: self._fetch_users(conn, "WHERE id = ?", (user_id,)))
        return users[0] if users else None

    async def held_user_ids(self, limit: int, exclude: set[int]) -> list[int]:
        """Up to ``limit`` users whose first delta waits for their profile, oldest first."""
        rows = await self._rows(
            "SELECT id FROM users WHERE held_score IS NOT NULL ORDER BY held_since, id LIMIT ?",
            limit + len(exclude),
        )
        return [row[0] for row in rows if row[0] not in exclude][:limit]

    async def earliest_hold(self) -> datetime | None:
        """``held_since`` of the longest-held user, or None."""
        rows = await self._rows("SELECT MIN(held_since) FROM users WHERE held_score IS NOT NULL")
        return from_us(rows[0][0]) if rows else None

    async def sweep_ids(
        self, sweep: int, after_dirty: int, after_clean: int, limit: int
    ) -> tuple[bool, list[int]]:
        """The next users not yet visited by ``sweep``: dirty ones first, then the rest.

        Walks ids upward from the cursors (indexed, no sort), so a refill costs the
        same at the start and the end of a 100,000-user sweep. Returns
        ``(dirty_phase, ids)``. Missing (404) names are only visited when dirty.
        """
        rows = await self._rows(
            f"SELECT id FROM users WHERE {DIRTY} AND swept_in < ? AND id > ? ORDER BY id LIMIT ?",
            sweep,
            after_dirty,
            limit,
        )
        if rows:
            return True, [row[0] for row in rows]
        rows = await self._rows(
            "SELECT id FROM users WHERE swept_in < ? AND missing = 0 AND id > ? ORDER BY id "
            "LIMIT ?",
            sweep,
            after_clean,
            limit,
        )
        return False, [row[0] for row in rows]

    async def count_sweep_remaining(self, sweep: int) -> int:
        """Users ``sweep`` has still to visit (missing names only when dirty)."""
        return await self._read(
            lambda conn: self._scalar(
                conn,
                f"SELECT COUNT(*) FROM users WHERE swept_in < ? AND (missing = 0 OR {DIRTY})",
                sweep,
            )
        )

    async def count_outbox(self) -> int:
        return await self._read(lambda conn: self._scalar(conn, "SELECT COUNT(*) FROM outbox"))

    async def peek_outbox(self, after_seq: int) -> list[EloDelta]:
        """Committed outbox rows with ``seq > after_seq``, in order, not removed."""
        return await self._read(lambda conn: outbox_rows(conn, after_seq))

    async def counts(self) -> dict[str, int]:
        """Users total / dirty / held / missing / never enriched, and the outbox size."""
        rows = await self._rows(
            f"SELECT COUNT(*), COALESCE(SUM({DIRTY}), 0), COUNT(held_score), "
            "COALESCE(SUM(missing), 0), COALESCE(SUM(1 - enriched), 0), "
            "(SELECT COUNT(*) FROM outbox) FROM users"
        )
        keys = ("users", "dirty", "awaiting_enrichment", "missing", "never_enriched", "outbox")
        return dict(zip(keys, map(int, rows[0]), strict=True))

    async def export_rows(
        self, *, canvas: str | None = None, batch: int = 2000
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Users with a handed-out score (on ``canvas`` if given), highest score first,
        as tuples of :data:`EXPORT_FIELDS`, streamed in batches (memory stays flat)."""
        where = "canvas = ?" if canvas is not None else "canvas IS NOT NULL"
        params = (canvas,) if canvas is not None else ()
        async with self._conn.execute(
            f"SELECT {', '.join(EXPORT_FIELDS)} FROM users WHERE {where} ORDER BY score DESC, name",
            params,
        ) as cur:
            while rows := await cur.fetchmany(batch):
                for row in rows:
                    yield tuple(row)


class Store(StoreReader):
    """Read-write access for the one running source; :meth:`open` locks and migrates."""

    def __init__(self, conn: aiosqlite.Connection, path: str, lock: DatabaseLock | None) -> None:
        super().__init__(conn, path)
        self._lock = lock
        self._drained: list[EloDelta] = []  # taken by a drain whose caller was cancelled

    @classmethod
    async def open(cls, path: str) -> Self:
        """Open (creating if needed) and migrate the database at ``path``."""
        lock = None
        if path != ":memory:":
            lock = DatabaseLock(path)
            lock.acquire()
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except Exception as exc:
            if lock:
                lock.release()
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        store = cls(conn, path, lock)
        try:
            await store._setup()
        except BaseException:
            await store.close()
            raise
        return store

    async def _setup(self) -> None:
        conn = self._conn
        if sqlite3.sqlite_version_info < (3, 35):
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed "
                "(upsert, DROP COLUMN)"
            )
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
            await conn.execute("PRAGMA busy_timeout=5000")
            try:
                await conn.execute("SELECT json_valid('{}')")
            except aiosqlite.OperationalError as exc:
                raise StoreError(
                    f"SQLite {sqlite3.sqlite_version} lacks the JSON functions (json1), "
                    "which the ingest needs"
                ) from exc
            version = await schema.user_version(conn)
            if version > schema.SCHEMA_VERSION:
                raise SchemaTooNewError(
                    f"the database has schema version {version}, but this version of "
                    f"neuro-chat-elo-pxls knows only up to {schema.SCHEMA_VERSION}: upgrade "
                    "the package (or point db_path at a new file; it is only a cache)"
                )
            if version < schema.SCHEMA_VERSION:
                async with self._gate:
                    await schema.upgrade(conn, version)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: not a usable SQLite database: {exc}") from exc

    async def close(self) -> None:
        """Close the connection, then release the lock. Idempotent."""
        await super().close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    async def _write(
        self,
        fn: Callable[[aiosqlite.Connection], Awaitable[T]],
        on_commit: Callable[[T], object] | None = None,
    ) -> T:
        return await self._unit(fn, write=True, on_commit=on_commit)

    # -- state ---------------------------------------------------------------

    @staticmethod
    async def _write_state(conn: aiosqlite.Connection, state: SchedulerState) -> None:
        """The one write path of the scheduler state (inside the caller's transaction)."""
        await conn.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(state.to_rows().items()),
        )

    async def save_state(self, state: SchedulerState) -> None:
        """Commit ``state`` on its own."""
        await self._write(lambda conn: self._write_state(conn, state))

    # -- users ---------------------------------------------------------------

    @staticmethod
    async def _save_users(conn: aiosqlite.Connection, users: Iterable[UserRow]) -> None:
        await conn.executemany(
            "UPDATE users SET name=?, pxls_id=?, discord=?, faction_id=?, faction_tag=?, "
            "faction_name=?, faction_color=?, score=?, canvas=?, held_score=?, held_canvas=?, "
            "held_observed_at=?, held_since=?, swept_in=? WHERE id=?",
            [
                (
                    u.name,
                    u.pxls_id,
                    u.discord,
                    u.faction_id,
                    u.faction_tag,
                    u.faction_name,
                    u.faction_color,
                    u.score,
                    u.canvas,
                    u.held_score,
                    u.held_canvas,
                    u.held_observed_at,
                    u.held_since,
                    u.swept_in,
                    u.id,
                )
                for u in users
            ],
        )

    async def ingest(
        self,
        canvas: str,
        snapshot: Snapshot,
        now: datetime,
        *,
        hold_new: bool,
        state: SchedulerState | None,
    ) -> IngestResult:
        """Apply one snapshot of ``canvas`` and save ``state``, in one transaction.

        One statement upserts the whole snapshot (``snapshot.toplist`` through
        ``json_each``; the event loop does no per-user work); the outbox rows come
        from the accounting triggers. Known user: new score (its delta is
        ``new - baseline``, baseline 0 on another canvas; zero deltas make no row).
        Held user: the held score is replaced. New user: held when ``hold_new``, else
        handed out at once. Every user seen is marked dirty. Users still held for an
        older canvas are handed out first. Nothing here scans the whole table: new
        rows take the ids after ``MAX(id)``, held users are counted on their index.
        """
        ctx = {"canvas": canvas, "obs": us(snapshot.generated_at), "now": us(now)}

        async def unit(conn: aiosqlite.Connection) -> IngestResult:
            await self._release(conn, "held_canvas != :canvas", ctx)
            before = await self._scalar(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")
            max_id = await self._scalar(conn, "SELECT COALESCE(MAX(id), 0) FROM users")
            await conn.execute(
                _UPSERT_HOLD if hold_new else _UPSERT_RELEASE,
                (snapshot.toplist.decode(), canvas, ctx["obs"], ctx["now"]),
            )
            if state is not None:
                await self._write_state(conn, state)
            deltas = await self._scalar(conn, "SELECT COUNT(*) FROM outbox WHERE seq > ?", before)
            new = await self._scalar(conn, "SELECT COUNT(*) FROM users WHERE id > ?", max_id)
            held = await self._scalar(
                conn, "SELECT COUNT(*) FROM users WHERE held_score IS NOT NULL"
            )
            # a held new user makes no delta yet; a released new user's delta is counted
            changed = deltas + (new if hold_new else 0)
            return IngestResult(len(snapshot), new, deltas, held, max(0, len(snapshot) - changed))

        return await self._write(unit)

    @staticmethod
    async def _release(conn: aiosqlite.Connection, where: str, params: dict[str, Any]) -> int:
        """Hand out held scores of the users matching ``where`` (a constant SQL filter).

        The held score becomes the handed-out score; the trigger writes its delta
        (``held - baseline``, baseline 0 on another canvas). Returns users released.
        """
        async with conn.execute(
            "UPDATE users SET score = held_score, canvas = held_canvas, "
            "observed_at = held_observed_at, held_score = NULL, held_canvas = NULL, "
            f"held_observed_at = NULL, held_since = NULL WHERE held_score IS NOT NULL "
            f"AND ({where})",
            params,
        ) as cur:
            return max(0, cur.rowcount)

    async def release_held(self, held_before: datetime | None) -> int:
        """Hand out held scores held since ``held_before`` or earlier (None: all).

        Returns how many users were released.
        """
        if held_before is None:
            return await self._write(lambda conn: self._release(conn, "1", {}))
        before = {"before": us(held_before)}
        return await self._write(lambda conn: self._release(conn, "held_since <= :before", before))

    async def apply_profile(
        self, user_id: int, profile: Profile, now: datetime, sweep: int
    ) -> ProfileOutcome:
        """Store a fetched profile, merge a rename, release a held delta; one transaction.

        Rename: another row with the same ``pxls_id`` is the same person under an old
        name. The score moves: the old name's score on the same canvas is withdrawn
        with one delta (``-old``, score 0) and the new name is credited its full
        score, so per name *and* per person the deltas add up to the score, and the
        pixels are never counted twice. The old row is deleted.
        """

        async def unit(conn: aiosqlite.Connection) -> ProfileOutcome:
            users = await self._fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return ProfileOutcome(False, None, 0)
            user = users[0]
            renamed_from, corrected = await self._merge_rename(conn, user, profile, now)
            faction = profile.faction
            user.pxls_id = profile.pxls_id if profile.pxls_id is not None else user.pxls_id
            user.discord = profile.discord
            user.faction_id = faction.id if faction else None
            user.faction_tag = faction.tag if faction else None
            user.faction_name = faction.name if faction else None
            user.faction_color = faction.color if faction else None
            user.swept_in = max(user.swept_in, sweep)
            await self._save_users(conn, [user])
            await conn.execute(
                "UPDATE users SET missing = 0, enriched = 1, last_profile_check = ? WHERE id = ?",
                (us(now), user.id),
            )
            await self._release(conn, "id = :id", {"id": user.id})
            return ProfileOutcome(user.held, renamed_from, corrected)

        return await self._write(unit)

    async def _merge_rename(
        self, conn: aiosqlite.Connection, user: UserRow, profile: Profile, now: datetime
    ) -> tuple[str | None, int]:
        """Fold an older row with the same ``pxls_id`` into ``user``: (old name, pixels moved)."""
        if profile.pxls_id is None:
            return None, 0
        others = await self._fetch_users(
            conn, "WHERE pxls_id = ? AND id != ?", (profile.pxls_id, user.id)
        )
        if not others:
            return None, 0
        old = others[0]
        corrected = 0
        canvas = user.held_canvas if user.held else user.canvas
        if old.score and old.canvas is not None and old.canvas == canvas:
            corrected = old.score  # withdrawn by the trigger: -old, score 0
            observed = us(now) if user.held_observed_at is None else user.held_observed_at
            await conn.execute(
                "UPDATE users SET score = 0, observed_at = ? WHERE id = ?", (observed, old.id)
            )
        user.swept_in = max(user.swept_in, old.swept_in)
        await conn.execute("DELETE FROM users WHERE id = ?", (old.id,))
        return old.name, corrected

    async def mark_missing(self, user_id: int, now: datetime, sweep: int) -> bool:
        """The profile 404'd: mark the name missing, release a held delta. True if released."""

        async def unit(conn: aiosqlite.Connection) -> bool:
            users = await self._fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return False
            await conn.execute(
                "UPDATE users SET missing = 1, last_profile_check = ?, "
                "swept_in = MAX(swept_in, ?) WHERE id = ?",
                (us(now), sweep, user_id),
            )
            await self._release(conn, "id = :id", {"id": user_id})
            return users[0].held

        return await self._write(unit)

    async def mark_swept(self, user_id: int, sweep: int) -> None:
        """Count a user as visited by ``sweep`` without a profile (gave up on it)."""
        await self._write(
            lambda conn: conn.execute(
                "UPDATE users SET swept_in = MAX(swept_in, ?) WHERE id = ?", (sweep, user_id)
            )
        )

    # -- outbox --------------------------------------------------------------

    async def drain_outbox(self) -> list[EloDelta]:
        """Return and delete every outbox row, in ``seq`` order, in one transaction.

        If the caller is cancelled after the delete committed, the rows are kept
        here and returned first by the next call: nothing is lost.
        """

        async def unit(conn: aiosqlite.Connection) -> list[EloDelta]:
            rows = await outbox_rows(conn, 0)
            if rows:
                await conn.execute("DELETE FROM outbox WHERE seq <= ?", (rows[-1].seq,))
            return rows

        # once committed the rows live only here, until a caller receives them
        await self._write(unit, on_commit=self._drained.extend)
        rows, self._drained = self._drained, []
        return rows

    async def ack_outbox(self, upto_seq: int) -> int:
        """Delete outbox rows with ``seq <= upto_seq`` (delivered). Returns how many."""

        async def unit(conn: aiosqlite.Connection) -> int:
            cur = await conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))
            return cur.rowcount

        return await self._write(unit)
