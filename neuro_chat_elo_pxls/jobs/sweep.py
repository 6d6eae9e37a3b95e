"""Timer 2, the daily sweep: every known user's profile re-checked once per sweep.

A sweep has a number; a user visited by sweep ``n`` has ``swept_in >= n`` in the
database, so a restarted sweep resumes where it was, skipping no one. The queue
holds at most :data:`SWEEP_WINDOW` sweep commands; the rest wait in the database,
read in id order from two cursors (dirty users first, then the others). Progress
is logged every 5 % with an ETA (a sweep of under 100 users every 25 %). Times are
the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from enum import Enum

import attrs

from ..engine.clockguard import far_ahead, say_pulled_back
from ..engine.queue import CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..engine.window import Window
from ..store.writer import Store
from ..util.logs import event
from ..util.times import fmt_duration
from .profiles import Visit

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many sweep commands wait in the queue at once.
SWEEP_WINDOW = 8
_WINDOW = Window(Kind.SWEEP, SWEEP_WINDOW)


def sweep_eta(elapsed: timedelta, done: int, remaining: int, cooldown: timedelta) -> timedelta:
    """How long the rest of a sweep takes: at the rate so far, and never less than one
    profile per ``cooldown`` for each user left (the one ETA of logs and ``status``)."""
    floor = cooldown * remaining
    return max(floor, elapsed / done * remaining) if done else floor


def sweep_possible(users: int, cooldown: timedelta, interval: timedelta) -> bool:
    """Can a sweep of ``users`` finish within ``interval`` at one profile per
    ``cooldown``, even with no other profile work?"""
    return users * cooldown <= interval


class Place(Enum):
    """Where the sweep's commands go among profile work, relative to follow refreshes."""

    BEFORE = "before"  # behind a schedule it can keep (:meth:`Sweep.urgent`)
    BESIDE = "beside"  # behind one it cannot keep: they share the budget
    AFTER = "after"  # on schedule


@attrs.define
class Sweep:
    """The sweep in progress (or the next one's due time); see the module docstring.
    The one writer of ``sweep_number``, ``sweep_started_at``, ``sweep_finished_at``
    and ``sweep_total`` of the engine state. It plans SWEEP commands; the tick runs
    them as profile reads (:mod:`.profiles`) and hands it every read (:meth:`count`).
    """

    state: StateKeeper
    interval: timedelta
    cooldown: timedelta
    remaining: int | None = None  # progress estimate; read from the database on resume
    _logged: int = 0  # visits done when progress was last logged
    _cursor: tuple[int, int] = (0, 0)  # last id queued in the dirty and the clean phase

    def place(self, now: datetime) -> Place:
        """Its place among profile work at ``now``: before follow refreshes while behind
        a schedule it can keep, beside them while behind one it cannot, after them
        otherwise."""
        if self.urgent(now):
            return Place.BEFORE
        return Place.BESIDE if self.behind(now) else Place.AFTER

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        """Start, feed or finish the sweep (``held``: queue nothing now). True if sweep
        commands are queued. Raises what the store raises."""
        await self.feed(store, queue, now, may_queue=not held)
        return bool(queue.count(Kind.SWEEP))

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """The earliest host time the sweep has work (None: none known)."""
        if self.active:  # its window is fed once the profile key is ready
            return max(now, queue.state(Key.PROFILE).ready_at or now)
        return self.due()

    async def clamp(self, store: Store, now: datetime) -> None:
        """Pull back the sweep's start and finish a wrong host clock stamped after
        ``now``. Raises what the store raises."""
        current = self.state.current
        limits = {"sweep_started_at": timedelta(0), "sweep_finished_at": timedelta(0)}
        changes = far_ahead(current, limits, now)
        if changes:
            say_pulled_back(current, list(changes), now)
            await self.state.commit(store.save_state, **changes)

    def count(self, visit: Visit) -> None:
        """Any profile read counts as the visit (an enrichment or a follow refresh)."""
        self._count_visit(visit.swept_in, visit.now)

    @property
    def number(self) -> int:
        """The current (or last) sweep's number (0: none has run)."""
        return self.state.current.sweep_number

    @property
    def active(self) -> bool:
        """A sweep has started and not finished."""
        return self.state.current.sweep_active

    def due(self) -> datetime | None:
        """When the next sweep starts (None: one is running, or none has run yet)."""
        started = self.state.current.sweep_started_at
        if self.active or started is None:
            return None
        return started + self.interval

    def behind(self, now: datetime) -> bool:
        """The sweep needs its share of the profile budget now: it has done a smaller
        part of its users than of its interval (or it has none left, and must finish)."""
        current = self.state.current
        started, total = current.sweep_started_at, current.sweep_total
        if not self.active or self.remaining is None or started is None or total <= 0:
            return self.active
        if self.remaining == 0:
            return True
        return (total - self.remaining) / total < (now - started) / self.interval

    def urgent(self, now: datetime) -> bool:
        """Behind its schedule while it could keep it (see :meth:`possible`): its
        commands go before follow refreshes until it is back on schedule. A sweep that
        cannot keep it at all only shares the budget (follow refreshes never starve)."""
        return self.behind(now) and self.possible(self.state.current.sweep_total)

    def possible(self, users: int) -> bool:
        """Can a sweep of ``users`` finish within the interval at one per cooldown?"""
        return sweep_possible(users, self.cooldown, self.interval)

    async def feed(
        self, store: Store, queue: CommandQueue, now: datetime, *, may_queue: bool = True
    ) -> None:
        """Start a sweep when due, keep its window of commands queued, finish it.
        ``may_queue`` False: higher-priority profile work waits, queue nothing now."""
        if not self.active:
            due = self.due()
            if due is not None and now < due:
                return
            await self._start(store, now)
        queued = queue.count(Kind.SWEEP)
        room = _WINDOW.room(queue)
        if not room or not may_queue:
            return
        if self.remaining is None:  # resumed after a restart
            self.remaining = await store.count_sweep_remaining(self.number)
        after_dirty, after_clean = self._cursor
        dirty_phase, ids = await store.sweep_ids(
            self.number, after_dirty, after_clean, SWEEP_WINDOW
        )
        if ids:
            self._cursor = (ids[-1], after_clean) if dirty_phase else (after_dirty, ids[-1])
            _WINDOW.push(queue, ids, room)
        elif self._cursor != (0, 0):
            self._cursor = (0, 0)  # one more pass from the start for stragglers
        elif not queued:
            await self._finish(store, now)

    async def _start(self, store: Store, now: datetime) -> None:
        number = self.number + 1
        total = await store.count_sweep_remaining(number)
        await self.state.commit(
            store.save_state,
            sweep_number=number,
            sweep_started_at=now,
            sweep_finished_at=None,
            sweep_total=total,
        )
        self._logged, self.remaining, self._cursor = 0, total, (0, 0)
        if total == 0:  # (a new database: one line, not a start and a finish of nothing)
            log.info(
                "sweep %d: nobody to re-check yet; the next at %s",
                number,
                (now + self.interval).isoformat(timespec="seconds"),
            )
            return
        log.info(
            "sweep %d started: %d users to re-check at <= 1 per %gs",
            number,
            total,
            self.cooldown.total_seconds(),
            extra=event("sweep_started", sweep=number, total=total),
        )
        if not self.possible(total):
            log.warning(
                "sweep %d cannot finish within sweep_interval %s: %d users at 1 per %gs "
                "take %s; it takes what it needs, and the next one starts when it ends",
                number,
                fmt_duration(self.interval),
                total,
                self.cooldown.total_seconds(),
                fmt_duration(self.cooldown * total),
            )

    async def _finish(self, store: Store, now: datetime) -> None:
        started = self.state.current.sweep_started_at or now
        took = now - started
        await self.state.commit(store.save_state, sweep_finished_at=now)
        if self.state.current.sweep_total == 0:
            return  # (said when it started)
        if took >= self.interval:
            log.warning(
                "sweep %d finished after %s, longer than sweep_interval %s: the next sweep "
                "starts now (sweeps never overlap)",
                self.number,
                fmt_duration(took),
                fmt_duration(self.interval),
                extra=event("sweep_finished", sweep=self.number, took_s=took.total_seconds()),
            )
        else:
            log.info(
                "sweep %d finished after %s; next at %s",
                self.number,
                fmt_duration(took),
                (started + self.interval).isoformat(timespec="seconds"),
                extra=event("sweep_finished", sweep=self.number, took_s=took.total_seconds()),
            )

    def _count_visit(self, swept_in: int, now: datetime) -> None:
        """A profile of a user with ``swept_in`` was read (by the sweep or an
        enrichment): count the visit and log progress every 5 % with an ETA."""
        total = self.state.current.sweep_total
        if not self.active or swept_in >= self.number or self.remaining is None or total <= 0:
            return
        self.remaining = max(0, self.remaining - 1)
        done = total - self.remaining
        # every 5 % (at most every 500 users); a small sweep every 25 %: 27 users gave
        # 26 lines before
        step = max(1, min(500, total // 20 if total >= 100 else total // 4))
        if done - self._logged < step or self.remaining == 0:
            return
        self._logged = done
        elapsed = now - (self.state.current.sweep_started_at or now)
        eta = sweep_eta(elapsed, done, self.remaining, self.cooldown)
        log.info(
            "sweep %d: %d/%d users checked (%.0f%%), ETA %s",
            self.number,
            done,
            total,
            100 * done / total,
            fmt_duration(eta),
            extra=event(
                "sweep_progress",
                sweep=self.number,
                done=done,
                total=total,
                eta_s=eta.total_seconds(),
            ),
        )

    async def gave_up(self, store: Store, user_id: int) -> None:
        """Gave up on a user's profile: count it as visited by this sweep."""
        await store.mark_swept(user_id, self.number)
        if self.remaining:
            self.remaining -= 1
