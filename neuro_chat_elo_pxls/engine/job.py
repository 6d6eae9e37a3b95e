"""What the engine asks of a job: the one interface the engine defines and jobs implement.

The scheduler, the processor and the clock guard know no job by name. The source
hands them its jobs in priority order, and each job answers for itself:

* :meth:`Job.plan` queues what is due at ``now`` (the scheduler, every tick);
* :meth:`Job.next_due` says when it will next have work (the host's wake-up);
* :meth:`Job.run` runs one of the commands it :attr:`~Job.runs` (the processor);
* :meth:`Job.after` / :meth:`Job.failed` / :meth:`Job.gave_up` hear what became of
  any command (the processor), :meth:`Job.visited` of any profile read;
* :meth:`Job.opened` hears that the database was opened (the state restored);
* :meth:`Job.clamp` pulls back its own times a wrong host clock stored (the clock
  guard): nobody edits another part's state, they ask.

Profile work shares one cooldown key, so it is ranked (:meth:`Job.rank`, lower
first): a job is *held* (queues nothing optional) while a job of a lower rank has
work waiting; jobs of the same rank share the budget. Every method but :meth:`Job.run`
has a do-nothing default. Which jobs hear of profile reads is wired by the job that
reads them (``jobs.build_jobs``). Times are the host's ``now`` (aware UTC); nothing
here sends a request.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from .queue import Command, CommandQueue, Key, Kind

if TYPE_CHECKING:
    from ..models import Profile
    from ..pxls.client import PxlsApi
    from ..store.writer import Store


@attrs.frozen
class Visit:
    """One profile read, as the jobs hear of it (:meth:`Job.visited`).

    ``swept_in``: the user's sweep number before the read; ``profile`` None: 404
    (the name is marked missing); ``canvas``: the canvas the source knew when it
    asked; ``holds_changed``: a held first delta was released or merged away.
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


class Job:
    """A part of the engine's work; see the module docstring. Subclasses override."""

    #: the cooldown key this job's commands use
    key: Key = Key.PROFILE
    #: the command kinds the processor hands this job to run
    runs: frozenset[Kind] = frozenset()
    #: the command kinds this job queues (it hears when one is given up on)
    plans: frozenset[Kind] = frozenset()

    def rank(self, now: datetime) -> int:
        """Profile work's order at ``now`` (lower first; equal ranks share)."""
        return 0

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        """Queue what is due at ``now`` (``held``: work of a lower rank waits, queue
        nothing optional). Returns True if work of this job waits (queued, or more
        than fits the queue), which holds jobs of a higher rank."""
        return False

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """The earliest host time this job has work (None: none known)."""
        return None

    async def run(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        """Run ``command`` (one of :attr:`runs`); False if stale and nothing was sent."""
        raise NotImplementedError(command.describe())

    async def after(self, store: Store, queue: CommandQueue, command: Command) -> None:
        """``command`` (any job's) ran and succeeded."""

    def failed(self, command: Command, error: BaseException) -> None:
        """``command`` (any job's) failed with ``error`` (it may be retried)."""

    async def gave_up(self, store: Store, command: Command, now: datetime) -> None:
        """The processor gave up on ``command`` (one of :attr:`plans`)."""

    async def visited(self, store: Store, visit: Visit) -> None:
        """A profile was read (or answered 404)."""

    async def opened(self, store: Store, profiles: bool) -> None:
        """The database was opened and the engine state restored (``profiles``: a
        PXLS_TOKEN is set and profiles are read)."""

    async def clamp(self, store: Store, now: datetime, jumped_back: bool) -> None:
        """Pull back this job's own times that lie further ahead of ``now`` than they
        can (``jumped_back``: the host clock was seen far ahead before this tick)."""
