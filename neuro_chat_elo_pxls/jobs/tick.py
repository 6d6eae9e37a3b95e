"""One tick, top to bottom: what is planned, in what order, and which part runs each
command kind.

:meth:`Tick.run` is the whole of a tick at host time ``now`` (aware UTC):

1. clamp: each part pulls back its own times a wrong host clock stored too far ahead
   (the clock guard the keys' pauses, and says whether the clock jumped back);
   then the opt-out list (:mod:`.optout`): everyone newly listed is withdrawn and
   erased before anything is planned, so no request or delta of theirs follows;
2. plan: the pull, a confirm for waiting profile counts, then profile work in rank
   order (enrichment; the sweep before, beside or after follow refreshes);
3. run the first ready command that sends a request (:meth:`Tick._run`, a ``match``
   on its kind); a profile read goes to the parts that need it in the order written
   once in :meth:`Tick._heard`.

Each part plans and runs its own kind; the engine (:mod:`..engine.core`) keeps the
state, the queue and the failure bookkeeping, and knows no part by name.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime

from ..engine.core import Engine
from ..engine.queue import Command, Key, Kind
from ..pxls.client import PxlsApi
from ..settings import PxlsSettings
from ..store.writer import Store
from .canvas import Canvas
from .enrichment import EnrichmentWindow
from .follow import FollowList
from .observations import Observations
from .optout import OptOutList
from .profiles import Answer, ProfileReads
from .pull import Pull
from .settle import Settling
from .sweep import Place, Sweep


def _retrieve(task: asyncio.Task[None]) -> None:
    """Done callback: a task whose caller was cancelled still has its error read."""
    if not task.cancelled():
        task.exception()


class Tick:
    """The parts of one source and the tick that drives them; see the module docstring.
    Every coroutine may raise what the store raises (the source logs it)."""

    def __init__(self, settings: PxlsSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.engine = engine = Engine(settings, rng)
        state, self.queue = engine.state, engine.queue
        self.canvas = Canvas(state)
        self.pull = Pull(state, settings.leaderboard_interval, hold_new=settings.profiles_enabled)
        self.observations = Observations()
        self.enrich = EnrichmentWindow(settings.enrichment_hold, state, settings.secret_envs[0])
        self.follow = FollowList(settings, state)
        self.settle = Settling(state)
        self.sweep = Sweep(state, settings.sweep_interval, settings.profile_cooldown)
        self.profiles = ProfileReads(settings, self.queue, state)
        self.opt_outs = OptOutList(settings)

    async def restore(self, store: Store) -> None:
        """The database just opened: the engine restores its state and pauses, then
        enrichment releases every hold (profiles off) or learns its deadline."""
        await self.engine.restore(store)
        await self.enrich.opened(store, self.settings.profiles_enabled)

    async def run(self, store: Store, client: PxlsApi, now: datetime) -> None:
        """The tick at ``now``: clamp, the opt-out list, plan, then run at most one
        command that sends."""
        await self._clamp(store, now)
        await self.opt_outs.apply(store, now)  # before planning: nothing of theirs runs
        await self._plan(store, now)
        await self._run_one(store, client, now)

    def next_due(self, now: datetime) -> datetime | None:
        """Earliest host time at which a tick has work (``now`` if it has some now)."""
        times = [self.pull.next_due(now, self.queue), self.observations.next_due(self.queue)]
        if self.settings.profiles_enabled:
            times.append(self.enrich.next_due(now, self.queue))
            times.append(self.settle.next_due(now, self.queue))
            times.append(self.follow.next_due(now, self.queue))
            times.append(self.sweep.next_due(now, self.queue))
        times.append(self.queue.next_ready_at(now))
        known = [t for t in times if t is not None]
        return max(now, min(known)) if known else None

    # -- 1. clamp ----------------------------------------------------------------

    async def _clamp(self, store: Store, now: datetime) -> None:
        """Times a wrong host clock stored too far ahead are pulled back, each part
        its own."""
        await self.pull.clamp(store, now)  # due time, last pull, last generatedAt
        await self.sweep.clamp(store, now)  # start, finish
        await self.canvas.clamp(store, now)  # first seen, changed at
        jumped_back = self.engine.clock.check(self.queue, now)  # the keys' pauses
        await self.enrich.clamp(store, now)  # holds that began in the future
        await self.observations.clamp(store, now, jumped_back)  # counts stamped ahead
        self.engine.clock.handled(now, jumped_back)

    # -- 2. plan -----------------------------------------------------------------

    async def _plan(self, store: Store, now: datetime) -> None:
        """Queue what is due at ``now``. Profile work shares one key, so it is ranked:
        a part is held (queues nothing optional) while one before it has work waiting."""
        queue = self.queue
        await self.pull.plan(store, queue, now)  # Timer 1
        self.observations.plan(queue, now)  # /info for waiting counts (none beside a pull)
        if not self.settings.profiles_enabled:
            return  # no PXLS_TOKEN: no profile work
        place = self.sweep.place(now)  # (before anything plans, as it stands now)
        enrich = await self.enrich.plan(store, queue, now)  # first, never held
        # after a reset: the people to settle on the old canvas, ahead of the rest
        first = await self.settle.plan(store, queue, now, held=enrich) or enrich
        sweep = place is Place.BEFORE and await self.sweep.plan(store, queue, now, held=first)
        follow = await self.follow.plan(store, queue, now, held=first or sweep)
        if place is not Place.BEFORE:
            held = first or (place is Place.AFTER and follow)
            await self.sweep.plan(store, queue, now, held=held)

    # -- 3. run ------------------------------------------------------------------

    async def _run_one(self, store: Store, client: PxlsApi, now: datetime) -> None:
        """Run the first ready command that sends a request (stale ones send nothing).
        A command the host cancels is put back where it was."""
        processor = self.engine.processor
        while (entry := self.queue.pop_ready(now)) is not None:
            command = entry[1]
            try:
                sent = await self._run(store, client, command, now)
            except asyncio.CancelledError:
                self.queue.put_back(entry)  # the host cancelled the tick: run it later
                raise
            except Exception as exc:  # a bug must not wedge the queue or kill the host
                if command.key is Key.PROFILE:
                    self.enrich.failed(exc)  # its release warning says why
                decision = processor.failed(entry, exc, now)
                if decision.retry_at is None:
                    await self._gave_up(store, command, now)
                await processor.persist_failure(store, decision, now)
                return
            await processor.succeeded(store, command, sent, now)
            # a pull that ingested may have held new users: queue their enrichment now
            await self.enrich.after_command(store, self.queue)
            if sent:
                return

    async def _run(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        """Run ``command``; False if it was stale and sent nothing."""
        match command.kind:
            case Kind.PULL:
                canvas = await self._info(store, client, now)
                if canvas is not None:
                    await self.pull.ingest(store, client, canvas, now)
                return True
            case Kind.CONFIRM:
                await self._info(store, client, now)
                return True
            case Kind.ENRICH | Kind.FOLLOW | Kind.SWEEP | Kind.SETTLE:
                return await self._read_profile(store, client, command, now)

    async def _gave_up(self, store: Store, command: Command, now: datetime) -> None:
        """The processor gave up on ``command``: the part that planned it hears."""
        user = command.user_id
        match command.kind:
            case Kind.PULL:
                await self.pull.gave_up(store, now)
            case Kind.CONFIRM:
                self.observations.gave_up(now)
            case Kind.ENRICH if user is not None:
                self.enrich.gave_up(user)
            case Kind.FOLLOW if user is not None:
                self.follow.gave_up(user)
            case Kind.SWEEP if user is not None:
                await self.sweep.gave_up(store, user)
            case Kind.SETTLE if user is not None:
                self.settle.gave_up(user)

    async def _info(self, store: Store, client: PxlsApi, now: datetime) -> str | None:
        """Ask ``/info`` (a pull's first request, or a confirm). A stale cache: the
        waiting counts stay (asked: the next confirm is 15 minutes on) and the pull
        looks again later; None. A current code: a reset is recorded first, then the
        counts taken on it are credited (a tick cancelled between the two must not
        leave them settled on a code the source does not believe yet)."""
        code = (await client.fetch_info()).canvas_code
        stale = self.canvas.stale(code)
        if stale is not None:
            self.observations.checked(now)
            await self.pull.skip(store, now, stale, logging.WARNING)
            return None
        await self.canvas.see(store, code, now)
        await self.observations.settle(store, code, now, self.canvas.previous)
        return code

    async def _read_profile(
        self, store: Store, client: PxlsApi, command: Command, now: datetime
    ) -> bool:
        """Read one profile; False if the command was stale and nothing was sent."""
        answer = await self.profiles.ask(store, client, command, now)
        if answer is None:
            return False
        # what pxls answered is taken in whole, even when the tick is cancelled now
        # (shielded, like a store unit): a sweep read cancelled after its answer had
        # marked the user swept and lost the count (simulator seed 55)
        task = asyncio.ensure_future(self._heard(store, answer))
        task.add_done_callback(_retrieve)
        await asyncio.shield(task)
        return True

    async def _heard(self, store: Store, answer: Answer) -> None:
        """Store a profile's answer, then tell the parts that need it, in this order
        (the ones that do not await first)."""
        visit = await self.profiles.take(store, answer)
        self.observations.record(visit)  # the count waits for /info to confirm its canvas
        self.follow.count(visit)  # a follow refresh counts in its round
        self.settle.count(visit)  # read once after a reset: not read again to settle
        self.sweep.count(visit)  # any read is the user's visit of this sweep
        await self.enrich.read(store, visit)  # a released hold moves the deadline
