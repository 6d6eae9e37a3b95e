"""Small parts through their own interfaces: the database handle, its lock and its
connection, the engine's restore, the clocks, the version, the CLI's pieces and the
simulator's (each module of the package is imported by a test)."""

from __future__ import annotations

import random
import runpy
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls.engine.core import Engine
from neuro_chat_elo_pxls.engine.queue import Key
from neuro_chat_elo_pxls.engine.state import EngineState, KeyState
from neuro_chat_elo_pxls.errors import StoreError, StoreLockedError
from neuro_chat_elo_pxls.settings import PxlsSettings, Secret
from neuro_chat_elo_pxls.store.connection import scalar
from neuro_chat_elo_pxls.store.handle import STORE_RETRY, StoreHandle
from neuro_chat_elo_pxls.store.lockfile import DatabaseLock
from neuro_chat_elo_pxls.store.outbox import Outbox
from neuro_chat_elo_pxls.store.writer import Store
from neuro_chat_elo_pxls.util.clock import JumpClock, SimClock
from neuro_chat_elo_pxls.version import DISTRIBUTION, VERSION

from .helpers import T0


async def test_the_handle_opens_once_and_refuses_after_close(tmp_path: Path) -> None:
    opened: list[Store] = []

    async def on_open(store: Store) -> None:
        opened.append(store)

    handle = StoreHandle(str(tmp_path / "h.sqlite3"), on_open)
    store = await handle.ensure(T0)
    assert store is not None and await handle.ensure(T0) is store and opened == [store]
    assert isinstance(store.outbox(), Outbox)
    await handle.close()
    await handle.close()  # idempotent
    assert await handle.ensure(T0) is None
    with pytest.raises(StoreError, match="shut down"):
        await handle.open()


async def test_a_handle_whose_restore_fails_retries_later(tmp_path: Path) -> None:
    async def broken(store: Store) -> None:
        raise StoreError("belongs to another instance")

    handle = StoreHandle(str(tmp_path / "h.sqlite3"), broken)
    assert await handle.ensure(T0) is None
    assert handle.disabled and handle.next_due(T0) == T0 + STORE_RETRY


def test_the_lock_admits_one_holder(tmp_path: Path) -> None:
    path = str(tmp_path / "l.sqlite3")
    first, second = DatabaseLock(path), DatabaseLock(path)
    first.acquire()
    try:
        with pytest.raises(StoreLockedError):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    second.release()


async def test_scalar_reads_the_first_column_or_zero(tmp_path: Path) -> None:
    async with await Store.open(str(tmp_path / "c.sqlite3")) as store:
        count = await store._db.read(lambda conn: scalar(conn, "SELECT COUNT(*) FROM users"))
        none = await store._db.read(lambda conn: scalar(conn, "SELECT NULL"))
    assert (count, none) == (0, 0)


async def test_the_engine_restores_keys_and_records_what_it_runs_with(tmp_path: Path) -> None:
    """A 429's wait survives a restart in the queue (not in the keeper's copy); the
    instance and the token's presence are recorded for ``status``."""
    until = T0 + timedelta(hours=1)
    async with await Store.open(str(tmp_path / "e.sqlite3")) as store:
        keys = {"profile": KeyState(until, "rate limited: 429", 1, 0, T0)}
        await store.save_state(EngineState(keys=keys))
        engine = Engine(PxlsSettings(token=Secret("t")), random.Random(1))
        await engine.restore(store)
        assert engine.queue.state(Key.PROFILE).ready_at == until
        assert engine.state.current.keys == {}
        assert engine.state.current.profiles_enabled is True
        assert engine.state.current.instance == PxlsSettings().instance_name
        saved = EngineState.from_rows(await store.load_state_rows())
        assert saved.keys["profile"].ready_at == until
        assert engine.queued()["pull"] == 0


def test_clocks_simulated_and_jumping() -> None:
    sim = SimClock(T0, speed=3600.0, epoch=0.0)
    assert sim.real_seconds(timedelta(hours=1)) == 1.0
    with pytest.raises(ValueError, match="positive"):
        SimClock(speed=0)
    jump = JumpClock(T0)
    assert jump.real_seconds(timedelta(minutes=5)) == 0.0 and jump.now() == T0 + timedelta(
        minutes=5
    )


def test_the_version_is_the_distribution_s() -> None:
    import importlib.metadata

    assert importlib.metadata.version(DISTRIBUTION) == VERSION


def test_the_cli_pieces() -> None:
    from neuro_chat_elo_pxls.cli import hangup
    from neuro_chat_elo_pxls.cli.export import csv_cell, export_command
    from neuro_chat_elo_pxls.cli.status import status_command

    assert csv_cell("=1+1") == "'=1+1" and csv_cell("vedal") == "vedal" and csv_cell(3) == 3
    hangup.take()
    assert hangup.take() == 0  # nothing recorded since
    assert callable(export_command) and callable(status_command)
    # the module entry points do nothing on import (only run as __main__)
    runpy.run_module("neuro_chat_elo_pxls.cli.__main__", run_name="imported")
    runpy.run_module("neuro_chat_elo_pxls.testing.__main__", run_name="imported")
    runpy.run_module("neuro_chat_elo_pxls.testing.simulate.__main__", run_name="imported")


def test_the_simulator_s_parts() -> None:
    from neuro_chat_elo_pxls.testing.canvas_model import Scenario
    from neuro_chat_elo_pxls.testing.simulate.checker import Violation
    from neuro_chat_elo_pxls.testing.simulate.host import Host
    from neuro_chat_elo_pxls.testing.simulate.people import FaultPlan, Person
    from neuro_chat_elo_pxls.testing.simulate.plugins import ChatDelta
    from neuro_chat_elo_pxls.testing.simulate.run import run_seed_with_stats
    from neuro_chat_elo_pxls.testing.simulate.world import World

    person = Person(1, "vedal987", 1.0, None, None)
    person.history["86"] = [(T0, 5), (T0 + timedelta(hours=1), 9)]
    assert person.count_at("86", T0 + timedelta(minutes=30)) == 5
    assert person.count_at("87", T0) == 0
    plan = FaultPlan(0.0, [[T0, T0 + timedelta(hours=1)]], [])
    assert plan.auth_outage(T0) and not plan.auth_outage(T0 + timedelta(hours=1))
    assert "--seed 7 --hours 2" in Violation(7, "x", "y").line(2)
    assert ChatDelta("a", 1).delta == 1 and Scenario() is not None
    assert Host is not None and World is not None
    violations, figures = run_seed_with_stats(1, hours=1)
    assert violations == [] and figures["ticks"] > 0
