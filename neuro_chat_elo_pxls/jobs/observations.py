"""Profile pixel counts, from the read to the outbox (DESIGN 7).

A profile's ``pixelCount`` has no canvas code. A count is credited only when
``/info`` said the same canvas before the answer (the canvas the source knew when
it asked) and after it (the next ``/info``); counts that straddle a reset are
dropped with a log line, never credited to the wrong canvas. The flow, all here:

1. :meth:`Observations.record`: a profile read's count waits, in memory;
2. :meth:`Observations.plan`: while counts wait, a CONFIRM command (``/info`` only)
   is queued at least every :data:`CONFIRM_EVERY` (a queued pull's ``/info`` does
   it instead);
3. :meth:`Observations.settle`: ``/info`` answered a current code (a pull's or the
   confirm's): the counts taken on it are credited (``store.follows``, which writes
   the deltas to the outbox), the others dropped; :meth:`Observations.checked`: it
   answered a stale cache, the counts wait on.

Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.queue import Command, CommandQueue, Key, Kind
from ..store.writer import Store
from ..util.text import shown
from .profiles import Visit

log = logging.getLogger("neuro_chat_elo_pxls")

#: While counts wait for confirmation, /info is checked at least this often.
CONFIRM_EVERY = timedelta(minutes=15)
#: More waiting counts than this (pxls answers profiles but not /info): the oldest go.
MAX_PENDING = 20_000


@attrs.frozen
class Observation:
    """One profile count waiting: ``at`` host time of the answer (aware UTC),
    ``canvas`` the code ``/info`` said before the request, ``alltime`` the all-time
    count read with it (None: none)."""

    user_id: int
    #: the name read: the count applies only to the row that still has id and name
    name: str
    pixels: int
    at: datetime  # host time of the profile answer
    canvas: str  # the canvas /info said before the request
    alltime: int | None = None


@attrs.define
class Observations:
    """Counts waiting for the /info after them, and the CONFIRM command that asks it;
    see the module docstring. The only writer of the waiting counts (in memory)."""

    _pending: list[Observation] = attrs.field(factory=list)
    _last_info_at: datetime | None = None

    def record(self, visit: Visit) -> None:
        """A profile's count is an observation of the canvas the source knew (none:
        a 404, a profile without a count, or no canvas known yet)."""
        profile = visit.profile
        if profile is not None and profile.canvas_pixels is not None and visit.canvas:
            self.add(
                Observation(
                    visit.user_id,
                    profile.name,
                    profile.canvas_pixels,
                    visit.now,
                    visit.canvas,
                    profile.alltime_pixels,
                )
            )

    def plan(self, queue: CommandQueue, now: datetime) -> None:
        """Queue a CONFIRM when waiting counts are due one (not while a pull, whose
        ``/info`` confirms them, is queued; a second confirm is refused)."""
        confirm = self.confirm_due()
        if confirm is not None and now >= confirm and not queue.count(Kind.PULL):
            queue.push(Command(Kind.CONFIRM))  # refused if one is queued

    def next_due(self, queue: CommandQueue) -> datetime | None:
        """When a confirm command should be queued (None: none needed, or a pull or a
        confirm is queued already: the queue's own time covers it)."""
        due = self.confirm_due()
        if due is None or queue.count(Kind.PULL) or queue.count(Kind.CONFIRM):
            return None
        return max(due, queue.state(Key.LEADERBOARD).ready_at or due)

    def gave_up(self, now: datetime) -> None:
        """The confirm failed for good: the counts wait; ask again in 15 minutes."""
        self.checked(now)

    async def clamp(self, store: Store, now: datetime, jumped_back: bool) -> None:
        """After a jump back, counts stamped by the wrong clock would block every later
        observation of their users (DESIGN 3: older ones are ignored): the applied ones
        count as observed now, the waiting ones are dropped."""
        if not jumped_back:
            return
        moved = await store.follows.pull_back_observations(now)
        dropped = self.drop_future(now)
        if moved or dropped:
            log.warning(
                "host clock: %d applied and %d waiting profile counts were stamped "
                "after now %s: the applied count as observed now, the waiting dropped",
                moved,
                dropped,
                now.isoformat(timespec="seconds"),
            )

    def add(self, observation: Observation) -> None:
        """Keep ``observation`` waiting (over :data:`MAX_PENDING`, the oldest go)."""
        self._pending.append(observation)
        if len(self._pending) > MAX_PENDING:
            lost = len(self._pending) - MAX_PENDING
            del self._pending[:lost]
            log.warning(
                "%d profile counts dropped unconfirmed: /info has not answered for a "
                "while (the next profile read observes them again)",
                lost,
            )

    def drop_future(self, now: datetime) -> int:
        """Drop counts stamped after ``now`` (a host clock that jumped back: their time
        is wrong, and the next profile read observes the user again). Returns how many."""
        kept = [o for o in self._pending if o.at <= now]
        dropped, self._pending = len(self._pending) - len(kept), kept
        return dropped

    def checked(self, now: datetime) -> None:
        """``/info`` answered at ``now`` with a stale code: that is a check too (the next
        one is due :data:`CONFIRM_EVERY` later), but it confirms nothing."""
        self._last_info_at = now

    def confirm_due(self) -> datetime | None:
        """When /info should be asked to confirm waiting counts (None: none wait)."""
        if not self._pending:
            return None
        oldest = self._pending[0].at
        since = self._last_info_at if self._last_info_at and self._last_info_at > oldest else oldest
        return since + CONFIRM_EVERY

    async def settle(
        self, store: Store, canvas: str, checked_at: datetime, previous: str | None = None
    ) -> int:
        """``/info`` answered ``canvas`` (a current code, not a stale cache) at
        ``checked_at``: apply the counts taken on it before then, drop those taken on
        another canvas. A count with its all-time count settles the ``previous`` canvas
        of a person paired there (DESIGN 3). Returns the deltas written. Raises what
        the store raises."""
        self._last_info_at = checked_at
        ready = [o for o in self._pending if o.at <= checked_at]
        if not ready:
            return 0
        self._pending = [o for o in self._pending if o.at > checked_at]
        same = [(o.user_id, o.name, o.pixels, o.at, o.alltime) for o in ready if o.canvas == canvas]
        other = len(ready) - len(same)
        if other:
            log.info(
                "%d profile counts dropped: the canvas changed to %s between the count and "
                "the next /info (never credited to the wrong canvas)",
                other,
                shown(canvas),
            )
        return await store.follows.apply_observations(same, canvas, previous) if same else 0
