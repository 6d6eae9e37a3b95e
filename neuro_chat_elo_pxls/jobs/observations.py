"""Profile pixel counts waiting for ``/info`` to confirm their canvas (DESIGN 7).

A profile's ``pixelCount`` has no canvas code. A count is applied only when
``/info`` said the same canvas before the answer (the canvas the source knew when
it asked) and after it (the next ``/info``, from a pull or a confirm command);
counts that straddle a reset are dropped with a log line, never credited to the
wrong canvas. While counts wait, ``/info`` is checked at least every
:data:`CONFIRM_EVERY`. Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.job import Job, Visit
from ..store.writer import Store
from ..util.text import shown

log = logging.getLogger("neuro_chat_elo_pxls")

#: While counts wait for confirmation, /info is checked at least this often.
CONFIRM_EVERY = timedelta(minutes=15)
#: More waiting counts than this (pxls answers profiles but not /info): the oldest go.
MAX_PENDING = 20_000


@attrs.frozen
class Observation:
    user_id: int
    pixels: int
    at: datetime  # host time of the profile answer
    canvas: str  # the canvas /info said before the request


@attrs.define
class PendingObservations(Job):
    """Counts waiting for the /info after them; see the module docstring. It plans
    nothing itself: the pull job asks :meth:`confirm_due` and runs the confirm."""

    _pending: list[Observation] = attrs.field(factory=list)
    _last_info_at: datetime | None = None

    async def visited(self, store: Store, visit: Visit) -> None:
        """A profile's count is an observation of the canvas the source knew."""
        profile = visit.profile
        if profile is not None and profile.canvas_pixels is not None and visit.canvas:
            self.add(Observation(visit.user_id, profile.canvas_pixels, visit.now, visit.canvas))

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

    async def settle(self, store: Store, canvas: str, checked_at: datetime) -> int:
        """``/info`` answered ``canvas`` (a current code, not a stale cache) at
        ``checked_at``: apply the counts taken on it before then, drop those taken on
        another canvas. Returns the deltas written."""
        self._last_info_at = checked_at
        ready = [o for o in self._pending if o.at <= checked_at]
        if not ready:
            return 0
        self._pending = [o for o in self._pending if o.at > checked_at]
        same = [(o.user_id, o.pixels, o.at) for o in ready if o.canvas == canvas]
        other = len(ready) - len(same)
        if other:
            log.info(
                "%d profile counts dropped: the canvas changed to %s between the count and "
                "the next /info (never credited to the wrong canvas)",
                other,
                shown(canvas),
            )
        return await store.follows.apply_observations(same, canvas) if same else 0
