"""The deployment examples: units that systemd accepts, commands the CLI accepts, a
config the CLI accepts, secrets only in the environment file."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_chat_elo_pxls.cli import build_parser, load_config
from neuro_chat_elo_pxls.cli.config import configured_instances

SYSTEMD = Path(__file__).parent.parent / "examples" / "systemd"
BINARY = "/opt/neuro-chat-elo-pxls/bin/neuro-chat-elo-pxls"
UNITS = ["neuro-chat-elo-pxls.service", "neuro-chat-elo-pxls-export.service"]


def _directives(unit: str) -> list[tuple[str, str]]:
    lines = (SYSTEMD / unit).read_text().splitlines()
    return [
        (k.strip(), v.strip())
        for k, _, v in (line.partition("=") for line in lines)
        if _ and not k.startswith(("#", "["))
    ]


@pytest.mark.parametrize("unit", UNITS)
def test_unit_commands_parse_with_the_cli_and_the_example_config(unit: str) -> None:
    commands = [v for k, v in _directives(unit) if k in ("ExecStart", "ExecStartPost")]
    assert commands
    for command in commands:
        argv = shlex.split(command)
        assert argv[0] == BINARY
        argv = [str(SYSTEMD / "host.toml") if a.endswith("host.toml") else a for a in argv[1:]]
        args = build_parser().parse_args(argv)
        config = load_config(args)
        assert config["pxls"]["db_path"] == "/var/lib/neuro-chat-elo/pxls.sqlite3"


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_hardened_and_use_the_dedicated_user(unit: str) -> None:
    directives = dict(_directives(unit))
    assert directives["User"] == "neuro-chat-elo"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "SystemCallFilter": "@system-service",
    }.items():
        assert directives[key] == value, key
    secrets = [v for k, v in _directives(unit) if "PXLS_TOKEN" in v and k != "EnvironmentFile"]
    assert not secrets  # secrets never in a unit


def test_env_file_names_exactly_the_secrets() -> None:
    lines = (SYSTEMD / "pxls.env.example").read_text().splitlines()
    keys = [line.split("=", 1)[0] for line in lines if line and not line.startswith("#")]
    assert keys == ["PXLS_TOKEN", "PXLS_CF_AUTH"]
    assert "PXLS" not in (SYSTEMD / "host.toml").read_text().replace("[pxls]", "")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    real = str(Path(sys.executable).parent / "neuro-chat-elo-pxls")
    names = [*UNITS, "neuro-chat-elo-pxls-export.timer"]
    names += ["neuro-chat-elo-pxls-export@.service", "neuro-chat-elo-pxls-export@.timer"]
    for name in names:
        (tmp_path / name).write_text((SYSTEMD / name).read_text().replace(BINARY, real))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_the_example_host_shows_the_running_table_on_local_runs() -> None:
    import importlib.util

    path = Path(__file__).parent.parent / "examples" / "standalone_host.py"
    spec = importlib.util.spec_from_file_location("standalone_host", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.host_argv(["--config", "h.toml"]) == [
        "run",
        "--config",
        "h.toml",
        "--table-every=1",
    ]
    assert module.host_argv(["run", "--table-every", "6"]) == ["run", "--table-every", "6"]
    assert module.host_argv(["--demo", "--hours", "2"]) == ["demo", "--hours", "2"]
    assert module.host_argv(["status", "--check"]) == ["status", "--check"]
    args = build_parser().parse_args(module.host_argv(["--base-url", "http://127.0.0.1:9"]))
    assert args.table_every == 1.0


def test_logrotate_moves_the_file_and_reloads_not_copytruncate() -> None:
    """Issue 21, item 6: the rotated file is the unit's ``--out``, rotation is
    create + SIGHUP (``systemctl reload`` → ``ExecReload`` → ``run`` reopens), never
    ``copytruncate`` (lines between its copy and truncation are lost)."""
    rotate = (SYSTEMD.parent / "logrotate" / "neuro-chat-elo-pxls").read_text()
    rules = [line.split("#")[0].strip() for line in rotate.splitlines()]
    (start,) = [shlex.split(v) for k, v in _directives(UNITS[0]) if k == "ExecStart"]
    out = start[start.index("--out") + 1]
    assert f"{out} {{" in rules
    assert "copytruncate" not in rules and "create 0640 neuro-chat-elo neuro-chat-elo" in rules
    assert any("systemctl reload neuro-chat-elo-pxls.service" in rule for rule in rules)
    assert dict(_directives(UNITS[0]))["ExecReload"] == "/bin/kill -HUP $MAINPID"


@pytest.mark.integration
async def test_the_minimal_host_runs_against_the_stand_in_and_stops_on_sigterm() -> None:
    """docs/hosts.md's host, as shipped: aimed at a local stand-in (not pxls.space),
    JSON lines with their instance on stdout, a clean exit 0 on SIGTERM; it gives the
    source the stand-in's session, so profiles are read (issue item 4: it started
    without it, warned and never read a profile)."""
    import asyncio
    import os
    import signal

    from neuro_chat_elo_pxls import jsonlines

    script = Path(__file__).parent.parent / "examples" / "minimal_host.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PXLS_TOKEN", "PXLS_CF_AUTH")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = b""
    try:  # until a delta carries a Discord name: the stand-in's profiles were read
        while b'"discord":"' not in first:
            line = await asyncio.wait_for(proc.stdout.readline(), 60)  # a hang guard only
            assert line
            first += line
    finally:
        proc.send_signal(signal.SIGTERM)
    rest, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    deltas = [jsonlines.loads(line) for line in (first + rest).decode().splitlines()]
    assert deltas and {d.instance for d in deltas} == {"127.0.0.1"}
    assert [d.seq for d in deltas] == list(range(1, len(deltas) + 1))
    text = err.decode()
    assert "a local pxls stand-in at http://127.0.0.1:" in text and "Traceback" not in text
    # it runs with the stand-in's session: profiles are read (Discord names are seen)
    assert "profiles on" in text and "PXLS_TOKEN is not set" not in text
    assert any(d.discord for d in deltas)


async def _minimal_host_once(
    script: Path, cwd: Path, env: dict[str, str], base_url: str, first: bytes
) -> tuple[bytes, str]:
    """Runs the minimal host with ``--base-url`` (no ``--db``) in ``cwd`` until its
    stderr shows ``first``, then SIGTERM; (stdout, stderr) of its clean exit."""
    import asyncio
    import signal

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "--base-url",
        base_url,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    seen = b""
    try:
        while first not in seen:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)  # a hang guard only
            assert line, seen.decode()
            seen += line
    finally:
        proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (seen + err).decode()
    return out, (seen + err).decode()


@pytest.mark.integration
async def test_the_minimal_host_keeps_its_database_across_restarts(tmp_path: Path) -> None:
    """Issue item 4: run twice with ``--base-url`` and no ``--db``, the minimal host
    credited every user twice (its database lived in a temporary folder). Its default
    database is a file in the current directory that outlives the process, and a
    second run counts nothing again: each user's deltas add up to their score."""
    import os
    from datetime import UTC, datetime

    from neuro_chat_elo_pxls import jsonlines
    from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario

    script = Path(__file__).parent.parent / "examples" / "minimal_host.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PXLS_TOKEN", "PXLS_CF_AUTH")}
    standin = PxlsStandIn(Scenario(users=10, seed=3), lambda: datetime.now(UTC))
    url = await standin.start()
    try:
        out1, err1 = await _minimal_host_once(script, tmp_path, env, url, b"pull at ")
        assert (tmp_path / "pxls.sqlite3").is_file(), err1  # it outlives the run
        out2, err2 = await _minimal_host_once(script, tmp_path, env, url, b"source open")
    finally:
        await standin.stop()
    assert f"database {tmp_path / 'pxls.sqlite3'}" in err2
    first = [jsonlines.loads(line) for line in out1.decode().splitlines()]
    again = [jsonlines.loads(line) for line in out2.decode().splitlines()]
    assert first, err1
    total: dict[str, int] = {}
    for delta in first + again:
        total[delta.user] = total.get(delta.user, 0) + delta.delta
        assert total[delta.user] == delta.score, (delta, err2)  # never counted twice


@pytest.mark.parametrize("instance", ["space", "event"])
def test_the_per_instance_export_units_fit_the_two_instance_config(instance: str) -> None:
    """Issue 29, item 10: no example showed two instances, and the one export exited 2
    with two (``export`` needs ``--instance``). The template unit exports each."""
    unit = "neuro-chat-elo-pxls-export@.service"
    directives = dict(_directives(unit))
    assert directives["User"] == "neuro-chat-elo" and directives["ProtectSystem"] == "strict"
    config = str(SYSTEMD / "host-two-instances.toml")
    for key in ("ExecStart", "ExecStartPost"):
        argv = shlex.split(directives[key].replace("%i", instance))
        argv = [config if a.endswith("host.toml") else a for a in argv[1:]]
        args = build_parser().parse_args(argv)
        (settings,) = configured_instances(load_config(args))
        assert settings.db_path == f"/var/lib/neuro-chat-elo/pxls-{instance}.sqlite3"
        assert settings.secret_envs[0] == f"PXLS_TOKEN_{instance.upper()}"
    assert f"/srv/neuro-chat-elo/{instance}/pxls.json" in directives["ExecStart"].replace(
        "%i", instance
    )
    timer = (SYSTEMD / "neuro-chat-elo-pxls-export@.timer").read_text()
    assert "OnUnitActiveSec=15min" in timer
