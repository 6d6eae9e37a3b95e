"""The command processor: runs the first ready command, and decides what a failure means.

:meth:`Processor.run_one` pops commands in arrival order, skipping keys that cool
down (:class:`~.queue.CommandQueue`), hands each to the job that :attr:`~.job.Job.runs`
its kind, and stops after the first one that sent a request (stale ones send
nothing). A failure goes to the :class:`~.policy.FailurePolicy`: the command is put
back behind a pause, or given up on (the job that queued it hears of it). Every
job hears of every outcome (:meth:`~.job.Job.after`, :meth:`~.job.Job.failed`). Key
states are persisted after every change. A cancelled command is put back where it
was. Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import PxlsError
from ..pxls.client import PxlsApi
from ..store.writer import Store
from ..util.logs import event
from ..util.times import ts
from .job import Job
from .policy import FailurePolicy
from .queue import Command, CommandQueue, Key
from .state import StateKeeper

log = logging.getLogger("neuro_chat_elo_pxls")


class Processor:
    """See the module docstring."""

    def __init__(
        self, queue: CommandQueue, state: StateKeeper, policy: FailurePolicy, jobs: Sequence[Job]
    ) -> None:
        self._queue, self._state, self._policy, self._jobs = queue, state, policy, list(jobs)
        self._runner = {kind: job for job in jobs for kind in job.runs}
        self._owner = {kind: job for job in jobs for kind in job.plans}
        #: per key, since when and how many requests failed in a row (for the one
        #: "works again" line; in memory: a restart logs its own start-up line)
        self._troubled: dict[Key, tuple[datetime, int]] = {}

    async def run_one(self, store: Store, client: PxlsApi, now: datetime) -> None:
        """Run the first ready command that sends a request (skipping stale ones)."""
        while (entry := self._queue.pop_ready(now)) is not None:
            command = entry[1]
            try:
                sent = await self._runner[command.kind].run(store, client, command, now)
            except asyncio.CancelledError:
                self._queue.put_back(entry)  # the host cancelled the tick: run it later
                raise
            except Exception as exc:  # a bug must not wedge the queue or kill the host
                if not isinstance(exc, PxlsError):
                    log.exception("unexpected error in %s", command.describe())
                await self._on_failure(store, entry, exc, now)
                return
            if sent:
                self._recovered(command, now)
            if self._policy.on_success(self._queue.state(command.key)):
                self._queue.set_counters(command.key, 0, 0)
                await self.persist_keys(store, now)
            for job in self._jobs:
                await job.after(store, self._queue, command)
            if sent:
                return

    def _recovered(self, command: Command, now: datetime) -> None:
        """A request on this key succeeded: after failures, say so once."""
        trouble = self._troubled.pop(command.key, None)
        if trouble is None:
            return
        since, failures = trouble
        key = command.key.value
        log.info(
            "%s requests work again: %s succeeded at %s after %d failed request%s since %s",
            key,
            command.describe(),
            ts(now),
            failures,
            "" if failures == 1 else "s",
            ts(since),
            extra=event("recovered", key=key, failures=failures, since=ts(since)),
        )

    async def persist_keys(self, store: Store, now: datetime, **changes: Any) -> None:
        """Keep the key states (and ``changes``) in the database: a restarted source
        restores them, ``status`` shows them from outside. They are saved as they are:
        a pause that looks over at a wrong clock's ``now`` is kept (simulator seed 3181:
        a +5 h tick saved a 429's wait as over, and a restart forgot it)."""
        await self._state.commit(store.save_state, **changes)

    async def _on_failure(
        self, store: Store, entry: tuple[int, Command], exc: Exception, now: datetime
    ) -> None:
        """Apply the failure policy's decision: retry after a pause, or give up."""
        order, command = entry
        since, failures = self._troubled.get(command.key, (now, 0))
        self._troubled[command.key] = (since, failures + 1)
        for job in self._jobs:
            job.failed(command, exc)
        decision = self._policy.on_failure(command, exc, self._queue.state(command.key), now)
        self._queue.set_counters(command.key, decision.failures, decision.auth_pauses)
        wait = None if decision.retry_at is None else (decision.retry_at - now).total_seconds()
        log.log(
            decision.level,
            "%s",
            decision.message,
            extra=event(
                "request_failed",
                key=command.key.value,
                command=command.kind.value,
                attempt=command.attempts + 1,
                wait_s=wait,
                reason=decision.reason,
            ),
        )
        if decision.retry_at is not None:
            self._queue.cool(command.key, decision.retry_at, decision.reason, now)
            self._queue.put_back((order, decision.command))
        elif command.kind in self._owner:
            await self._owner[command.kind].gave_up(store, command, now)
        await self.persist_keys(store, now, last_error=decision.message, last_error_at=now)
