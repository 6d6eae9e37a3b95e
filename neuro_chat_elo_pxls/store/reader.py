"""``StoreReader``: read access to the database (every read one unit of its
:class:`~.connection.Database`). :meth:`StoreReader.open` opens an existing, current
file read-only (operators' ``status`` and ``export`` while a source runs); it has no
write method.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncGenerator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from ..errors import SchemaTooNewError, StoreError
from ..util.times import from_us, us
from . import optout, schema
from .connection import Database, scalar
from .rows import DIRTY, EXPORT_FIELDS, UserRow, fetch_users

T = TypeVar("T")


#: ``last_seen`` bound when no toplist was taken yet: later than any time (µs)
_NO_TOPLIST_YET = 2**62


def _listed(listed_before: int | None) -> int:
    """Users seen before this (µs) are outside the latest toplist."""
    return _NO_TOPLIST_YET if listed_before is None else listed_before


class StoreReader:
    """Read access to a database. :meth:`open` opens an existing, current file
    read-only (no lock, no migration); use as ``async with await StoreReader.open(p)``.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    @property
    def path(self) -> str:
        """The database file's path (for messages)."""
        return self._db.path

    @property
    def commits(self) -> int:
        """Write units committed on this connection so far: nothing changed (no outbox
        row either) while it stays the same."""
        return self._db.commits

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
        reader = cls(Database(conn, path))
        try:
            await reader._check_version()
            await reader.count_outbox()  # reads a page: fails now on a damaged file
        except BaseException as exc:
            await reader.close()
            if isinstance(exc, sqlite3.Error):
                raise schema.unusable(path, exc) from exc
            raise
        return reader

    async def _check_version(self) -> None:
        version = await self._db.read(schema.user_version)
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
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- reads -----------------------------------------------------------------

    async def load_state_rows(self) -> dict[str, str | None]:
        """The engine state last committed, as its rows (``EngineState.from_rows``)."""
        rows = await self._db.rows("SELECT key, value FROM state")
        return {row[0]: row[1] for row in rows}

    async def get_user(self, user_id: int) -> UserRow | None:
        """The user with database id ``user_id`` (None: no such row, e.g. merged away
        by a rename). Raises what the database raises."""
        users = await self._db.read(lambda conn: fetch_users(conn, "WHERE id = ?", (user_id,)))
        return users[0] if users else None

    async def held_user_ids(self, limit: int, exclude: set[int]) -> list[int]:
        """Up to ``limit`` users whose first delta waits for their profile, oldest first."""
        rows = await self._db.rows(
            "SELECT id FROM users WHERE held_score IS NOT NULL ORDER BY held_since, id LIMIT ?",
            limit + len(exclude),
        )
        return [row[0] for row in rows if row[0] not in exclude][:limit]

    async def count_held(self) -> int:
        """Users whose first delta waits for their profile."""
        return await self._db.read(lambda conn: scalar(conn, "SELECT COUNT(held_score) FROM users"))

    async def earliest_hold(self) -> datetime | None:
        """``held_since`` of the longest-held user, or None."""
        rows = await self._db.rows("SELECT MIN(held_since) FROM users WHERE held_score IS NOT NULL")
        return from_us(rows[0][0]) if rows else None

    async def sweep_ids(
        self, sweep: int, after_dirty: int, after_clean: int, limit: int
    ) -> tuple[bool, list[int]]:
        """The next users not yet visited by ``sweep``: dirty ones first, then the rest.

        Walks ids upward from the cursors (indexed, no sort), so a refill costs the
        same at the start and the end of a 100,000-user sweep. Returns
        ``(dirty_phase, ids)``. Missing (404) names are only visited when dirty.
        """
        rows = await self._db.rows(
            f"SELECT id FROM users WHERE {DIRTY} AND swept_in < ? AND id > ? ORDER BY id LIMIT ?",
            sweep,
            after_dirty,
            limit,
        )
        if rows:
            return True, [row[0] for row in rows]
        rows = await self._db.rows(
            "SELECT id FROM users WHERE swept_in < ? AND missing = 0 AND id > ? ORDER BY id "
            "LIMIT ?",
            sweep,
            after_clean,
            limit,
        )
        return False, [row[0] for row in rows]

    async def count_sweep_remaining(self, sweep: int) -> int:
        """Users ``sweep`` has still to visit (missing names only when dirty)."""
        return await self._db.read(
            lambda conn: scalar(
                conn,
                f"SELECT COUNT(*) FROM users WHERE swept_in < ? AND (missing = 0 OR {DIRTY})",
                sweep,
            )
        )

    async def follow_due_ids(
        self, listed_before: int | None, checked_before: datetime, limit: int, exclude: set[int]
    ) -> list[int]:
        """Followed users absent from the latest toplist (``last_seen`` before
        ``listed_before``, µs; None: no toplist yet) whose profile was not read since
        ``checked_before``, never-read first. Walks the follow index, oldest check first."""
        rows = await self._db.rows(
            "SELECT id FROM users WHERE followed != 0 AND missing = 0 AND last_seen < ? "
            "AND (last_profile_check IS NULL OR last_profile_check <= ?) "
            "ORDER BY last_profile_check LIMIT ?",
            _listed(listed_before),
            us(checked_before),
            limit + len(exclude),
        )
        return [row[0] for row in rows if row[0] not in exclude][:limit]

    async def follow_oldest_check(self, listed_before: int | None) -> datetime | None:
        """The oldest profile read among followed users absent from the latest toplist
        (the epoch if one was never read), None if there are none."""
        rows = await self._db.rows(
            "SELECT COALESCE(last_profile_check, 0) FROM users WHERE followed != 0 "
            "AND missing = 0 AND last_seen < ? ORDER BY last_profile_check LIMIT 1",
            _listed(listed_before),
        )
        return from_us(rows[0][0]) if rows else None

    async def follow_counts(self, listed_before: int | None) -> dict[str, int]:
        """Followed users: total, outside the latest toplist, not found (404)."""
        rows = await self._db.rows(
            "SELECT COUNT(*), COALESCE(SUM(last_seen < ?), 0), COALESCE(SUM(missing), 0) "
            "FROM users WHERE followed != 0",
            _listed(listed_before),
        )
        total, outside, missing = rows[0]
        return {"followed": int(total), "outside_toplist": int(outside), "not_found": int(missing)}

    async def settle_ids(self, previous: str, skip: set[int], limit: int) -> list[int]:
        """People paired on the ``previous`` canvas who may have pixels there that were
        never observed (DESIGN 3): the followed, and those credited there with another
        count than their pairing's. At most ``limit``, none of ``skip``, not missing."""
        rows = await self._db.rows(
            "SELECT u.id FROM users u LEFT JOIN credited c ON c.user = u.name "
            "AND c.canvas = u.pair_canvas WHERE u.pair_canvas = ? AND u.missing = 0 "
            "AND (u.followed != 0 OR c.score IS NOT u.pair_count) "
            "AND u.id NOT IN (SELECT value FROM json_each(?)) ORDER BY u.id LIMIT ?",
            previous,
            json.dumps(sorted(skip)),
            limit,
        )
        return [int(row[0]) for row in rows]

    async def settling_counts(self, previous: str, current: str) -> dict[str, int]:
        """People credited on the ``previous`` canvas, by where their pairing is
        (DESIGN 3): ``settled`` (read with an all-time count on ``current``: settled, or
        nothing was left), ``waiting`` (paired on ``previous``: the next read settles
        it), ``unsettleable`` (no pairing there: no all-time count was ever read)."""
        rows = await self._db.rows(
            "SELECT COALESCE(SUM(u.pair_canvas IS ?), 0), COALESCE(SUM(u.pair_canvas IS ?), 0), "
            "COUNT(*) FROM credited c LEFT JOIN users u ON u.name = c.user "
            "WHERE c.canvas = ? AND c.score != 0",
            current,
            previous,
            previous,
        )
        settled, waiting, total = (int(v) for v in rows[0])
        return {"settled": settled, "waiting": waiting, "unsettleable": total - settled - waiting}

    async def not_found_names(self, limit: int = 20) -> list[str]:
        """Followed names whose profile 404'd (renamed or deleted?), first ``limit``."""
        rows = await self._db.rows(
            "SELECT name FROM users WHERE followed != 0 AND missing = 1 ORDER BY name LIMIT ?",
            limit,
        )
        return [row[0] for row in rows]

    async def opt_out_list(self) -> list[tuple[str, str, int, int | None]]:
        """The database's opt-out list: (name, listed_by, since µs, applied_at µs)."""
        return await self._db.read(optout.listed)

    async def count_outbox(self) -> int:
        """Deltas waiting in the outbox (handed out or not)."""
        return await self._db.read(lambda conn: scalar(conn, "SELECT COUNT(*) FROM outbox"))

    async def counts(self) -> dict[str, int]:
        """Users total / dirty / held / missing / never enriched, the outbox size, and the
        names on an opt-out list (counted, never named)."""
        rows = await self._db.rows(
            f"SELECT COUNT(*), COALESCE(SUM({DIRTY}), 0), COUNT(held_score), "
            "COALESCE(SUM(missing), 0), COALESCE(SUM(1 - enriched), 0), "
            "(SELECT COUNT(*) FROM outbox), (SELECT COUNT(*) FROM opted_out) FROM users"
        )
        keys = (
            "users",
            "dirty",
            "awaiting_enrichment",
            "missing",
            "never_enriched",
            "outbox",
            "opted_out",
        )
        return dict(zip(keys, map(int, rows[0]), strict=True))

    async def oldest_outbox(self) -> datetime | None:
        """When the oldest delta not yet collected was observed (None: the outbox is empty)."""
        rows = await self._db.rows("SELECT observed_at FROM outbox ORDER BY seq LIMIT 1")
        return from_us(int(rows[0][0])) if rows else None

    async def export_rows(
        self, *, canvas: str | None = None, batch: int = 2000
    ) -> AsyncGenerator[tuple[Any, ...], None]:
        """Users with a handed-out score (on ``canvas`` if given), highest score first,
        as tuples of :data:`EXPORT_FIELDS`, streamed in batches (memory stays flat).
        Close it (``contextlib.aclosing``) when not read to the end: its cursor goes
        with it, before the database closes."""
        where = "canvas = ?" if canvas is not None else "canvas IS NOT NULL"
        where += " AND name NOT IN (SELECT name FROM opted_out)"  # (listed, not yet erased)
        params = (canvas,) if canvas is not None else ()
        sql = (
            f"SELECT {', '.join(EXPORT_FIELDS)} FROM users WHERE {where} ORDER BY score DESC, name"
        )
        async with contextlib.aclosing(self._db.stream(sql, params, batch)) as rows:
            async for row in rows:
                yield row
