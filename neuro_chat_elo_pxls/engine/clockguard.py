"""Pulling back times a wrong host clock stored too far ahead.

The source stores times computed from the host's ``now``: due times, cooldowns,
pauses, sweep and canvas times, holds. One tick from a clock far ahead (then set
back) would leave them far in the future: no pull for a year, profiles paused for
a year. Each kind of time has a maximum a sane value can lie ahead of ``now``; on
every tick, a value beyond it is pulled back to ``now`` (and the log says so). The
guard pulls back the engine state's times and the queue's pauses (asking the queue)
and says whether the clock jumped back; the tick (:mod:`..jobs.tick`) then has the
parts that keep times of their own pull them back, and tells the guard it is handled
(:meth:`ClockGuard.handled`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import attrs

from ..settings import PxlsSettings
from ..store.writer import Store
from .policy import AUTH_PAUSE_FLOOR, RETRY_AFTER_MAX
from .queue import CommandQueue
from .state import StateKeeper

log = logging.getLogger("neuro_chat_elo_pxls")

#: slack for rounding and the pacing margin
_SLACK = timedelta(minutes=1)


@attrs.define
class ClockGuard:
    """Knows each stored time's maximum lead over ``now``; see the module docstring."""

    settings: PxlsSettings
    state: StateKeeper
    _latest: datetime | None = None  # the latest host now seen (a jump back shows)

    def _limits(self) -> dict[str, timedelta]:
        s = self.settings
        return {
            # a pull is due at most one interval and one regeneration period ahead
            "pull_due_at": s.leaderboard_interval + timedelta(minutes=20),
            "sweep_started_at": timedelta(0),
            "sweep_finished_at": timedelta(0),
            "canvas_first_seen": timedelta(0),
            "canvas_changed_at": timedelta(0),
            "last_pull_at": timedelta(0),
            "last_generated_at": timedelta(hours=1),
        }

    def key_limit(self) -> timedelta:
        """The longest a key may legitimately cool down."""
        s = self.settings
        return max(
            s.backoff_max, s.auth_pause_max, s.auth_pause, AUTH_PAUSE_FLOOR, RETRY_AFTER_MAX
        ) + max(s.profile_cooldown * 2, s.leaderboard_interval)

    async def check(self, store: Store, queue: CommandQueue, now: datetime) -> bool:
        """Pull back the engine state's times and the keys' pauses that lie further
        ahead of ``now`` than they can. True if the host clock jumped back (it was seen
        far ahead before this tick) and :meth:`handled` was not called since. Raises
        what the store raises."""
        await self._clamp_state(store, now)
        for key, until in queue.clamp(now, self.key_limit()):
            log.warning(
                "host clock: %s cooling until %s, too far ahead: the pause restarts now",
                key.value,
                until.isoformat(timespec="seconds"),
            )
        return self._latest is not None and now < self._latest - _SLACK

    def handled(self, now: datetime, jumped_back: bool) -> None:
        """The parts pulled back their own times at ``now`` (``jumped_back``: what
        :meth:`check` said): a jump back is handled once, compared with the present
        from now on."""
        self._latest = now if self._latest is None or jumped_back else max(self._latest, now)

    async def _clamp_state(self, store: Store, now: datetime) -> None:
        current = self.state.current
        changes: dict[str, Any] = {}
        for name, limit in self._limits().items():
            value = getattr(current, name)
            if value is not None and value > now + limit + _SLACK:
                changes[name] = now
        if "last_generated_at" in changes:
            # the snapshot's data was real, its time was not: anything generated after
            # the pull that took it is newer (no such pull known: take the next one)
            pulled = current.last_pull_at
            changes["last_generated_at"] = pulled if pulled is not None and pulled <= now else None
        if not changes:
            return
        log.warning(
            "host clock: %s lay too far ahead of now %s (the clock jumped back?); "
            "pulled back to now",
            ", ".join(
                f"{k}={v.isoformat(timespec='seconds')}"
                for k, v in ((k, getattr(current, k)) for k in changes)
            ),
            now.isoformat(timespec="seconds"),
        )
        await self.state.commit(store.save_state, **changes)
