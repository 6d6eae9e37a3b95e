"""The failure policy: what to do after a command failed, decided in one place.

:meth:`FailurePolicy.on_failure` decides, from a key's state and the failure, a
:class:`Decision`: retry after a wait or give up, the key's failure counters after
it, and the log line that says why. It changes nothing: the queue owns the key
states and takes the decision (:meth:`~.queue.CommandQueue.set_counters`).
:func:`compute_backoff` is a pure function. All times are the host's ``now``;
nothing here sleeps or reads the clock.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta

import attrs

from ..errors import AuthError, RateLimitedError
from ..settings import PxlsSettings
from ..util.times import fmt_duration
from .queue import Command
from .state import KeyState

#: After a 403 or a challenge a key pauses at least this long, whatever the settings say.
AUTH_PAUSE_FLOOR = timedelta(minutes=15)
#: A server's Retry-After is honoured up to this long.
RETRY_AFTER_MAX = timedelta(hours=6)
#: Profile requests are spaced by ``profile_cooldown`` times this, and at least
#: PACING_FLOOR more than the cooldown, so that the work a tick does before the send
#: (a few ms that vary) and network jitter never make pxls.space see two requests
#: closer than promised. The floor matters at small cooldowns only (benchmarks at
#: 50 ms: 2 % is 1 ms there); at the default 1 s the margin is 25 ms, 2.5 %.
PACING_MARGIN = 1.02
PACING_FLOOR = timedelta(milliseconds=25)


def pacing_gap(cooldown: timedelta) -> timedelta:
    """Host time from one profile request's tick to the next one's (≥ ``cooldown``)."""
    return max(cooldown * PACING_MARGIN, cooldown + PACING_FLOOR)


def compute_backoff(
    initial: timedelta, maximum: timedelta, failures: int, jitter: float
) -> timedelta:
    """The wait after the ``failures``-th consecutive failure (≥ 1):
    ``initial * 2**(failures-1)``, capped at ``maximum``, times ``jitter`` (1..1.25),
    and never above ``maximum``."""
    base: timedelta = min(maximum, initial * 2 ** min(max(failures, 1) - 1, 30))
    jittered: timedelta = base * jitter
    return min(maximum, jittered)


def compute_auth_pause(pause: timedelta, maximum: timedelta, pauses: int) -> timedelta:
    """The pause after the ``pauses``-th consecutive 403/challenge (≥ 1): doubling from
    ``pause`` up to ``maximum``, never under :data:`AUTH_PAUSE_FLOOR`."""
    doubled: timedelta = pause * 2 ** min(max(pauses, 1) - 1, 16)
    capped: timedelta = min(max(maximum, pause), doubled)
    return max(AUTH_PAUSE_FLOOR, capped)


@attrs.frozen
class Decision:
    """What to do with a failed command.

    ``retry_at``: put the command back and pause its key until then (None: give up).
    ``command``: the command to put back (its attempt count updated).
    ``level``/``message``: the one log line that says what happened and why.
    ``failures``/``auth_pauses``: the key's consecutive counters after this failure.
    """

    retry_at: datetime | None
    command: Command
    level: int
    message: str
    reason: str
    failures: int = 0
    auth_pauses: int = 0

    @property
    def give_up(self) -> bool:
        """The command is not retried (``retry_at`` is None)."""
        return self.retry_at is None


@attrs.define
class FailurePolicy:
    """Backoff, auth pauses and ``max_attempts``, from the settings."""

    settings: PxlsSettings
    rng: random.Random = attrs.field(factory=random.Random)

    def on_success(self, state: KeyState) -> bool:
        """A command of this key succeeded: True if its counters need resetting."""
        return bool(state.failures or state.auth_pauses)

    def on_failure(
        self, command: Command, exc: BaseException, state: KeyState, now: datetime
    ) -> Decision:
        """Decide the fate of ``command`` after ``exc`` on a key in ``state`` (pure)."""
        what, key = command.describe(), command.key.value
        failures, auth_pauses = state.failures, state.auth_pauses
        if isinstance(exc, AuthError):
            auth_pauses += 1
            s = self.settings
            pause = compute_auth_pause(s.auth_pause, s.auth_pause_max, auth_pauses)
            level = logging.ERROR if auth_pauses == 1 else logging.WARNING
            message = f"{what}: {exc}; pausing {key} requests for {fmt_duration(pause)}"
            return Decision(
                now + pause, command, level, message, f"auth: {exc}", failures, auth_pauses
            )
        if isinstance(exc, RateLimitedError):
            failures += 1
            wait = self._wait(failures, exc.retry_after)
            message = f"{what}: {exc}; backing off {key} for {fmt_duration(wait)}"
            reason = f"rate limited: {exc}"
            return Decision(
                now + wait, command, logging.WARNING, message, reason, failures, auth_pauses
            )
        attempts = command.attempts + 1
        limit = self.settings.max_attempts
        if attempts >= limit:
            message = (
                f"giving up on {what} after {attempts} attempts: {exc}; the next timer tries again"
            )
            return Decision(
                None, command, logging.ERROR, message, f"gave up: {exc}", 0, auth_pauses
            )
        failures += 1
        wait = self._wait(failures, None)
        message = (
            f"{what} failed (attempt {attempts}/{limit}): {exc}; "
            f"backing off {key} for {fmt_duration(wait)}"
        )
        retried = attrs.evolve(command, attempts=attempts)
        reason = f"backoff: {exc}"
        return Decision(
            now + wait, retried, logging.WARNING, message, reason, failures, auth_pauses
        )

    def _wait(self, failures: int, retry_after: float | None) -> timedelta:
        """A server-given ``retry_after`` (seconds) wins, with at least one second."""
        if retry_after is not None:
            seconds = max(1.0, min(retry_after, RETRY_AFTER_MAX.total_seconds()))
            return timedelta(seconds=seconds)
        s = self.settings
        return compute_backoff(
            s.backoff_initial, s.backoff_max, failures, self.rng.uniform(1.0, 1.25)
        )
