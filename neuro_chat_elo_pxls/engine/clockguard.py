"""Pulling back times a wrong host clock stored too far ahead.

The source stores times computed from the host's ``now``: due times, cooldowns,
pauses, sweep and canvas times, holds. One tick from a clock far ahead (then set
back) would leave them far in the future: no pull for a year, profiles paused for
a year. Each kind of time has a maximum a sane value can lie ahead of ``now``; on
every tick, a value beyond it is pulled back to ``now`` (and the log says so).

Each part pulls back its own times (the tick, :mod:`..jobs.tick`, asks each in turn),
with :func:`far_ahead` and :func:`say_pulled_back` from here. The guard pulls back
the queue's pauses (asking the queue), and says whether the clock jumped back since
the last tick (:meth:`ClockGuard.check`) until the tick says it is handled
(:meth:`ClockGuard.handled`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

import attrs

from ..settings import PxlsSettings
from .policy import AUTH_PAUSE_FLOOR, RETRY_AFTER_MAX
from .queue import CommandQueue
from .state import EngineState

log = logging.getLogger("neuro_chat_elo_pxls")

#: slack for rounding and the pacing margin
SLACK = timedelta(minutes=1)


def far_ahead(
    state: EngineState, limits: Mapping[str, timedelta], now: datetime
) -> dict[str, datetime]:
    """The engine state's times named in ``limits`` that lie further ahead of ``now``
    (aware UTC) than their limit (and :data:`SLACK`), each mapped to ``now``. Pure."""
    changes: dict[str, datetime] = {}
    for name, limit in limits.items():
        value = getattr(state, name)
        if value is not None and value > now + limit + SLACK:
            changes[name] = now
    return changes


def say_pulled_back(state: EngineState, names: list[str], now: datetime) -> None:
    """The one warning line for the times ``names`` of ``state`` pulled back to ``now``."""
    log.warning(
        "host clock: %s lay too far ahead of now %s (the clock jumped back?); pulled back to now",
        ", ".join(f"{k}={getattr(state, k).isoformat(timespec='seconds')}" for k in names),
        now.isoformat(timespec="seconds"),
    )


@attrs.define
class ClockGuard:
    """The keys' longest pause, and whether the clock jumped back; see the module
    docstring."""

    settings: PxlsSettings
    _latest: datetime | None = None  # the latest host now seen (a jump back shows)

    def key_limit(self) -> timedelta:
        """The longest a key may legitimately cool down."""
        s = self.settings
        return max(
            s.backoff_max, s.auth_pause_max, s.auth_pause, AUTH_PAUSE_FLOOR, RETRY_AFTER_MAX
        ) + max(s.profile_cooldown * 2, s.leaderboard_interval)

    def check(self, queue: CommandQueue, now: datetime) -> bool:
        """Pull back the keys' pauses that lie further ahead of ``now`` than they can
        (asking the queue; persisted with the next save). True if the host clock jumped
        back (it was seen far ahead before this tick) and :meth:`handled` was not
        called since. Sync."""
        for key, until in queue.clamp(now, self.key_limit()):
            log.warning(
                "host clock: %s cooling until %s, too far ahead: the pause restarts now",
                key.value,
                until.isoformat(timespec="seconds"),
            )
        return self._latest is not None and now < self._latest - SLACK

    def handled(self, now: datetime, jumped_back: bool) -> None:
        """The parts pulled back their own times at ``now`` (``jumped_back``: what
        :meth:`check` said): a jump back is handled once, compared with the present
        from now on."""
        self._latest = now if self._latest is None or jumped_back else max(self._latest, now)
