"""SIGHUP from the console program's first lines (issue item 8): a SIGHUP while the
CLI is still importing (about half a second) used to end it with status 129, which
systemd does not restart.

No timer decides these tests: the child sends itself SIGHUP from an import hook at
the moment its first heavy module (asyncio, sqlite3, aiohttp, pluggy) starts to
import, which is inside the window that used to be fatal, on any machine speed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import jsonlines
from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP")

#: the console script (as pip writes it), with an import hook that sends SIGHUP to
#: its own process when the first heavy module begins to import; SIGHUP starts with its
#: default disposition (death), as systemd starts a service, whatever the test runner's
#: (under ``nohup`` it is ignored, and these tests would prove nothing: a CI dry run
#: started that way failed on the missing start-up line)
CHILD = """\
import importlib.abc, os, signal, sys

signal.signal(signal.SIGHUP, signal.SIG_DFL)

class HangUpOnHeavyImport(importlib.abc.MetaPathFinder):
    sent = False

    def find_spec(self, name, path, target=None):
        if not self.sent and name in ("asyncio", "sqlite3", "aiohttp", "pluggy"):
            self.sent = True
            print("SIGHUP sent while importing " + name, file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGHUP)  # delivered before kill returns
        return None

sys.meta_path.insert(0, HangUpOnHeavyImport())
from neuro_chat_elo_pxls.cli import main
sys.exit(main())
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PXLS_TOKEN", "PXLS_CF"))}


def test_sighup_while_the_cli_imports_does_not_kill_it() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "--version"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,  # a hang guard only
        check=False,
    )
    assert "SIGHUP sent while importing" in result.stderr
    assert result.returncode == 0, (result.returncode, result.stderr)  # was -1 (SIGHUP)
    assert "neuro-chat-elo-pxls" in result.stdout


def test_the_package_import_alone_is_light() -> None:
    """The package's ``__init__`` imports none of the heavy modules (its names are
    imported on first use), so the CLI's first lines run before them."""
    code = (
        "import sys, neuro_chat_elo_pxls as p\n"
        "heavy = {'asyncio', 'sqlite3', 'aiohttp', 'pluggy', 'neuro_chat_elo_pxls.source'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
        "assert p.PxlsSource.__name__ == 'PxlsSource' and p.__version__\n"
        "assert 'neuro_chat_elo_pxls.source' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), timeout=120)


@pytest.mark.integration
async def test_run_hung_up_while_importing_runs_on_and_stops_cleanly(tmp_path: Path) -> None:
    """``run`` hung up during its imports goes on (the SIGHUP meant "reopen": the file
    was only just opened), writes its deltas, and exits 0 on SIGTERM."""
    standin = PxlsStandIn(Scenario(users=10, seed=5), lambda: datetime.now(UTC))
    url = await standin.start()
    out = tmp_path / "deltas.jsonl"
    argv = ["run", "--base-url", url, "--db", str(tmp_path / "db.sqlite3"), "--out", str(out)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        *argv,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    assert proc.stderr is not None
    seen = b""
    try:
        while b"pull at " not in seen:  # the first pull's deltas are written then
            line = await asyncio.wait_for(proc.stderr.readline(), 60)  # a hang guard only
            assert line, seen.decode()
            seen += line
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        await standin.stop()
    text = (seen + err).decode()
    assert proc.returncode == 0, text
    assert "SIGHUP sent while importing" in text and "Traceback" not in text
    assert "SIGHUP during start-up" in text
    assert [jsonlines.loads(line) for line in out.read_text().splitlines()]


def test_a_sighup_at_start_up_reopens_a_file_moved_after_it_was_opened(tmp_path: Path) -> None:
    """logrotate moved ``--out`` away after ``run`` had opened it, and its SIGHUP came
    before ``run``'s own handler: the recorded SIGHUP reopens the file, so the lines go
    to the new file, not on into the rotated one (they did: "nothing to reopen")."""
    from neuro_chat_elo_pxls.cli import hangup
    from neuro_chat_elo_pxls.cli.config import OutputFile
    from neuro_chat_elo_pxls.cli.run import take_early_hangups

    path = tmp_path / "deltas.jsonl"
    out = OutputFile(str(path))
    try:
        path.rename(tmp_path / "deltas.jsonl.1")
        hangup.take()
        hangup._record(signal.SIGHUP, None)  # (recorded: no handler of run's yet)
        take_early_hangups(out, str(path))
        out.write("x\n")
        out.flush()
    finally:
        out.close()
    assert path.read_text() == "x\n" and (tmp_path / "deltas.jsonl.1").read_text() == ""
    assert hangup.take() == 0
