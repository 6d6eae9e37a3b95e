"""``store/outbox.py`` through its own interface, on a real SQLite file: drain and ack
delivery, exact acknowledgement, re-offering what was skipped, a cancelled drain."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import attrs
import pytest

from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
from neuro_chat_elo_pxls.store.writer import Store

from .helpers import T0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(str(tmp_path / "db.sqlite3")) as opened:
        yield opened


async def _pull(store: Store, minute: int, **scores: int) -> None:
    """One snapshot: each name's score (its delta goes to the outbox)."""
    when = T0 + timedelta(minutes=minute)
    rows = tuple(ToplistRow(name, score) for name, score in scores.items())
    await store.ingest("86", Snapshot.from_rows(when, rows), when, hold_new=False, state=None)


async def test_drain_hands_out_once_and_names_the_instance(store: Store) -> None:
    await _pull(store, 0, a=5, b=7)
    outbox = store.outbox("space")
    deltas = await outbox.collect("drain")
    assert [(d.seq, d.user, d.delta, d.instance) for d in deltas] == [
        (1, "a", 5, "space"),
        (2, "b", 7, "space"),
    ]
    assert await outbox.collect("drain") == []
    assert await store.count_outbox() == 0
    assert store.outbox() is outbox  # one per open store


async def test_ack_keeps_rows_until_acknowledged_and_skips_what_is_not_its_own(
    store: Store,
) -> None:
    await _pull(store, 0, a=5, b=7)
    outbox = store.outbox("space")
    first = await outbox.collect("ack")
    assert await outbox.collect("ack") == []  # handed out: not again while open
    foreign = [attrs.evolve(first[0], instance="event"), object(), attrs.evolve(first[1], delta=1)]
    assert await outbox.acknowledge(foreign) == []  # another source's, another plugin's
    assert await store.count_outbox() == 2
    assert await outbox.acknowledge(first) == [1, 2]
    assert await store.count_outbox() == 0


async def test_what_was_handed_out_before_the_acknowledged_is_offered_again(
    store: Store,
) -> None:
    outbox = store.outbox()
    await _pull(store, 0, a=5)
    lost = await outbox.collect("ack")  # a batch the host never stored
    await _pull(store, 15, a=8)
    later = await outbox.collect("ack")
    assert await outbox.acknowledge(later) == [2]
    again = await outbox.collect("ack")
    assert again == lost  # the same seq and content: the host de-duplicates
    assert await outbox.acknowledge(again) == [1]
    assert await outbox.collect("ack") == []


async def test_ack_upto_deletes_everything_up_to_a_seq(store: Store) -> None:
    await _pull(store, 0, a=5, b=7, c=9)
    outbox = store.outbox()
    await outbox.collect("ack")
    assert await outbox.ack_upto(2) == 2
    assert [d.user for d in await outbox.drain()] == ["c"]


async def test_a_drain_whose_caller_was_cancelled_is_handed_out_next(store: Store) -> None:
    await _pull(store, 0, a=5)
    outbox = store.outbox()
    task = asyncio.ensure_future(outbox.collect("drain"))
    for _ in range(200):  # cancelled once its delete has committed, before it returns
        await asyncio.sleep(0)
        if outbox._drained:
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.count_outbox() == 0  # committed: the rows live only here now
    assert [(d.user, d.delta) for d in await outbox.collect("drain")] == [("a", 5)]


@pytest.mark.parametrize("delivery", ["drain", "ack"])
async def test_no_query_while_nothing_was_committed_since_it_was_empty(
    store: Store, delivery: str
) -> None:
    """An empty drain is a write unit of its own: counting its own commit as a change
    made every empty ``collect_deltas`` in drain mode run a transaction again."""
    outbox = store.outbox()
    assert await outbox.collect(delivery) == []
    reads: list[object] = []
    real = store._db.read

    async def counted(fn: object) -> object:
        reads.append(fn)
        return await real(fn)  # type: ignore[arg-type]

    commits = store.commits
    store._db.read = counted  # type: ignore[method-assign,assignment]
    for _ in range(3):
        assert await outbox.collect(delivery) == []
    assert reads == [] and store.commits == commits  # nothing ran
    await _pull(store, 0, a=5)  # a commit: it looks again
    assert [d.user for d in await outbox.collect(delivery)] == ["a"]
