"""The container example (``examples/container``): its Dockerfile checked line by line
and its commands run outside an image, with the image's config pointed at a temporary
database. (``.ci/container``, a CI lane, builds and runs the image itself.)"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from neuro_chat_elo_pxls.cli import main
from neuro_chat_elo_pxls.cli.config import configured_instances, load_config
from neuro_chat_elo_pxls.cli.parser import build_parser

HERE = Path(__file__).parent.parent / "examples" / "container"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per Dockerfile instruction, continuation lines joined."""
    text = (HERE / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _exec_form(rest: str) -> list[str]:
    argv = json.loads(rest)
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def _argv_here(argv: list[str], config: Path) -> list[str]:
    assert argv[0] == "neuro-chat-elo-pxls"
    return [str(config) if a == "/config/host.toml" else a for a in argv[1:]]


def test_the_image_is_slim_non_root_with_a_volume_a_health_check_and_no_secret() -> None:
    steps = _instructions()
    kinds = [k for k, _ in steps]
    (base,) = [rest for k, rest in steps[:2] if k == "ARG"]
    assert base.startswith("BASE=python:3.") and "slim" in base  # the registry's default
    assert steps[1] == ("FROM", "${BASE}")  # or another with python3 (CI: from Debian)
    users = [rest for k, rest in steps if k == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert kinds.index("USER") < kinds.index("CMD")
    assert ("VOLUME", '["/data"]') in steps
    (health,) = [rest for k, rest in steps if k == "HEALTHCHECK"]
    assert "--start-period=" in health
    check = _exec_form(health.split("CMD", 1)[1].strip())
    assert check[1] == "status" and "--check" in check
    (cmd,) = [rest for k, rest in steps if k == "CMD"]
    assert _exec_form(cmd)[1] == "run"
    for kind, rest in steps:  # secrets come from the environment at run time only
        if kind in ("ENV", "ARG", "LABEL"):
            assert "PXLS_TOKEN" not in rest and "PXLS_CF_AUTH" not in rest
    (install,) = [rest for k, rest in steps if k == "RUN" and "pip install" in rest]
    assert "--no-index --find-links /tmp/wheels/" in install  # no network in the build


def test_the_image_config_and_commands_parse(tmp_path: Path) -> None:
    steps = _instructions()
    (cmd,) = [rest for k, rest in steps if k == "CMD"]
    (health,) = [rest for k, rest in steps if k == "HEALTHCHECK"]
    for argv in (_exec_form(cmd), _exec_form(health.split("CMD", 1)[1].strip())):
        args = build_parser().parse_args(_argv_here(argv, HERE / "host.toml"))
        (settings,) = configured_instances(load_config(args))
        assert settings.db_path == "/data/pxls.sqlite3" and settings.delivery == "ack"
    compose = (HERE / "compose.yaml").read_text()
    assert "env_file: pxls.env" in compose and "pxls-data:/data" in compose
    assert "dockerfile: examples/container/Dockerfile" in compose


def test_the_export_loop_runs_outside_the_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The compose export service's two commands, against a real database: the
    export writes pxls.json, status reads it (unhealthy: nothing was pulled)."""
    import asyncio

    from neuro_chat_elo_pxls.engine.state import EngineState
    from neuro_chat_elo_pxls.store.writer import Store

    db = tmp_path / "pxls.sqlite3"

    async def make() -> None:
        async with await Store.open(str(db)) as store:
            await store.save_state(EngineState(canvas="86"))

    asyncio.run(make())
    config = tmp_path / "host.toml"
    config.write_text((HERE / "host.toml").read_text().replace("/data/pxls.sqlite3", str(db)))
    compose = (HERE / "compose.yaml").read_text()
    loop = compose.split("- >-", 1)[1].split("volumes:", 1)[0]
    commands = [c.strip() for c in " ".join(loop.split()).split(";") if "neuro-chat-elo-pxls" in c]
    assert len(commands) == 2
    export, status = (shlex.split(c.removeprefix("do").strip()) for c in commands)
    export = [str(tmp_path / "pxls.json") if a == "/data/pxls.json" else a for a in export]
    assert main(_argv_here(export, config)) == 0
    assert json.loads((tmp_path / "pxls.json").read_text()) == {"users": []}
    assert main(_argv_here(status, config)) == 1  # --check: no pull yet, so unhealthy
    assert "UNHEALTHY: no successful pull yet" in capsys.readouterr().out
