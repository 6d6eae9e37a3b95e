"""The scheduler: what is due at host time ``now``, and when the next thing will be.

:meth:`Scheduler.run` lets the clock guard pull back far-future times, then asks
every job, in priority order, to queue what is due (:meth:`.job.Job.plan`): profile
work is ranked (new users' enrichment, a sweep behind a schedule it can keep,
follow refreshes, the sweep), and a job is held while one of a lower rank on the same
key has work waiting. :meth:`Scheduler.next_due` tells a host when to tick again.
It knows no job by name. Times are the host's ``now`` (aware UTC); nothing here
sends a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..store.writer import Store
from .clockguard import ClockGuard
from .job import Job
from .queue import CommandQueue, Key


class Scheduler:
    """Runs the jobs' plans each tick; see the module docstring."""

    def __init__(
        self, queue: CommandQueue, clock: ClockGuard, jobs: Sequence[Job], profiles: bool
    ) -> None:
        self._queue, self._clock = queue, clock
        # with profiles off (no PXLS_TOKEN) no profile work is planned
        self._jobs = [job for job in jobs if profiles or job.key is not Key.PROFILE]
        self._all = list(jobs)

    async def run(self, store: Store, now: datetime) -> None:
        """Queue what is due at ``now``."""
        await self._clock.check(store, self._queue, self._all, now)
        ranked = sorted(
            ((job.rank(now), i, job) for i, job in enumerate(self._jobs)), key=lambda r: r[:2]
        )
        waiting: dict[Key, list[int]] = {key: [] for key in Key}
        for rank, _, job in ranked:
            held = any(r < rank for r in waiting[job.key])
            if await job.plan(store, self._queue, now, held):
                waiting[job.key].append(rank)

    def next_due(self, now: datetime) -> datetime | None:
        """Earliest host time at which a tick has work (``now`` if it has some now)."""
        times = [job.next_due(now, self._queue) for job in self._jobs]
        times.append(self._queue.next_ready_at(now))
        known = [t for t in times if t is not None]
        return max(now, min(known)) if known else None
