"""The engine's parts and contracts: schema beside the store, typed state, read-only
reader, failure policy, the host-facing Source protocol, one version."""

from __future__ import annotations

import importlib.metadata
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

import neuro_chat_elo_pxls
from neuro_chat_elo_pxls import MalformedDataError, PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.engine.policy import AUTH_PAUSE_FLOOR, FailurePolicy, compute_auth_pause
from neuro_chat_elo_pxls.engine.queue import Command, CommandQueue, Key, Kind
from neuro_chat_elo_pxls.engine.state import EngineState, KeyState, StateKeeper
from neuro_chat_elo_pxls.errors import PxlsRequestError, StoreError
from neuro_chat_elo_pxls.hookspecs import Source
from neuro_chat_elo_pxls.store.schema import MIGRATIONS, SCHEMA_VERSION, split_sql
from neuro_chat_elo_pxls.store.writer import Store, StoreReader

from .helpers import T0


def _schema(path: Path) -> dict[str, object]:
    """Tables with their columns (name, type, notnull, default, pk), indexes, triggers."""
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        shape: dict[str, object] = {
            t: conn.execute(f"PRAGMA table_info({t})").fetchall() for t in sorted(tables)
        }
        for kind in ("index", "trigger"):
            shape[kind] = sorted(
                (r[0], " ".join(r[1].split()) if kind == "trigger" else r[1])
                for r in conn.execute(
                    "SELECT name, COALESCE(sql, '') FROM sqlite_master WHERE type = ?", (kind,)
                )
            )
        shape["version"] = conn.execute("PRAGMA user_version").fetchone()[0]
        return shape
    finally:
        conn.close()


async def test_fresh_database_gets_the_newest_schema_same_as_migrated(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.sqlite3"
    async with await Store.open(str(fresh)):
        pass
    old = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(old)
    for statement in split_sql(MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()
    async with await Store.open(str(old)):
        pass
    fresh_shape, migrated_shape = _schema(fresh), _schema(old)
    assert fresh_shape["version"] == SCHEMA_VERSION
    assert fresh_shape == migrated_shape
    assert "users_v3" not in str(fresh_shape)  # created directly, not rebuilt twice


async def test_reader_has_only_read_methods_and_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    async with await Store.open(str(path)) as store:
        await store.save_state(EngineState(canvas="86", sweep_number=2))
    for writer in ("ingest", "save_state", "outbox", "apply_profile"):
        assert not hasattr(StoreReader, writer), writer
    async with await StoreReader.open(str(path)) as reader:
        state = EngineState.from_rows(await reader.load_state_rows())
        assert (state.canvas, state.sweep_number) == ("86", 2)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await reader._db.alone(lambda conn: conn.execute("DELETE FROM state"))


async def test_reader_closes_on_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"this is not a database" * 200)
    with pytest.raises(StoreError, match="not a usable SQLite database"):
        await StoreReader.open(str(bogus))


def test_state_round_trips_through_the_state_table_rows() -> None:
    state = EngineState(
        canvas="86",
        canvas_first_seen=T0,
        pull_due_at=T0 + timedelta(hours=1),
        sweep_number=3,
        sweep_started_at=T0,
        sweep_total=120,
        keys={"profile": KeyState(T0, "auth: 403", 2)},
    )
    rows = state.to_rows()
    assert rows["sweep_finished_at"] is None
    assert rows["pull_due_at"] == "2026-01-05T13:00:00.000000+00:00"  # the text of earlier files
    assert EngineState.from_rows({k: v for k, v in rows.items() if v is not None}) == state
    assert state.sweep_active


async def test_state_keeper_puts_the_old_state_back_when_a_save_fails() -> None:
    """Memory and database agree once a save has ended: a failed save leaves the old
    state, a successful one the new, and while a save runs memory already holds what
    it commits (a cancelled caller's shielded save still commits it)."""
    keeper = StateKeeper()

    async def failing_save(state: EngineState) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError):
        await keeper.commit(failing_save, canvas="87")
    assert keeper.current.canvas is None
    saved: list[EngineState] = []

    async def save(state: EngineState) -> None:
        assert keeper.current is state  # adopted as the save starts
        saved.append(state)

    await keeper.commit(save, canvas="87")
    assert keeper.current.canvas == "87" and saved == [keeper.current]


def test_auth_pause_has_a_floor_no_setting_lowers() -> None:
    assert compute_auth_pause(timedelta(minutes=15), timedelta(seconds=1), 1) == AUTH_PAUSE_FLOOR
    assert compute_auth_pause(timedelta(minutes=15), timedelta(hours=2), 2) == timedelta(minutes=30)
    assert compute_auth_pause(timedelta(minutes=15), timedelta(hours=2), 30) == timedelta(hours=2)
    from neuro_chat_elo_pxls.errors import AuthError, ConfigError

    with pytest.raises(ConfigError, match="auth_pause_max"):  # refused in the settings
        PxlsSettings(auth_pause_max=timedelta(seconds=1))
    policy = FailurePolicy(PxlsSettings(auth_pause_max=timedelta(minutes=15)))

    state = CommandQueue().state(Key.PROFILE)
    for _ in range(3):
        decision = policy.on_failure(
            Command(Kind.SWEEP, 1), AuthError("403", challenge=False), state, T0
        )
        assert decision.retry_at is not None
        assert decision.retry_at - T0 >= timedelta(minutes=15)


def test_source_satisfies_the_host_protocol(make_settings: Callable[..., PxlsSettings]) -> None:
    source = PxlsSource(make_settings())
    assert isinstance(source, Source)


def test_version_comes_from_the_package_metadata() -> None:
    version = importlib.metadata.version("neuro-chat-elo-pxls")
    assert neuro_chat_elo_pxls.__version__ == version
    assert f"neuro-chat-elo-pxls/{version} " in PxlsSettings().user_agent


def test_malformed_data_is_not_a_request_error() -> None:
    assert not issubclass(MalformedDataError, PxlsRequestError)


def test_cli_imports_the_stand_in_only_for_the_demo() -> None:
    code = (
        "import sys, neuro_chat_elo_pxls.cli as c; "
        "assert 'neuro_chat_elo_pxls.testing.standin' not in sys.modules, 'stand-in imported'; "
        "assert 'aiohttp.web' not in sys.modules, 'aiohttp.web imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


#: who writes each field of the engine state (engine/state.py's table says the same)
STATE_WRITERS = {
    "jobs/pull.py": {"pull_due_at", "last_pull_at", "last_generated_at"},
    "jobs/canvas.py": {"canvas", "canvas_first_seen", "canvas_changed_at", "canvas_history"},
    "jobs/sweep.py": {"sweep_number", "sweep_started_at", "sweep_finished_at", "sweep_total"},
    "jobs/follow.py": {"follow_round_finished_at"},
    "engine/processor.py": {"last_error", "last_error_at"},
    "engine/core.py": {
        "credentials",
        "leaderboard_credentials",
        "credentials_salt",
        "instance",
        "profiles_enabled",
        "keys",  # the restored ones, at open; every other save takes the queue's
    },
}


def test_each_engine_state_field_has_one_writer() -> None:
    """Each field of the engine state is written (``StateKeeper.commit``/``propose``,
    ``persist_keys``, or a clamp's ``limits``) by one module, the one
    :data:`STATE_WRITERS` and engine/state.py name (the clock guard writes none)."""
    import ast
    from collections import defaultdict

    import attrs

    package = Path(neuro_chat_elo_pxls.__file__).parent
    writers: dict[str, set[str]] = defaultdict(set)
    for path in package.rglob("*.py"):
        module = path.relative_to(package).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("commit", "propose", "persist_keys")
            ):
                for keyword in node.keywords:
                    if keyword.arg is not None:
                        writers[module].add(keyword.arg)
            if (
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "limits" for t in node.targets)
                and isinstance(node.value, ast.Dict)
            ):
                for key in node.value.keys:
                    assert isinstance(key, ast.Constant)
                    writers[module].add(str(key.value))
    assert writers == STATE_WRITERS
    assert set().union(*STATE_WRITERS.values()) == {f.name for f in attrs.fields(EngineState)}
    docs = (package / "engine" / "state.py").read_text()
    assert all(f"``{module}``" in docs for module in STATE_WRITERS)


def test_the_engine_knows_no_part_of_the_work() -> None:
    """engine/ imports nothing from jobs/ (the tick, in jobs/, names the parts; the
    engine keeps the state, the queue and the failure bookkeeping)."""
    package = Path(neuro_chat_elo_pxls.__file__).parent
    for path in (package / "engine").glob("*.py"):
        text = path.read_text()
        assert "from ..jobs" not in text and "neuro_chat_elo_pxls.jobs" not in text, path.name
