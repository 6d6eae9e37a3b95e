"""People who asked not to be counted (DESIGN 10): the opt-out list and what opting out
does to the database.

The list merges three places: the config's ``opt_out`` names and ``opt_out_file``
(handed in by the source each tick as ``listed``) and the database's own list, kept by
the CLI (``opt-out add/remove``, ``forget``) in the ``opted_out`` table, which also
remembers every name an opted-out person is recognised by (the name as listed, and the
stable pxls id once known, so a rename does not bring them back).

:func:`apply` does, in one transaction, for everyone listed and not yet applied:

* **withdraws** what was credited: per name and canvas, one outbox row of minus the
  score of that name's last outbox row on that canvas (``via = 'opt-out'``, score 0),
  so a host that collects everything holds 0 for them;
* **erases** their personal data: the user rows (Discord name, faction, counts,
  held deltas, follow marks), the ``credited`` rows, and the Discord name and faction
  of their outbox rows not yet collected (the deltas stay: the sums must reach 0);
  ``PRAGMA secure_delete`` (set at open) overwrites what is deleted, and
  :func:`checkpoint` empties the WAL afterwards.

From then on nothing of theirs is written: the toplist upsert and the follow marks skip
listed names (:data:`NOT_OPTED_OUT`), so no delta and no profile request. Removing a
name from every list makes them a new user again. All functions run inside the
caller's unit (one :class:`~.connection.Database` transaction) unless said otherwise;
times are microseconds since the epoch.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence

import aiosqlite
import attrs

from ..errors import StoreError
from . import schema
from .connection import scalar

#: a SQL condition on a name column: it is on no opt-out list of the database
NOT_OPTED_OUT = "NOT IN (SELECT name FROM opted_out)"

#: who put a name on the database's list: the CLI, the config (mirrored each tick), or
#: the source itself (a listed person's new name, recognised by the pxls id)
LISTED_BY = ("cli", "config", "rename")


@attrs.frozen
class Applied:
    """What one :func:`apply` did: people newly applied, withdrawal rows written, the
    points withdrawn (their absolute sum), user rows erased, names the config no longer
    lists (back in)."""

    people: int = 0
    withdrawals: int = 0
    points: int = 0
    erased: int = 0
    back_in: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.people or self.back_in)


async def add(conn: aiosqlite.Connection, names: Iterable[str], by: str, now: int) -> int:
    """Put ``names`` on the database's list (``by``: one of :data:`LISTED_BY`); a name
    listed already keeps its entry, but one the source listed as a rename becomes the
    operator's own (taking another of the person's names off the list keeps it).
    Returns how many were new."""
    before = await scalar(conn, "SELECT COUNT(*) FROM opted_out")
    await conn.executemany(
        "INSERT INTO opted_out (name, listed_by, since) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET listed_by = excluded.listed_by "
        "WHERE opted_out.listed_by = 'rename'",
        [(name, by, now) for name in names],
    )
    return await scalar(conn, "SELECT COUNT(*) FROM opted_out") - before


async def remove(conn: aiosqlite.Connection, names: Iterable[str]) -> int:
    """Take ``names`` off the database's list, with the names the source listed as the
    same person's renames (same pxls id); names listed by the operator or the config
    stay. They are counted again, as new users. Returns how many entries went."""
    wanted = json.dumps(sorted(set(names)))
    # the ids first: a DELETE whose subquery reads the same table sees the rows it has
    # already deleted gone (SQLite evaluates it row by row), and kept the other names
    ids = await _rows(
        conn,
        "SELECT DISTINCT pxls_id FROM opted_out WHERE pxls_id IS NOT NULL "
        "AND name IN (SELECT value FROM json_each(:names))",
        {"names": wanted},
    )
    cur = await conn.execute(
        "DELETE FROM opted_out WHERE name IN (SELECT value FROM json_each(:names)) "
        "OR (listed_by = 'rename' AND pxls_id IN (SELECT value FROM json_each(:ids)))",
        {"names": wanted, "ids": json.dumps([row[0] for row in ids])},
    )
    return max(0, cur.rowcount)


async def listed(conn: aiosqlite.Connection) -> list[tuple[str, str, int, int | None]]:
    """The database's list: (name, listed_by, since, applied_at), by name."""
    async with conn.execute(
        "SELECT name, listed_by, since, applied_at FROM opted_out ORDER BY name"
    ) as cur:
        return [tuple(row) for row in await cur.fetchall()]


async def apply(
    conn: aiosqlite.Connection, config_names: Iterable[str] | None, now: int
) -> Applied:
    """Bring the database in line with the lists: mirror ``config_names`` (the config's
    ``opt_out`` and ``opt_out_file``; None: keep the config names the database has)
    into ``opted_out``, recognise listed people under new names by their pxls id, then
    withdraw and erase everyone not yet applied (see the module docstring). Cheap when
    nothing changed (a few indexed queries)."""
    back_in = 0 if config_names is None else await _mirror_config(conn, config_names, now)
    await conn.execute(  # a listed person seen under another name (a rename)
        "INSERT INTO opted_out (name, pxls_id, listed_by, since) "
        "SELECT u.name, u.pxls_id, 'rename', :now FROM users u JOIN opted_out o "
        "ON u.pxls_id = o.pxls_id WHERE u.name != o.name ON CONFLICT (name) DO NOTHING",
        {"now": now},
    )
    pending = [
        str(row[0])
        for row in await _rows(conn, "SELECT name FROM opted_out WHERE applied_at IS NULL")
    ]
    if not pending:
        return Applied(back_in=back_in)
    names = json.dumps(pending)
    await conn.execute(  # remember the stable id of each, once known
        "UPDATE opted_out SET pxls_id = (SELECT pxls_id FROM users WHERE users.name = "
        "opted_out.name) WHERE applied_at IS NULL AND pxls_id IS NULL",
    )
    # every name of theirs, read once (a statement that writes a table while its own
    # subquery reads that table sees its own deletions): as listed, and any other the
    # pxls id ties to them (a name before a rename keeps its credited rows and their id)
    ids = (
        "(SELECT pxls_id FROM opted_out WHERE pxls_id IS NOT NULL "
        "AND name IN (SELECT value FROM json_each(:names)))"
    )
    found = await _rows(
        conn,
        f"SELECT value FROM json_each(:names) UNION SELECT name FROM users WHERE pxls_id "
        f"IN {ids} UNION SELECT user FROM credited WHERE pxls_id IN {ids}",
        {"names": names},
    )
    everyone = "(SELECT value FROM json_each(:everyone))"
    params = {"everyone": json.dumps([str(row[0]) for row in found])}
    withdrawals = await _rows(
        conn,
        f"SELECT user, pxls_id, score, canvas FROM credited WHERE score != 0 "
        f"AND user IN {everyone} ORDER BY user, canvas",
        params,
    )
    await conn.executemany(  # (each insert's trigger sets credited to 0)
        "INSERT INTO outbox (user, pxls_id, delta, score, canvas, observed_at, via) "
        "VALUES (?, ?, ?, 0, ?, ?, 'opt-out')",
        [
            (user, pxls_id, -int(str(score)), canvas, now)
            for user, pxls_id, score, canvas in withdrawals
        ],
    )
    await conn.execute(
        "UPDATE outbox SET discord = NULL, faction_id = NULL, faction_tag = NULL, "
        f"faction_name = NULL, faction_color = NULL WHERE user IN {everyone}",
        params,
    )
    cur = await conn.execute(f"DELETE FROM users WHERE name IN {everyone}", params)
    erased = max(0, cur.rowcount)
    await conn.execute(f"DELETE FROM credited WHERE user IN {everyone}", params)
    await conn.execute(
        "UPDATE opted_out SET applied_at = :now WHERE applied_at IS NULL", {"now": now}
    )
    points = sum(abs(int(str(row[2]))) for row in withdrawals)
    return Applied(len(pending), len(withdrawals), points, erased, back_in)


#: anything for :func:`apply` to do but mirroring the config (a name listed and not yet
#: applied, or a listed person's pxls id under another name)
PENDING = (
    "SELECT EXISTS (SELECT 1 FROM opted_out WHERE applied_at IS NULL) OR EXISTS (SELECT 1 "
    "FROM opted_out o JOIN users u ON u.pxls_id = o.pxls_id WHERE u.name != o.name)"
)


async def pending(conn: aiosqlite.Connection) -> bool:
    """Whether :func:`apply` has work beyond mirroring the config (a read: no write
    transaction on a tick with nothing to do)."""
    return bool(await scalar(conn, PENDING))


async def _mirror_config(conn: aiosqlite.Connection, names: Iterable[str], now: int) -> int:
    """The config's names as ``listed_by = 'config'`` entries: new ones added, ones the
    config no longer lists removed (those people are back in). Returns how many went."""
    wanted = json.dumps(sorted(set(names)))
    cur = await conn.execute(
        "DELETE FROM opted_out WHERE listed_by = 'config' "
        "AND name NOT IN (SELECT value FROM json_each(:names))",
        {"names": wanted},
    )
    await conn.execute(
        "INSERT INTO opted_out (name, listed_by, since) "
        "SELECT value, 'config', :now FROM json_each(:names) WHERE true "
        "ON CONFLICT (name) DO NOTHING",
        {"names": wanted, "now": now},
    )
    return max(0, cur.rowcount)


async def count(conn: aiosqlite.Connection) -> int:
    """How many names the database recognises as opted out."""
    return await scalar(conn, "SELECT COUNT(*) FROM opted_out")


async def checkpoint(conn: aiosqlite.Connection) -> bool:
    """Outside any transaction: copy the WAL into the database file and truncate it, so
    that no page image from before an erasure stays in the WAL. False when a reader
    kept part of it (it is tried again after the next erasure, and SQLite truncates it
    at the next checkpoint it completes)."""
    try:
        async with conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
            row = await cur.fetchone()
    except sqlite3.OperationalError:
        return False
    return row is not None and row[0] == 0


async def _rows(
    conn: aiosqlite.Connection, sql: str, params: Mapping[str, object] | None = None
) -> list[tuple[object, ...]]:
    async with conn.execute(sql, params or {}) as cur:
        return [tuple(row) for row in await cur.fetchall()]


async def edit_list(path: str, names: Sequence[str], *, add_names: bool, now: int) -> int:
    """``opt-out add`` / ``remove`` on the database at ``path``, also while a source runs
    on it (no lock is taken: one short write transaction beside the source's, SQLite
    serialises them; the source applies the change at its next tick). Returns how many
    entries were added or removed. :class:`StoreError` for a missing file or one not at
    this version's schema."""
    if not os.path.isfile(path):  # noqa: ASYNC240 - one stat, before any I/O
        raise StoreError(f"{path}: no such database (has the source run yet?)")
    try:
        conn = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    try:
        await conn.execute("PRAGMA busy_timeout=10000")
        await conn.execute("PRAGMA secure_delete=ON")
        version = await schema.user_version(conn)
        if version != schema.SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, this version {schema.SCHEMA_VERSION}: "
                "run the source of this version once (it migrates the database)"
            )
        await conn.execute("BEGIN IMMEDIATE")
        try:
            changed = await (add(conn, names, "cli", now) if add_names else remove(conn, names))
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        return changed
    except sqlite3.Error as exc:
        raise schema.unusable(path, exc) from exc
    finally:
        await conn.close()
