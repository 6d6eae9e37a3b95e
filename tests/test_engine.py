"""The engine and the tick through their own interfaces: the tick's plan order and
holding with fake parts, its dispatch of each command kind and of a give-up, the
processor's failure bookkeeping, the clock guard's jump-back signal (no PxlsSource;
simulated time only)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls.engine.clockguard import ClockGuard
from neuro_chat_elo_pxls.engine.policy import FailurePolicy
from neuro_chat_elo_pxls.engine.processor import Processor
from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.engine.state import EngineState, StateKeeper
from neuro_chat_elo_pxls.errors import AuthError, TransientError
from neuro_chat_elo_pxls.jobs.sweep import Place
from neuro_chat_elo_pxls.jobs.tick import Tick
from neuro_chat_elo_pxls.settings import PxlsSettings, Secret
from neuro_chat_elo_pxls.store import Store

from .helpers import T0, FakeClock, FakePxls


class FakePart:
    """Records what the tick asked; ``plan`` answers ``waits`` (work waiting)."""

    def __init__(self, name: str, log: list[str], waits: bool = False, place: Place = Place.AFTER):
        self.name, self.log, self.waits, self._place = name, log, waits, place

    def place(self, now: datetime) -> Place:
        return self._place

    async def plan(
        self, store: Store, queue: CommandQueue, now: datetime, held: bool = False
    ) -> bool:
        self.log.append(f"{self.name}:{held}")
        return self.waits


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(str(tmp_path / "engine.sqlite3")) as opened:
        yield opened


def _tick(log: list[str], monkeypatch: pytest.MonkeyPatch, **waits: Any) -> Tick:
    """A tick with profiles on whose parts are fakes that record their plans."""
    tick = Tick(PxlsSettings(token=Secret("t")))
    place = waits.pop("place", Place.AFTER)
    for name in ("pull", "enrich", "follow"):
        monkeypatch.setattr(tick, name, FakePart(name, log, waits.get(name, False)))
    monkeypatch.setattr(tick, "sweep", FakePart("sweep", log, waits.get("sweep", False), place))
    return tick


@pytest.mark.parametrize(
    ("place", "waits", "expected"),
    [
        # enrichment first, never held; it holds everything after it
        (Place.AFTER, {"enrich": True}, ["enrich:False", "follow:True", "sweep:True"]),
        # a sweep behind a schedule it can keep goes before follow refreshes, holds them
        (Place.BEFORE, {"sweep": True}, ["enrich:False", "sweep:False", "follow:True"]),
        # beside: follow refreshes plan first, and neither holds the other
        (Place.BESIDE, {"follow": True}, ["enrich:False", "follow:False", "sweep:False"]),
        # after: waiting follow refreshes hold the sweep
        (Place.AFTER, {"follow": True}, ["enrich:False", "follow:False", "sweep:True"]),
    ],
)
async def test_the_tick_plans_profile_work_in_rank_order_and_holds_later_ranks(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    place: Place,
    waits: dict[str, bool],
    expected: list[str],
) -> None:
    log: list[str] = []
    tick = _tick(log, monkeypatch, place=place, **waits)
    await tick._plan(store, T0)
    assert log == ["pull:False", *expected]


async def test_profiles_off_plans_the_pull_only(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    tick = _tick(log, monkeypatch)
    monkeypatch.setattr(tick, "settings", PxlsSettings())  # no PXLS_TOKEN
    await tick._plan(store, T0)
    assert log == ["pull:False"]


async def test_a_confirm_is_run_by_observations_and_credits_nothing_on_a_stale_cache(
    store: Store,
) -> None:
    """CONFIRM: /info only; a stale code settles nothing, the pull looks again later."""
    fake = FakePxls(FakeClock(T0))
    tick = Tick(PxlsSettings())
    await tick.restore(store)
    await tick.canvas.see(store, "87", T0)
    fake.canvas = "86"  # an earlier code: a stale cache
    tick.queue.push(Command(Kind.CONFIRM))
    await tick._run_one(store, fake, T0)
    assert [r[0] for r in fake.requests] == ["info"]
    assert tick.canvas.code == "87"
    assert tick.engine.state.current.pull_due_at is not None  # the pull looks again


async def test_a_given_up_command_goes_to_the_part_that_planned_it(store: Store) -> None:
    fake = FakePxls(FakeClock(T0))
    fake.failures["info"] = [TransientError("503")]
    tick = Tick(PxlsSettings(max_attempts=1))
    await tick.restore(store)
    tick.queue.push(Command(Kind.PULL))
    await tick._run_one(store, fake, T0)
    # the pull's own give-up: the next timer, one interval on
    assert tick.engine.state.current.pull_due_at == T0 + tick.settings.leaderboard_interval
    assert tick.engine.state.current.last_error
    assert not len(tick.queue)


async def test_a_cancelled_command_keeps_its_place(store: Store) -> None:
    fake = FakePxls(FakeClock(T0))
    fake.failures["info"] = [asyncio.CancelledError()]  # type: ignore[list-item]
    tick = Tick(PxlsSettings())
    await tick.restore(store)
    tick.queue.push(Command(Kind.PULL))
    tick.queue.push(Command(Kind.SWEEP, 8))
    with pytest.raises(asyncio.CancelledError):
        await tick._run_one(store, fake, T0)
    assert [c.kind for c in tick.queue] == [Kind.PULL, Kind.SWEEP]


def _processor(**settings: Any) -> tuple[Processor, CommandQueue, StateKeeper]:
    queue, state = CommandQueue(), StateKeeper()
    state.track_keys(queue.key_states)
    policy = FailurePolicy(PxlsSettings(**settings), random.Random(1))
    return Processor(queue, state, policy), queue, state


async def _save(state: EngineState) -> None:
    return None


async def test_a_failure_is_retried_behind_a_pause_then_given_up(store: Store) -> None:
    processor, queue, _ = _processor(max_attempts=2)
    queue.push(Command(Kind.PULL))
    entry = queue.pop_ready(T0)
    assert entry is not None
    decision = processor.failed(entry, TransientError("503"), T0)
    state = queue.state(Key.LEADERBOARD)
    assert decision.retry_at is not None and state.ready_at == decision.retry_at
    assert state.failures == 1 and queue.count(Kind.PULL) == 1  # put back
    entry = queue.pop_ready(decision.retry_at)
    assert entry is not None
    again = processor.failed(entry, TransientError("503"), decision.retry_at)
    assert again.retry_at is None and not len(queue)  # given up: the caller tells its owner
    await processor.persist_failure(store, again, decision.retry_at)
    await processor.succeeded(store, Command(Kind.PULL), True, decision.retry_at)
    assert queue.state(Key.LEADERBOARD).failures == 0


def test_a_403_pauses_the_profile_key_for_the_auth_pause() -> None:
    processor, queue, _ = _processor()
    queue.push(Command(Kind.FOLLOW, 7))
    entry = queue.pop_ready(T0)
    assert entry is not None
    processor.failed(entry, AuthError("403", challenge=False), T0)
    state = queue.state(Key.PROFILE)
    assert state.auth_pauses == 1 and state.ready_at == T0 + timedelta(minutes=15)
    assert [c.user_id for c in queue] == [7]


def test_the_clock_guard_says_once_that_the_clock_jumped_back() -> None:
    guard, queue = ClockGuard(PxlsSettings()), CommandQueue()
    seen = []
    for now in (T0, T0 + timedelta(days=365), T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)):
        jumped_back = guard.check(queue, now)
        guard.handled(now, jumped_back)
        seen.append(jumped_back)
    assert seen == [False, False, True, False]  # back from a year ahead: handled once


async def test_each_part_pulls_back_its_own_far_future_times(store: Store) -> None:
    """A year ahead: the pull's due time and the sweep's start come back to now, each
    by its own part (the clock guard pulls back only the keys' pauses)."""
    ahead = T0 + timedelta(days=365)
    tick = Tick(PxlsSettings())
    tick.engine.state.adopt(EngineState(pull_due_at=ahead, sweep_started_at=ahead))
    tick.queue.cool(Key.PROFILE, ahead, "test", ahead)
    await tick._clamp(store, T0)
    current = tick.engine.state.current
    assert current.pull_due_at == T0 and current.sweep_started_at == T0
    ready = tick.queue.state(Key.PROFILE).ready_at
    assert ready is not None and ready <= T0 + tick.engine.clock.key_limit()


def test_the_keeper_keeps_no_key_states_the_queue_does() -> None:
    """Key states have one home, the queue: saves carry them, memory does not."""
    queue, state = CommandQueue(), StateKeeper()
    state.track_keys(queue.key_states)
    queue.cool(Key.PROFILE, T0 + timedelta(hours=1), "rate limited: 429", T0)
    proposed = state.propose(canvas="86")
    assert proposed.keys["profile"].ready_at == T0 + timedelta(hours=1)
    state.adopt(proposed)
    assert state.current.keys == {} and state.current.canvas == "86"


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
