"""One profile read: enrichment of a new user, a follow refresh or a sweep visit.

Profile requests share one cooldown key and are spaced by :func:`pacing_gap` (the
cooldown plus a margin of 2 %, at least 25 ms); the pacing is persisted, so it
survives a restart. A 404 marks the name missing; a profile whose ``pxls_id``
belongs to another row is a rename, merged in the same transaction. The profile's
pixel count is an observation, applied once ``/info`` confirms the canvas. Times
are host time (UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.queue import Command, CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..errors import NotFoundError
from ..pxls.client import PxlsApi
from ..settings import PxlsSettings
from ..store.writer import Store
from .enrichment import EnrichmentWindow
from .follow import FollowList
from .observations import Observation, PendingObservations
from .sweep import Sweep

log = logging.getLogger("neuro_chat_elo_pxls")

#: Profile requests are spaced by ``profile_cooldown`` times this, and at least
#: PACING_FLOOR more than the cooldown, so that the work a tick does before the send
#: (a few ms that vary) and network jitter never make pxls.space see two requests
#: closer than promised. The floor matters at small cooldowns only (benchmarks at
#: 50 ms: 2 % is 1 ms there); at the default 1 s the margin is 25 ms, 2.5 %.
PACING_MARGIN = 1.02
PACING_FLOOR = timedelta(milliseconds=25)


def pacing_gap(cooldown: timedelta) -> timedelta:
    """Host time from one profile request's tick to the next one's (≥ ``cooldown``)."""
    return max(cooldown * PACING_MARGIN, cooldown + PACING_FLOOR)


@attrs.define
class ProfileVisits:
    """Reads profiles for the enrichment window and the sweep, one per command."""

    settings: PxlsSettings
    queue: CommandQueue
    state: StateKeeper
    sweep: Sweep
    enrich: EnrichmentWindow
    follow: FollowList
    observations: PendingObservations

    async def visit(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        """Read the profile of ``command``'s user; False if stale and nothing was sent."""
        assert command.user_id is not None
        user = await store.get_user(command.user_id)
        if user is None or not self.settings.profiles_enabled:
            return False  # merged away by a rename, or profiles off
        if command.kind is Kind.SWEEP and user.swept_in >= self.sweep.number:
            return False  # already visited (e.g. by its enrichment)
        ready = now + pacing_gap(self.settings.profile_cooldown)
        self.queue.cool(Key.PROFILE, ready, "profile pacing", now)
        # persisted before the send: a source that crashes (or is cancelled) in mid-request
        # and restarts at once still keeps the pacing (a write takes well under the
        # pacing margin)
        await self.state.commit(store.save_state, keys=self.queue.key_states(now))
        sweep = self.sweep.number
        holds_changed = user.held  # its hold is released below
        try:
            profile = await client.fetch_profile(user.name)
        except NotFoundError:
            released = await store.mark_missing(user.id, now, sweep)
            log.info(
                "profile of %s: 404, name marked missing%s",
                user.name,
                " (first delta released)" if released else "",
            )
            if command.kind is Kind.FOLLOW:
                self.follow.visited(found=False, changed=False)
        else:
            canvas = self.state.current.canvas
            outcome = await store.apply_profile(
                user.id, profile, now, sweep, self.settings.follow_factions, canvas
            )
            if profile.canvas_pixels is not None and canvas is not None:
                # an observation, applied once /info confirms the canvas after it
                self.observations.add(Observation(user.id, profile.canvas_pixels, now, canvas))
            if command.kind is Kind.FOLLOW:
                changed = profile.canvas_pixels != user.score or user.canvas != canvas
                self.follow.visited(found=True, changed=changed)
            if outcome.renamed_from:
                holds_changed = True  # the old row (maybe held) is gone
                log.info(
                    "rename: %s is now %s (pxls id %s); %d pixels moved from the old name",
                    outcome.renamed_from,
                    user.name,
                    profile.pxls_id,
                    outcome.corrected,
                )
        self.enrich.profiles_flowing()
        if holds_changed:
            await self.enrich.refresh_deadline(store)
        self.sweep.visited(user.swept_in, now)  # enrichment counts as the visit too
        return True
