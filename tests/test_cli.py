"""The console script: status, export, config errors; the JSON-lines format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from neuro_chat_elo_pxls import EloDelta, Faction, PxlsSettings, PxlsSource, jsonlines
from neuro_chat_elo_pxls.cli import main
from neuro_chat_elo_pxls.errors import ConfigError, MalformedDataError

from .helpers import FakeClock, FakePxls, drive


@pytest.fixture
async def populated_db(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> str:
    fake.add("grid_master", 120, discord="grid.m", faction=Faction(17, "GK", "Grid Keepers", 1))
    fake.add("quiet_lurker", 12)
    source = make_source()
    from datetime import timedelta

    await drive(source, clock, clock.now + timedelta(minutes=2))
    await source.on_shutdown()
    return str(tmp_path / "pxls.sqlite3")


async def test_status_json_and_text(populated_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _main_async(["status", "--db", populated_db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["canvas"] == "86"
    assert status["users"] == 2
    assert status["outbox"] == 2
    assert status["awaiting_enrichment"] == 0
    assert await _main_async(["status", "--db", populated_db]) == 0
    text = capsys.readouterr().out
    assert "2 total" in text
    assert "outbox          2 deltas" in text


async def test_export_pxls_json_matches_host_reader(populated_db: str, tmp_path: Path) -> None:
    out = tmp_path / "pxls.json"
    assert await _main_async(["export", "--db", populated_db, "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data == {
        "users": [
            {"PXLS_USERNAME": "grid_master", "DISCORD_TAG": "grid.m", "FACTION": 17, "SCORE": 120},
            {"PXLS_USERNAME": "quiet_lurker", "DISCORD_TAG": None, "FACTION": None, "SCORE": 12},
        ]
    }
    for user in data["users"]:  # serde: String, Option<String>, Option<u64>, u64
        assert isinstance(user["SCORE"], int) and user["SCORE"] >= 0
        assert user["FACTION"] is None or isinstance(user["FACTION"], int)


async def test_export_csv(populated_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _main_async(["export", "--db", populated_db, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pxls_username,pxls_id,discord")
    assert lines[1].startswith("grid_master,")


def test_helpful_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--db", str(tmp_path / "missing.sqlite3")]) == 2
    assert "no such database" in capsys.readouterr().err
    # --json still prints an object on stdout (it printed nothing: issue 21, item 5)
    assert main(["status", "--json", "--check", "--db", str(tmp_path / "missing.sqlite3")]) == 2
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert shown["healthy"] is False and "no such database" in shown["error"]
    assert "no such database" in err
    config = tmp_path / "host.toml"
    config.write_text("[pxls]\nprofile_cooldwn = 1\n")
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "'profile_cooldwn'" in err
    assert "profile_cooldown" in err


def test_console_script_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "neuro_chat_elo_pxls.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "status" in result.stdout


async def _main_async(argv: list[str]) -> int:
    # main() calls asyncio.run: run it in a thread so the test's loop is not nested
    import asyncio

    return await asyncio.to_thread(main, argv)


names = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)


@given(
    seq=st.integers(1, 2**62),
    user=names,
    pxls_id=st.none() | st.integers(0, 2**62),
    discord=st.none() | st.text(max_size=37),
    faction=st.none()
    | st.builds(
        Faction,
        st.integers(0, 2**31),
        st.text(max_size=5),
        st.text(max_size=40),
        st.none() | st.integers(0, 0xFFFFFF),
    ),
    delta=st.integers(-(2**40), 2**40),
    score=st.integers(0, 2**40),
    canvas=st.text(min_size=1),
    observed=st.datetimes(timezones=st.just(UTC)),
)
def test_jsonlines_round_trip(
    seq: int,
    user: str,
    pxls_id: int | None,
    discord: str | None,
    faction: Faction | None,
    delta: int,
    score: int,
    canvas: str,
    observed: datetime,
) -> None:
    value = EloDelta(seq, user, pxls_id, discord, faction, delta, score, canvas, observed)
    line = jsonlines.dumps(value)
    assert "\n" not in line
    assert jsonlines.loads(line) == value


@pytest.mark.parametrize("line", ["", "{}", '{"v": 2}', '{"v": 1, "seq": "x"}', "[1]"])
def test_jsonlines_rejects_bad_lines(line: str) -> None:
    with pytest.raises(MalformedDataError):
        jsonlines.loads(line)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[pxl]\nbase_url = "http://127.0.0.1:9"\n', "unknown top-level section(s) 'pxl'"),
        ("title = 'x'\n", "unknown top-level section"),
        ("", "no [pxls] section"),
        ("pxls = 5\n", "must be a [pxls] table"),
        ("[pxls]\nsweep_interval = 1e300\n", "finite number of seconds"),
        ("[pxls]\nrequest_timeout = nan\n", "finite number of seconds"),
        ('pxls = "x"\n', "must be a [pxls] table"),
        ("pxls = [1, 2]\n", "must be a [pxls] table"),
        ("[pxls]\nbackoff_initial = 600\nbackoff_max = 5\n", "backoff_max (0m05s) is shorter"),
        ("[pxls]\nauth_pause = 60\n", "auth_pause must be at least 15m00s, got 1m00s"),
        ("[pxls]\nprofile_cooldown = -30\n", "must be a positive duration, got -30 s"),
        (
            "[pxls]\nauth_pause_max = 600\n",
            "auth_pause_max (10m00s) is shorter than auth_pause (15m00s)",
        ),
    ],
)
def test_config_mistakes_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], toml: str, message: str
) -> None:
    config = tmp_path / "host.toml"
    config.write_text(toml)
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_run_without_a_config_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "--config" in capsys.readouterr().err


def test_config_not_utf8_and_output_into_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], populated_db: str
) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes(b"[pxls]\n# caf\xe9\n")
    assert main(["status", "--config", str(config)]) == 2
    assert "cannot read the config" in capsys.readouterr().err
    missing = tmp_path / "nope" / "pxls.json"
    assert main(["export", "--db", populated_db, "-o", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"the directory {missing.parent} does not exist" in err and "Traceback" not in err
    assert main(["export", "--db", populated_db, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"-o {tmp_path}: is a directory" in err and err.count("\n") == 1
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        code = main(["export", "--db", populated_db, "-o", str(locked / "pxls.json")])
    finally:
        locked.chmod(0o700)
    if os.geteuid() != 0:  # root writes anyway
        assert code == 2
        assert f"cannot create a file in {locked}" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.tmp"))  # nothing left behind


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert importlib.metadata.version("neuro-chat-elo-pxls") in capsys.readouterr().out


def test_global_flags_after_the_subcommand_and_plain_help(
    populated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--db", populated_db, "--log-format", "json"]) == 0
    assert main(["--log-level", "debug", "status", "--db", populated_db]) == 0
    assert main(["status", "--log-level", "WARNING", "--db", populated_db, "--json"]) == 0
    capsys.readouterr()
    from neuro_chat_elo_pxls.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["--log-level", "ERROR", "status"])
    assert args.log_level == "ERROR"  # a flag before the subcommand is kept
    args = parser.parse_args(["status", "--log-format", "json"])
    assert (args.log_level, args.log_format) == ("INFO", "json")
    texts = [parser.format_help()]
    for name in ("run", "demo", "status", "export"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        texts.append(capsys.readouterr().out)
    for text in texts:
        assert "``" not in text and ":mod:" not in text and ":class:" not in text
    assert "default 30" in texts[2] and "default: never" in texts[1]
    assert "--check" in texts[3] and "--log-format" in texts[4]


def test_json_log_records_carry_event_fields() -> None:
    import logging

    from neuro_chat_elo_pxls.util.logs import JsonLogFormatter, event

    record = logging.LogRecord("x", logging.WARNING, "f", 1, "backing off %s", ("profile",), None)
    for key, value in event("request_failed", key="profile", wait_s=30.0, reason="r").items():
        setattr(record, key, value)
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["event"] == "request_failed" and entry["wait_s"] == 30.0
    assert entry["message"] == "backing off profile" and entry["level"] == "WARNING"
    plain = json.loads(JsonLogFormatter().format(logging.LogRecord("x", 20, "f", 1, "m", (), None)))
    assert "event" not in plain


def test_json_lines_carry_the_instance_and_old_lines_still_parse() -> None:
    delta = EloDelta(3, "a", 1, None, None, 5, 5, "86", datetime(2026, 1, 5, tzinfo=UTC))
    delta = attrs.evolve(delta, instance="pxls.space")
    line = jsonlines.dumps(delta)
    assert '"instance":"pxls.space"' in line and jsonlines.loads(line) == delta
    old = json.loads(line)
    del old["instance"]
    assert jsonlines.loads(json.dumps(old)).instance == ""


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({}, "pxls.space"),
        ({"base_url": "http://127.0.0.1:8080"}, "127.0.0.1"),
        ({"base_url": "https://Pxls.Example.org/sub"}, "pxls.example.org"),
        ({"instance": "ironmouse"}, "ironmouse"),
    ],
)
def test_instance_name_defaults_to_the_host_of_base_url(
    settings: dict[str, Any], name: str
) -> None:
    assert PxlsSettings(db_path="x", **settings).instance_name == name


@pytest.mark.parametrize("bad", ["", "a b", "-x", "x" * 65, "é"])
def test_a_bad_instance_name_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="instance must be"):
        PxlsSettings(db_path="x", instance=bad)


def test_an_instance_is_chosen_by_its_table_or_its_instance_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review's finding: a table that sets ``instance`` (to keep an old database's
    name) could be chosen by neither name, and ``status`` failed on the whole config."""
    from neuro_chat_elo_pxls.cli.config import configured_instances, load_config
    from neuro_chat_elo_pxls.cli.parser import build_parser

    config = tmp_path / "host.toml"
    config.write_text(
        f'[pxls.instances.space]\ninstance = "pxls.space"\nbase_url = "https://pxls.space"\n'
        f'db_path = "{tmp_path / "s.db"}"\n'
        f'[pxls.instances.ev]\nbase_url = "http://127.0.0.1:9"\ndb_path = "{tmp_path / "e.db"}"\n'
    )
    for chosen in ("space", "pxls.space"):
        args = build_parser().parse_args(["status", "--config", str(config), "--instance", chosen])
        (only,) = configured_instances(load_config(args))
        assert only.instance_name == "pxls.space"
    assert main(["status", "--json", "--config", str(config)]) == 2  # no databases yet
    shown = json.loads(capsys.readouterr().out)
    assert set(shown["instances"]) == {"pxls.space", "ev"} and shown["healthy"] is False


def test_demo_refuses_a_used_database_and_a_speed_not_above_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Simulated time starts at a fixed instant: a database from an earlier run lies in
    its future (it would look like a clock jumping back), so it is refused; --speed must
    be positive (0 was taken as "simulated time", a negative one raised)."""
    used = tmp_path / "demo.sqlite3"
    used.write_bytes(b"")
    assert main(["demo", "--db", str(used), "--hours", "1"]) == 2
    assert "exists: simulated time starts at" in capsys.readouterr().err
    for speed in ("0", "-5"):
        with pytest.raises(SystemExit) as exit_:
            main(["demo", "--speed", speed])
        assert exit_.value.code == 2
    assert "--speed" in capsys.readouterr().err


async def test_every_command_refuses_another_instances_database(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 27, item 3: two instances' ``db_path``s swapped in the config after both
    had data: ``run`` refused, but ``status --check`` said OK for both and ``export
    --instance event`` wrote the other instance's users into the event board's
    pxls.json. A database remembers its instance for every command."""
    from datetime import timedelta

    fake.add("grid_master", 120)
    dbs = {name: tmp_path / f"{name}.sqlite3" for name in ("space", "event")}
    for name, db in dbs.items():
        source = make_source(instance=name, db_path=str(db), token=None)
        await drive(source, clock, clock.now + timedelta(minutes=2))
        await source.on_shutdown()
    config = tmp_path / "host.toml"
    config.write_text(  # the two db_paths swapped
        f'[pxls.instances.space]\nbase_url = "https://pxls.space"\ndb_path = "{dbs["event"]}"\n'
        f'[pxls.instances.event]\nbase_url = "http://127.0.0.1:9"\ndb_path = "{dbs["space"]}"\n'
    )
    out = tmp_path / "pxls.json"
    export = ["export", "--config", str(config), "--instance", "event", "-o", str(out)]
    assert await _main_async(export) == 2
    assert not out.exists()
    assert "belongs to pxls instance space, not event" in capsys.readouterr().err
    assert await _main_async(["status", "--check", "--config", str(config)]) == 2
    assert "belongs to pxls instance" in capsys.readouterr().err
    config.write_text(  # put right: both commands work again
        f'[pxls.instances.space]\nbase_url = "https://pxls.space"\ndb_path = "{dbs["space"]}"\n'
        f'[pxls.instances.event]\nbase_url = "http://127.0.0.1:9"\ndb_path = "{dbs["event"]}"\n'
    )
    assert await _main_async(export) == 0 and json.loads(out.read_text())["users"]


#: every numeric flag of every subcommand, with values that must be a usage error
BAD_NUMBERS = [
    *[("demo", "--hours", v) for v in ("nan", "inf", "-inf", "1e9", "-1", "0", "ten")],
    *[("demo", "--users", v) for v in ("0", "-5", "1.5", "1e9", "nan")],
    *[("demo", "--speed", v) for v in ("0", "-5", "nan", "inf")],
    *[("demo", "--seed", v) for v in ("1.5", "nan")],
    *[("demo", "--instances", v) for v in ("0", "3")],
    *[("run", "--table-every", v) for v in ("0", "-1", "nan", "inf", "1e9")],
    *[("run", "--speed", v) for v in ("0", "-1", "nan", "inf")],
    *[("run", "--sim-epoch", v) for v in ("nan", "inf", "-1")],
    *[("run", "--sim-start", v) for v in ("yesterday", "2026-01-01T00:00:00")],
    *[("status", "--max-outbox-age", v) for v in ("0", "-1", "nan", "inf", "1e300")],
]


@pytest.mark.parametrize(("command", "flag", "value"), BAD_NUMBERS)
def test_numeric_flags_out_of_range_are_usage_errors(
    command: str, flag: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue item 12: ``demo --hours nan``/``inf``/``1e9`` and ``--users 0``/``-5`` were
    tracebacks (exit 1), ``--hours -1`` exited 0; every numeric flag now gets the usage
    error ``--speed 0`` got (exit 2, naming the flag), before anything runs."""
    argv = [command, f"{flag}={value}"]
    if command == "run":
        argv += ["--base-url", "http://127.0.0.1:9"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err


def test_the_standalone_host_s_numeric_flags_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """examples/standalone_host.py passes its flags to the console script's parser."""
    import importlib.util

    path = Path(__file__).parent.parent / "examples" / "standalone_host.py"
    spec = importlib.util.spec_from_file_location("standalone_host", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = {
        "--hours": ["--demo", "--hours", "nan"],
        "--users": ["--demo", "--users", "0"],
        "--table-every": ["--table-every=0", "--base-url", "http://127.0.0.1:9"],
    }
    for flag, argv in cases.items():
        with pytest.raises(SystemExit) as exit_:
            main(module.host_argv(argv))
        assert exit_.value.code == 2
        assert f"argument {flag}" in capsys.readouterr().err


def test_a_closed_pipe_ends_a_command_quietly(populated_db: str) -> None:
    """Issue 29, item 17: ``export ... | head`` printed a 20-line asyncio traceback and
    exited 2; a closed pipe is normal on a command line. And ``status --db`` alone shows
    the instance the database belongs to (it showed the default, pxls.space)."""
    for argv in (
        ["export", "--db", populated_db, "--format", "csv"],
        ["status", "--db", populated_db],
    ):
        reader = subprocess.Popen(
            [sys.executable, "-m", "neuro_chat_elo_pxls.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None and reader.stderr is not None
        first = reader.stdout.readline()  # read one line, then close: `| head -1`
        reader.stdout.close()
        err = reader.stderr.read()
        assert reader.wait(timeout=60) == 0, err
        assert first and "Traceback" not in err and "Broken pipe" not in err, err
    shown = subprocess.run(
        [sys.executable, "-m", "neuro_chat_elo_pxls.cli", "status", "--json", "--db", populated_db],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["instance"] == "pxls.test"


def test_a_trial_clock_only_against_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run --speed`` (a trial's shared clock) against pxls.space would send it more
    than its admins allowed: refused before anything starts."""
    argv = ["run", "--base-url", "https://pxls.space", "--db", str(tmp_path / "x.db")]
    assert main([*argv, "--speed", "60"]) == 2
    assert "not on this machine" in capsys.readouterr().err


def test_the_standin_prints_a_trial_run_that_shares_its_clock(tmp_path: Path) -> None:
    """Issue 29, item 3: a trial before production: ``standin`` serves on 127.0.0.1 on
    an accelerated clock and prints the ``run`` command that shares it; that command
    parses, and passes the trial-clock check; SIGTERM stops the stand-in (exit 0)."""
    import shlex
    import signal

    from neuro_chat_elo_pxls.cli.config import load_config
    from neuro_chat_elo_pxls.cli.parser import build_parser
    from neuro_chat_elo_pxls.cli.run import _trial_clock_on_this_machine_only

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "neuro_chat_elo_pxls.cli",
            "standin",
            "--port",
            "0",
            "--speed",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert lines[0].startswith("pxls.space stand-in on http://127.0.0.1:"), lines
    command = shlex.split(lines[1])
    assert command[0] == "PXLS_TOKEN=standin-token" and command[1] == "neuro-chat-elo-pxls"
    config = tmp_path / "host.toml"
    config.write_text("[pxls]\n")
    argv = [str(config) if a == "host.toml" else a for a in command[2:]]
    args = build_parser().parse_args(argv)
    assert args.speed == 60 and args.sim_epoch and args.sim_start
    _trial_clock_on_this_machine_only(args, load_config(args))  # accepted: loopback
