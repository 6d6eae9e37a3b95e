"""The source's database handle: opened once, disabled while it cannot be, closed once.

Opening runs in a task of its own, shielded: a host that cancels a hook while the
database opens leaves no half-open store (and no stranded lock); the next call
finds the opening finished, or waits for it. A database that cannot be opened
(missing directory, locked, damaged) disables the source with one error; a tick
:data:`STORE_RETRY` later tries again, and :attr:`StoreHandle.retry_at` tells the
host when. Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import attrs

from ..errors import StoreError
from .writer import Store

log = logging.getLogger("neuro_chat_elo_pxls")

#: After the database could not be opened, a tick tries again this much later.
STORE_RETRY = timedelta(minutes=5)


@attrs.define
class StoreHandle:
    """Holds the open :class:`Store`; see the module docstring."""

    path: str
    on_open: Callable[[Store], Awaitable[None]]  # restores the engine; raising closes
    store: Store | None = None
    disabled: str | None = None  # why the database cannot be opened
    retry_at: datetime | None = None
    closed: bool = False
    _opening: asyncio.Future[None] | None = None

    async def open(self) -> Store:
        """Open (or wait for the opening in progress). Raises :class:`StoreError`."""
        if self.store is not None:
            return self.store
        if self.closed:
            raise StoreError("the source was shut down")
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
        opening = self._opening
        try:
            await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening = None
                if not opening.cancelled():
                    opening.exception()  # read (raised above if the caller waited)
        assert self.store is not None
        return self.store

    async def _open(self) -> None:
        store = await Store.open(self.path)
        try:
            await self.on_open(store)
        except BaseException:
            await store.close()
            raise
        self.store = store

    async def ensure(self, now: datetime | None = None) -> Store | None:
        """The open store, or None while the database cannot be opened (a call with
        ``now`` past :attr:`retry_at` tries again)."""
        if self.store is not None:
            return self.store
        if self.closed:
            return None
        if self.disabled is not None and (
            now is None or self.retry_at is None or now < self.retry_at
        ):
            return None
        try:
            store = await self.open()
        except StoreError as exc:
            first = self.disabled is None
            self.disabled = str(exc)
            self.retry_at = None if now is None else now + STORE_RETRY
            log.log(
                logging.ERROR if first else logging.WARNING,
                "pxls source disabled: %s; next try %s",
                exc,
                "at the next tick"
                if self.retry_at is None
                else f"at {self.retry_at:%Y-%m-%d %H:%M}",
            )
            return None
        if self.disabled is not None:
            log.warning("pxls source enabled again: the database opened")
            self.disabled = None
        return store

    def next_due(self, now: datetime) -> datetime | None:
        """For ``next_due_at`` while no store is open: ``now`` (open it), the retry
        time, or None (shut down)."""
        if self.closed:
            return None
        return self.retry_at if self.disabled is not None else now

    async def close(self) -> None:
        """Close the store; no hook opens it again. Idempotent."""
        self.closed = True
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()
