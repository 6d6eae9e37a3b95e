"""The sequential command processor's queue: commands and cooldown keys.

Semantics are those of one ``collections.deque`` scanned from the front, where a
command whose key is cooling down is skipped (it keeps its place) for the first one
whose key is ready. It is stored as one deque per key plus an insertion number, so
picking the next command costs O(number of keys), not O(queue length): a queue of
100,000 profile commands behind a cooling key does not slow a tick.

All times are the host's ``now`` (aware UTC); nothing here reads the clock or sleeps.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timedelta
from enum import StrEnum

import attrs

from .state import KeyState


class Key(StrEnum):
    """Cooldown keys: one per kind of request pxls.space paces separately."""

    LEADERBOARD = "leaderboard"  # /info + /stats/stats.json
    PROFILE = "profile"  # /api/v1/profile (or /profile/<name>)


class Kind(StrEnum):
    """Command kinds; which part plans and which runs each is written in the tick's
    ``match`` (:mod:`..jobs.tick`)."""

    PULL = "pull"  # Timer 1: leaderboard pull
    ENRICH = "enrich"  # profile of a new user (its first delta is held)
    SWEEP = "sweep"  # Timer 2: daily profile re-check
    FOLLOW = "follow"  # profile of a followed user outside the toplist
    CONFIRM = "confirm"  # /info only: confirms the canvas of waiting profile counts
    SETTLE = "settle"  # profile of a person to settle on the canvas before a reset


_KEY_OF = {
    Kind.PULL: Key.LEADERBOARD,
    Kind.CONFIRM: Key.LEADERBOARD,
    Kind.ENRICH: Key.PROFILE,
    Kind.FOLLOW: Key.PROFILE,
    Kind.SETTLE: Key.PROFILE,
    Kind.SWEEP: Key.PROFILE,
}


@attrs.frozen
class Command:
    """One request to make. ``user_id`` for profile kinds; ``attempts`` failures so far."""

    kind: Kind
    user_id: int | None = None
    attempts: int = 0

    @property
    def key(self) -> Key:
        """The cooldown key this command's request uses."""
        return _KEY_OF[self.kind]

    def describe(self) -> str:
        """For log lines: ``pull``, or ``sweep read of user 134`` (the database's user
        id: ``sweep #N`` is what ``status`` calls the N-th sweep)."""
        if self.user_id is None:
            return self.kind.value
        return f"{self.kind.value} read of user {self.user_id}"


class CommandQueue:
    """Commands in arrival order with cooldown-skip; see the module docstring.

    At most one queued command per ``(kind group, user)``: :meth:`push` of a
    duplicate is refused (returns False). Profile kinds share one slot per user.
    """

    def __init__(self) -> None:
        self._queues: dict[Key, deque[tuple[int, Command]]] = {k: deque() for k in Key}
        self._keys: dict[Key, KeyState] = {k: KeyState() for k in Key}
        self._order = itertools.count()
        self._members: set[tuple[Key, int | None]] = set()
        self._counts: dict[Kind, int] = dict.fromkeys(Kind, 0)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[Command]:
        """Commands in the order a single deque would hold them."""
        entries = sorted(itertools.chain.from_iterable(self._queues.values()), key=lambda e: e[0])
        return (cmd for _, cmd in entries)

    def count(self, kind: Kind) -> int:
        """Queued commands of ``kind`` (O(1))."""
        return self._counts[kind]

    def of_kind(self, kind: Kind) -> Iterator[Command]:
        """The queued commands of ``kind`` (O(commands of its key))."""
        return (c for _, c in self._queues[_KEY_OF[kind]] if c.kind is kind)

    def user_ids(self, kind: Kind) -> set[int]:
        """The users with a queued command of ``kind`` (O(commands of its key))."""
        return {c.user_id for c in self.of_kind(kind) if c.user_id is not None}

    def state(self, key: Key) -> KeyState:
        """The key's state now (a frozen value: the queue replaces it on change)."""
        return self._keys[key]

    def push(self, command: Command) -> bool:
        """Append ``command``; False (and nothing queued) if its slot is taken."""
        member = (command.key, command.user_id)
        if member in self._members:
            return False
        self._members.add(member)
        self._counts[command.kind] += 1
        self._queues[command.key].append((next(self._order), command))
        return True

    def pop_ready(self, now: datetime) -> tuple[int, Command] | None:
        """Remove and return the first command (by arrival) whose key is not cooling."""
        best: tuple[int, Command] | None = None
        for key, queue in self._queues.items():
            if (
                queue
                and not self._keys[key].cooling(now)
                and (best is None or queue[0][0] < best[0])
            ):
                best = queue[0]
        if best is None:
            return None
        self._queues[best[1].key].popleft()
        self._members.discard((best[1].key, best[1].user_id))
        self._counts[best[1].kind] -= 1
        return best

    def put_back(self, entry: tuple[int, Command]) -> None:
        """Return a popped command to its original place (the front of its key)."""
        order, command = entry
        self._members.add((command.key, command.user_id))
        self._counts[command.kind] += 1
        self._queues[command.key].appendleft((order, command))

    def cool(self, key: Key, until: datetime, reason: str, now: datetime) -> None:
        """Pause ``key`` from ``now`` until ``until`` (never shortens a longer pause)."""
        state = self._keys[key]
        if state.ready_at is None or until > state.ready_at:
            self._keys[key] = attrs.evolve(state, ready_at=until, reason=reason, paused_at=now)

    def set_counters(self, key: Key, failures: int, auth_pauses: int) -> None:
        """The key's consecutive failure and auth-pause counts (the failure policy's
        decision, or 0 and 0 after a success)."""
        self._keys[key] = attrs.evolve(self._keys[key], failures=failures, auth_pauses=auth_pauses)

    def restore(self, keys: dict[str, KeyState]) -> None:
        """Take the key states a previous source persisted (at open)."""
        for key in Key:
            if key.value in keys:
                self._keys[key] = attrs.evolve(keys[key.value])

    def key_states(self, now: datetime | None = None) -> dict[str, KeyState]:
        """Every key's state to persist or show (a pause over at ``now`` is dropped;
        ``now`` None: as they are)."""
        return {
            key.value: st
            if now is None or st.cooling(now)
            else attrs.evolve(st, ready_at=None, reason="", paused_at=None)
            for key, st in self._keys.items()
        }

    def clamp(self, now: datetime, limit: timedelta) -> list[tuple[Key, datetime]]:
        """Pauses that began after ``now`` or lie more than ``limit`` ahead of it (a
        wrong host clock set them) restart from ``now`` with their own length, at most
        ``limit``. Returns the keys pulled back and the time they had."""
        pulled = []
        for key, st in self._keys.items():
            future = st.paused_at is not None and st.paused_at > now + timedelta(minutes=1)
            if st.ready_at is not None and (st.ready_at > now + limit or future):
                length = st.ready_at - st.paused_at if st.paused_at is not None else limit
                pulled.append((key, st.ready_at))
                ready = now + min(max(length, timedelta(0)), limit)
                self._keys[key] = attrs.evolve(st, ready_at=ready, paused_at=now)
        return pulled

    def next_ready_at(self, now: datetime) -> datetime | None:
        """When the next queued command can run (``now`` if one can run now)."""
        times = [max(now, self._keys[k].ready_at or now) for k, q in self._queues.items() if q]
        return min(times) if times else None
