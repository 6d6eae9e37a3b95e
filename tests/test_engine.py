"""The engine through its own interfaces, with fake jobs: the scheduler's ranking and
holding, the processor's dispatch and failure handling, the clock guard asking every
job to clamp (no PxlsSource, no pxls; simulated time only)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls.engine.clockguard import ClockGuard
from neuro_chat_elo_pxls.engine.job import Job
from neuro_chat_elo_pxls.engine.policy import FailurePolicy
from neuro_chat_elo_pxls.engine.processor import Processor
from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.engine.scheduler import Scheduler
from neuro_chat_elo_pxls.engine.state import StateKeeper
from neuro_chat_elo_pxls.errors import AuthError, TransientError
from neuro_chat_elo_pxls.pxls.client import PxlsApi
from neuro_chat_elo_pxls.settings import PxlsSettings
from neuro_chat_elo_pxls.store import Store

from .helpers import T0


class FakeJob(Job):
    """Records what the engine asked; plans ``queue_kind`` commands when not held."""

    def __init__(
        self, name: str, log: list[str], *, key: Key = Key.PROFILE, rank: int = 0, **kw: Any
    ) -> None:
        self.name, self.log, self.key, self._rank = name, log, key, rank
        self.queue_kind: Kind | None = kw.get("queue_kind")
        self.runs = frozenset(kw.get("runs", ()))
        self.plans = frozenset(kw.get("plans", ()))
        self.outcomes: Iterator[Any] = iter(kw.get("outcomes", ()))
        self.due: datetime | None = kw.get("due")
        self.user: int = kw.get("user", 1)

    def rank(self, now: datetime) -> int:
        return self._rank

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        self.log.append(f"{self.name}.plan(held={held})")
        if self.queue_kind is not None and not held:
            queue.push(Command(self.queue_kind, self.user if self.key is Key.PROFILE else None))
        return self.queue_kind is not None and bool(queue.count(self.queue_kind))

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        return self.due

    async def run(self, store: Store, client: PxlsApi, command: Command, now: datetime) -> bool:
        self.log.append(f"{self.name}.run({command.describe()})")
        outcome = next(self.outcomes)
        if isinstance(outcome, BaseException):
            raise outcome
        return bool(outcome)

    async def after(self, store: Store, queue: CommandQueue, command: Command) -> None:
        self.log.append(f"{self.name}.after({command.kind.value})")

    def failed(self, command: Command, error: BaseException) -> None:
        self.log.append(f"{self.name}.failed({command.kind.value})")

    async def gave_up(self, store: Store, command: Command, now: datetime) -> None:
        self.log.append(f"{self.name}.gave_up({command.kind.value})")

    async def clamp(self, store: Store, now: datetime, jumped_back: bool) -> None:
        self.log.append(f"{self.name}.clamp({jumped_back})")


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    async with await Store.open(str(tmp_path / "engine.sqlite3")) as opened:
        yield opened


def _scheduler(jobs: list[Job], profiles: bool = True) -> tuple[Scheduler, CommandQueue]:
    queue = CommandQueue()
    clock = ClockGuard(PxlsSettings(), StateKeeper())
    return Scheduler(queue, clock, jobs, profiles), queue


async def test_a_job_is_held_while_a_lower_rank_on_its_key_waits(store: Store) -> None:
    log: list[str] = []
    first = FakeJob("enrich", log, rank=0, queue_kind=Kind.ENRICH)
    beside = FakeJob("follow", log, rank=2, queue_kind=None)
    later = FakeJob("sweep", log, rank=3, queue_kind=Kind.SWEEP)
    pull = FakeJob("pull", log, key=Key.LEADERBOARD, rank=5, queue_kind=Kind.PULL)
    scheduler, queue = _scheduler([pull, later, beside, first])
    await scheduler.run(store, T0)
    # ranked (stable); profile work above a waiting lower rank is held; the
    # leaderboard job is never held by profile work
    assert [e for e in log if ".plan" in e] == [
        "enrich.plan(held=False)",
        "follow.plan(held=True)",
        "sweep.plan(held=True)",
        "pull.plan(held=False)",
    ]
    assert queue.count(Kind.SWEEP) == 0 and queue.count(Kind.ENRICH) == 1


async def test_equal_ranks_share_and_profiles_off_plans_no_profile_work(store: Store) -> None:
    log: list[str] = []
    follow = FakeJob("follow", log, rank=2, queue_kind=Kind.FOLLOW, user=1)
    sweep = FakeJob("sweep", log, rank=2, queue_kind=Kind.SWEEP, user=2)
    scheduler, queue = _scheduler([follow, sweep])
    await scheduler.run(store, T0)
    assert queue.count(Kind.FOLLOW) == queue.count(Kind.SWEEP) == 1  # beside each other
    log.clear()
    off, _ = _scheduler([follow, FakeJob("pull", log, key=Key.LEADERBOARD)], profiles=False)
    await off.run(store, T0)
    assert [e for e in log if ".plan" in e] == ["pull.plan(held=False)"]
    assert "follow.clamp(False)" in log  # every job still clamps its own times


async def test_next_due_is_the_earliest_job_or_queue_time(store: Store) -> None:
    log: list[str] = []
    a = FakeJob("a", log, due=T0 + timedelta(minutes=9))
    b = FakeJob("b", log, due=T0 + timedelta(minutes=4))
    scheduler, queue = _scheduler([a, b, FakeJob("c", log)])
    assert scheduler.next_due(T0) == T0 + timedelta(minutes=4)
    queue.push(Command(Kind.PULL))
    queue.cool(Key.LEADERBOARD, T0 + timedelta(minutes=2), "test", T0)
    assert scheduler.next_due(T0) == T0 + timedelta(minutes=2)
    assert scheduler.next_due(T0 + timedelta(hours=1)) == T0 + timedelta(hours=1)  # never past
    assert _scheduler([FakeJob("idle", log)])[0].next_due(T0) is None


async def test_the_clock_guard_tells_every_job_once_when_the_clock_jumped_back(
    store: Store,
) -> None:
    log: list[str] = []
    scheduler, _ = _scheduler([FakeJob("a", log), FakeJob("b", log, key=Key.LEADERBOARD)])
    for now in (T0, T0 + timedelta(days=365), T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)):
        await scheduler.run(store, now)
    assert [e for e in log if e.startswith("a.clamp")] == [
        "a.clamp(False)",
        "a.clamp(False)",
        "a.clamp(True)",  # back from a year ahead: handled once
        "a.clamp(False)",
    ]
    assert log.count("b.clamp(True)") == 1


def _processor(jobs: list[Job], **settings: Any) -> tuple[Processor, CommandQueue]:
    queue = CommandQueue()
    policy = FailurePolicy(PxlsSettings(**settings), random.Random(1))
    return Processor(queue, StateKeeper(), policy, jobs), queue


async def test_the_processor_runs_until_one_command_sends(store: Store) -> None:
    log: list[str] = []
    runner = FakeJob("profiles", log, runs={Kind.SWEEP}, outcomes=[False, True, True])
    owner = FakeJob("sweep", log, plans={Kind.SWEEP})
    processor, queue = _processor([runner, owner])
    for user in (1, 2, 3):
        queue.push(Command(Kind.SWEEP, user))
    await processor.run_one(store, None, T0)  # type: ignore[arg-type]
    assert [e for e in log if ".run" in e] == [
        "profiles.run(sweep read of user 1)",
        "profiles.run(sweep read of user 2)",
    ]
    assert log.count("sweep.after(sweep)") == 2  # every job hears of every success
    assert len(queue) == 1


async def test_a_failure_is_retried_behind_a_pause_then_given_up_to_its_owner(
    store: Store,
) -> None:
    log: list[str] = []
    errors = [TransientError("503"), TransientError("503")]
    runner = FakeJob(
        "pull", log, key=Key.LEADERBOARD, runs={Kind.PULL}, plans={Kind.PULL}, outcomes=errors
    )
    processor, queue = _processor([runner], max_attempts=2)
    queue.push(Command(Kind.PULL))
    await processor.run_one(store, None, T0)  # type: ignore[arg-type]
    state = queue.state(Key.LEADERBOARD)
    assert state.failures == 1 and state.ready_at is not None and state.ready_at > T0
    assert queue.count(Kind.PULL) == 1  # put back
    await processor.run_one(store, None, state.ready_at)  # type: ignore[arg-type]
    assert log[-2:] == ["pull.failed(pull)", "pull.gave_up(pull)"]
    assert queue.count(Kind.PULL) == 0 and queue.state(Key.LEADERBOARD).failures == 0


async def test_a_403_pauses_the_key_and_a_cancelled_command_keeps_its_place(
    store: Store,
) -> None:
    log: list[str] = []
    runner = FakeJob(
        "p",
        log,
        runs={Kind.FOLLOW},
        outcomes=[AuthError("403", challenge=False), asyncio.CancelledError()],
    )
    processor, queue = _processor([runner])
    queue.push(Command(Kind.FOLLOW, 7))
    queue.push(Command(Kind.FOLLOW, 8))
    await processor.run_one(store, None, T0)  # type: ignore[arg-type]
    state = queue.state(Key.PROFILE)
    assert state.auth_pauses == 1 and state.ready_at == T0 + timedelta(minutes=15)
    with pytest.raises(asyncio.CancelledError):
        await processor.run_one(store, None, T0 + timedelta(minutes=15))  # type: ignore[arg-type]
    assert [c.user_id for c in queue] == [7, 8]  # the cancelled one back at the front


def test_every_state_save_carries_the_live_key_states() -> None:
    """A 429's wait set in the queue is in the next save of the engine state, whatever
    that save is for (before: a pull's save from the last adopted copy wrote the keys
    as they were before the wait, when the save that carried them had been cancelled,
    and a restart forgot the wait: simulator seed 23 with cancelled ticks)."""
    queue, state = CommandQueue(), StateKeeper()
    state.track_keys(queue.key_states)
    until = T0 + timedelta(hours=1)
    queue.cool(Key.PROFILE, until, "rate limited: 429", T0)
    proposed = state.propose(pull_due_at=T0 + timedelta(minutes=5))
    assert proposed.keys["profile"].ready_at == until
    assert state.propose(keys={}).keys == {}  # an explicit value still wins


async def test_a_cancelled_save_is_adopted_a_failed_one_is_not() -> None:
    """The store's units are shielded: a save whose caller is cancelled still commits,
    so memory takes the new state too (before: the database said canvas 66, memory 64,
    and a stale /info answering 64 looked current: simulator seed 3235, a profile count
    of the new canvas credited to the old one as -146)."""
    state = StateKeeper()
    started = asyncio.Event()

    async def slow(_: object) -> None:
        started.set()
        for _ in range(3):
            await asyncio.sleep(0)

    task = asyncio.ensure_future(state.commit(slow, canvas="66"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state.current.canvas == "66"

    async def broken(_: object) -> None:
        raise OSError("database or disk is full")

    with pytest.raises(OSError):
        await state.commit(broken, canvas="67")
    assert state.current.canvas == "66"  # a failed save is not adopted
