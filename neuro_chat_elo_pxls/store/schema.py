"""The database schema: the newest DDL, and the migrations that bring older files to it.

A fresh database gets :data:`LATEST` directly; an older one runs the migrations
after its ``PRAGMA user_version`` in order, each in its own ``BEGIN IMMEDIATE``
transaction. Old migrations never change: each states its schema literally.
Times in ``users`` and ``outbox`` are integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import logging
import os
import sqlite3

import aiosqlite

from ..errors import SchemaTooNewError, StoreError

log = logging.getLogger("neuro_chat_elo_pxls")

#: ``PRAGMA synchronous`` of every connection that writes (DESIGN 3, "durable before
#: handed out"). In WAL mode ``NORMAL`` syncs the WAL only at checkpoints: a commit can
#: still roll back after a power loss or an OS crash, so a delta already handed out (or
#: its drain) could be undone and handed out again, or its score update lost while the
#: host keeps the delta. ``FULL`` syncs the WAL at every commit, so a commit has reached
#: the disk before the next unit (a drain, a peek for ``run --out``) can hand out what it
#: made. It is set for every commit rather than only the ones that hand out: a score
#: update is handed out by the next drain, the drain's removal must be durable before it
#: returns, and telling the others apart would save little. Cost: one WAL fsync per
#: commit (a pull, a profile read, a drain or acknowledgement, a state save). Counted
#: in traced runs of tests/power_loss_workload.py (40 users, 24 simulated hours): the
#: database's fsyncs went from 5 to 204 (drain host) and from 8 to 574 (``run --out``
#: loop, following a faction), i.e. 8.5 and 24 an hour instead of well under 1; they
#: grow with profile reads (a daily sweep reads every user once).
SYNCHRONOUS = "FULL"


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


#: schema 4: the outbox also says where a change was observed (toplist or profile)
_ACCOUNTING_TRIGGERS_V4 = """
CREATE TRIGGER users_outbox_update AFTER UPDATE OF score, canvas ON users
WHEN NEW.canvas IS NOT NULL
    AND NEW.score != (CASE WHEN OLD.canvas IS NEW.canvas THEN OLD.score ELSE 0 END)
BEGIN
    INSERT INTO outbox (user, pxls_id, discord, faction_id, faction_tag, faction_name,
                        faction_color, delta, score, canvas, observed_at, via)
    VALUES (NEW.name, NEW.pxls_id, NEW.discord, NEW.faction_id, NEW.faction_tag,
            NEW.faction_name, NEW.faction_color,
            NEW.score - (CASE WHEN OLD.canvas IS NEW.canvas THEN OLD.score ELSE 0 END),
            NEW.score, NEW.canvas, COALESCE(NEW.observed_at, NEW.last_seen),
            COALESCE(NEW.observed_via, 'toplist'));
END;
CREATE TRIGGER users_outbox_insert AFTER INSERT ON users
WHEN NEW.canvas IS NOT NULL AND NEW.score != 0
BEGIN
    INSERT INTO outbox (user, pxls_id, discord, faction_id, faction_tag, faction_name,
                        faction_color, delta, score, canvas, observed_at, via)
    VALUES (NEW.name, NEW.pxls_id, NEW.discord, NEW.faction_id, NEW.faction_tag,
            NEW.faction_name, NEW.faction_color, NEW.score, NEW.score, NEW.canvas,
            COALESCE(NEW.observed_at, NEW.last_seen), COALESCE(NEW.observed_via, 'toplist'));
END;
"""


#: schema 5: ``opted_out`` (the database's own list, and every name it recognises an
#: opted-out person by: the name as listed, the stable pxls id once known) and
#: ``credited`` (per name and canvas, the score of its last outbox row: what a host
#: holds once it has collected everything; kept by a trigger, so every path counts)
_OPT_OUT_TABLES = """
CREATE TABLE opted_out (
    name TEXT PRIMARY KEY,
    pxls_id INTEGER,
    listed_by TEXT NOT NULL,
    since INTEGER NOT NULL,
    applied_at INTEGER
);
CREATE INDEX opted_out_id ON opted_out (pxls_id) WHERE pxls_id IS NOT NULL;
CREATE TABLE credited (
    user TEXT NOT NULL,
    canvas TEXT NOT NULL,
    score INTEGER NOT NULL,
    pxls_id INTEGER,
    PRIMARY KEY (user, canvas)
);
CREATE TRIGGER outbox_credited AFTER INSERT ON outbox
BEGIN
    INSERT INTO credited (user, canvas, score, pxls_id)
    VALUES (NEW.user, NEW.canvas, NEW.score, NEW.pxls_id)
    ON CONFLICT (user, canvas) DO UPDATE SET score = excluded.score,
        pxls_id = COALESCE(excluded.pxls_id, credited.pxls_id);
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
    # 4: following people beyond the top 1000. users.followed: 1 = named in the config
    # (follow, follow_file), 2 = displayed faction in follow_factions, 4 = added by the
    # host; users.observed_via and outbox.via: where a change was observed.
    """
    ALTER TABLE users ADD COLUMN observed_via TEXT;
    ALTER TABLE users ADD COLUMN followed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE outbox ADD COLUMN via TEXT NOT NULL DEFAULT 'toplist';
    CREATE INDEX users_follow ON users (last_profile_check) WHERE followed != 0;
    DROP TRIGGER users_outbox_update;
    DROP TRIGGER users_outbox_insert;
    """
    + _ACCOUNTING_TRIGGERS_V4,
    # 5: people who asked not to be counted, and what each name was credited per canvas
    # (a withdrawal hands out minus that, on every canvas)
    _OPT_OUT_TABLES
    + """
    INSERT INTO credited (user, canvas, score, pxls_id)
        SELECT name, canvas, score, pxls_id FROM users WHERE canvas IS NOT NULL;
    """,
    # 6: the last profile reading that paired the canvas count with the all-time count
    # on a confirmed canvas: after a reset it settles the old canvas (DESIGN 3, "the last
    # pixels of a canvas count")
    """
    ALTER TABLE users ADD COLUMN pair_canvas TEXT;
    ALTER TABLE users ADD COLUMN pair_count INTEGER;
    ALTER TABLE users ADD COLUMN pair_alltime INTEGER;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: the newest schema, for a database created by this version (= migrations 1-6)
LATEST = (
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
        held_observed_at INTEGER,
        held_since INTEGER,
        missing INTEGER NOT NULL DEFAULT 0,
        enriched INTEGER NOT NULL DEFAULT 0,
        last_profile_check INTEGER,
        swept_in INTEGER NOT NULL DEFAULT 0,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        observed_at INTEGER,
        observed_via TEXT,
        followed INTEGER NOT NULL DEFAULT 0,
        pair_canvas TEXT,
        pair_count INTEGER,
        pair_alltime INTEGER
    );
    CREATE INDEX users_held ON users (held_since) WHERE held_score IS NOT NULL;
    CREATE INDEX users_follow ON users (last_profile_check) WHERE followed != 0;
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
        observed_at INTEGER NOT NULL,
        via TEXT NOT NULL DEFAULT 'toplist'
    );
    CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT);
    """
    + _ACCOUNTING_TRIGGERS_V4
    + _OPT_OUT_TABLES
)


async def prepare(conn: aiosqlite.Connection, path: str) -> None:
    """Set the connection up (WAL, PRAGMAs), check SQLite's features and the file's
    version, and bring the file to :data:`SCHEMA_VERSION`. :class:`StoreError` (or
    :class:`SchemaTooNewError`) says what is wrong."""
    if sqlite3.sqlite_version_info < (3, 35):
        raise StoreError(
            f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or newer is needed "
            "(upsert, DROP COLUMN)"
        )
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        # deleted rows are overwritten, not left in free pages (an opted-out person's
        # Discord name and faction must be gone from the file, DESIGN 10)
        await conn.execute("PRAGMA secure_delete=ON")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        try:
            await conn.execute("SELECT json_valid('{}')")
        except sqlite3.OperationalError as exc:
            raise StoreError(
                f"SQLite {sqlite3.sqlite_version} lacks the JSON functions (json1), "
                "which the ingest needs"
            ) from exc
        version = await user_version(conn)
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the database has schema version {version}, but this version of "
                f"neuro-chat-elo-pxls knows only up to {SCHEMA_VERSION}: upgrade "
                "the package (or point db_path at a new file; it is only a cache)"
            )
        if version < SCHEMA_VERSION:
            await upgrade(conn, version)
    except sqlite3.Error as exc:
        raise unusable(path, exc) from exc


def unusable(path: str, exc: sqlite3.Error) -> StoreError:
    """The error for a database file that cannot be used, with its likely cause: a
    read-only *directory* shows as "attempt to write a readonly database", because
    WAL mode keeps ``-wal`` and ``-shm`` files beside the database."""
    if "readonly" in str(exc):
        return StoreError(
            f"{path}: cannot write the database ({exc}): the file and its directory must "
            f"be writable by this user (SQLite's WAL mode keeps {os.path.basename(path)}-wal "
            "and -shm beside it)"
        )
    return StoreError(f"{path}: not a usable SQLite database: {exc}")


async def user_version(conn: aiosqlite.Connection) -> int:
    """The schema version written in the file (0: empty)."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


# The first migration 2, written by two early development versions (commits edea021
# and 3fc6975) and rewritten later under the same number, was only
#     DROP INDEX IF EXISTS users_sweep;
#     CREATE INDEX users_dirty ON users (dirty, id);
# so such a "version 2" file still has schema 1's tables (the ``dirty`` column, no
# ``users.observed_at``, no accounting triggers) plus that index.

#: run before today's migration 2 on such a file: its tables are schema 1's, and its
#: index on ``dirty`` would stop migration 2 from dropping that column
_UNDO_EARLY_MIGRATION_2 = "DROP INDEX IF EXISTS users_dirty;"


async def _columns(conn: aiosqlite.Connection, table: str) -> set[str]:
    async with conn.execute(f"PRAGMA table_info({table})") as cur:  # (a literal name)
        return {str(row[1]) for row in await cur.fetchall()}


async def _early_version_2(conn: aiosqlite.Connection, version: int) -> bool:
    """Whether a file at ``version`` 2 was written by the early migration 2 (see
    above): schema 1's ``users`` table, ``dirty`` and no ``observed_at``."""
    if version != 2:
        return False
    columns = await _columns(conn, "users")
    return "dirty" in columns and "observed_at" not in columns


async def upgrade(conn: aiosqlite.Connection, version: int) -> None:
    """Bring a database at ``version`` (< :data:`SCHEMA_VERSION`) to the newest schema.

    ``conn`` is in autocommit mode; each step is one ``BEGIN IMMEDIATE`` transaction,
    so a crash leaves the file at a whole version. A "version 2" file of the early
    migration 2 holds schema 1's tables: it gets today's migration 2 (after its own
    index is dropped) and everything after.
    """
    early = await _early_version_2(conn, version)
    if early:
        log.info(
            "database of an early development version (schema 1's tables, marked version "
            "2): migrating it from schema 1"
        )
        version = 1
    steps = (
        [(SCHEMA_VERSION, LATEST)]
        if version == 0
        else [(number, MIGRATIONS[number - 1]) for number in range(version + 1, SCHEMA_VERSION + 1)]
    )
    if early:
        steps[0] = (2, _UNDO_EARLY_MIGRATION_2 + MIGRATIONS[1])
    for number, script in steps:
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in split_sql(script):
                await conn.execute(statement)
            await conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")


def split_sql(script: str) -> list[str]:
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
