"""After a reset, the people who may have painted on the old canvas since their last
pairing are read first (DESIGN 3, "the last pixels of a canvas count").

A person paired on the previous canvas is settled by their first profile read on the
new one (:mod:`..store.follows`). Waiting for the sweep could take a day, so right
after a reset this part queues SETTLE reads, after enrichment and ahead of the sweep
and follow refreshes, of those likely to have pixels there that were never observed:
the followed (read at most every ``follow_interval``) and those whose last credited
count on the old canvas differs from their pairing (seen active after it). Everyone
else is settled by the sweep. A person is read once per reset here (a read without an
all-time count leaves the pairing where it was), at most :data:`SETTLE_WINDOW`
commands are queued; the rest wait in the database.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from ..engine.queue import CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..engine.window import Window
from ..store.writer import Store
from .profiles import Visit

#: How many settle commands wait in the queue at once.
SETTLE_WINDOW = 16
_WINDOW = Window(Kind.SETTLE, SETTLE_WINDOW)


@attrs.define
class Settling:
    """Reads that settle the previous canvas first; see the module docstring. Its one
    state is in memory: the canvas it settles, the people read or given up on, and
    whether the database has more to read."""

    state: StateKeeper  # read only (the canvas and its history)
    _canvas: str | None = None  # the previous canvas being settled
    _done: set[int] = attrs.field(factory=set)  # read or given up on, for _canvas
    _more: bool = True  # more may wait in the database for _canvas
    _held: bool = False  # the last plan was held (a part before it has work waiting)

    def _previous(self) -> str | None:
        current = self.state.current
        if current.canvas is None or not current.canvas_history:
            return None
        previous = current.canvas_history[-1]
        if previous != self._canvas:  # a new reset: start over
            self._canvas, self._done, self._more = previous, set(), True
        return previous

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        """Unless ``held``, queue reads of people to settle. True if some wait (queued,
        or more in the database). Raises what the store raises."""
        self._held = held
        previous = self._previous()
        if previous is None:
            return False
        room = _WINDOW.room(queue)
        if not held and self._more and room:
            skip = _WINDOW.queued_ids(queue) | self._done
            ids = await store.settle_ids(previous, skip, room)
            self._more = _WINDOW.push(queue, ids, room)
        return bool(queue.count(Kind.SETTLE)) or self._more

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """Now (after the profile key's pause) while the database may hold more to read
        after a reset and a plan would look; None otherwise (queued commands are the
        queue's, and a part that holds this one has its own time)."""
        if self._previous() is None or not self._more or self._held or not _WINDOW.room(queue):
            return None
        return max(now, queue.state(Key.PROFILE).ready_at or now)

    def gave_up(self, user_id: int) -> None:
        """Reading this profile failed for good: the sweep settles the person later."""
        self._done.add(user_id)

    def count(self, visit: Visit) -> None:
        """Any profile read after a reset settles what it can: not read again here."""
        if self._canvas is not None:
            self._done.add(visit.user_id)
