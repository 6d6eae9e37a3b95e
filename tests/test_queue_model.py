"""The command queue against its docstring's model: one deque scanned from the front,
where a command whose key cools down keeps its place and the first ready one runs.

A hypothesis state machine pushes, pops, puts back and cools keys at random and
checks the queue against a plain list after every step (simulated time only).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import attrs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.engine.window import Window

from .helpers import T0

KINDS = st.sampled_from(list(Kind))
USERS = st.integers(min_value=1, max_value=6)
SECONDS = st.integers(min_value=0, max_value=120)


def _command(kind: Kind, user: int) -> Command:
    profile = kind in (Kind.ENRICH, Kind.FOLLOW, Kind.SWEEP)
    return Command(kind, user if profile else None)


class QueueModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.queue = CommandQueue()
        self.model: list[tuple[int, Command]] = []  # the one deque, in arrival order
        self.order = 0
        self.ready: dict[Key, datetime | None] = dict.fromkeys(Key)  # key → ready_at
        self.now = T0
        self.popped: list[tuple[int, Command]] = []

    def _cooling(self, key: Key) -> bool:
        ready = self.ready[key]
        return ready is not None and self.now < ready

    @rule(kind=KINDS, user=USERS)
    def push(self, kind: Kind, user: int) -> None:
        command = _command(kind, user)
        taken = any((c.key, c.user_id) == (command.key, command.user_id) for _, c in self.model)
        assert self.queue.push(command) is (not taken)  # one slot per (key, user)
        if not taken:
            self.model.append((self.order, command))
            self.order += 1

    @rule()
    def pop(self) -> None:
        expected = next(((o, c) for o, c in self.model if not self._cooling(c.key)), None)
        got = self.queue.pop_ready(self.now)
        assert (got[1] if got else None) == (expected[1] if expected else None)
        if expected is not None:
            assert got is not None and got[0] == expected[0]  # (arrival numbers agree)
            self.model.remove(expected)
            self.popped.append(got)

    @precondition(lambda self: bool(self.popped))
    @rule()
    def put_back(self) -> None:
        order, command = self.popped.pop()
        if any((c.key, c.user_id) == (command.key, command.user_id) for _, c in self.model):
            return  # its slot was taken meanwhile: a real processor never does this
        self.queue.put_back((order, command))  # back in its old place, not at the end
        self.model.append((order, command))
        self.model.sort(key=lambda e: e[0])

    @rule(key=st.sampled_from(list(Key)), seconds=SECONDS)
    def cool(self, key: Key, seconds: int) -> None:
        until = self.now + timedelta(seconds=seconds)
        self.queue.cool(key, until, "test", self.now)
        current = self.ready[key]
        if current is None or until > current:
            self.ready[key] = until  # never shortens a longer pause

    @rule(seconds=SECONDS)
    def wait(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(key=st.sampled_from(list(Key)), failures=st.integers(0, 5), pauses=st.integers(0, 3))
    def counters(self, key: Key, failures: int, pauses: int) -> None:
        before = self.queue.state(key)
        self.queue.set_counters(key, failures, pauses)
        after = self.queue.state(key)
        assert (after.failures, after.auth_pauses) == (failures, pauses)
        assert attrs.evolve(after, failures=before.failures, auth_pauses=before.auth_pauses) == (
            before
        )  # the pause itself is untouched

    @invariant()
    def same_contents(self) -> None:
        assert list(self.queue) == [c for _, c in self.model]
        assert len(self.queue) == len(self.model)
        for kind in Kind:
            assert self.queue.count(kind) == sum(c.kind is kind for _, c in self.model)

    @invariant()
    def next_ready_is_the_earliest_runnable_time(self) -> None:
        times = []
        for _, command in self.model:
            ready = self.ready[command.key]
            times.append(max(self.now, ready) if ready is not None else self.now)
        assert self.queue.next_ready_at(self.now) == (min(times) if times else None)

    @invariant()
    def a_window_never_overfills(self) -> None:
        for kind in (Kind.ENRICH, Kind.FOLLOW, Kind.SWEEP):
            room = Window(kind, 4).room(self.queue)
            queued = self.queue.count(kind)
            assert room == (0 if queued > 2 else 4 - queued)


QueueModel.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_the_queue_behaves_like_one_deque_scanned_from_the_front = QueueModel.TestCase
