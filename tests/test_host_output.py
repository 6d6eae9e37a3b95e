"""The standalone host never loses a delta on the way out (DESIGN 4): a delta leaves
the database only once written and fsynced, whatever ``delivery`` says; a failed write
keeps the rows and ends the run with a status a service manager restarts."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls import cli, jsonlines
from neuro_chat_elo_pxls.cli import run as cli_run
from neuro_chat_elo_pxls.host import OutputError, run_host
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario
from neuro_chat_elo_pxls.util.logs import JsonLogFormatter

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


def _env_without_secrets() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("PXLS_TOKEN", "PXLS_CF"))}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
async def test_run_out_on_a_full_disk_exits_75_and_keeps_the_rows(tmp_path: Path) -> None:
    """Issue item 9: ``run --out /dev/full`` logged "exiting 75", then closing the file
    re-raised the buffered ENOSPC and ``main`` exited 2 (which the shipped unit does not
    restart). Now the real process exits 75 and the rows are still in the outbox."""
    import subprocess
    import sys
    from datetime import UTC, datetime

    server = PxlsStandIn(Scenario(users=10, seed=6), lambda: datetime.now(UTC))
    url = await server.start()
    db = str(tmp_path / "pxls.sqlite3")
    cmd = [sys.executable, "-m", "neuro_chat_elo_pxls.cli", "run", "--base-url", url]
    try:  # without a token the first pull's deltas are handed out at once: it ends by itself
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            "--db",
            db,
            "--out",
            "/dev/full",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=_env_without_secrets(),
        )
        _, err = await asyncio.wait_for(proc.communicate(), 120)  # a hang guard only
    finally:
        await server.stop()
    text = err.decode()
    assert proc.returncode == cli.EXIT_OUTPUT_FAILED, text  # was 2
    assert "No space left on device" in text and "Traceback" not in text
    assert _outbox(db) > 0


class NoRoom:
    """A real file that cannot grow: every write fails as on a full disk."""

    def __init__(self, path: str, mode: str = "r", **kwargs: Any) -> None:
        self._file = open(path, mode, **kwargs)  # noqa: SIM115 (closed by its owner)

    def write(self, data: Any, /) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> NoRoom:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()


async def test_run_exits_75_when_the_first_batch_cannot_be_written(
    standin: tuple[PxlsStandIn, JumpClock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue item 9: an ``--out`` file with a partial last line that cannot grow (the
    newline that closes the line off fails) made ``run`` exit 2. Now 75, with nothing
    taken from the database."""
    from neuro_chat_elo_pxls.cli import config as cli_config

    server, _ = standin
    out = tmp_path / "deltas.jsonl"
    out.write_text('{"v":1,"seq":1,"user":"torn')  # a crash in the middle of a line
    monkeypatch.setattr(cli_config, "open", NoRoom, raising=False)  # _append's open
    db = str(tmp_path / "pxls.sqlite3")
    args = cli.build_parser().parse_args(
        ["run", "--base-url", server.base_url, "--db", db, "--out", str(out)]
    )
    assert await cli_run.run_command(args) == cli.EXIT_OUTPUT_FAILED  # raised OSError: 2
    assert out.read_text() == '{"v":1,"seq":1,"user":"torn'


def test_run_exits_75_when_closing_the_out_file_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A close that fails (an NFS server gone at the end) is an output failure too: 75."""
    from neuro_chat_elo_pxls.cli import config as cli_config
    from neuro_chat_elo_pxls.host import Totals

    async def done(*args: object, **kwargs: object) -> Totals:
        return Totals()

    def failing_close(self: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(cli_run, "run_host", done)
    monkeypatch.setattr(cli_config.OutputFile, "close", failing_close)
    argv = ["run", "--base-url", "http://127.0.0.1:9", "--out", str(tmp_path / "d.jsonl")]
    assert cli.main(argv) == cli.EXIT_OUTPUT_FAILED  # was 2
    assert "Input/output error" in capsys.readouterr().err


async def test_a_failed_last_delivery_at_shutdown_is_an_output_error(
    standin: tuple[PxlsStandIn, JumpClock], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last delivery at shutdown used to swallow a failed write (exit 0); its rows
    stay in the outbox, and ``run_host`` raises :class:`OutputError` (``run``: 75)."""
    from neuro_chat_elo_pxls import host

    server, clock = standin
    monkeypatch.delenv("PXLS_TOKEN", raising=False)
    db = str(tmp_path / "pxls.sqlite3")
    config = {"pxls": {"base_url": server.base_url, "db_path": db}}
    stop = asyncio.Event()
    real, calls = host.deliver, []

    async def then_full(pm: Any, out: Any, totals: Any) -> None:
        calls.append(out)
        if len(calls) > 1:  # the last delivery, at shutdown
            await real(pm, FullDisk(), totals)
        else:
            stop.set()  # the loop's first delivery writes nothing: all is left for the last

    monkeypatch.setattr(host, "deliver", then_full)
    with pytest.raises(OutputError, match="No space left on device"):
        await run_host(config, clock=clock, out=io.StringIO(), stop=stop)
    assert len(calls) == 2 and _outbox(db) > 0


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


async def test_two_pxls_instances_in_one_config_run_side_by_side(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 20: one [pxls] section of defaults and a table per instance: pxls.space
    (current page template) and an event canvas (the older template, another site
    name, read through the HTML page), each with its own database and token; every
    delta names its instance, each instance conserves and holds its toplist, and
    ``status`` covers both; every line a source logs names its instance."""
    from neuro_chat_elo_pxls.pxls.parsing import parse_stats
    from neuro_chat_elo_pxls.testing.standin import HOSTILE_FACTIONS

    from .helpers import check_holds_latest

    clock = JumpClock(T0)
    space = PxlsStandIn(Scenario(users=30, seed=5), clock.now)
    event = PxlsStandIn(
        Scenario(
            users=20,
            seed=6,
            site="Ironmouse Canvas",
            page_template="older",
            factions=HOSTILE_FACTIONS,
            token="event-token",
        ),
        clock.now,
    )
    await space.start()
    await event.start()
    monkeypatch.setenv("PXLS_TOKEN_SPACE", "standin-token")
    monkeypatch.setenv("PXLS_TOKEN_IRONMOUSE", "event-token")
    monkeypatch.delenv("PXLS_TOKEN", raising=False)
    toml = tmp_path / "host.toml"
    toml.write_text(
        "[pxls]\nleaderboard_interval = 900\n"
        f'[pxls.instances.space]\nbase_url = "{space.base_url}"\n'
        f'db_path = "{tmp_path / "space.sqlite3"}"\n'
        f'[pxls.instances.ironmouse]\nbase_url = "{event.base_url}"\n'
        f'db_path = "{tmp_path / "ironmouse.sqlite3"}"\nprofile_endpoint = "html"\n'
    )
    import tomllib

    config = tomllib.loads(toml.read_text())
    out = io.StringIO()
    caplog.set_level(logging.INFO, logger="neuro_chat_elo_pxls")
    try:
        totals = await run_host(
            config, clock=clock, out=out, stop=asyncio.Event(), until=T0 + timedelta(hours=3)
        )
    finally:
        await space.stop()
        await event.stop()
    records = [r for r in caplog.records if r.name == "neuro_chat_elo_pxls"]
    tags = ("[space] ", "[ironmouse] ")
    untagged = [r.getMessage() for r in records if not r.getMessage().startswith(tags)]
    assert records and not untagged, untagged[:5]
    for name in ("space", "ironmouse"):
        opened = [r.getMessage() for r in records if "pxls source open" in r.getMessage()]
        assert any(m.startswith(f"[{name}] pxls source open: ") for m in opened), opened
    as_json = json.loads(JsonLogFormatter().format(records[-1]))
    assert as_json["instance"] in {"space", "ironmouse"}
    assert as_json["message"].startswith(f"[{as_json['instance']}] ")
    deltas = [jsonlines.loads(line) for line in out.getvalue().splitlines()]
    assert totals.deltas == len(deltas)  # the host's table de-duplicates on (instance, seq)
    for name, server in (("space", space), ("ironmouse", event)):
        mine = [d for d in deltas if d.instance == name]
        assert mine, name
        assert [d.seq for d in mine] == list(range(1, len(mine) + 1))  # its own seqs
        ledger = Ledger(mine)
        ledger.check_conservation()
        snapshot = parse_stats(server.served_stats)
        check_holds_latest(ledger, snapshot, server.canvas)
    assert {d.instance for d in deltas} == {"space", "ironmouse"}
    hostile = {d.faction for d in deltas if d.instance == "ironmouse" and d.faction}
    expected = {(f[0], f[1], f[2]) for f in HOSTILE_FACTIONS}
    assert hostile and {(f.id, f.tag, f.name) for f in hostile} <= expected  # read exactly
    assert await asyncio.to_thread(cli.main, ["status", "--config", str(toml)]) == 0
    text = capsys.readouterr().out
    assert "== pxls instance space" in text and "== pxls instance ironmouse" in text
    nope = ["status", "--config", str(toml), "--instance", "nope"]
    assert await asyncio.to_thread(cli.main, nope) == 2
    assert "no pxls instance 'nope'" in capsys.readouterr().err


def test_two_instances_on_one_database_are_refused() -> None:
    from neuro_chat_elo_pxls import ConfigError
    from neuro_chat_elo_pxls.settings import instances_from_config

    section = {
        "db_path": "same.sqlite3",
        "instances": {"a": {"base_url": "http://a.example"}, "b": {"base_url": "http://b.example"}},
    }
    with pytest.raises(ConfigError, match="'a' and 'b' share db_path"):
        instances_from_config(section)
    (only,) = instances_from_config({"db_path": "one.sqlite3"})  # no tables: as before
    assert only.instance_name == "pxls.space"


def test_two_instances_on_one_site_are_refused() -> None:
    """Issue 27, item 2: two tables that both forgot ``base_url`` inherited ``[pxls]``'s
    one site and were accepted: profile requests went out less than 1 s apart (two
    budgets for one site) and every user counted under both names. A site is a site
    (host and port) whatever table names it; and with several tables, each names its
    own (a table without one sent its own token to the inherited site)."""
    from neuro_chat_elo_pxls import ConfigError
    from neuro_chat_elo_pxls.settings import instances_from_config

    forgot = {"instances": {"a": {"db_path": "a.db"}, "b": {"db_path": "b.db"}}}
    with pytest.raises(ConfigError, match=r"pxls\.instances\.a sets no base_url"):
        instances_from_config(forgot)
    for first, second in [
        ("https://pxls.space", "https://PXLS.space/"),
        ("https://pxls.space", "https://pxls.space:443/x"),
        ("http://127.0.0.1:4001", "http://127.0.0.1:4001"),
    ]:
        same = {
            "instances": {
                "a": {"db_path": "a.db", "base_url": first},
                "b": {"db_path": "b.db", "base_url": second},
            }
        }
        with pytest.raises(ConfigError, match="'a' and 'b' are one site"):
            instances_from_config(same)
    ports = {
        "instances": {
            "a": {"db_path": "a.db", "base_url": "http://127.0.0.1:4001"},
            "b": {"db_path": "b.db", "base_url": "http://127.0.0.1:4002"},
        }
    }
    assert len(instances_from_config(ports)) == 2  # two servers: two sites
    (one,) = instances_from_config({"instances": {"space": {"db_path": "s.db"}}})
    assert one.base_url == "https://pxls.space"  # one table may inherit (a migration)


def test_run_forces_ack_delivery_in_every_instance_table() -> None:
    """A review's finding: a table's own ``delivery = "drain"`` overrode the host's
    forced ack mode, so a failed write lost that instance's deltas."""
    from neuro_chat_elo_pxls.host import _with_ack_delivery
    from neuro_chat_elo_pxls.settings import instances_from_config

    config: dict[str, Any] = {
        "pxls": {
            "delivery": "drain",
            "instances": {
                "a": {"delivery": "drain", "db_path": "a.sqlite3", "base_url": "http://a.example"},
                "b": {"db_path": "b.sqlite3", "base_url": "http://b.example"},
            },
        }
    }
    forced = _with_ack_delivery(config)
    assert [s.delivery for s in instances_from_config(forced["pxls"])] == ["ack", "ack"]
    assert config["pxls"]["instances"]["a"]["delivery"] == "drain"  # not changed in place


def test_an_instance_table_names_its_own_secrets_in_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A review's finding: messages told a table instance's operator to set or renew
    PXLS_TOKEN, which that instance never reads (it reads PXLS_TOKEN_NAME)."""
    from neuro_chat_elo_pxls import ConfigError
    from neuro_chat_elo_pxls.engine.state import EngineState, KeyState
    from neuro_chat_elo_pxls.ops.health import health_problems
    from neuro_chat_elo_pxls.settings import instances_from_config

    monkeypatch.setenv("PXLS_TOKEN", "the-plain-one")
    section = {"instances": {"ev-1": {"db_path": "e.sqlite3"}}}
    (ev,) = instances_from_config(section)
    assert ev.secret_envs == ("PXLS_TOKEN_EV_1", "PXLS_CF_AUTH_EV_1") and ev.token is None
    assert "profiles off (PXLS_TOKEN_EV_1 not set)" in ev.summary()
    paused = KeyState(T0 + timedelta(hours=1), "auth: HTTP 403", 0, auth_pauses=1)
    state = EngineState(last_pull_at=T0, keys={"profile": paused})
    (problem,) = health_problems(state, ev, T0, oldest_outbox=None, max_outbox_age=timedelta(1))
    assert problem.endswith("renew PXLS_TOKEN_EV_1 / PXLS_CF_AUTH_EV_1")
    clash = {
        "instances": {
            "ev-1": {"db_path": "a", "base_url": "http://a.example"},
            "ev_1": {"db_path": "b", "base_url": "http://b.example"},
        }
    }
    with pytest.raises(ConfigError, match="would read the same secrets"):
        instances_from_config(clash)


async def test_the_table_is_logged_every_interval_and_once_at_the_end(
    standin: tuple[PxlsStandIn, JumpClock],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``table_every`` (``run --table-every``): the running table once per interval of
    host time, the final table at shutdown, each line its own record, and the totals
    line counts exactly the deltas written."""
    server, clock = standin
    monkeypatch.setenv("PXLS_TOKEN", server.scenario.token)
    config = {"pxls": {"base_url": server.base_url, "db_path": str(tmp_path / "p.sqlite3")}}
    out = io.StringIO()
    with caplog.at_level(logging.INFO, logger="neuro_chat_elo_pxls"):
        await run_host(
            config,
            clock=clock,
            out=out,
            stop=asyncio.Event(),
            until=T0 + timedelta(hours=3),
            table_every=timedelta(hours=1),
        )
    messages = [r.getMessage() for r in caplog.records]
    running = [m for m in messages if m.startswith("running table at ")]
    assert running[0] == f"running table at {(T0 + timedelta(hours=1)).isoformat()}"
    assert 2 <= len(running) <= 3, running
    assert messages.count("final table") == 1
    written = len(out.getvalue().splitlines())
    assert written > 0
    final = messages[messages.index("final table") :]
    assert any(m.startswith(f"  {written} deltas (") for m in final), final[:14]


async def test_a_table_that_keeps_an_old_instance_name_is_still_known_by_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 29, item 10: after moving a single-instance setup into
    ``[pxls.instances.space]`` with ``instance = "pxls.space"`` (to keep its database),
    the table's name disappeared from status headings, log tags and errors."""
    from neuro_chat_elo_pxls import PxlsSource
    from neuro_chat_elo_pxls.cli import main
    from neuro_chat_elo_pxls.engine.state import EngineState
    from neuro_chat_elo_pxls.errors import StoreError
    from neuro_chat_elo_pxls.settings import check_database_instance, instances_from_config
    from neuro_chat_elo_pxls.store.writer import Store

    dbs = {"space": tmp_path / "s.db", "event": tmp_path / "e.db"}
    config = tmp_path / "host.toml"
    config.write_text(
        f'[pxls.instances.space]\ninstance = "pxls.space"\nbase_url = "https://pxls.space"\n'
        f'db_path = "{dbs["space"]}"\n'
        f'[pxls.instances.event]\nbase_url = "http://127.0.0.1:9"\ndb_path = "{dbs["event"]}"\n'
    )
    import tomllib

    space, event = instances_from_config(tomllib.loads(config.read_text())["pxls"])
    assert (space.label, space.instance_name) == ("space (pxls.space)", "pxls.space")
    assert (event.label, event.instance_name) == ("event", "event")
    assert PxlsSource(space).log_instance == "space (pxls.space)"
    with pytest.raises(StoreError, match=r"belongs to pxls instance old, not space \(pxls"):
        check_database_instance("old", space)
    for settings in (space, event):
        async with await Store.open(settings.db_path) as store:
            await store.save_state(EngineState(instance=settings.instance_name))
    assert await asyncio.to_thread(main, ["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "== pxls instance space (pxls.space)" in out and "== pxls instance event" in out
