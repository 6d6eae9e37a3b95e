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
class PendingObservations:
    """Counts waiting for the /info after them; see the module docstring."""

    pending: list[Observation] = attrs.field(factory=list)
    last_info_at: datetime | None = None
    applied: int = 0  # deltas written from profile counts (for operators)
    dropped: int = 0

    def add(self, observation: Observation) -> None:
        self.pending.append(observation)
        if len(self.pending) > MAX_PENDING:
            lost = len(self.pending) - MAX_PENDING
            del self.pending[:lost]
            self.dropped += lost
            log.warning(
                "%d profile counts dropped unconfirmed: /info has not answered for a "
                "while (the next profile read observes them again)",
                lost,
            )

    def drop_future(self, now: datetime) -> int:
        """Drop counts stamped after ``now`` (a host clock that jumped back: their time
        is wrong, and the next profile read observes the user again). Returns how many."""
        kept = [o for o in self.pending if o.at <= now]
        dropped, self.pending = len(self.pending) - len(kept), kept
        self.dropped += dropped
        return dropped

    def checked(self, now: datetime) -> None:
        """``/info`` answered at ``now`` with a stale code: that is a check too (the next
        one is due :data:`CONFIRM_EVERY` later), but it confirms nothing."""
        self.last_info_at = now

    def confirm_due(self) -> datetime | None:
        """When /info should be asked to confirm waiting counts (None: none wait)."""
        if not self.pending:
            return None
        oldest = self.pending[0].at
        since = self.last_info_at if self.last_info_at and self.last_info_at > oldest else oldest
        return since + CONFIRM_EVERY

    async def settle(self, store: Store, canvas: str, checked_at: datetime) -> int:
        """``/info`` answered ``canvas`` (a current code, not a stale cache) at
        ``checked_at``: apply the counts taken on it before then, drop those taken on
        another canvas. Returns the deltas written."""
        self.last_info_at = checked_at
        ready = [o for o in self.pending if o.at <= checked_at]
        if not ready:
            return 0
        self.pending = [o for o in self.pending if o.at > checked_at]
        same = [(o.user_id, o.pixels, o.at) for o in ready if o.canvas == canvas]
        other = len(ready) - len(same)
        if other:
            self.dropped += other
            log.info(
                "%d profile counts dropped: the canvas changed to %s between the count and "
                "the next /info (never credited to the wrong canvas)",
                other,
                shown(canvas),
            )
        deltas = await store.apply_observations(same, canvas) if same else 0
        self.applied += deltas
        return deltas
