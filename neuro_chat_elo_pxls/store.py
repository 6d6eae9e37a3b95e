"""``Store``: the SQLite cache (aiosqlite) of users, the delta outbox and scheduler state.

Contracts:

* One writer: opening takes an exclusive lock file beside the database, so a second
  source (this process or another) fails with :class:`StoreLockedError`.
* WAL journal; every write is one ``BEGIN IMMEDIATE`` transaction. A score update
  and the outbox rows it produces commit together (conservation across crashes).
* Schema migrations run in order and are tracked by ``PRAGMA user_version``; a
  database newer than the code raises :class:`SchemaTooNewError`.
* Times are stored as ISO-8601 UTC text with microseconds (sortable as text).
* Accounting: ``users.score`` is the last score handed out on ``users.canvas``; the
  sum of the outbox deltas of a user on a canvas always equals it. A new user's
  first score waits in ``held_*`` until released.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import IO, Any, cast

import aiosqlite
import attrs

from .errors import SchemaTooNewError, StoreError, StoreLockedError
from .models import EloDelta, Faction, Profile, Snapshot


def _iso_to_us(column: str) -> str:
    """SQL: a time stored by schema 1-2 (``ts()`` text, always ``+00:00`` and six
    fraction digits) → microseconds since the epoch; NULL stays NULL."""
    return (
        f"CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000 "
        f"+ CAST(substr({column}, 21, 6) AS INTEGER)"
    )


#: whenever a user's handed-out (score, canvas) changes, the difference goes to the
#: outbox in the same statement, so conservation holds whatever code writes a score
_ACCOUNTING_TRIGGERS = """
CREATE TRIGGER users_outbox_update AFTER UPDATE OF score, canvas ON users
WHEN NEW.canvas IS NOT NULL
    AND NEW.score != (CASE WHEN OLD.canvas IS NEW.canvas THEN OLD.score ELSE 0 END)
BEGIN
    INSERT INTO outbox (user, pxls_id, discord, faction_id, faction_tag, faction_name,
                        faction_color, delta, score, canvas, observed_at)
    VALUES (NEW.name, NEW.pxls_id, NEW.discord, NEW.faction_id, NEW.faction_tag,
            NEW.faction_name, NEW.faction_color,
            NEW.score - (CASE WHEN OLD.canvas IS NEW.canvas THEN OLD.score ELSE 0 END),
            NEW.score, NEW.canvas, COALESCE(NEW.observed_at, NEW.last_seen));
END;
CREATE TRIGGER users_outbox_insert AFTER INSERT ON users
WHEN NEW.canvas IS NOT NULL AND NEW.score != 0
BEGIN
    INSERT INTO outbox (user, pxls_id, discord, faction_id, faction_tag, faction_name,
                        faction_color, delta, score, canvas, observed_at)
    VALUES (NEW.name, NEW.pxls_id, NEW.discord, NEW.faction_id, NEW.faction_tag,
            NEW.faction_name, NEW.faction_color, NEW.score, NEW.score, NEW.canvas,
            COALESCE(NEW.observed_at, NEW.last_seen));
END;
"""


MIGRATIONS: tuple[str, ...] = (
    # 1: initial schema
    """
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
        dirty INTEGER NOT NULL DEFAULT 1,  -- dropped by migration 2 (derived since)
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
    """,
    # 2: accounting in the database, and "dirty" derived instead of written.
    # * Whenever a user's handed-out (score, canvas) changes, the difference goes to
    #   the outbox in the same statement (triggers): conservation holds by
    #   construction, whatever code path writes a score.
    # * dirty = seen in a pull since the last profile check (last_seen >
    #   last_profile_check); the sweep walks ids with a cursor (no index, no sort).
    """
    DROP INDEX IF EXISTS users_sweep;
    ALTER TABLE users DROP COLUMN dirty;
    ALTER TABLE users ADD COLUMN observed_at TEXT;
    UPDATE users SET observed_at = last_seen WHERE observed_at IS NULL;
    """
    + _ACCOUNTING_TRIGGERS,
    # 3: times in users and outbox as INTEGER microseconds since the Unix epoch (UTC)
    # instead of 32-character ISO text: a pull rewrites every listed user's row, and
    # narrower rows make that rewrite cheaper (~15-20 % at 100,000 users). SQLite cannot
    # change a column's type in place, so both tables are rebuilt (ids, seq and the
    # AUTOINCREMENT counter kept); the indexes and triggers are made again.
    f"""
    CREATE TABLE users_v3 (
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
        held_observed_at INTEGER,
        held_since INTEGER,
        missing INTEGER NOT NULL DEFAULT 0,
        enriched INTEGER NOT NULL DEFAULT 0,
        last_profile_check INTEGER,
        swept_in INTEGER NOT NULL DEFAULT 0,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        observed_at INTEGER
    );
    INSERT INTO users_v3 SELECT id, name, pxls_id, discord, faction_id, faction_tag,
        faction_name, faction_color, score, canvas, held_score, held_canvas,
        {_iso_to_us("held_observed_at")}, {_iso_to_us("held_since")}, missing, enriched,
        {_iso_to_us("last_profile_check")}, swept_in, {_iso_to_us("first_seen")},
        {_iso_to_us("last_seen")}, {_iso_to_us("observed_at")}
    FROM users;
    DROP TABLE users;
    ALTER TABLE users_v3 RENAME TO users;
    CREATE INDEX users_held ON users (held_since) WHERE held_score IS NOT NULL;
    CREATE TABLE outbox_v3 (
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
        observed_at INTEGER NOT NULL
    );
    INSERT INTO outbox_v3 SELECT seq, user, pxls_id, discord, faction_id, faction_tag,
        faction_name, faction_color, delta, score, canvas, {_iso_to_us("observed_at")}
    FROM outbox;
    DELETE FROM sqlite_sequence WHERE name = 'outbox_v3';
    INSERT INTO sqlite_sequence (name, seq) SELECT 'outbox_v3', seq FROM sqlite_sequence
        WHERE name = 'outbox';
    DROP TABLE outbox;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    """
    + _ACCOUNTING_TRIGGERS,
)
SCHEMA_VERSION = len(MIGRATIONS)

_USER_COLS = (
    "id, name, pxls_id, discord, faction_id, faction_tag, faction_name, faction_color, "
    "score, canvas, held_score, held_canvas, held_observed_at, held_since, swept_in"
)
#: the columns :meth:`Store.export_users` returns, in order
EXPORT_FIELDS = (
    "name",
    "pxls_id",
    "discord",
    "faction_id",
    "faction_tag",
    "faction_name",
    "score",
    "canvas",
)
#: a user seen in a pull since its last profile check (the sweep visits these first)
DIRTY = "(last_profile_check IS NULL OR last_seen > last_profile_check)"
#: the whole snapshot in one statement: ?1 a JSON object {name: pixels} (json_each
#: yields key = name, value = pixels, in toplist order), ?2 canvas, ?3 generatedAt,
#: ?4 host time. One statement instead of ``executemany``: SQLite walks the rows in
#: C and sets the accounting triggers up once, not once per row (566 → 407 ms for
#: 100,000 changed rows when measured; see benchmarks/RESULTS.md).
_UPSERT_SET = (
    "ON CONFLICT (name) DO UPDATE SET "
    "score = CASE WHEN held_score IS NULL THEN excluded.score ELSE score END, "
    "canvas = CASE WHEN held_score IS NULL THEN ?2 ELSE canvas END, "
    "observed_at = CASE WHEN held_score IS NULL THEN ?3 ELSE observed_at END, "
    "held_score = CASE WHEN held_score IS NULL THEN NULL ELSE excluded.score END, "
    "held_observed_at = CASE WHEN held_score IS NULL THEN NULL ELSE ?3 END, "
    "last_seen = ?4"
)
#: a new user's first score is held until its profile is read (the row it would
#: insert has score 0 and the pixels in held_score, so an update reads the latter)
_UPSERT_HOLD = (
    "INSERT INTO users (name, score, held_score, held_canvas, held_observed_at, held_since, "
    "first_seen, last_seen) SELECT key, 0, value, ?2, ?3, ?4, ?4, ?4 FROM json_each(?1) "
    "WHERE true " + _UPSERT_SET.replace("excluded.score", "excluded.held_score")
)
#: a new user's first score is handed out at once (no profiles)
_UPSERT_RELEASE = (
    "INSERT INTO users (name, score, canvas, observed_at, first_seen, last_seen) "
    "SELECT key, value, ?2, ?3, ?4, ?4 FROM json_each(?1) WHERE true " + _UPSERT_SET
)


def ts(value: datetime) -> str:
    """Aware datetime → text for the ``state`` table (UTC, microseconds)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def us(value: datetime) -> int:
    """Aware datetime → a time column's value (microseconds since the epoch, exact)."""
    return (value - _EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    """A time column's value → aware UTC datetime (None stays None)."""
    return None if value is None else _EPOCH + timedelta(microseconds=value)


@attrs.define
class UserRow:
    """A user as the accounting code sees it (mutable working copy)."""

    id: int
    name: str
    pxls_id: int | None
    discord: str | None
    faction_id: int | None
    faction_tag: str | None
    faction_name: str | None
    faction_color: int | None
    score: int
    canvas: str | None
    held_score: int | None
    held_canvas: str | None
    held_observed_at: int | None
    held_since: int | None
    swept_in: int

    @property
    def held(self) -> bool:
        return self.held_score is not None


@attrs.frozen
class IngestResult:
    """What one snapshot did: counts for the pull's log line."""

    seen: int
    new: int
    deltas: int
    held: int
    unchanged: int


@attrs.frozen
class ProfileOutcome:
    """What applying a profile did. ``renamed_from``: the old name merged into this user."""

    released: bool
    renamed_from: str | None
    corrected: int


class _Lock:
    """An exclusive, non-blocking ``flock`` on ``<db>.lock`` for the store's lifetime."""

    def __init__(self, path: str) -> None:
        self._file: IO[str] | None = None
        self.path = path

    def acquire(self) -> None:
        handle = open(self.path, "a+")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreLockedError(
                f"{self.path}: the database is already in use by another pxls source "
                "(two sources on one database would corrupt its accounting)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


class Store:
    """Async access to the database. Create with :meth:`open`; close with :meth:`close`."""

    def __init__(self, conn: aiosqlite.Connection, lock: _Lock | None) -> None:
        self._conn = conn
        self._lock = lock

    @classmethod
    async def open_readonly(cls, path: str) -> Store:
        """Open an existing, current database for reading only (no lock, no migration).

        For operators' tools (``status``, ``export``) while a source runs.
        """
        if not os.path.exists(path):  # noqa: ASYNC240 - one stat, before any I/O
            raise StoreError(f"{path}: no such database (has the source run yet?)")
        try:
            conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
            store = cls(conn, None)
            version = await store._user_version()
        except aiosqlite.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable SQLite database: {exc}") from exc
        if version > SCHEMA_VERSION:
            await store.close()
            raise SchemaTooNewError(
                f"{path} has schema version {version}; this version of neuro-chat-elo-pxls "
                f"knows up to {SCHEMA_VERSION}: upgrade the package"
            )
        if version < SCHEMA_VERSION:
            await store.close()
            raise StoreError(
                f"{path} has schema version {version}: run the source once to migrate it"
            )
        return store

    @classmethod
    async def open(cls, path: str) -> Store:
        """Open (creating if needed) and migrate the database at ``path``."""
        lock = None
        if path != ":memory:":
            lock = _Lock(path + ".lock")
            lock.acquire()
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except Exception as exc:
            if lock:
                lock.release()
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        store = cls(conn, lock)
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
            version = await self._user_version()
        except aiosqlite.DatabaseError as exc:
            raise StoreError(f"not a usable SQLite database: {exc}") from exc
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the database has schema version {version}, but this version of "
                f"neuro-chat-elo-pxls knows only up to {SCHEMA_VERSION}: upgrade the package "
                "(or point db_path at a new file; it is only a cache)"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            async with self.transaction():
                for statement in _split_sql(MIGRATIONS[number - 1]):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={number}")

    async def _user_version(self) -> int:
        return await self._scalar(self._conn, "PRAGMA user_version")

    async def close(self) -> None:
        """Close the connection and release the lock. Idempotent."""
        with contextlib.suppress(Exception):
            await self._conn.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; ``ROLLBACK`` on any exception."""
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        await self._conn.execute("COMMIT")

    # -- state ---------------------------------------------------------------

    async def get_state(self) -> dict[str, str]:
        async with self._conn.execute("SELECT key, value FROM state") as cur:
            return {row[0]: row[1] for row in await cur.fetchall()}

    @staticmethod
    async def _set_state(conn: aiosqlite.Connection, values: dict[str, str | None]) -> None:
        await conn.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(values.items()),
        )

    async def set_state(self, **values: str | None) -> None:
        async with self.transaction() as conn:
            await self._set_state(conn, values)

    # -- users ---------------------------------------------------------------

    @staticmethod
    async def _fetch_users(
        conn: aiosqlite.Connection, where: str, params: Sequence[Any] = ()
    ) -> list[UserRow]:
        async with conn.execute(f"SELECT {_USER_COLS} FROM users {where}", params) as cur:
            return [UserRow(*row) for row in await cur.fetchall()]

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

    async def get_user(self, user_id: int) -> UserRow | None:
        users = await self._fetch_users(self._conn, "WHERE id = ?", (user_id,))
        return users[0] if users else None

    async def ingest(
        self,
        canvas: str,
        snapshot: Snapshot,
        now: datetime,
        *,
        hold_new: bool,
        state: dict[str, str | None],
    ) -> IngestResult:
        """Apply one snapshot of ``canvas`` in one transaction (with ``state`` updates).

        One statement upserts the whole snapshot (``snapshot.toplist`` through
        ``json_each``; the event loop does no per-user work); the outbox rows come
        from the accounting triggers. Known user: new score (its
        delta is ``new - baseline``, baseline 0 on another canvas; zero deltas make no
        row). Held user: the held score is replaced. New user: held when
        ``hold_new``, else handed out at once. Every user seen is marked dirty.
        Users still held for an older canvas are handed out first.
        """
        ctx = {"canvas": canvas, "obs": us(snapshot.generated_at), "now": us(now)}
        async with self.transaction() as conn:
            await self._release(conn, "held_canvas != :canvas", ctx)
            before = await self._scalar(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")
            users_before = await self._scalar(conn, "SELECT COUNT(*) FROM users")
            await conn.execute(
                _UPSERT_HOLD if hold_new else _UPSERT_RELEASE,
                (snapshot.toplist.decode(), canvas, ctx["obs"], ctx["now"]),
            )
            await self._set_state(conn, state)
            deltas = await self._scalar(conn, "SELECT COUNT(*) FROM outbox WHERE seq > ?", before)
            new = await self._scalar(conn, "SELECT COUNT(*) FROM users") - users_before
            held = await self._scalar(
                conn, "SELECT COUNT(*) FROM users WHERE held_score IS NOT NULL"
            )
        return IngestResult(
            seen=len(snapshot),
            new=new,
            deltas=deltas,
            held=held,
            unchanged=len(snapshot) - new - deltas if not hold_new else len(snapshot) - deltas,
        )

    @staticmethod
    async def _scalar(conn: aiosqlite.Connection, sql: str, *params: Any) -> int:
        async with conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row and row[0] is not None else 0

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

    async def held_user_ids(self, limit: int, exclude: set[int]) -> list[int]:
        """Up to ``limit`` users whose first delta waits for their profile, oldest first."""
        async with self._conn.execute(
            "SELECT id FROM users WHERE held_score IS NOT NULL ORDER BY held_since, id LIMIT ?",
            (limit + len(exclude),),
        ) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        return [i for i in ids if i not in exclude][:limit]

    async def earliest_hold(self) -> datetime | None:
        """``held_since`` of the longest-held user, or None."""
        async with self._conn.execute(
            "SELECT MIN(held_since) FROM users WHERE held_score IS NOT NULL"
        ) as cur:
            row = await cur.fetchone()
        return from_us(row[0]) if row else None

    async def release_held(self, held_before: datetime | None) -> int:
        """Hand out held scores held since ``held_before`` or earlier (None: all).

        Returns how many users were released.
        """
        async with self.transaction() as conn:
            if held_before is None:
                return await self._release(conn, "1", {})
            return await self._release(conn, "held_since <= :before", {"before": us(held_before)})

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
        renamed_from: str | None = None
        corrected = 0
        async with self.transaction() as conn:
            users = await self._fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return ProfileOutcome(False, None, 0)
            user = users[0]
            if profile.pxls_id is not None:
                others = await self._fetch_users(
                    conn, "WHERE pxls_id = ? AND id != ?", (profile.pxls_id, user.id)
                )
                if others:
                    old = others[0]
                    renamed_from = old.name
                    canvas = user.held_canvas if user.held else user.canvas
                    if old.score and old.canvas is not None and old.canvas == canvas:
                        corrected = old.score  # withdrawn by the trigger: -old, score 0
                        await conn.execute(
                            "UPDATE users SET score = 0, observed_at = ? WHERE id = ?",
                            (
                                us(now) if user.held_observed_at is None else user.held_observed_at,
                                old.id,
                            ),
                        )
                    user.swept_in = max(user.swept_in, old.swept_in)
                    await conn.execute("DELETE FROM users WHERE id = ?", (old.id,))
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

    async def mark_missing(self, user_id: int, now: datetime, sweep: int) -> bool:
        """The profile 404'd: mark the name missing, release a held delta. True if released."""
        async with self.transaction() as conn:
            users = await self._fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return False
            user = users[0]
            await conn.execute(
                "UPDATE users SET missing = 1, last_profile_check = ?, "
                "swept_in = MAX(swept_in, ?) WHERE id = ?",
                (us(now), sweep, user.id),
            )
            await self._release(conn, "id = :id", {"id": user.id})
        return user.held

    async def mark_swept(self, user_id: int, sweep: int) -> None:
        """Count a user as visited by ``sweep`` without a profile (gave up on it)."""
        async with self.transaction() as conn:
            await conn.execute(
                "UPDATE users SET swept_in = MAX(swept_in, ?) WHERE id = ?", (sweep, user_id)
            )

    async def sweep_ids(
        self, sweep: int, after_dirty: int, after_clean: int, limit: int
    ) -> tuple[bool, list[int]]:
        """The next users not yet visited by ``sweep``: dirty ones first, then the rest.

        Walks ids upward from the cursors (indexed, no sort), so a refill costs the
        same at the start and the end of a 100,000-user sweep. Returns
        ``(dirty_phase, ids)``. Missing (404) names are only visited when dirty.
        """
        async with self._conn.execute(
            f"SELECT id FROM users WHERE {DIRTY} AND swept_in < ? AND id > ? ORDER BY id LIMIT ?",
            (sweep, after_dirty, limit),
        ) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        if ids:
            return True, ids
        async with self._conn.execute(
            "SELECT id FROM users WHERE swept_in < ? AND missing = 0 AND id > ? ORDER BY id "
            "LIMIT ?",
            (sweep, after_clean, limit),
        ) as cur:
            return False, [row[0] for row in await cur.fetchall()]

    async def count_sweep_remaining(self, sweep: int) -> int:
        async with self._conn.execute(
            f"SELECT COUNT(*) FROM users WHERE swept_in < ? AND (missing = 0 OR {DIRTY})",
            (sweep,),
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # -- outbox --------------------------------------------------------------

    async def drain_outbox(self) -> list[EloDelta]:
        """Return and delete every outbox row, in ``seq`` order, in one transaction."""
        async with self.transaction() as conn:
            rows = await self._outbox_rows(conn, 0)
            if rows:
                await conn.execute("DELETE FROM outbox WHERE seq <= ?", (rows[-1].seq,))
        return rows

    async def peek_outbox(self, after_seq: int) -> list[EloDelta]:
        """Outbox rows with ``seq > after_seq``, in order, without removing them."""
        return await self._outbox_rows(self._conn, after_seq)

    async def ack_outbox(self, upto_seq: int) -> int:
        """Delete outbox rows with ``seq <= upto_seq`` (delivered). Returns how many."""
        async with self.transaction() as conn:
            cur = await conn.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))
            return cur.rowcount

    @staticmethod
    async def _outbox_rows(conn: aiosqlite.Connection, after_seq: int) -> list[EloDelta]:
        async with conn.execute(
            "SELECT seq, user, pxls_id, discord, faction_id, faction_tag, faction_name, "
            "faction_color, delta, score, canvas, observed_at FROM outbox WHERE seq > ? "
            "ORDER BY seq",
            (after_seq,),
        ) as cur:
            # rows become EloDeltas as SQLite yields them, in aiosqlite's thread: the
            # event loop is not held (~0.1 s per 100,000) and no list of row tuples
            # is built only to be thrown away
            cur.row_factory = _delta_factory()  # type: ignore[assignment]
            return cast(list[EloDelta], await cur.fetchall())

    # -- operators -----------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Users total / dirty / held / missing / never enriched, and the outbox size."""
        async with self._conn.execute(
            f"SELECT COUNT(*), COALESCE(SUM({DIRTY}), 0), COUNT(held_score), "
            "COALESCE(SUM(missing), 0), COALESCE(SUM(1 - enriched), 0) FROM users"
        ) as cur:
            row = await cur.fetchone()
        async with self._conn.execute("SELECT COUNT(*) FROM outbox") as cur:
            outbox = await cur.fetchone()
        assert row is not None and outbox is not None
        return {
            "users": int(row[0]),
            "dirty": int(row[1]),
            "awaiting_enrichment": int(row[2]),
            "missing": int(row[3]),
            "never_enriched": int(row[4]),
            "outbox": int(outbox[0]),
        }

    async def export_users(self) -> list[dict[str, Any]]:
        """Every user with a handed-out score, for exports (highest score first)."""
        async with self._conn.execute(
            "SELECT name, pxls_id, discord, faction_id, faction_tag, faction_name, score, "
            "canvas FROM users WHERE canvas IS NOT NULL ORDER BY score DESC, name"
        ) as cur:
            rows = await cur.fetchall()
        return [dict(zip(EXPORT_FIELDS, row, strict=True)) for row in rows]


ToplistLike = tuple[str, int]


def _delta_factory() -> Callable[[sqlite3.Cursor, tuple[Any, ...]], EloDelta]:
    """A row factory: outbox row → EloDelta. Times and factions repeat a lot: each
    is built once per call of the factory."""
    times: dict[int, datetime] = {}
    factions: dict[tuple[Any, ...], Faction] = {}

    def make(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> EloDelta:
        seq, user, pxls_id, discord, fid, ftag, fname, fcolor, delta, score, canvas, obs = row
        observed_at = times.get(obs)
        if observed_at is None:
            observed_at = times[obs] = _EPOCH + timedelta(microseconds=obs)
        faction = None
        if fid is not None:
            key = (fid, ftag, fname, fcolor)
            faction = factions.get(key)
            if faction is None:
                faction = factions[key] = Faction(fid, ftag or "", fname or "", fcolor)
        return EloDelta(seq, user, pxls_id, discord, faction, delta, score, canvas, observed_at)

    return make


def _split_sql(script: str) -> list[str]:
    """Statements of a migration script (a trigger body's ``;`` stays inside it)."""
    statements: list[str] = []
    current = ""
    for part in script.split(";"):
        current += part + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip())
            current = ""
    return statements
