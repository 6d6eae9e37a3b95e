"""Health: the rules of ``status --check``, the running source's view persisted for
``status`` from another process, and the command's exit codes."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.cli import main
from neuro_chat_elo_pxls.engine.state import EngineState, KeyState
from neuro_chat_elo_pxls.errors import AuthError
from neuro_chat_elo_pxls.ops.health import default_outbox_age, health_problems
from neuro_chat_elo_pxls.ops.status import build_status, format_status
from neuro_chat_elo_pxls.store.reader import StoreReader
from neuro_chat_elo_pxls.util.times import fmt_duration

from .helpers import T0, FakeClock, FakePxls, drive

SETTINGS = PxlsSettings(db_path="unused.sqlite3", base_url="http://pxls.test", token=None)
HOUR = timedelta(hours=1)


def _problems(state: EngineState, now: datetime, oldest: datetime | None = None) -> list[str]:
    return health_problems(state, SETTINGS, now, oldest_outbox=oldest, max_outbox_age=2 * HOUR)


def test_healthy_when_pulled_recently() -> None:
    state = EngineState(last_pull_at=T0, profiles_enabled=True, sweep_started_at=T0)
    assert _problems(state, T0 + 2 * HOUR) == []


def test_no_pull_yet_and_no_pull_within_two_intervals() -> None:
    assert _problems(EngineState(), T0) == ["no successful pull yet"]
    late = _problems(EngineState(last_pull_at=T0), T0 + 2 * HOUR + timedelta(seconds=1))
    assert len(late) == 1
    assert late[0].startswith("no successful pull for 2h00m (last at 2026-01-05T12:00:00Z")
    assert "limit 2 x leaderboard_interval = 2h00m" in late[0]


@pytest.mark.parametrize(
    ("interval", "limit"),
    [(timedelta(minutes=5), "30m00s"), (timedelta(minutes=20), "1h00m"), (HOUR, "2h00m")],
)
def test_the_pull_limit_follows_the_regeneration_grid(interval: timedelta, limit: str) -> None:
    """Pulls follow the 15-minute grid (DESIGN 8): a 5-minute interval still pulls
    every 15 minutes, and a 20-minute one every 30. Before, 2 x 5 minutes flagged a
    healthy source between every two grid pulls (issue 21, item 4)."""
    settings = PxlsSettings(
        db_path="unused.sqlite3",
        base_url="http://pxls.test",
        token=None,
        leaderboard_interval=interval,
    )
    period = {"30m00s": 15, "1h00m": 30, "2h00m": 60}[limit]
    state = EngineState(last_pull_at=T0)

    def problems(at: datetime) -> list[str]:
        return health_problems(state, settings, at, oldest_outbox=None, max_outbox_age=HOUR)

    assert problems(T0 + timedelta(minutes=period, seconds=90)) == []  # the next grid pull
    assert problems(T0 + timedelta(minutes=2 * period)) == []
    (late,) = problems(T0 + timedelta(minutes=2 * period, seconds=1))
    assert f"= {limit})" in late
    assert ("on the 15-minute grid" in late) == (interval != HOUR)


def test_auth_pause_is_a_problem_until_it_ends() -> None:
    paused = KeyState(T0 + HOUR, "auth: HTTP 403", 0, auth_pauses=1)
    backoff = KeyState(T0 + HOUR, "backoff: HTTP 503", 2, auth_pauses=0)
    state = EngineState(last_pull_at=T0, keys={"profile": paused, "leaderboard": backoff})
    (problem,) = _problems(state, T0 + timedelta(minutes=1))
    assert problem.startswith("profile requests paused for auth until 2026-01-05T13:00:00Z")
    assert "renew PXLS_TOKEN / PXLS_CF_AUTH" in problem
    assert _problems(state, T0 + HOUR) == []  # the pause is over: the next request tells


def test_sweep_overdue_only_with_profiles() -> None:
    state = EngineState(
        last_pull_at=T0 + 49 * HOUR, sweep_number=3, sweep_started_at=T0, profiles_enabled=True
    )
    (problem,) = _problems(state, T0 + 49 * HOUR)
    assert problem.startswith("sweep #3 started 2d01h ago and is still running")
    assert _problems(state, T0 + 47 * HOUR + timedelta(minutes=30)) == []
    state.profiles_enabled = False  # no profiles: no sweep to expect
    assert _problems(state, T0 + 49 * HOUR) == []


def test_old_outbox() -> None:
    state = EngineState(last_pull_at=T0 + 3 * HOUR)
    assert _problems(state, T0 + 3 * HOUR, oldest=T0 + HOUR) == []
    (problem,) = _problems(state, T0 + 3 * HOUR, oldest=T0)
    assert problem.startswith("the oldest uncollected delta is 3h00m old (limit 2h00m)")
    assert default_outbox_age(SETTINGS) == 2 * HOUR


def test_state_rows_keep_the_running_view() -> None:
    state = EngineState(
        profiles_enabled=False,
        last_error="stats.json: HTTP 503; backing off leaderboard for 30s",
        last_error_at=T0,
        keys={"profile": KeyState(T0, "auth: x", 1, 2)},
    )
    assert EngineState.from_rows(state.to_rows()) == state
    assert EngineState.from_rows({}).profiles_enabled is None


async def test_status_shows_the_running_source_view_not_its_own_env(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake.add("grid_master", 120)
    source = make_source()  # with a token
    challenge = AuthError("/api/v1/profile: HTTP 403 (challenge)", challenge=True)
    fake.failures["profile"].append(challenge)
    await drive(source, clock, clock.now + timedelta(minutes=2))
    await source.on_shutdown()
    monkeypatch.delenv("PXLS_TOKEN", raising=False)  # the status command has no token
    db = str(tmp_path / "pxls.sqlite3")
    reader = await StoreReader.open(db)
    async with reader:
        state = EngineState.from_rows(await reader.load_state_rows())
        settings = PxlsSettings(db_path=db, token=None)
        status = await build_status(reader, state, clock.now, settings)
    assert status["profiles_enabled"] is True
    assert "auth" in status["keys"]["profile"]["reason"]
    assert status["keys"]["profile"]["auth_pauses"] == 1
    assert "HTTP 403" in status["last_error"]
    assert status["last_error_at"] is not None
    assert status["healthy"] is False
    assert [p.split(" until")[0] for p in status["problems"]] == [
        "profile requests paused for auth"
    ]
    text = format_status(status)
    assert "enabled (the source ran with PXLS_TOKEN)" in text
    assert "last error" in text
    assert "UNHEALTHY       profile requests paused for auth" in text
    assert "None" not in text


async def test_status_names_the_token_variable_of_its_instance(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> None:
    """Issue item 11: an instance table ``space`` reads ``PXLS_TOKEN_SPACE``; status said
    "profiles DISABLED: the source runs without PXLS_TOKEN"."""
    envs = ("PXLS_TOKEN_SPACE", "PXLS_CF_AUTH_SPACE")
    fake.add("grid_master", 120)
    source = make_source(token=None, instance="space", secret_envs=envs)
    await drive(source, clock, clock.now + timedelta(minutes=2))
    await source.on_shutdown()
    db = str(tmp_path / "pxls.sqlite3")
    reader = await StoreReader.open(db)
    async with reader:
        state = EngineState.from_rows(await reader.load_state_rows())
        settings = PxlsSettings(db_path=db, token=None, instance="space", secret_envs=envs)
        status = await build_status(reader, state, clock.now, settings)
    assert status["secret_envs"] == list(envs)
    text = format_status(status)
    assert "DISABLED: the source ran without PXLS_TOKEN_SPACE\n" in text


async def test_next_pull_is_not_shown_before_the_key_cools_down(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> None:
    fake.add("grid_master", 120)
    source = make_source()
    await drive(source, clock, clock.now + timedelta(minutes=1))
    status = await source.status(clock.now)
    assert status["next_pull_at"] is not None
    state = EngineState(
        pull_due_at=T0, keys={"leaderboard": KeyState(T0 + HOUR, "backoff: 503", 1)}
    )
    reader = await StoreReader.open(str(tmp_path / "pxls.sqlite3"))
    async with reader:
        shown = await build_status(reader, state, T0, source.settings)
    assert shown["next_pull_at"] == (T0 + HOUR).isoformat(timespec="microseconds")


def _cli_db(tmp_path: Path, last_pull: datetime | None) -> str:
    """A database whose last pull was at ``last_pull`` (wall-clock relative)."""
    import asyncio

    from neuro_chat_elo_pxls.store.writer import Store

    db = str(tmp_path / "cli.sqlite3")

    async def make() -> None:
        async with await Store.open(db) as store:
            await store.save_state(EngineState(canvas="86", last_pull_at=last_pull))

    asyncio.run(make())
    return db


def test_status_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recent = _cli_db(tmp_path, datetime.now(UTC) - timedelta(minutes=5))
    assert main(["status", "--check", "--db", recent]) == 0
    ok = capsys.readouterr().out
    # the time written as status writes it (issue 29, item 23: two formats)
    assert re.match(r"OK: last pull \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(5m0\ds ago\)", ok), ok
    assert main(["status", "--db", recent]) == 0  # without --check: always 0
    assert "health          OK" in capsys.readouterr().out

    (tmp_path / "cli.sqlite3").unlink()
    old = _cli_db(tmp_path, datetime.now(UTC) - timedelta(hours=5))
    assert main(["status", "--check", "--db", old]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("UNHEALTHY: no successful pull for 5h00m")
    assert main(["status", "--check", "--json", "--db", old]) == 1
    assert '"healthy": false' in capsys.readouterr().out

    assert main(["status", "--check", "--db", str(tmp_path / "missing.sqlite3")]) == 2
    with pytest.raises(SystemExit) as usage:
        main(["status", "--check", "--max-outbox-age", "nan", "--db", old])
    assert usage.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


async def _problems_on_disk(db: str, now: datetime, settings: PxlsSettings) -> list[str]:
    reader = await StoreReader.open(db)
    async with reader:
        state = EngineState.from_rows(await reader.load_state_rows())
        status = await build_status(reader, state, now, settings)
    return [p.split(" until")[0] for p in status["problems"]]


async def test_no_auth_alarm_once_the_operator_renewed_the_token(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
) -> None:
    """Issue 21, item 4: after a 403 the operator renews ``PXLS_TOKEN`` and restarts;
    the new source tries at once, profiles flow, and ``status --check`` (another
    process, reading the database) is healthy again at once, not for the rest of the
    15-minute-to-2-hour pause."""
    from neuro_chat_elo_pxls.settings import Secret

    db = str(tmp_path / "pxls.sqlite3")
    fake.add("grid_master", 120)
    source = make_source()
    fake.failures["profile"].append(AuthError("/api/v1/profile: HTTP 403", challenge=False))
    await drive(source, clock, clock.now + timedelta(minutes=2))
    await source.on_shutdown()
    settings = PxlsSettings(db_path=db, token=None)
    assert await _problems_on_disk(db, clock.now, settings) == ["profile requests paused for auth"]
    renewed = make_source(token=Secret("a-renewed-token"))
    fake.add("new_painter", 5)
    profiles = len([r for r in fake.requests if r[0] == "profile"])
    await drive(renewed, clock, clock.now + timedelta(minutes=2))
    assert len([r for r in fake.requests if r[0] == "profile"]) > profiles  # it tried at once
    await renewed.on_shutdown()
    assert await _problems_on_disk(db, clock.now, settings) == []


async def test_status_text_shows_times_to_the_second_with_how_long_ago(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    """Issue 21, item 5: the text said ``2026-01-05T12:01:30.000000+00:00`` with no
    "ago"; now ``2026-01-05 12:01:30Z (3m00s ago)`` (the JSON keeps the exact time)."""
    fake.add("grid_master", 120)
    source = make_source()
    await drive(source, clock, clock.now + timedelta(minutes=2))
    status = await source.status(clock.now + timedelta(minutes=3))
    text = format_status(status)
    (pull,) = [line for line in text.splitlines() if line.startswith("last pull")]
    last = datetime.fromisoformat(status["last_pull_at"])
    ago = fmt_duration(datetime.fromisoformat(status["checked_at"]) - last)
    assert f"{last:%Y-%m-%d %H:%M:%S}Z ({ago} ago)" in pull
    (due,) = [line for line in text.splitlines() if line.startswith("next pull")]
    assert "(in " in due
    assert ".000000" not in text and "+00:00" not in text
    assert status["last_pull_at"].endswith("+00:00")  # the JSON is unchanged
    assert status["instance"] == "pxls.test" and "instance        pxls.test" in text
    from neuro_chat_elo_pxls import __version__

    assert status["version"] == __version__  # the running package's (issue 21)


async def test_status_says_whether_a_source_holds_the_database(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 29, item 12: after the source stopped, status still said "the source runs
    with PXLS_TOKEN" and nothing told whether a process held the database. The lock
    tells (read from /proc/locks: nothing is locked to find out)."""
    import asyncio
    import json
    import os

    from neuro_chat_elo_pxls.ops.status import format_status
    from neuro_chat_elo_pxls.store.lockfile import lock_holder

    fake.add("grid_master", 120)
    source = make_source()
    await source.on_tick(clock.now)
    db = source.settings.db_path
    assert lock_holder(db) == os.getpid()
    running = await source.status(clock.now)
    assert running["source_pid"] == os.getpid()
    assert f"running (process {os.getpid()})" in format_status(running)
    assert "the source runs with PXLS_TOKEN" in format_status(running)
    await source.on_shutdown()
    assert lock_holder(db) is None
    assert lock_holder(str(tmp_path / "missing.sqlite3")) == 0  # cannot tell
    assert await asyncio.to_thread(main, ["status", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "not running (no process holds the database)" in text
    assert "the source ran with PXLS_TOKEN" in text
    assert await asyncio.to_thread(main, ["status", "--json", "--db", db]) == 0
    assert json.loads(capsys.readouterr().out)["source_pid"] is None


def test_status_text_and_json_agree_on_the_sweep_and_a_wait_that_ended() -> None:
    """Issue 29, item 13: "sweep #1: 0/1 checked, 277 left" (users who arrived since the
    sweep started were left, not in the total), and a key whose cooldown had passed
    showed "cooling until 06:31:29Z (5m14s ago)"."""
    from neuro_chat_elo_pxls.ops.status import format_status

    status = {
        "db_path": "x",
        "canvas": "86",
        "checked_at": "2026-01-05T06:36:43+00:00",
        "users": 278,
        "dirty": 0,
        "awaiting_enrichment": 0,
        "missing": 0,
        "never_enriched": 0,
        "outbox": 0,
        "profiles_enabled": True,
        "last_error": None,
        "healthy": True,
        "sweep": {
            "number": 1,
            "active": True,
            "total": 278,
            "done": 1,
            "remaining": 277,
            "eta_seconds": 300,
        },
        "keys": {
            "profile": {"cooling_until": "2026-01-05T06:31:29+00:00", "reason": "pacing"},
            "leaderboard": {"cooling_until": "2026-01-05T06:40:00+00:00", "reason": "429"},
        },
    }
    text = format_status(status)
    assert "#1: 1/278 checked, 277 left" in text
    assert "key profile     ready" in text
    assert "key leaderboard cooling until 2026-01-05 06:40:00Z (in 3m17s): 429" in text


async def test_the_sweep_total_grows_with_users_who_arrived_since_it_started(
    tmp_path: Path,
) -> None:
    from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
    from neuro_chat_elo_pxls.ops.status import build_status
    from neuro_chat_elo_pxls.store.writer import Store

    async with await Store.open(str(tmp_path / "db.sqlite3")) as store:
        rows = tuple(ToplistRow(f"u{i}", i + 1) for i in range(5))
        await store.ingest("86", Snapshot.from_rows(T0, rows), T0, hold_new=False, state=None)
        state = EngineState(sweep_number=1, sweep_started_at=T0, sweep_total=1)
        status = await build_status(store, state, T0, PxlsSettings(db_path=store.path))
    sweep = status["sweep"]
    assert (sweep["total"], sweep["done"], sweep["remaining"]) == (5, 0, 5)
