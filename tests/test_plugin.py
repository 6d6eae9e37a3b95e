"""The plugin as a host sees it: real pluggy PluginManager and entry-point discovery."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

from neuro_chat_elo_pxls import ConfigError, PxlsSettings, PxlsSource, hookspecs
from neuro_chat_elo_pxls.hookspecs import PROJECT, call_async_hook

from .helpers import T0


def make_pm() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def test_hookspecs_import_only_pluggy_and_stdlib() -> None:
    import ast

    tree = ast.parse(Path(hookspecs.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0]
        if isinstance(node, ast.ImportFrom)
        else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "collections", "datetime", "typing", "pluggy"}


async def test_entry_point_discovery_and_hooks_driven_like_a_host(tmp_path: Path) -> None:
    pm = make_pm()
    loaded = pm.load_setuptools_entrypoints(PROJECT)
    assert loaded >= 1, "editable install missing: pip install -e '.[test]'"
    assert "pxls" in {name for name, _ in pm.list_name_plugin()}
    sources: list[object] = []

    def register(source: object) -> None:
        sources.append(source)
        pm.register(source)

    config: dict[str, Any] = {
        "pxls": {
            "db_path": str(tmp_path / "x.sqlite3"),
            "base_url": "http://127.0.0.1:9",
            "profile_cooldown": 2,
            "leaderboard_interval": 600,
        }
    }
    pm.hook.register_sources(register=register, config=config)
    assert len(sources) == 1
    source = sources[0]
    assert isinstance(source, PxlsSource)
    assert source.settings.profile_cooldown == timedelta(seconds=2)
    # nothing listens on port 9: the tick fails politely, the host loop survives
    await call_async_hook(pm.hook.on_tick, now=T0)
    assert await call_async_hook(pm.hook.collect_deltas) == [[]]
    due = pm.hook.next_due_at(now=T0)
    assert len(due) == 1
    assert due[0] > T0  # backing off, not busy-looping
    await call_async_hook(pm.hook.on_shutdown)


def test_bad_config_names_the_key() -> None:
    pm = make_pm()
    from neuro_chat_elo_pxls import plugin

    pm.register(plugin)
    with pytest.raises(ConfigError, match=r"'profile_cooldwn'.*valid: base_url"):
        pm.hook.register_sources(register=pm.register, config={"pxls": {"profile_cooldwn": 1}})
    with pytest.raises(ConfigError, match="profile_cooldown"):
        PxlsSettings.from_mapping({"profile_cooldown": -1})
    with pytest.raises(ConfigError, match="auth_pause"):
        PxlsSettings.from_mapping({"auth_pause": 60})


async def test_call_async_hook_awaits_in_registration_order() -> None:
    pm = make_pm()
    order: list[str] = []

    class Src:
        def __init__(self, name: str) -> None:
            self.name = name

        @hookspecs.hookimpl
        async def collect_deltas(self) -> list[Any]:
            order.append(self.name)
            return [self.name]

    for name in ("first", "second", "third"):
        pm.register(Src(name))
    assert await call_async_hook(pm.hook.collect_deltas) == [["first"], ["second"], ["third"]]
    assert order == ["first", "second", "third"]


def test_source_constructible_without_pluggy(make_settings: Callable[..., PxlsSettings]) -> None:
    source = PxlsSource(make_settings())
    assert "pxls.test" in repr(source)


async def test_no_pxls_section_registers_nothing_and_sends_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Installing the package into a host must not make it contact pxls.space."""
    import aiohttp

    from neuro_chat_elo_pxls import plugin

    sent: list[object] = []

    async def no_network(*args: object, **kwargs: object) -> None:
        sent.append(args)
        raise AssertionError("a request was sent")

    monkeypatch.setattr(aiohttp.ClientSession, "_request", no_network)
    pm = make_pm()
    pm.register(plugin)
    registered: list[object] = []
    pm.hook.register_sources(register=registered.append, config={})
    pm.hook.register_sources(register=registered.append, config={"other_plugin": {}})
    assert registered == []
    assert sent == []


async def test_two_sources_acknowledge_through_the_hook_without_seq_collisions(
    tmp_path: Path, fake: Any, clock: Any
) -> None:
    """Issue 21, item 8: a pluggy host registered with ``register=pm.register`` keeps
    no reference to its sources, so it could not acknowledge, and two sources' seqs
    both start at 1. Now every delta names its ``instance``; the ``acknowledge`` hook
    takes any deltas and each source acknowledges only its own instance's."""
    import random

    from .helpers import FakePxls

    pm = make_pm()
    other = FakePxls(clock)
    fake.add("grid_master", 120)
    other.add("ironmouse_fan", 7)
    a = PxlsSource(
        PxlsSettings(db_path=str(tmp_path / "a.sqlite3"), token=None, delivery="ack"),
        client=fake,
        rng=random.Random(1),
    )
    b = PxlsSource(
        PxlsSettings(
            db_path=str(tmp_path / "b.sqlite3"),
            base_url="https://pxls.ironmouse.example",
            token=None,
            delivery="ack",
        ),
        client=other,
        rng=random.Random(2),
    )
    pm.hook.register_sources(register=pm.register, config={})  # nothing of ours
    pm.register(a)
    pm.register(b)
    try:
        await call_async_hook(pm.hook.on_tick, now=clock.now)
        batches = await call_async_hook(pm.hook.collect_deltas)
        deltas = [d for batch in batches for d in batch]
        assert {(d.instance, d.seq) for d in deltas} == {
            ("pxls.space", 1),
            ("pxls.ironmouse.example", 1),
        }  # the same seq, told apart by the instance
        ours = [d for d in deltas if d.instance == "pxls.space"]
        await call_async_hook(pm.hook.acknowledge, deltas=ours)  # only a's
        await a.on_shutdown()
        await b.on_shutdown()
        a2 = PxlsSource(a.settings, client=fake)
        b2 = PxlsSource(b.settings, client=other)
        assert await a2.collect_deltas() == []  # acknowledged: gone
        (again,) = await b2.collect_deltas()  # not acknowledged: comes again
        assert (again.instance, again.seq, again.user) == (
            "pxls.ironmouse.example",
            1,
            "ironmouse_fan",
        )
        await a2.on_shutdown()
        await b2.on_shutdown()
    finally:
        await a.on_shutdown()
        await b.on_shutdown()


async def test_a_failed_acknowledgement_is_logged_not_raised_and_nothing_is_lost(
    make_source: Any, fake: Any, clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The previous note's open end: a failed ack (the database's disk full) ended
    ``run`` with exit 2 (a config mistake, never restarted). The hook now logs it and
    keeps the rows; the next acknowledgement takes them too."""
    from neuro_chat_elo_pxls.errors import StoreError

    fake.add("grid_master", 120)
    source = make_source(delivery="ack", token=None)
    await source.on_tick(clock.now)
    (delta,) = await source.collect_deltas()

    async def full_disk(seqs: Any) -> None:
        raise StoreError("database or disk is full")

    outbox = source._db.store.outbox()
    real = outbox._delete_seqs
    outbox._delete_seqs = full_disk
    await source.acknowledge([delta])  # no exception reaches the host
    assert any(
        "acknowledging 1 deltas failed (database or disk is full)" in r.getMessage()
        for r in caplog.records
    )
    outbox._delete_seqs = real
    await source.on_shutdown()
    again = make_source(delivery="ack", token=None)
    (redelivered,) = await again.collect_deltas()  # kept: handed out again, same seq
    assert redelivered == delta
    await again.acknowledge([redelivered])
    await again.on_shutdown()
    assert await make_source(delivery="ack", token=None).collect_deltas() == []


async def _two_ack_sources(
    tmp_path: Path, fake: Any, clock: Any, base_b: str
) -> tuple[Any, Any, Any]:
    import random

    from .helpers import FakePxls

    other = FakePxls(clock)
    fake.add("grid_master", 120)
    other.add("ironmouse_fan", 7)
    a = PxlsSource(
        PxlsSettings(
            db_path=str(tmp_path / "a.sqlite3"),
            token=None,
            delivery="ack",
            base_url="http://127.0.0.1:4001",
        ),
        client=fake,
        rng=random.Random(1),
    )
    b = PxlsSource(
        PxlsSettings(
            db_path=str(tmp_path / "b.sqlite3"), token=None, delivery="ack", base_url=base_b
        ),
        client=other,
        rng=random.Random(2),
    )
    pm = make_pm()
    pm.register(a)
    pm.register(b)
    return pm, a, b


async def test_a_collect_cancelled_while_another_source_runs_loses_nothing(
    tmp_path: Path, fake: Any, clock: Any
) -> None:
    """A review's finding: the host cancels collect_deltas while the second source is
    still busy; the first source's batch is lost to the host, and the next
    acknowledgement (of later seqs) deleted it for good. Now the acknowledgement
    deletes exactly what it names, and what was handed out before it and never
    acknowledged is offered again."""
    import asyncio

    pm, a, b = await _two_ack_sources(tmp_path, fake, clock, "http://127.0.0.1:4002")
    try:
        await call_async_hook(pm.hook.on_tick, now=clock.now)
        async with b._hooks:  # b is busy: the host's wait_for runs out during it
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call_async_hook(pm.hook.collect_deltas), 0.05)
        fake.users["grid_master"].score = 130
        clock.advance(hours=1, minutes=5)
        fake.regenerate()
        got: list[Any] = []
        for _ in range(3):
            await call_async_hook(pm.hook.on_tick, now=clock.now)
            batch = [d for part in await call_async_hook(pm.hook.collect_deltas) for d in part]
            got.extend(batch)
            await call_async_hook(pm.hook.acknowledge, deltas=batch)
        mine = sorted({(d.seq, d.delta) for d in got if d.user == "grid_master"})
        assert mine == [(1, 120), (2, 10)], mine  # seq 1 came again; nothing lost
        assert await a.collect_deltas() == []
    finally:
        await a.on_shutdown()
        await b.on_shutdown()


async def test_two_sources_under_one_instance_name_never_acknowledge_each_other(
    tmp_path: Path, fake: Any, clock: Any
) -> None:
    """Two stand-ins on 127.0.0.1 (two ports): both instances are named "127.0.0.1"
    and both start at seq 1. Acknowledging b's deltas deleted a's undelivered ones."""
    pm, a, b = await _two_ack_sources(tmp_path, fake, clock, "http://127.0.0.1:4002")
    try:
        await call_async_hook(pm.hook.on_tick, now=clock.now)
        (from_b,) = await b.collect_deltas()
        await call_async_hook(pm.hook.acknowledge, deltas=[from_b])
        (from_a,) = await a.collect_deltas()  # still there, never handed out before
        assert (from_a.instance, from_a.seq) == (from_b.instance, from_b.seq) == ("127.0.0.1", 1)
        assert from_a.user == "grid_master"
    finally:
        await a.on_shutdown()
        await b.on_shutdown()


class _ForeignSource:
    """Another plugin's source, as a host registers it beside ours: its deltas are of
    its own type (one without ``seq``, one with a ``seq`` that collides with ours)."""

    @attrs.frozen
    class ChatDelta:
        user: str
        delta: int

    @attrs.frozen
    class SeqDelta:
        seq: int
        user: str

    @hookspecs.hookimpl
    async def collect_deltas(self) -> list[Any]:
        return [self.ChatDelta("chatter", 3), self.SeqDelta(1, "chatter")]


async def test_acknowledge_ignores_another_plugins_deltas(
    tmp_path: Path, fake: Any, clock: Any
) -> None:
    """Issue 27, item 6: given every delta the host stored, ``acknowledge`` raised
    AttributeError ('ChatDelta' object has no attribute 'seq') on another plugin's
    delta, so ours were never acknowledged. Now what is not its own is skipped."""
    pm, a, b = await _two_ack_sources(tmp_path, fake, clock, "http://127.0.0.1:4002")
    pm.register(_ForeignSource())
    try:
        await call_async_hook(pm.hook.on_tick, now=clock.now)
        stored = [d for batch in await call_async_hook(pm.hook.collect_deltas) for d in batch]
        assert len(stored) == 4  # ours (one per source) and the foreign plugin's two
        await call_async_hook(pm.hook.acknowledge, deltas=stored)
        await a.on_shutdown()
        await b.on_shutdown()
        for settings in (a.settings, b.settings):  # acknowledged: not offered again
            again = PxlsSource(settings, client=fake)
            assert await again.collect_deltas() == []
            await again.on_shutdown()
    finally:
        await a.on_shutdown()
        await b.on_shutdown()


async def test_a_naive_now_is_refused_the_same_way_by_every_hook(
    make_source: Callable[..., PxlsSource], clock: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 27, item 7: through the host guide's loop, a naive ``now`` made
    ``next_due_at`` answer ``now`` itself (the host spun: 2,462 ticks in 2 s), and
    after one aware tick it raised TypeError. Every hook now refuses it the same way:
    one ERROR line in all, nothing raised, and no due time that makes a host spin."""
    import logging

    source = make_source(token=None)
    naive = clock.now.replace(tzinfo=None)
    pm = make_pm()
    pm.register(source)
    try:
        for _ in range(3):
            await call_async_hook(pm.hook.on_tick, now=naive)
            assert pm.hook.next_due_at(now=naive) == []  # None: sleep the host's poll
        await source.on_tick(clock.now)  # one aware tick opens the store
        assert source.next_due_at(clock.now) is not None
        assert pm.hook.next_due_at(now=naive) == []  # no TypeError after it either
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "datetime.now(timezone.utc)" in errors[0].getMessage()
    finally:
        await source.on_shutdown()


async def test_a_drain_cancelled_while_another_source_runs_loses_nothing(
    tmp_path: Path, fake: Any, clock: Any
) -> None:
    """Issue 27, item 1: in the default ``drain`` mode the host's ``wait_for`` ran out
    while the second source was busy: the first source had already drained its batch
    (committed) and it was never handed out again. ``call_async_hook`` now keeps what
    the sources that had returned gave, and the next call returns it first."""
    import asyncio

    pm, a, b = await _two_ack_sources(tmp_path, fake, clock, "http://127.0.0.1:4002")
    for source in (a, b):
        source.settings = attrs.evolve(source.settings, delivery="drain")
    try:
        await call_async_hook(pm.hook.on_tick, now=clock.now)
        async with b._hooks:  # b is busy: the host's wait_for runs out during it
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(call_async_hook(pm.hook.collect_deltas), 0.05)
        assert await a.collect_deltas() == []  # a's batch left its outbox (drained)
        batches = await call_async_hook(pm.hook.collect_deltas)
        got = sorted((d.user, d.seq, d.delta) for batch in batches for d in batch)
        assert got == [("grid_master", 1, 120), ("ironmouse_fan", 1, 7)]
        assert [d for batch in await call_async_hook(pm.hook.collect_deltas) for d in batch] == []
    finally:
        await a.on_shutdown()
        await b.on_shutdown()


async def test_sources_not_reached_by_a_cancelled_call_are_never_awaited() -> None:
    """The coroutines of sources after the cancelled one are closed, not left to warn
    'never awaited'; results that are empty (nothing to hand out) are not carried."""
    import asyncio

    calls: list[str] = []

    class Slow:
        @hookspecs.hookimpl
        async def collect_deltas(self) -> list[Any]:
            calls.append("slow")
            await asyncio.sleep(3600)
            return []

    class Quick:
        def __init__(self, batch: list[Any]) -> None:
            self.batch = batch

        @hookspecs.hookimpl
        async def collect_deltas(self) -> list[Any]:
            calls.append("quick")
            return self.batch

    pm = make_pm()
    for plugin in (Quick([]), Slow(), Quick(["x"])):
        pm.register(plugin)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call_async_hook(pm.hook.collect_deltas), 0.01)
    assert calls == ["quick", "slow"]
    pm.unregister(next(p for p in pm.get_plugins() if isinstance(p, Slow)))
    assert await call_async_hook(pm.hook.collect_deltas) == [[], ["x"]]  # nothing carried
