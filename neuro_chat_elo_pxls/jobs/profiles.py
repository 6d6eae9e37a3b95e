"""One profile read: enrichment of a new user, a follow refresh or a sweep visit.

Profile requests share one cooldown key and are spaced by :func:`pacing_gap` (the
cooldown plus a margin of 2 %, at least 25 ms); the pacing is persisted, so it
survives a restart. A 404 marks the name missing; a profile whose ``pxls_id``
belongs to another row is a rename, merged in the same transaction. The profile's
pixel count is an observation, applied once ``/info`` confirms the canvas. Times
are host time (UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime

import attrs

from ..engine.job import Job, Visit
from ..engine.policy import pacing_gap
from ..engine.queue import Command, CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..errors import NotFoundError
from ..models import Profile
from ..pxls.client import PxlsApi
from ..settings import PxlsSettings
from ..store.rows import UserRow
from ..store.writer import Store

log = logging.getLogger("neuro_chat_elo_pxls")


def _retrieve(task: asyncio.Task[None]) -> None:
    """Done callback: a task whose caller was cancelled still has its error read."""
    if not task.cancelled():
        task.exception()


@attrs.define
class ProfileVisits(Job):
    """Reads profiles for enrichment, follow refreshes and the sweep, one per command;
    every job in ``listeners`` hears of each read (:meth:`.job.Job.visited`)."""

    runs = frozenset({Kind.ENRICH, Kind.FOLLOW, Kind.SWEEP})

    settings: PxlsSettings
    queue: CommandQueue
    state: StateKeeper
    listeners: Sequence[Job]

    async def run(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        """Read the profile of ``command``'s user; False if stale and nothing was sent."""
        assert command.user_id is not None
        user = await store.get_user(command.user_id)
        if user is None or not self.settings.profiles_enabled:
            return False  # merged away by a rename, or profiles off
        sweep = self.state.current.sweep_number
        if command.kind is Kind.SWEEP and user.swept_in >= sweep:
            return False  # already visited (e.g. by its enrichment)
        ready = now + pacing_gap(self.settings.profile_cooldown)
        self.queue.cool(Key.PROFILE, ready, "profile pacing", now)
        # persisted before the send: a source that crashes (or is cancelled) in mid-request
        # and restarts at once still keeps the pacing (a write takes well under the
        # pacing margin)
        await self.state.commit(store.save_state)  # (every save carries the live keys)
        canvas = self.state.current.canvas
        profile: Profile | None
        try:
            profile = await client.fetch_profile(user.name)
        except NotFoundError:
            profile = None
        # what pxls answered is taken in whole, even when the caller is cancelled now
        # (shielded, like a store unit): a sweep read cancelled after its answer had
        # marked the user swept and lost the count (simulator seed 55)
        task = asyncio.ensure_future(self._take(store, command, user, profile, canvas, now))
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)
        return True

    async def _take(
        self,
        store: Store,
        command: Command,
        user: UserRow,
        profile: Profile | None,
        canvas: str | None,
        now: datetime,
    ) -> None:
        """Store what the profile said (or its 404) and tell the listeners."""
        sweep = self.state.current.sweep_number
        if profile is None:
            released = await store.mark_missing(user.id, now, sweep)
            log.info(
                "profile of %s: 404, name marked missing%s",
                user.name,
                " (first delta released)" if released else "",
            )
            holds_changed = user.held
        else:
            holds_changed = await self._apply(store, user.id, user.name, profile, now, canvas)
            holds_changed = holds_changed or user.held
        visit = Visit(
            command,
            user.id,
            user.score,
            user.canvas,
            user.swept_in,
            profile,
            canvas,
            holds_changed,
            now,
        )
        for listener in self.listeners:
            await listener.visited(store, visit)

    async def _apply(
        self,
        store: Store,
        user_id: int,
        name: str,
        profile: Profile,
        now: datetime,
        canvas: str | None,
    ) -> bool:
        """Store the profile (Discord, faction, a rename's merge); True if a rename
        merged a row away (maybe held)."""
        sweep = self.state.current.sweep_number
        outcome = await store.apply_profile(
            user_id, profile, now, sweep, self.settings.follow_factions, canvas
        )
        if not outcome.renamed_from:
            return False
        log.info(
            "rename: %s is now %s (pxls id %s); %d pixels moved from the old name",
            outcome.renamed_from,
            name,
            profile.pxls_id,
            outcome.corrected,
        )
        return True
