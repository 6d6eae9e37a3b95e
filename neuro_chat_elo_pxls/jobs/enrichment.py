"""New users' first deltas, held until their profile is read (or the hold runs out).

:class:`EnrichmentWindow` keeps at most :data:`ENRICH_WINDOW` enrichment commands
queued (the rest wait in the database, oldest hold first), remembers the users it
gave up on until the next pull, and releases holds older than ``enrichment_hold``
without Discord/faction, with one warning saying why. Times are host time (UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.queue import Command, CommandQueue, Kind
from ..store.writer import Store
from ..util.times import fmt_duration

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many enrichment commands wait in the queue at once.
ENRICH_WINDOW = 16


@attrs.define
class EnrichmentWindow:
    """Held first deltas: the queued window, the give-up set and the release deadline."""

    hold: timedelta
    given_up: set[int] = attrs.field(factory=set)  # retried after the next pull
    backlog: bool = False  # maybe more held users in the database than queued
    next_release: datetime | None = None  # earliest hold that runs out
    _problem: str = ""  # why profiles are not being read, for the release warning

    def profiles_failing(self, why: str) -> None:
        """A profile request failed (``why``): the release warning says so."""
        self._problem = why

    def profiles_flowing(self) -> None:
        """A profile was read: the release warning blames the queue, not pxls."""
        self._problem = ""

    async def refill(self, store: Store, queue: CommandQueue) -> None:
        """Keep up to ENRICH_WINDOW enrichment commands queued, oldest hold first."""
        queued = queue.count(Kind.ENRICH)
        if queued > ENRICH_WINDOW // 2 or (self.next_release is None and not queued):
            return  # (no hold at all: held users come from a pull, which refreshes it)
        exclude = self.given_up | queue.user_ids(Kind.ENRICH)
        want = ENRICH_WINDOW - queued
        ids = await store.held_user_ids(want, exclude)
        for user_id in ids:
            queue.push(Command(Kind.ENRICH, user_id))
        self.backlog = len(ids) == want

    async def refresh_deadline(self, store: Store) -> None:
        """Recompute when the longest hold runs out."""
        earliest = await store.earliest_hold()
        self.next_release = None if earliest is None else earliest + self.hold

    async def release_due(self, store: Store, now: datetime) -> None:
        """Hand out first deltas held for ``hold`` or longer, with one warning."""
        if self.next_release is None or now < self.next_release:
            return
        released = await store.release_held(now - self.hold)
        if released:
            log.warning(
                "released %d held first deltas without Discord/faction after %s: "
                "profile not fetched (%s)",
                released,
                fmt_duration(self.hold),
                self._problem or "profile queue behind",
            )
        await self.refresh_deadline(store)

    async def release_all(self, store: Store, why: str) -> None:
        """Profiles are off: hand out every held first delta now."""
        self._problem = why
        released = await store.release_held(None)
        if released:
            log.warning("released %d held deltas without Discord/faction (%s)", released, why)
        await self.refresh_deadline(store)

    def give_up(self, user_id: int) -> None:
        """Stop asking for this user's profile until the next pull; the hold releases it."""
        self.given_up.add(user_id)

    def after_pull(self) -> None:
        """A pull happened: users given up on are tried again."""
        self.given_up.clear()
