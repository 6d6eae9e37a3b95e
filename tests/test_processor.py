"""CommandQueue semantics and the source's failure handling, in host time."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from datetime import timedelta

import pytest

from neuro_chat_elo_pxls import PxlsSource
from neuro_chat_elo_pxls.engine.policy import Decision, FailurePolicy, compute_backoff
from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.errors import (
    AuthError,
    MalformedDataError,
    RateLimitedError,
    TransientError,
)
from neuro_chat_elo_pxls.settings import PxlsSettings

from .conftest import CF_AUTH, TOKEN
from .helpers import T0, FakeClock, FakePxls, Ledger, drive


def test_cooldown_skip_keeps_place_and_picks_next_ready() -> None:
    q = CommandQueue()
    q.push(Command(Kind.ENRICH, 1))
    q.push(Command(Kind.PULL))
    q.push(Command(Kind.SWEEP, 2))
    q.cool(Key.PROFILE, T0 + timedelta(seconds=1), "pacing", T0)
    entry = q.pop_ready(T0)
    assert entry is not None
    assert entry[1].kind is Kind.PULL  # profile key cooling: skipped, keeps its place
    assert q.pop_ready(T0) is None  # one per key state; nothing else ready
    assert [c.user_id for c in q] == [1, 2]
    entry = q.pop_ready(T0 + timedelta(seconds=1))
    assert entry is not None
    assert entry[1].user_id == 1
    q.put_back(entry)
    entry2 = q.pop_ready(T0 + timedelta(seconds=1))
    assert entry2 == entry  # put back at its original place


def test_at_most_one_queued_command_per_user_and_one_pull() -> None:
    q = CommandQueue()
    assert q.push(Command(Kind.ENRICH, 1))
    assert not q.push(Command(Kind.SWEEP, 1))
    assert not q.push(Command(Kind.ENRICH, 1))
    assert q.push(Command(Kind.PULL))
    assert not q.push(Command(Kind.PULL))
    assert len(q) == 2


def test_pop_cost_does_not_depend_on_queue_length() -> None:
    q = CommandQueue()
    for i in range(100_000):
        q.push(Command(Kind.SWEEP, i))
    q.push(Command(Kind.PULL))
    q.cool(Key.PROFILE, T0 + timedelta(hours=1), "paused", T0)
    entry = q.pop_ready(T0)
    assert entry is not None
    assert entry[1].kind is Kind.PULL
    assert q.next_ready_at(T0) == T0 + timedelta(hours=1)


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    initial, maximum = timedelta(seconds=30), timedelta(minutes=15)
    assert compute_backoff(initial, maximum, 1, 1.0) == timedelta(seconds=30)
    assert compute_backoff(initial, maximum, 1, 1.25) == timedelta(seconds=37.5)
    assert compute_backoff(initial, maximum, 2, 1.0) == timedelta(seconds=60)
    assert compute_backoff(initial, maximum, 7, 1.25) == maximum  # jitter never exceeds the cap
    assert compute_backoff(initial, maximum, 10_000, 1.0) == maximum  # no overflow


def test_policy_honours_retry_after_and_gives_up_after_max_attempts() -> None:
    policy = FailurePolicy(PxlsSettings(max_attempts=3), random.Random(1))
    queue = CommandQueue()
    key = Key.LEADERBOARD
    pull = Command(Kind.PULL)

    def fail(command: Command, exc: Exception) -> Decision:
        decision = policy.on_failure(command, exc, queue.state(key), T0)
        queue.set_counters(key, decision.failures, decision.auth_pauses)
        return decision

    limited = fail(pull, RateLimitedError("429", retry_after=73))
    assert limited.retry_at == T0 + timedelta(seconds=73) and limited.failures == 1
    assert fail(pull, RateLimitedError("429", 0)).retry_at == T0 + timedelta(seconds=1)
    first = fail(pull, TransientError("503"))
    assert first.retry_at is not None and first.command.attempts == 1
    second = fail(first.command, TransientError("503"))
    assert second.command.attempts == 2 and queue.state(key).failures == 4
    third = fail(second.command, TransientError("503"))
    assert third.give_up and third.level == logging.ERROR
    assert queue.state(key).failures == 0  # reset when giving up
    assert policy.on_success(queue.state(key)) is False
    # the policy decides and changes nothing: the queue's state is the queue's
    before = queue.state(key)
    policy.on_failure(pull, TransientError("503"), before, T0)
    assert queue.state(key) == before and before.failures == 0


async def test_profiles_paced_and_one_command_per_tick(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    for i in range(20):
        fake.add(f"u{i}", i + 1)
    source = make_source(profile_cooldown=timedelta(seconds=2))
    await source.on_tick(clock.now)
    assert [r[0] for r in fake.requests] == ["info", "stats"]  # the pull, nothing else
    ticks = await drive(source, clock, clock.now + timedelta(minutes=5))
    times = [at for _, at in fake.profile_requests()]
    assert len(times) == 20
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 2.0
    assert ticks >= 20


async def test_429_plain_wait_pauses_only_that_key(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("a_user", 10)
    fake.failures["profile"].append(RateLimitedError("429", 73))
    source = make_source()
    start = clock.now
    await drive(source, clock, start + timedelta(minutes=3))
    profile_times = [at for _, at in fake.profile_requests()]
    assert len(profile_times) == 2
    assert profile_times[1] - profile_times[0] >= timedelta(seconds=73)
    assert profile_times[1] - profile_times[0] < timedelta(seconds=75)


async def test_429_without_wait_backs_off_exponentially(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.add("a_user", 10)
    fake.failures["profile"].extend(RateLimitedError("429", None) for _ in range(3))
    source = make_source()
    with caplog.at_level(logging.WARNING):
        await drive(source, clock, clock.now + timedelta(minutes=30))
    times = [at for _, at in fake.profile_requests()]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert len(times) == 4
    assert 30 <= gaps[0] <= 37.6
    assert 60 <= gaps[1] <= 75.1
    assert 120 <= gaps[2] <= 150.1
    assert sum("backing off profile" in r.message for r in caplog.records) == 3


async def test_transient_errors_retry_bounded_then_give_up(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.failures["stats"].extend(TransientError("HTTP 503") for _ in range(50))
    source = make_source(max_attempts=3)
    start = clock.now
    with caplog.at_level(logging.WARNING):
        await drive(source, clock, start + timedelta(minutes=50))
    stats_calls = [at for kind, _, at in fake.requests if kind == "stats"]
    assert len(stats_calls) == 3
    assert any("giving up on pull after 3 attempts" in r.message for r in caplog.records)
    # the next timer tries again, an interval after giving up
    await drive(source, clock, stats_calls[2] + timedelta(hours=1, seconds=50))
    stats_calls = [at for kind, _, at in fake.requests if kind == "stats"]
    assert len(stats_calls) == 5  # still failing: retried with backoff again
    assert stats_calls[3] == stats_calls[2] + timedelta(hours=1)


async def test_a_recovery_after_giving_up_is_logged_once(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21, item 5: the log said "giving up on pull" and then went quiet; now the
    first request that works after failures says so, once, with how many failed."""
    fake.add("a_user", 10)
    fake.failures["stats"].extend(TransientError("HTTP 503") for _ in range(4))
    source = make_source(max_attempts=3)
    with caplog.at_level(logging.INFO):
        await drive(source, clock, clock.now + timedelta(hours=3))
    lines = [r.getMessage() for r in caplog.records if "work again" in r.getMessage()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("leaderboard requests work again: pull succeeded at ")
    assert "after 4 failed requests since " in lines[0]
    assert not fake.failures["stats"]


async def test_malformed_snapshot_writes_nothing_and_recovers(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("a_user", 10)
    fake.failures["stats"].append(MalformedDataError("stats.json: not valid JSON"))
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    assert [d.delta for d in ledger.deltas] == [10]
    assert len([r for r in fake.requests if r[0] == "stats"]) == 2


async def test_403_pauses_profiles_at_least_15_minutes_and_logs_once(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(5):
        fake.add(f"u{i}", 1)
    fake.failures["profile"].extend(
        AuthError("HTTP 403 check PXLS_TOKEN", challenge=False) for _ in range(1000)
    )
    source = make_source()
    with caplog.at_level(logging.DEBUG):
        await drive(source, clock, clock.now + timedelta(hours=3))
    times = [at for _, at in fake.profile_requests()]
    assert len(times) <= 6  # 15, 30, 60, 120 min pauses: a handful, not a loop
    gaps = [(b - a) for a, b in itertools.pairwise(times)]
    assert all(g >= timedelta(minutes=15) for g in gaps)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "PXLS_TOKEN" in errors[0].getMessage()
    # the leaderboard key keeps running meanwhile
    assert len([r for r in fake.requests if r[0] == "stats"]) >= 4


async def test_secrets_never_logged_or_shown(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.add("a_user", 3)
    fake.failures["profile"].extend([AuthError("403", challenge=True), TransientError("x")])
    source = make_source()
    with caplog.at_level(logging.DEBUG):
        await drive(source, clock, clock.now + timedelta(hours=2))
        status = await source.status(clock.now)
    text = caplog.text + repr(source) + repr(source.settings) + str(status)
    assert TOKEN not in text
    assert CF_AUTH not in text
    assert "Secret('***')" in repr(source.settings.token)


async def test_tick_never_raises(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = make_source()
    fake.failures["info"].append(RuntimeError("a bug"))
    await source.on_tick(clock.now)  # logged, not raised
    await source.on_tick("not a time")  # type: ignore[arg-type]
    assert "aware datetime" in caplog.text
    assert "unexpected error in pull" in caplog.text


async def test_a_naive_now_is_one_clear_error_not_a_traceback_per_tick(
    make_source: Callable[..., PxlsSource], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 21, item 8: a host passing ``datetime.now()`` (naive) got an ERROR with a
    traceback on every tick, forever; now one line, once, saying what to pass."""
    source = make_source()
    naive = clock.now.replace(tzinfo=None)
    for minute in range(5):
        await source.on_tick(naive + timedelta(minutes=minute))
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "datetime.now(timezone.utc)" in errors[0].getMessage()
    assert source.next_due_at(clock.now) is not None  # nothing ran; a good tick still works
    await source.on_tick(clock.now)
    assert (await source.status(clock.now))["last_pull_at"] is not None


def test_pacing_gap_has_a_relative_margin_and_an_absolute_floor() -> None:
    from neuro_chat_elo_pxls.engine.policy import pacing_gap

    assert pacing_gap(timedelta(seconds=1)) == timedelta(seconds=1.025)  # the floor wins
    assert pacing_gap(timedelta(milliseconds=50)) == timedelta(milliseconds=75)
    assert pacing_gap(timedelta(seconds=10)) == timedelta(seconds=10.2)  # 2 % wins
    for ms in (1, 50, 1000, 1250, 60_000):
        assert pacing_gap(timedelta(milliseconds=ms)) >= timedelta(milliseconds=ms + 25)
