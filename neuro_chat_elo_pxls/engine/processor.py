"""The command processor's bookkeeping: what a command's success or failure means.

The tick (:mod:`..jobs.tick`) pops commands in arrival order, skipping keys that cool
down (:class:`~.queue.CommandQueue`), runs each, and stops after the first one that
sent a request. It hands each outcome here: :meth:`Processor.succeeded` resets the
key's failure counters (and says once that requests work again);
:meth:`Processor.failed` asks the :class:`~.policy.FailurePolicy`, puts the command
back behind a pause or says it was given up on, and :meth:`Processor.persist_failure`
keeps the key states and the error. Key states live in the queue and are persisted
from there after every change. Times are the host's ``now`` (aware UTC); nothing here
sends a request.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ..errors import PxlsError
from ..store.writer import Store
from ..util.logs import event
from ..util.times import ts
from .policy import Decision, FailurePolicy
from .queue import Command, CommandQueue, Key
from .state import StateKeeper

log = logging.getLogger("neuro_chat_elo_pxls")


class Processor:
    """See the module docstring. The only writer of the queue's key counters."""

    def __init__(self, queue: CommandQueue, state: StateKeeper, policy: FailurePolicy) -> None:
        self._queue, self._state, self._policy = queue, state, policy
        #: per key, since when and how many requests failed in a row (for the one
        #: "works again" line; in memory: a restart logs its own start-up line)
        self._troubled: dict[Key, tuple[datetime, int]] = {}

    async def succeeded(self, store: Store, command: Command, sent: bool, now: datetime) -> None:
        """``command`` ran (``sent``: it sent a request): after failures, the key's
        counters go back to 0 (persisted). Raises what the store raises."""
        if sent:
            self._recovered(command, now)
        if self._policy.on_success(self._queue.state(command.key)):
            self._queue.set_counters(command.key, 0, 0)
            await self.persist_keys(store, now)

    def failed(self, entry: tuple[int, Command], exc: Exception, now: datetime) -> Decision:
        """``entry`` (popped from the queue) raised ``exc``: the policy decides; the
        command goes back to its place behind a pause (``retry_at`` set), or is given
        up on (``retry_at`` None: the caller tells the part that planned it). Logged
        (an error that is not a :class:`PxlsError` with its traceback). Sync."""
        order, command = entry
        if not isinstance(exc, PxlsError):
            log.exception("unexpected error in %s", command.describe(), exc_info=exc)
        since, failures = self._troubled.get(command.key, (now, 0))
        self._troubled[command.key] = (since, failures + 1)
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
        return decision

    async def persist_failure(self, store: Store, decision: Decision, now: datetime) -> None:
        """Keep the key states and the failure's message (``status`` shows it)."""
        await self.persist_keys(store, now, last_error=decision.message, last_error_at=now)

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
