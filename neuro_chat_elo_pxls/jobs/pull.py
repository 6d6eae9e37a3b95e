"""Timer 1, the leaderboard pull: when it is due, and what one pull does.

A pull reads ``/info`` (canvas code) and ``/stats/stats.json`` and ingests the
toplist in one transaction with the new schedule. The schedule follows the data:
the next pull is due at the first expected regeneration (the last accepted
``generatedAt`` plus whole :data:`REGENERATION` periods) at least
``leaderboard_interval`` after it, plus :data:`GENERATION_DELAY`, so the data is a
minute or two old when pulled. A pull that finds nothing newer looks again after
:data:`LOOK_AGAIN` (doubling up to :data:`STALE_RETRY`). Times are host time (UTC).

pxls and its caches are not always in order: a ``generatedAt`` in the repeated
autumn hour is read as the reading that fits (newer than the last, not in the
future); one more than :data:`FUTURE_LIMIT` ahead is rejected; canvas codes only
move forward (an ``/info`` answering an earlier code is a stale cache).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.job import Job
from ..engine.queue import Command, CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..models import Snapshot
from ..pxls.client import PxlsApi
from ..store.rows import IngestResult
from ..store.writer import Store
from ..util.logs import event
from ..util.text import shown
from ..util.times import fmt_duration, ts
from .observations import PendingObservations

log = logging.getLogger("neuro_chat_elo_pxls")

#: stats.json is regenerated this often; generatedAt is stamped when one finishes.
REGENERATION = timedelta(minutes=15)
#: A pull is due this long after the expected end of a regeneration (it takes 5-60 s).
GENERATION_DELAY = timedelta(seconds=90)
#: A pull that found no newer stats.json looks again after this, doubling up to
#: STALE_RETRY while it keeps finding none (pxls's cron stalled, a reset, a cache).
LOOK_AGAIN = timedelta(minutes=3)
#: The longest wait between looks for a newer stats.json, and after a failed pull.
STALE_RETRY = timedelta(minutes=15)
#: A generatedAt further ahead of the host's now than this is rejected.
FUTURE_LIMIT = timedelta(hours=1)
#: Server and host clocks may disagree by this much when choosing a DST reading.
CLOCK_SKEW = timedelta(minutes=5)
#: How many earlier canvas codes are remembered (codes only move forward).
CANVAS_HISTORY = 50


@attrs.define
class Pull(Job):
    """The pull schedule, the pull command and the confirm command (an ``/info`` check
    for waiting profile counts). Persisted through ``state``."""

    key = Key.LEADERBOARD
    runs = plans = frozenset({Kind.PULL, Kind.CONFIRM})

    state: StateKeeper
    interval: timedelta
    observations: PendingObservations = attrs.field(factory=PendingObservations)
    hold_new: bool = False  # new users' first deltas wait for their profile
    _looks: int = 0  # consecutive pulls that found nothing newer

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        """Queue the pull when due, and a confirm when waiting counts need one."""
        await self.arm(store, queue, now)
        confirm = self.observations.confirm_due()
        if confirm is not None and now >= confirm and not queue.count(Kind.PULL):
            queue.push(Command(Kind.CONFIRM))  # refused if one is queued
        return False

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        due = self.due(now, queue)
        confirm = self._confirm_due(queue)
        return min(due, confirm) if due is not None and confirm is not None else due or confirm

    def _confirm_due(self, queue: CommandQueue) -> datetime | None:
        """When a confirm command should be queued (None: none needed, or a pull or a
        confirm is queued already: the queue's own time covers it)."""
        due = self.observations.confirm_due()
        if due is None or queue.count(Kind.PULL) or queue.count(Kind.CONFIRM):
            return None
        return max(due, queue.state(Key.LEADERBOARD).ready_at or due)

    async def run(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        if command.kind is Kind.CONFIRM:
            await self.check_canvas(store, client, now)
        else:
            await self.pull(store, client, now, hold_new=self.hold_new)
        return True

    async def gave_up(self, store: Store, command: Command, now: datetime) -> None:
        if command.kind is Kind.PULL:
            # the next timer (one interval on) tries again
            await self.state.commit(store.save_state, pull_due_at=now + self.interval)
        else:  # a confirm: the counts wait; ask again in 15 minutes
            self.observations.checked(now)

    def due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """When the next pull is due (None: one is queued already, or a confirm holds the
        leaderboard slot: the pull is queued once it ran, and the queue's own ready time
        wakes the host meanwhile)."""
        if queue.count(Kind.PULL) or queue.count(Kind.CONFIRM):
            return None
        return self.state.current.pull_due_at or now

    async def arm(self, store: Store, queue: CommandQueue, now: datetime) -> None:
        """Queue a pull when due; the first one anchors the interval grid."""
        due = self.due(now, queue)
        if due is None or now < due:
            return
        if self.state.current.pull_due_at is None:
            await self.state.commit(store.save_state, pull_due_at=now)
        queue.push(Command(Kind.PULL))

    def _next(self, generated: datetime, now: datetime) -> datetime:
        """When the next regeneration after ``generated`` that is at least one interval
        later should have finished (and after ``now``)."""
        periods = max(1, -(-self.interval // REGENERATION))  # ceil
        due = generated + REGENERATION * periods + GENERATION_DELAY
        while due <= now:  # behind (the data was old): the next regeneration from now
            due += REGENERATION
        return due

    async def pull(
        self, store: Store, client: PxlsApi, now: datetime, *, hold_new: bool
    ) -> IngestResult | None:
        """One pull: /info, stats.json, ingest. None if the snapshot was skipped."""
        canvas = await self.check_canvas(store, client, now)
        if canvas is None:
            return None
        snapshot = await client.fetch_stats()
        _log_rejected(snapshot)
        generated = self._reading(snapshot, now)
        ambiguous = self._ambiguous(snapshot)
        if ambiguous is not None:
            await self._skip(store, now, ambiguous)
            return None
        if generated > now + FUTURE_LIMIT:
            await self._skip(
                store,
                now,
                f"generatedAt {ts(generated)} is more than {fmt_duration(FUTURE_LIMIT)} "
                f"ahead of host time {ts(now)}: a server clock glitch, rejected",
                logging.WARNING,
            )
            return None
        skip = self._skip_reason(generated)
        if skip is not None:
            await self._skip(store, now, skip)
            return None
        snapshot = attrs.evolve(snapshot, generated_at=generated, generated_alt=None)
        proposed = self.state.propose(
            last_generated_at=generated,
            last_pull_at=now,
            pull_due_at=self._next(generated, now),
        )
        result = await store.ingest(canvas, snapshot, now, hold_new=hold_new, state=proposed)
        self.state.adopt(proposed)
        self._looks = 0
        _log_pull(now, canvas, generated, snapshot, result, proposed.pull_due_at)
        return result

    async def check_canvas(self, store: Store, client: PxlsApi, now: datetime) -> str | None:
        """Ask ``/info``: a reset is recorded, waiting profile counts are settled; None
        (and a retry scheduled) if it answered an earlier code (a stale cache)."""
        canvas = (await client.fetch_info()).canvas_code
        if canvas in self.state.current.canvas_history or _older(canvas, self.state.current.canvas):
            self.observations.checked(now)  # asked: the next confirm is 15 minutes on
            # codes only move forward: an older code after a newer one is a stale cache
            await self._skip(
                store,
                now,
                f"/info answered canvas {shown(canvas)} again after "
                f"{shown(self.state.current.canvas or '-')}: a stale cache, not a reset",
                logging.WARNING,
            )
            return None
        # the code first: a tick cancelled between the two must not leave the counts
        # settled on the new code while the source still believes the old one
        await self._see_canvas(store, canvas, now)
        await self.observations.settle(store, canvas, now)
        return canvas

    async def _skip(
        self, store: Store, now: datetime, reason: str, level: int = logging.INFO
    ) -> None:
        wait = min(STALE_RETRY, self.interval, LOOK_AGAIN * 2 ** min(self._looks, 8))
        self._looks += 1
        retry = now + wait
        await self.state.commit(store.save_state, pull_due_at=retry)
        log.log(
            level,
            "pull: stats.json skipped (%s); next look at %s",
            reason,
            ts(retry),
            extra=event("pull_skipped", reason=reason, wait_s=wait.total_seconds()),
        )

    async def _see_canvas(self, store: Store, canvas: str, now: datetime) -> None:
        current = self.state.current
        previous = current.canvas
        if canvas == previous:
            return
        history = [*current.canvas_history, previous] if previous is not None else []
        await self.state.commit(
            store.save_state,
            canvas=canvas,
            canvas_first_seen=now,
            canvas_changed_at=now if previous is not None else None,
            canvas_history=history[-CANVAS_HISTORY:],
        )
        if previous is None:
            log.info("canvas %s first seen", shown(canvas), extra=event("canvas", canvas=canvas))
        else:
            log.warning(
                "canvas reset: %s -> %s; scores restart from 0 on the new canvas",
                shown(previous),
                shown(canvas),
                extra=event("canvas_reset", canvas=canvas, previous=previous),
            )

    def _reading(self, snapshot: Snapshot, now: datetime) -> datetime:
        """The reading of ``generatedAt`` to use: in the repeated autumn hour, the one
        newer than the last processed snapshot and not in the future (the newer when
        both fit, the first when neither does)."""
        if snapshot.generated_alt is None:
            return snapshot.generated_at
        last = self.state.current.last_generated_at
        fitting = [
            reading
            for reading in (snapshot.generated_at, snapshot.generated_alt)
            if (last is None or reading > last) and reading <= now + CLOCK_SKEW
        ]
        # both fit (the last pull was before the repeated hour): stats.json is
        # regenerated every 15 minutes, so the file served is the newest reading's
        return max(fitting) if fitting else snapshot.generated_at

    def _ambiguous(self, snapshot: Snapshot) -> str | None:
        """Why a ``generatedAt`` in the repeated autumn hour cannot be placed (None: it
        can). Either reading equal to the last processed one is that same file served
        again (a stalled cron; its second reading is an hour later and would look new).
        (A new file an hour later to the second is skipped too: the next one comes 15
        minutes on.) Readings on both sides of the canvas reset, the first newer than
        the last file processed, leave the canvas unknown (a stalled cron's last file
        of the old canvas, or a new file): the next file, or the end of the repeated
        hour, tells. Simulator seed 129: a stale stats.json of the old canvas, read an
        hour later, was credited to the new one."""
        alt = snapshot.generated_alt
        if alt is None:
            return None
        first, current = snapshot.generated_at, self.state.current
        last = current.last_generated_at
        if last in (first, alt):
            return f"generatedAt {ts(first)} (or {ts(alt)}: the repeated hour) already processed"
        changed = current.canvas_changed_at
        if changed is not None and (last is None or last < first) and first < changed <= alt:
            canvas = shown(current.canvas or "-")
            return (
                f"generatedAt {ts(first)} or {ts(alt)} (the repeated hour): before or after "
                f"canvas {canvas} was first seen, cannot tell which canvas it counts"
            )
        return None

    def _skip_reason(self, generated: datetime) -> str | None:
        current = self.state.current
        if current.canvas_changed_at is not None and generated < current.canvas_changed_at:
            canvas = shown(current.canvas or "-")
            return f"stale: generated {ts(generated)}, before canvas {canvas} was first seen"
        if current.last_generated_at is not None and generated <= current.last_generated_at:
            return f"generatedAt {ts(generated)} already processed"
        return None


def _older(code: str, current: str | None) -> bool:
    """Numeric codes (pxls.space's are: 86, 87, ...) move up: a lower one is an earlier
    canvas even if this source never saw it (two resets between pulls, then a stale
    cache answering the one in between)."""
    return (
        current is not None
        and code.isascii()
        and code.isdigit()
        and current.isascii()
        and current.isdigit()
        and int(code) < int(current)
    )


def _log_pull(
    now: datetime,
    canvas: str,
    generated: datetime,
    snapshot: Snapshot,
    result: IngestResult,
    next_pull_at: datetime | None,
) -> None:
    """The line of an ingested pull: what it saw and did, and when the next one is due."""
    log.info(
        "pull at %s: canvas %s, %d users seen, %d new, %d deltas, %d held for enrichment, "
        "%d unchanged, %d -snip- and %d invalid rows skipped%s",
        now.isoformat(timespec="seconds"),
        shown(canvas),
        result.seen,
        result.new,
        result.deltas,
        result.held,
        result.unchanged,
        snapshot.snipped,
        len(snapshot.rejected),
        # counted, never named (DESIGN 10)
        f", {result.opted_out} opted-out rows skipped" if result.opted_out else "",
        extra=event(
            "pull",
            canvas=canvas,
            generated_at=ts(generated),
            seen=result.seen,
            new=result.new,
            deltas=result.deltas,
            held=result.held,
            unchanged=result.unchanged,
            snipped=snapshot.snipped,
            invalid=len(snapshot.rejected),
            opted_out=result.opted_out,
            next_pull_at=ts(next_pull_at) if next_pull_at else None,
        ),
    )


def _log_rejected(snapshot: Snapshot) -> None:
    for reason in snapshot.rejected[:10]:
        log.warning("stats.json row dropped: %s", reason)
    if len(snapshot.rejected) > 10:
        log.warning("stats.json: %d more rows dropped", len(snapshot.rejected) - 10)
