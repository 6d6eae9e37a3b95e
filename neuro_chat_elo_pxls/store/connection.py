"""``Database``: one aiosqlite connection and the unit that serialises access to it.

Every read and every transaction on the connection is one *unit*: units run one at a
time, in a task shielded from the caller's cancellation, so a cancelled hook never
leaves a transaction open and never reads another unit's uncommitted rows. A write
unit is ``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any error). The reader and
the writer are built on it (by composition); neither holds the machinery itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aiosqlite

T = TypeVar("T")

#: one unit's work: gets the connection, inside the unit's transaction if a write
Work = Callable[[aiosqlite.Connection], Awaitable[T]]


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Done callback: a unit whose caller was cancelled still has its error read."""
    if not task.cancelled():
        task.exception()


async def scalar(conn: aiosqlite.Connection, sql: str, *params: Any) -> int:
    """The first column of the first row as an int (0 if none or NULL)."""
    async with conn.execute(sql, params) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


class Database:
    """See the module docstring. ``path`` names the file in messages."""

    def __init__(self, conn: aiosqlite.Connection, path: str) -> None:
        self._conn = conn
        self.path = path
        self._gate = asyncio.Lock()  # one unit (read or transaction) at a time
        self._commits = 0  # write units committed on this connection

    @property
    def commits(self) -> int:
        """Write units committed so far: nothing changed while it stays the same."""
        return self._commits

    async def read(self, fn: Work[T]) -> T:
        """Run ``fn`` alone on the connection (no transaction of its own)."""
        return await self._unit(fn, write=False)

    async def write(self, fn: Work[T], on_commit: Callable[[T], object] | None = None) -> T:
        """Run ``fn`` as one transaction; ``on_commit`` gets the result once committed,
        even when the caller is gone."""
        return await self._unit(fn, write=True, on_commit=on_commit)

    async def rows(self, sql: str, *params: Any) -> list[Any]:
        """Every row of one query (one read unit)."""

        async def fetch(conn: aiosqlite.Connection) -> list[Any]:
            async with conn.execute(sql, params) as cur:
                return list(await cur.fetchall())

        return await self.read(fetch)

    async def stream(
        self, sql: str, params: Sequence[Any], batch: int
    ) -> AsyncGenerator[tuple[Any, ...], None]:
        """The rows of one query, fetched ``batch`` at a time (memory stays flat). Not
        a unit: for a read-only connection (``export``), where no write can interleave."""
        async with self._conn.execute(sql, params) as cur:
            while rows := await cur.fetchmany(batch):
                for row in rows:
                    yield tuple(row)

    async def alone(self, fn: Work[T]) -> T:
        """Run ``fn`` holding the gate, outside any unit (open-time checks, setup)."""
        async with self._gate:
            return await fn(self._conn)

    async def close(self) -> None:
        """Close the connection (after a unit in progress). Idempotent."""
        async with self._gate:
            # already closed, or its thread is gone: nothing left to close
            with contextlib.suppress(sqlite3.Error, ValueError):
                await self._conn.close()

    async def _unit(
        self, fn: Work[T], write: bool, on_commit: Callable[[T], object] | None = None
    ) -> T:
        async def unit() -> T:
            async with self._gate:
                if not write:
                    return await fn(self._conn)
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await fn(self._conn)
                    await self._conn.execute("COMMIT")
                    self._commits += 1
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
