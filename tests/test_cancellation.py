"""Hosts cancel and overlap hook calls: nothing wedges, nothing is lost or doubled.

Each hook is cancelled at pseudo-random points (a scan over how many event-loop
steps, or real sub-millisecond waits, pass before ``task.cancel()``), for drain and
ack delivery. After every cancel the store must still be usable; at the end every
user's total equals the fake pxls.space's truth, and no ``seq`` is reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from neuro_chat_elo_pxls import EloDelta, PxlsSource
from neuro_chat_elo_pxls.engine.queue import Key

from .helpers import FakeClock, FakePxls, Ledger, drive

T = TypeVar("T")


async def cancel_midway(coro: Coroutine[Any, Any, T], rng: random.Random) -> T | None:
    """Run ``coro`` and cancel it after a random number of loop steps (or a real wait
    under 2 ms, which lets aiosqlite's thread get somewhere). None if cancelled."""
    task = asyncio.ensure_future(coro)
    if rng.random() < 0.5:
        for _ in range(rng.randrange(0, 60)):
            await asyncio.sleep(0)
    else:
        await asyncio.sleep(rng.uniform(0, 0.002))
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        return await task
    return None


class SeqBook:
    """A host that de-duplicates on seq and checks a seq never means two deltas."""

    def __init__(self) -> None:
        self.by_seq: dict[int, EloDelta] = {}
        self.ledger = Ledger()

    def add(self, batch: list[EloDelta] | None) -> None:
        for delta in batch or []:
            seen = self.by_seq.get(delta.seq)
            if seen is not None:
                assert seen == delta, f"seq {delta.seq} reused: {seen} then {delta}"
                continue
            self.by_seq[delta.seq] = delta
            self.ledger.add([delta])


def population(fake: FakePxls, rng: random.Random, n: int = 120) -> None:
    for i in range(n):
        fake.add(f"painter_{i:03d}", rng.randrange(1, 500))


def activity(fake: FakePxls, rng: random.Random) -> None:
    for user in rng.sample(list(fake.users.values()), k=len(fake.users) // 3):
        user.score += rng.randrange(1, 40)
    fake.regenerate()


@pytest.mark.parametrize("delivery", ["drain", "ack"])
async def test_random_cancels_of_every_hook_lose_nothing(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    delivery: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(20261025)
    population(fake, rng)
    source = make_source(delivery=delivery, profile_cooldown=timedelta(seconds=1))
    book = SeqBook()
    cancels = {"on_tick": 0, "collect_deltas": 0, "ack_deltas": 0}
    for round_ in range(40):
        clock.advance(minutes=20)
        if round_ % 3 == 0:
            activity(fake, rng)
        for _ in range(4):
            await cancel_midway(source.on_tick(clock.now), rng)
            cancels["on_tick"] += 1
            clock.advance(seconds=2)
        batch = await cancel_midway(source.collect_deltas(), rng)
        cancels["collect_deltas"] += 1
        book.add(batch)
        if delivery == "ack" and batch:
            await cancel_midway(source.ack_deltas(batch[-1].seq), rng)
            cancels["ack_deltas"] += 1
        # the store is usable after every cancel: a plain call works
        book.add(await source.collect_deltas())
        if delivery == "ack" and book.by_seq:
            await source.ack_deltas(max(book.by_seq))
    # then run like a well-behaved host until everything settled
    await drive(source, clock, clock.now + timedelta(hours=3), book.ledger)
    book.add(await source.collect_deltas())
    book.ledger.check_conservation()
    truth = {name: u.score for name, u in fake.users.items()}
    credited = {user: score for (user, _), score in book.ledger.last_scores().items()}
    assert credited == truth, "every user's total equals pxls.space's truth"
    assert not [r for r in caplog.records if "transaction" in r.getMessage()]
    assert sum(cancels.values()) >= 200


async def test_cancelled_drain_hands_its_rows_to_the_next_call(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    rng = random.Random(5)
    population(fake, rng, 300)
    source = make_source(token=None)  # no profiles: every first delta at once
    book = SeqBook()
    handed_over = cancelled = 0
    for _ in range(120):
        activity(fake, rng)
        clock.advance(hours=1)
        await source.on_tick(clock.now)
        batch = await cancel_midway(source.collect_deltas(), rng)
        if batch is None:
            cancelled += 1
            store = source._db.store
            assert store is not None
            handed_over += bool(store.outbox()._drained)  # committed, but the caller was gone
        book.add(batch)
    book.add(await source.collect_deltas())
    book.ledger.check_conservation()
    assert {u: s for (u, _), s in book.ledger.last_scores().items()} == {
        n: u.score for n, u in fake.users.items()
    }
    assert cancelled >= 10 and handed_over >= 1, (cancelled, handed_over)


async def test_overlapping_hook_calls_are_serialised_not_errors(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(3)
    population(fake, rng, 50)
    source = make_source()
    ledger = Ledger()
    caplog.set_level(logging.INFO)
    for _ in range(30):
        results = await asyncio.gather(
            source.on_tick(clock.now),
            source.on_tick(clock.now),
            source.collect_deltas(),
            source.on_tick(clock.now + timedelta(milliseconds=1)),
            source.collect_deltas(),
        )
        for result in results:
            if isinstance(result, list):
                ledger.add(result)
        clock.advance(seconds=2)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in caplog.records if "already in use" in r.getMessage()]
    status = await source.status(clock.now)
    assert status["keys"][Key.PROFILE.value]["consecutive_failures"] == 0
    await drive(source, clock, clock.now + timedelta(hours=1), ledger)
    ledger.check_conservation()
    assert {u: s for (u, _), s in ledger.last_scores().items()} == {
        n: u.score for n, u in fake.users.items()
    }
