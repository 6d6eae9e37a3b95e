"""New users' first deltas, held until their profile is read (or the hold runs out).

:class:`EnrichmentWindow` keeps at most :data:`ENRICH_WINDOW` enrichment commands
queued (the rest wait in the database, oldest hold first), remembers the users it
gave up on until the next pull, and releases holds older than ``enrichment_hold``
without Discord/faction, with one warning saying why. It plans ENRICH commands; the
tick runs them as profile reads (:mod:`.profiles`) and hands it each read
(:meth:`EnrichmentWindow.read`). Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.queue import CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..engine.window import Window
from ..store.writer import Store
from ..util.times import fmt_duration
from .profiles import Visit

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many enrichment commands wait in the queue at once.
ENRICH_WINDOW = 16
_WINDOW = Window(Kind.ENRICH, ENRICH_WINDOW)


#: slack for rounding when a wrong clock's holds are pulled back
_SLACK = timedelta(minutes=1)
#: From this many new users waiting at once (a first pull), enrichment logs progress.
PROGRESS_FROM = 50


@attrs.define
class EnrichmentWindow:
    """Held first deltas: the queued window, the give-up set and the release deadline.
    Profile work of the first rank: it is never held. Every method may raise what the
    store raises."""

    hold: timedelta
    state: StateKeeper  # read only: a pull that ingested shows in last_pull_at
    token_env: str  # the token variable this instance reads (settings.secret_envs[0])
    _given_up: set[int] = attrs.field(factory=set)  # retried after the next pull
    _backlog: bool = False  # maybe more held users in the database than queued
    _next_release: datetime | None = None  # earliest hold that runs out
    _problem: str = ""  # why profiles are not being read, for the release warning
    _pulled_at: datetime | None = None  # last_pull_at when the given-up set was cleared
    _batch: int = 0  # a large batch of holds being read (0: none): its size
    _batch_read: int = 0  # how many of them were read so far

    async def opened(self, store: Store, profiles: bool) -> None:
        """Profiles off: every held first delta is handed out now; else the deadline."""
        if profiles:
            await self.refresh_deadline(store)
        else:
            await self.release_all(store, f"{self.token_env} is not set")

    async def plan(self, store: Store, queue: CommandQueue, now: datetime) -> bool:
        """Queue due enrichment (a pull's new holds first), release holds that ran out.
        True if enrichment waits (queued, or more held than queued): later profile
        work is held."""
        await self._after_pull(store, queue)  # (a cancelled after() is finished here)
        await self.refill(store, queue)
        await self.release_due(store, now)
        return bool(queue.count(Kind.ENRICH)) or self._backlog

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """The earliest host time enrichment has work (None: none known)."""
        if self.state.current.last_pull_at != self._pulled_at:
            return now  # a pull's holds not yet looked at (a cancelled after())
        if not self._backlog:
            return self._next_release
        ready = max(now, queue.state(Key.PROFILE).ready_at or now)  # the window is fed then
        return ready if self._next_release is None else min(ready, self._next_release)

    async def after_command(self, store: Store, queue: CommandQueue) -> None:
        """A command ran: if it was a pull that ingested, queue its new holds now."""
        await self._after_pull(store, queue)

    async def _after_pull(self, store: Store, queue: CommandQueue) -> None:
        """``last_pull_at`` changed since the last look (a pull ingested; also the first
        look after open, or a clock pull-back): users given up on are tried again, new
        holds are queued. Marked done only once done: a host that cancels in the middle
        has it redone by the next call (and ``next_due`` says now until then)."""
        pulled = self.state.current.last_pull_at
        if pulled == self._pulled_at:
            return
        self._given_up.clear()
        await self.refresh_deadline(store)
        await self.refill(store, queue)
        held = await store.count_held() if self._backlog else 0
        self._pulled_at = pulled
        if held >= PROGRESS_FROM and not self._batch:
            self._batch, self._batch_read = held, 0
            log.info(
                "enrichment: reading the profiles of %d new users (their first deltas wait "
                "for them, at most %s)",
                held,
                fmt_duration(self.hold),
            )

    def failed(self, error: BaseException) -> None:
        """A profile request failed with ``error``: the release warning says why."""
        self._problem = str(error)

    def gave_up(self, user_id: int) -> None:
        """Stop asking for this user's profile until the next pull; the hold releases it."""
        self._given_up.add(user_id)

    async def read(self, store: Store, visit: Visit) -> None:
        """A profile was read (any kind): a released or merged hold moves the deadline."""
        self._problem = ""  # profiles flow: the release warning blames the queue
        if visit.holds_changed:
            self._progress()
            await self.refresh_deadline(store)

    def _progress(self) -> None:
        """A held user of a large batch was read: a line at each quarter and at the end."""
        if not self._batch:
            return
        self._batch_read += 1
        read, total = self._batch_read, self._batch
        if read >= total:
            log.info("enrichment: the profiles of all %d new users read", total)
            self._batch = 0
        elif read * 4 // total > (read - 1) * 4 // total:
            log.info("enrichment: %d of %d new users' profiles read", read, total)

    async def clamp(self, store: Store, now: datetime) -> None:
        """Holds that began in the future (a wrong clock) begin now."""
        release = self._next_release
        if release is not None and release > now + self.hold + _SLACK:
            holds = await store.pull_back_holds(now)
            log.warning("host clock: %d holds began in the future: pulled back to now", holds)
            await self.refresh_deadline(store)

    async def refill(self, store: Store, queue: CommandQueue) -> None:
        """Keep up to ENRICH_WINDOW enrichment commands queued, oldest hold first."""
        room = _WINDOW.room(queue)
        if not room or (self._next_release is None and not queue.count(Kind.ENRICH)):
            return  # (no hold at all: held users come from a pull, which refreshes it)
        exclude = self._given_up | _WINDOW.queued_ids(queue)
        ids = await store.held_user_ids(room, exclude)
        self._backlog = _WINDOW.push(queue, ids, room)

    async def refresh_deadline(self, store: Store) -> None:
        """Recompute when the longest hold runs out."""
        earliest = await store.earliest_hold()
        self._next_release = None if earliest is None else earliest + self.hold

    async def release_due(self, store: Store, now: datetime) -> None:
        """Hand out first deltas held for ``hold`` or longer, with one warning."""
        if self._next_release is None or now < self._next_release:
            return
        released = await store.release_held(now - self.hold)
        if released:
            self._batch = 0  # (its warning below says the rest)
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
