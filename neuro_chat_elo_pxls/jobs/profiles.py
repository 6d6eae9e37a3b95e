"""One profile read: enrichment of a new user, a follow refresh or a sweep visit.

Profile requests share one cooldown key and are spaced by :func:`pacing_gap` (the
cooldown plus a margin of 2 %, at least 25 ms); the pacing is persisted, so it
survives a restart. A 404 marks the name missing; a profile whose ``pxls_id``
belongs to another row is a rename, merged in the same transaction.

A read is two steps, both async: :meth:`ProfileReads.ask` sends the request (or
finds the command stale and sends nothing), :meth:`ProfileReads.take` stores the
answer and returns the :class:`Visit` the tick hands to the parts that need it
(:mod:`.tick`). Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime

import attrs

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


@attrs.frozen
class Answer:
    """What pxls answered to one profile request: ``profile`` None is a 404;
    ``canvas`` is the canvas the source knew when it asked; ``now`` the host time of
    the request (aware UTC)."""

    command: Command
    user: UserRow
    profile: Profile | None
    canvas: str | None
    now: datetime


@attrs.frozen
class Visit:
    """One profile read, stored: what the tick hands to observations, follow, sweep
    and enrichment.

    ``swept_in``: the user's sweep number before the read; ``profile`` None: 404
    (the name is marked missing); ``canvas``: the canvas the source knew when it
    asked; ``holds_changed``: a held first delta was released or merged away;
    ``now``: host time of the request (aware UTC).
    """

    command: Command
    user_id: int
    score: int
    user_canvas: str | None
    swept_in: int
    profile: Profile | None
    canvas: str | None
    holds_changed: bool
    now: datetime

    @property
    def changed(self) -> bool:
        """The count or the canvas differs from what the database had."""
        if self.profile is None:
            return False
        return self.profile.canvas_pixels != self.score or self.user_canvas != self.canvas


@attrs.define
class ProfileReads:
    """Reads one profile per ENRICH, FOLLOW or SWEEP command; see the module docstring.
    It writes the profile key's pacing (asking the queue) and the users' profile
    columns (through the store); nothing else."""

    settings: PxlsSettings
    queue: CommandQueue
    state: StateKeeper  # read (canvas, sweep number); written only to persist the pacing

    async def ask(
        self, store: Store, client: PxlsApi, command: Command, now: datetime
    ) -> Answer | None:
        """Send the profile request of ``command``'s user (paced, the pacing persisted
        first). None if the command is stale and nothing was sent (the user was merged
        away, profiles are off, or the sweep visited the user already). Raises what
        the client raises (:class:`~..errors.PxlsError`; a 404 is an answer)."""
        assert command.user_id is not None
        user = await store.get_user(command.user_id)
        if user is None or not self.settings.profiles_enabled:
            return None  # merged away by a rename, or profiles off
        sweep = self.state.current.sweep_number
        if command.kind is Kind.SWEEP and user.swept_in >= sweep:
            return None  # already visited (e.g. by its enrichment)
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
        return Answer(command, user, profile, canvas, now)

    async def take(self, store: Store, answer: Answer) -> Visit:
        """Store what the profile said (or its 404: the name is marked missing) and
        return the visit. The caller runs it shielded from cancellation."""
        user, profile, now = answer.user, answer.profile, answer.now
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
            holds_changed = await self._apply(store, user, profile, now, answer.canvas)
            holds_changed = holds_changed or user.held
        return Visit(
            answer.command,
            user.id,
            user.score,
            user.canvas,
            user.swept_in,
            profile,
            answer.canvas,
            holds_changed,
            now,
        )

    async def _apply(
        self, store: Store, user: UserRow, profile: Profile, now: datetime, canvas: str | None
    ) -> bool:
        """Store the profile (Discord, faction, a rename's merge); True if a rename
        merged a row away (maybe held)."""
        sweep = self.state.current.sweep_number
        outcome = await store.apply_profile(
            user.id, profile, now, sweep, self.settings.follow_factions, canvas
        )
        if not outcome.renamed_from:
            return False
        log.info(
            "rename: %s is now %s (pxls id %s); %d pixels moved from the old name",
            outcome.renamed_from,
            user.name,
            profile.pxls_id,
            outcome.corrected,
        )
        return True
