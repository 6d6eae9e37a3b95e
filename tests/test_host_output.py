"""The standalone host never loses a delta on the way out (DESIGN 4): a delta leaves
the database only once written and fsynced, whatever ``delivery`` says; a failed write
keeps the rows and ends the run with a status a service manager restarts."""

from __future__ import annotations

import asyncio
import errno
import io
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import cli, jsonlines
from neuro_chat_elo_pxls.cli import run as cli_run
from neuro_chat_elo_pxls.host import OutputError, run_host
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario

from .helpers import T0, Ledger

pytestmark = pytest.mark.integration


class FullDisk(io.StringIO):
    """A sink whose writes fail as on a full disk (``/dev/full``)."""

    def write(self, text: str, /) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
async def standin() -> AsyncIterator[tuple[PxlsStandIn, JumpClock]]:
    clock = JumpClock(T0)
    server = PxlsStandIn(Scenario(users=40, seed=4), clock.now)
    await server.start()
    yield server, clock
    await server.stop()


def _outbox(db: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.parametrize("delivery", ["drain", "ack"])
async def test_a_failed_write_keeps_every_delta_for_the_next_run(
    standin: tuple[PxlsStandIn, JumpClock],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    delivery: str,
) -> None:
    server, clock = standin
    monkeypatch.setenv("PXLS_TOKEN", server.scenario.token)
    db = str(tmp_path / "pxls.sqlite3")
    config = {"pxls": {"base_url": server.base_url, "db_path": db, "delivery": delivery}}
    with pytest.raises(OutputError, match="No space left on device"):
        await run_host(
            config, clock=clock, out=FullDisk(), stop=asyncio.Event(), until=T0 + timedelta(hours=3)
        )
    kept = _outbox(db)
    assert kept > 0  # was 0 in drain mode: 44 deltas drained and never written
    out = io.StringIO()
    await run_host(config, clock=clock, out=out, stop=asyncio.Event(), until=clock.now())
    written = [jsonlines.loads(line) for line in out.getvalue().splitlines()]
    assert len(written) == kept and _outbox(db) == 0  # all of them, exactly once
    ledger = Ledger()
    ledger.add(written)
    ledger.check_conservation()


def test_run_exits_with_a_status_systemd_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` says why and exits 75 (EX_TEMPFAIL): the shipped unit restarts on failure
    except for 2 (a configuration mistake), so a transient full disk is retried."""

    async def failing(*args: object, **kwargs: object) -> None:
        raise OutputError("cannot write 44 deltas: No space left on device")

    monkeypatch.setattr(cli_run, "run_host", failing)  # where ``run`` looks it up
    config = tmp_path / "host.toml"
    config.write_text('[pxls]\nbase_url = "http://127.0.0.1:9"\n')
    status = cli.main(["run", "--config", str(config), "--out", str(tmp_path / "d.jsonl")])
    assert status == cli.EXIT_OUTPUT_FAILED == 75
    err = capsys.readouterr().err
    assert "No space left on device" in err and "restarted" in err
    unit = Path(__file__).parent.parent / "examples/systemd/neuro-chat-elo-pxls.service"
    text = unit.read_text()
    assert "Restart=on-failure" in text and "RestartPreventExitStatus=2\n" in text


async def test_start_up_says_version_and_settings_and_warns_once_without_a_token(
    standin: tuple[PxlsStandIn, JumpClock],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21, item 5: the start-up line shows the version and the effective
    settings; ``PXLS_TOKEN`` unset is said once (``run`` and the source each said it)."""
    import logging

    from neuro_chat_elo_pxls import __version__

    server, clock = standin
    monkeypatch.delenv("PXLS_TOKEN", raising=False)
    config = {"pxls": {"base_url": server.base_url, "db_path": str(tmp_path / "p.sqlite3")}}
    with caplog.at_level(logging.INFO, logger="neuro_chat_elo_pxls"):
        await run_host(
            config, clock=clock, out=io.StringIO(), stop=asyncio.Event(), until=clock.now()
        )
    messages = [r.getMessage() for r in caplog.records]
    (opened,) = [m for m in messages if m.startswith("pxls source open: ")]
    assert f"neuro-chat-elo-pxls {__version__}, instance 127.0.0.1 ({server.base_url})" in opened
    assert "profiles off (PXLS_TOKEN not set)" in opened and "leaderboard every 1h00m" in opened
    assert sum("PXLS_TOKEN is not set" in m for m in messages) == 1
