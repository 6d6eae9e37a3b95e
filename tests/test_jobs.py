"""Each part of the tick through its own interface: a real SQLite file, a real
command queue, the fake pxls (no PxlsSource, no tick; simulated time only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.engine.state import EngineState, StateKeeper
from neuro_chat_elo_pxls.jobs.canvas import Canvas
from neuro_chat_elo_pxls.jobs.enrichment import ENRICH_WINDOW, EnrichmentWindow
from neuro_chat_elo_pxls.jobs.follow import FollowList
from neuro_chat_elo_pxls.jobs.observations import CONFIRM_EVERY, Observation, Observations
from neuro_chat_elo_pxls.jobs.profiles import ProfileReads
from neuro_chat_elo_pxls.jobs.pull import Pull
from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
from neuro_chat_elo_pxls.settings import PxlsSettings, Secret
from neuro_chat_elo_pxls.store.writer import Store

from .helpers import T0, FakeClock, FakePxls


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(str(tmp_path / "jobs.sqlite3")) as opened:
        yield opened


async def _ingest(store: Store, scores: dict[str, int], *, hold_new: bool = False) -> None:
    rows = [ToplistRow(name, pixels) for name, pixels in scores.items()]
    snapshot = Snapshot.from_rows(T0, rows, (), 0)
    await store.ingest("86", snapshot, T0, hold_new=hold_new, state=None)


async def test_canvas_records_a_reset_and_calls_an_earlier_code_stale(store: Store) -> None:
    state = StateKeeper()
    canvas = Canvas(state)
    assert canvas.stale("86") is None
    await canvas.see(store, "86", T0)
    assert (canvas.code, state.current.canvas_first_seen) == ("86", T0)
    assert state.current.canvas_changed_at is None  # a first sight is no reset
    await canvas.see(store, "87", T0 + timedelta(hours=1))
    assert state.current.canvas_history == ["86"]
    assert state.current.canvas_changed_at == T0 + timedelta(hours=1)
    reason = canvas.stale("86")  # seen before: a stale cache
    assert reason is not None and "stale cache" in reason
    assert canvas.stale("85") is not None  # lower numeric code: earlier, never seen
    assert canvas.stale("88") is None


async def test_canvas_pulls_back_times_a_wrong_clock_stamped_ahead(store: Store) -> None:
    ahead = T0 + timedelta(days=365)
    state = StateKeeper(EngineState(canvas="86", canvas_first_seen=ahead))
    await Canvas(state).clamp(store, T0)
    assert state.current.canvas_first_seen == T0


async def test_observations_confirm_then_credit_the_count_to_the_outbox(store: Store) -> None:
    """A count waits; a confirm is planned 15 minutes on (not beside a pull); the next
    /info on the same canvas credits it as a delta, one on another canvas drops it."""
    await _ingest(store, {"alice": 10, "bob": 20})
    await store.outbox().drain()
    observations, queue, read = Observations(), CommandQueue(), T0 + timedelta(minutes=1)
    observations.add(Observation(1, "alice", 15, read, "86"))
    observations.add(Observation(2, "bob", 25, read, "85"))
    observations.plan(queue, read)
    assert not len(queue)  # not due yet
    due = read + CONFIRM_EVERY
    assert observations.next_due(queue) == due
    queue.push(Command(Kind.PULL))
    observations.plan(queue, due)
    assert queue.count(Kind.CONFIRM) == 0  # the pull's /info confirms them
    queue = CommandQueue()
    observations.plan(queue, due)
    assert queue.count(Kind.CONFIRM) == 1
    assert await observations.settle(store, "86", due) == 1
    deltas = await store.outbox().drain()
    assert [(d.user, d.delta) for d in deltas] == [("alice", 5)]  # bob's was canvas 85
    assert observations.confirm_due() is None  # nothing waits any more


async def test_a_stale_info_is_a_check_that_confirms_nothing() -> None:
    observations = Observations()
    observations.add(Observation(1, "alice", 15, T0, "86"))
    observations.gave_up(T0 + timedelta(minutes=20))  # (a failed confirm is a check too)
    assert observations.confirm_due() == T0 + timedelta(minutes=20) + CONFIRM_EVERY
    assert observations.drop_future(T0 - timedelta(minutes=1)) == 1


async def test_pull_plans_at_the_first_tick_and_ingests_the_snapshot(store: Store) -> None:
    fake = FakePxls(FakeClock(T0))
    fake.add("alice", 10)
    state, queue = StateKeeper(), CommandQueue()
    pull = Pull(state, timedelta(hours=1))
    assert pull.next_due(T0, queue) == T0  # never pulled: due now
    await pull.plan(store, queue, T0)
    assert queue.count(Kind.PULL) == 1 and state.current.pull_due_at == T0
    assert pull.next_due(T0, queue) is None  # queued: the queue's time covers it
    result = await pull.ingest(store, fake, "86", T0)
    assert result is not None and result.deltas == 1
    assert state.current.last_pull_at == T0
    due = state.current.pull_due_at
    assert due is not None and due > T0 + timedelta(hours=1)
    await pull.gave_up(store, T0)
    assert state.current.pull_due_at == T0 + timedelta(hours=1)


async def test_enrichment_queues_its_window_and_releases_holds_that_ran_out(
    store: Store,
) -> None:
    await _ingest(store, {f"new_{i}": 10 + i for i in range(ENRICH_WINDOW + 4)}, hold_new=True)
    state = StateKeeper(EngineState(last_pull_at=T0))
    enrich, queue = EnrichmentWindow(timedelta(hours=1), state, "PXLS_TOKEN"), CommandQueue()
    assert await enrich.plan(store, queue, T0)  # work waits: later profile work is held
    assert queue.count(Kind.ENRICH) == ENRICH_WINDOW
    assert enrich.next_due(T0, queue) == T0  # more held than queued: fed when ready
    enrich.gave_up(1)
    assert await store.outbox().drain() == []  # first deltas held
    await enrich.plan(store, CommandQueue(), T0 + timedelta(hours=1))
    assert len(await store.outbox().drain()) == ENRICH_WINDOW + 4  # released at the deadline


async def test_profile_reads_pace_the_key_and_return_the_visit(store: Store) -> None:
    clock = FakeClock(T0)
    fake = FakePxls(clock)
    fake.add("alice", 12)
    await _ingest(store, {"alice": 10})
    settings = PxlsSettings(token=Secret("t"))
    state, queue = StateKeeper(EngineState(canvas="86", sweep_number=1)), CommandQueue()
    state.track_keys(queue.key_states)
    reads = ProfileReads(settings, queue, state)
    answer = await reads.ask(store, fake, Command(Kind.FOLLOW, 1), T0)
    assert answer is not None and answer.profile is not None
    ready = queue.state(Key.PROFILE).ready_at
    assert ready is not None and ready > T0 + settings.profile_cooldown  # paced
    visit = await reads.take(store, answer)
    assert (visit.user_id, visit.canvas, visit.changed) == (1, "86", True)
    assert await reads.ask(store, fake, Command(Kind.SWEEP, 1), T0) is None  # swept in 1
    assert await reads.ask(store, fake, Command(Kind.FOLLOW, 99), T0) is None  # no such user


async def test_follow_queues_refreshes_unless_held_and_counts_its_round(store: Store) -> None:
    settings = PxlsSettings(token=Secret("t"), follow=("carol", "dave"))
    held = FollowList(settings, StateKeeper())
    queue = CommandQueue()
    assert not await held.plan(store, queue, T0, held=True)  # synced, nothing queued
    follow = FollowList(settings, StateKeeper())
    assert await follow.plan(store, queue, T0, held=False)
    assert queue.count(Kind.FOLLOW) == 2
    first = min(queue.user_ids(Kind.FOLLOW))
    follow.gave_up(first)  # failed for good: skipped until the next round
    again = CommandQueue()
    await follow.refill(store, again, T0)
    assert again.user_ids(Kind.FOLLOW) == queue.user_ids(Kind.FOLLOW) - {first}
