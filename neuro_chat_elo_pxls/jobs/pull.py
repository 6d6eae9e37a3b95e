"""Timer 1, the leaderboard pull: when it is due, and what one pull does.

A pull reads ``/info`` (the canvas code: :mod:`.canvas`, run by the tick before
:meth:`Pull.ingest`) and ``/stats/stats.json``, and ingests the toplist in one
transaction with the new schedule (``pull_due_at``, ``last_pull_at``,
``last_generated_at`` of the engine state: this part is their one writer). The
schedule follows the data: the next pull is due at the first expected regeneration (the
last accepted ``generatedAt`` plus whole :data:`REGENERATION` periods) at least
``leaderboard_interval`` after it, plus :data:`GENERATION_DELAY`, so the data is a
minute or two old when pulled. A pull that finds nothing newer looks again after
:data:`LOOK_AGAIN` (doubling up to :data:`STALE_RETRY`). Times are host time (UTC).

pxls and its caches are not always in order: a ``generatedAt`` in the repeated
autumn hour is read as the reading that fits (newer than the last, not in the
future); one more than :data:`FUTURE_LIMIT` ahead is rejected; canvas codes only
move forward (an ``/info`` answering an earlier code is a stale cache: the pull
looks again, :meth:`Pull.skip`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.clockguard import far_ahead, say_pulled_back
from ..engine.queue import Command, CommandQueue, Kind
from ..engine.state import StateKeeper
from ..models import Snapshot
from ..pxls.client import PxlsApi
from ..store.rows import IngestResult
from ..store.writer import Store
from ..util.logs import event
from ..util.text import shown
from ..util.times import fmt_duration, ts

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


@attrs.define
class Pull:
    """The pull schedule and the pull command; see the module docstring."""

    state: StateKeeper
    interval: timedelta
    hold_new: bool = False  # new users' first deltas wait for their profile
    _looks: int = 0  # consecutive pulls that found nothing newer

    async def plan(self, store: Store, queue: CommandQueue, now: datetime) -> None:
        """Queue the pull when due (see :meth:`arm`)."""
        await self.arm(store, queue, now)

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """When the next pull is due (see :meth:`due`)."""
        return self.due(now, queue)

    async def clamp(self, store: Store, now: datetime) -> None:
        """Pull back this part's times a wrong host clock stored too far ahead of
        ``now``: a pull is due at most one interval and one regeneration period ahead;
        the last pull is not in the future; a ``generatedAt`` more than an hour ahead
        becomes the time of the pull that took it (the data was real, its time was
        not: anything generated after that pull is newer). Raises what the store
        raises."""
        current = self.state.current
        limits = {
            "pull_due_at": self.interval + timedelta(minutes=20),
            "last_pull_at": timedelta(0),
            "last_generated_at": timedelta(hours=1),
        }
        changes: dict[str, datetime | None] = {**far_ahead(current, limits, now)}
        if not changes:
            return
        if "last_generated_at" in changes:
            # no such pull known: take the next one
            pulled = current.last_pull_at
            changes["last_generated_at"] = pulled if pulled is not None and pulled <= now else None
        say_pulled_back(current, list(changes), now)
        await self.state.commit(store.save_state, **changes)

    async def gave_up(self, store: Store, now: datetime) -> None:
        """The pull failed for good: the next timer (one interval on) tries again."""
        await self.state.commit(store.save_state, pull_due_at=now + self.interval)

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

    async def ingest(
        self, store: Store, client: PxlsApi, canvas: str, now: datetime
    ) -> IngestResult | None:
        """The pull after its ``/info`` answered the current ``canvas``: stats.json,
        then ingest (scores, outbox and the schedule in one transaction). None if the
        snapshot was skipped (the next look scheduled). Raises what the client and the
        store raise."""
        snapshot = await client.fetch_stats()
        _log_rejected(snapshot)
        generated = self._reading(snapshot, now)
        ambiguous = self._ambiguous(snapshot)
        if ambiguous is not None:
            await self.skip(store, now, ambiguous)
            return None
        if generated > now + FUTURE_LIMIT:
            await self.skip(
                store,
                now,
                f"generatedAt {ts(generated)} is more than {fmt_duration(FUTURE_LIMIT)} "
                f"ahead of host time {ts(now)}: a server clock glitch, rejected",
                logging.WARNING,
            )
            return None
        skip = self._skip_reason(generated)
        if skip is not None:
            await self.skip(store, now, skip)
            return None
        snapshot = attrs.evolve(snapshot, generated_at=generated, generated_alt=None)
        proposed = self.state.propose(
            last_generated_at=generated,
            last_pull_at=now,
            pull_due_at=self._next(generated, now),
        )
        result = await store.ingest(canvas, snapshot, now, hold_new=self.hold_new, state=proposed)
        self.state.adopt(proposed)
        self._looks = 0
        _log_pull(now, canvas, generated, snapshot, result, proposed.pull_due_at)
        return result

    async def skip(
        self, store: Store, now: datetime, reason: str, level: int = logging.INFO
    ) -> None:
        """Nothing to ingest (``reason``, logged at ``level``): look again after
        :data:`LOOK_AGAIN`, doubling while it keeps finding nothing (at most
        :data:`STALE_RETRY` or one interval)."""
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
