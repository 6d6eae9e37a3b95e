"""Files and output under a careless operator and hostile text: the lock, exports,
CSV cells, escaped text, secrets, hangs, and the small ones."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import pytest

from neuro_chat_elo_pxls import EloDelta, Faction, PxlsSettings, PxlsSource, jsonlines
from neuro_chat_elo_pxls.cli import csv_cell, main
from neuro_chat_elo_pxls.errors import ConfigError, MalformedDataError, StoreLockedError
from neuro_chat_elo_pxls.host import Totals
from neuro_chat_elo_pxls.ops.status import format_status
from neuro_chat_elo_pxls.pxls.client import _retry_after
from neuro_chat_elo_pxls.pxls.parsing import parse_generated_at
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.store.writer import Store
from neuro_chat_elo_pxls.util.logs import TextLogFormatter
from neuro_chat_elo_pxls.util.text import shown

from .conftest import TOKEN
from .helpers import FakeClock, FakePxls, Ledger, drive

HOSTILE = "evil\n2026-01-01 CRITICAL forged line\x1b[31m red \u202eRTL\u2028sep\x85nel"


async def _main(argv: list[str]) -> int:
    return await asyncio.to_thread(main, argv)


# -- 9. the single-writer lock is on the file, not the name ---------------------


@pytest.mark.parametrize("alias", ["symlink", "hardlink", "relative"])
async def test_lock_refuses_a_second_name_of_the_same_database(
    tmp_path: Path, alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "live.sqlite3"
    store = await Store.open(str(db))
    other = tmp_path / "other.sqlite3"
    if alias == "symlink":
        other.symlink_to(db)
    elif alias == "hardlink":
        os.link(db, other)
    else:
        monkeypatch.chdir(tmp_path)
        other = Path("./sub/../live.sqlite3")
        (tmp_path / "sub").mkdir()
    with pytest.raises(StoreLockedError, match="already in use"):
        await Store.open(str(other))
    await store.close()
    again = await Store.open(str(other))  # free again once the first is closed
    await again.close()


# -- 10, 11. export: exclusive temp file, CSV cells neutralised -----------------


@pytest.fixture
async def hostile_db(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> str:
    fake.add("-2-3", 40, discord="=cmd|' /C calc'!A0", faction=Faction(7, "+1+1", "@SUM(1)", 1))
    fake.add("plain_user", 12, discord=HOSTILE)
    source = make_source()
    await drive(source, clock, clock.now + timedelta(minutes=2))
    await source.on_shutdown()
    return str(tmp_path / "pxls.sqlite3")


async def test_export_never_follows_a_planted_symlink(hostile_db: str, tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "pxls.json"
    (tmp_path / "pxls.json.tmp").symlink_to(victim)  # the old fixed temp name
    assert await _main(["export", "--db", hostile_db, "-o", str(target)]) == 0
    assert victim.read_text() == "precious"
    assert '"PXLS_USERNAME":"-2-3"' in target.read_text()
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert leftovers == ["pxls.json.tmp"], "no temp file of ours is left behind"


@pytest.mark.parametrize("fmt", ["pxls-json", "csv"])
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_export_file_mode_follows_the_umask(
    hostile_db: str, tmp_path: Path, fmt: str, umask: int, mode: int
) -> None:
    """A batch running as another user (same group, or anyone under 0022) can read
    the export: the file gets 0666 minus the umask, like any file a tool creates,
    and an existing file is replaced (atomically) with that mode too."""
    target = tmp_path / ("pxls.json" if fmt == "pxls-json" else "pxls.csv")
    target.write_text("old")
    target.chmod(0o600)
    old = os.umask(umask)
    try:
        assert main(["export", "--db", hostile_db, "--format", fmt, "-o", str(target)]) == 0
        assert main(["export", "--db", hostile_db, "--format", fmt, "-o", str(target)]) == 0
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == mode
    assert "-2-3" in target.read_text()
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


async def test_csv_export_neutralises_formula_cells(
    hostile_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _main(["export", "--db", hostile_db, "--format", "csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    cells = [cell for row in rows[1:] for cell in row]
    assert "'-2-3" in cells and "'=cmd|' /C calc'!A0" in cells
    assert "'+1+1" in cells and "'@SUM(1)" in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert csv_cell(-5) == -5 and csv_cell("plain") == "plain"


# -- 12. text from pxls is escaped in text output; JSON escapes line breaks -------


def test_shown_escapes_controls_bidi_and_separators() -> None:
    text = shown(HOSTILE)
    assert "\n" not in text and "\x1b" not in text and "\u202e" not in text
    assert "\u2028" not in text and "\x85" not in text
    assert "\\x0a" in text and "\\x1b" in text and "\\u202e" in text
    assert shown("Grid Keepers 💜") == "Grid Keepers 💜"


def test_text_log_lines_cannot_be_forged() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "canvas %s", (HOSTILE,), None)
    out = TextLogFormatter("%(levelname)s %(message)s").format(record)
    assert out.count("\n") == 0 and "\x1b" not in out and "\u202e" not in out


def test_running_table_and_status_escape_pxls_text() -> None:
    totals = Totals()
    delta = EloDelta(
        1, "plain_user", 1, HOSTILE, Faction(1, "\x1b[2J", "n"), 5, 5, "86", datetime.now(UTC)
    )
    totals.add(delta)
    table = totals.table()
    assert "\x1b" not in table and "\u202e" not in table
    assert len(table.splitlines()) == 3  # header, one row, totals
    status = {
        "db_path": "db",
        "canvas": "87\nCRITICAL forged",
        "canvas_first_seen": None,
        "last_pull_at": None,
        "last_generated_at": None,
        "next_pull_at": None,
        "users": 0,
        "dirty": 0,
        "awaiting_enrichment": 0,
        "missing": 0,
        "never_enriched": 0,
        "outbox": 0,
        "profiles_enabled": True,
        "last_error": "HTTP 403 \x1b[2J\u202e",
        "last_error_at": "t",
        "healthy": False,
        "problems": ["profile requests paused for auth (auth: \x1b[31m)"],
        "sweep": {"active": False, "number": 0, "finished_at": None},
        "keys": {"profile": {"cooling_until": "x", "reason": "auth: \x1b[31m"}},
    }
    text = format_status(status)
    assert "\x1b" not in text and "\u202e" not in text and "87\\x0aCRITICAL" in text


def test_json_lines_escape_line_separators() -> None:
    delta = EloDelta(
        7, "u", None, "a\u2028b\u2029c\x85d", None, 1, 1, "86", datetime(2026, 1, 1, tzinfo=UTC)
    )
    line = jsonlines.dumps(delta)
    assert len(line.splitlines()) == 1
    assert jsonlines.loads(line) == delta


# -- 13 (auth pause floor) is in test_layout.py; 14. secrets in attrs.asdict ----


def test_asdict_of_settings_shows_no_secret() -> None:
    settings = PxlsSettings(token=Secret(TOKEN), cf_auth=Secret("cf-value"))
    dumped = repr(attrs.asdict(settings))
    assert TOKEN not in dumped and "cf-value" not in dumped
    assert settings.token is not None and settings.token.reveal() == TOKEN


# -- 15. status and export on a file that is not a database exit ----------------


@pytest.mark.parametrize("command", ["status", "export"])
def test_status_and_export_on_a_bad_file_exit_with_an_error(tmp_path: Path, command: str) -> None:
    bogus = tmp_path / "bogus.sqlite3"
    bogus.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)  # a truncated header
    result = subprocess.run(
        [sys.executable, "-m", "neuro_chat_elo_pxls.cli", command, "--db", str(bogus)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "error" in result.stderr and "Traceback" not in result.stderr


# -- 16. a database that cannot be opened: one error, no spinning host -----------


async def test_unopenable_database_disables_with_a_retry_time(
    make_settings: Callable[..., PxlsSettings],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import random

    missing = tmp_path / "no" / "such" / "dir" / "pxls.sqlite3"
    source = PxlsSource(make_settings(db_path=str(missing)), client=fake, rng=random.Random(1))
    fake.add("a_user", 10)
    try:
        for _ in range(20):
            await source.on_tick(clock.now)
            due = source.next_due_at(clock.now)
            assert due is not None and due > clock.now, "a host sleeping until then never spins"
            clock.advance(seconds=30)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "no/such/dir" in errors[0].getMessage()
        assert not [r for r in caplog.records if r.exc_info], "no traceback"
        missing.parent.mkdir(parents=True)  # the operator fixes it
        ledger = Ledger()
        await drive(source, clock, clock.now + timedelta(minutes=10), ledger)
        assert [d.user for d in ledger.deltas] == ["a_user"]
    finally:
        await source.on_shutdown()


# -- 17. the small ones -------------------------------------------------------------


def test_retry_after_with_non_ascii_digits_is_ignored() -> None:
    assert _retry_after("²", b"") is None
    assert _retry_after("٣", b"Try again in 7 seconds") == 7.0
    assert _retry_after("30", b"") == 30.0


@pytest.mark.parametrize("year", ["0001", "9999"])
def test_generated_at_at_the_ends_of_time_is_malformed_data(year: str) -> None:
    value = (
        f"{year}/01/01 - 00:30:00 (Europe/Berlin)"
        if year == "0001"
        else (f"{year}/12/31 - 23:30:00 (Europe/Berlin)")
    )
    with contextlib.suppress(MalformedDataError):  # a clear data error, never OverflowError
        parse_generated_at(value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"user_agent": "ua\r\nX-Injected: 1"},
        {"base_url": "http://"},
        {"base_url": "https://pxls.space/?x=1"},
        {"base_url": "https://pxls.space/#frag"},
        {"base_url": "https://pxls.space:99999"},
    ],
)
def test_settings_refuse_header_injection_and_bad_urls(kwargs: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        PxlsSettings(**kwargs)  # type: ignore[arg-type]


def test_token_with_a_newline_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PXLS_TOKEN", "abc\r\nSet-Cookie: x")
    with pytest.raises(ConfigError, match="PXLS_TOKEN") as info:
        PxlsSettings()
    assert "Set-Cookie" not in str(info.value)


async def test_disk_full_reports_the_real_cause_and_keeps_the_store_usable(
    tmp_path: Path,
) -> None:
    from neuro_chat_elo_pxls.models import Snapshot

    store = await Store.open(str(tmp_path / "full.sqlite3"))
    try:
        pages = (await store._db.rows("PRAGMA page_count"))[0][0]
        limit = f"PRAGMA max_page_count = {pages + 1}"
        await store._db.alone(lambda conn: conn.execute(limit))  # "disk full"
        big = Snapshot.from_scores(
            datetime(2026, 1, 5, tzinfo=UTC), {f"user_{i:05d}": i for i in range(20_000)}
        )
        now = datetime(2026, 1, 5, tzinfo=UTC)
        with pytest.raises(Exception, match="full") as info:
            await store.ingest("86", big, now, hold_new=False, state=None)
        assert "rollback" not in str(info.value)
        assert await store.counts() == {
            "users": 0,
            "dirty": 0,
            "awaiting_enrichment": 0,
            "missing": 0,
            "never_enriched": 0,
            "outbox": 0,
            "opted_out": 0,
        }
        await store._db.alone(lambda conn: conn.execute("PRAGMA max_page_count = 1000000"))
        small = Snapshot.from_scores(now, {"a": 1})
        result = await store.ingest("86", small, now, hold_new=False, state=None)
        assert result.deltas == 1
    finally:
        await store.close()


def test_out_file_created_has_its_directory_fsynced_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --out FILE`` creating FILE fsyncs its directory before any delta is written
    (a power loss must not take the file's name, and the acknowledged deltas with it);
    an existing file is appended to without it, a partial last line closed off."""
    from neuro_chat_elo_pxls.cli.config import OutputFile

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "deltas.jsonl"
    out = OutputFile(str(path))
    out.write("line\n")
    out.close()
    assert synced == [str(tmp_path)]
    path.write_text("whole\npartial")
    synced.clear()
    OutputFile(str(path)).close()
    assert synced == []
    assert path.read_text() == "whole\npartial\n"


def test_the_sighup_reopen_line_is_an_event_in_json_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 29, item 22: the SIGHUP line had no ``event`` key in JSON logs, so a log
    shipper could not tell a rotation from any other line."""
    import json
    import logging

    from neuro_chat_elo_pxls.cli.config import OutputFile
    from neuro_chat_elo_pxls.util.logs import JsonLogFormatter

    path = tmp_path / "deltas.jsonl"
    out = OutputFile(str(path))
    path.rename(tmp_path / "deltas.jsonl.1")
    with caplog.at_level(logging.INFO, logger="neuro_chat_elo_pxls"):
        out.reopen()
    out.close()
    (record,) = [r for r in caplog.records if "reopened" in r.getMessage()]
    entry = json.loads(JsonLogFormatter().format(record))
    assert entry["event"] == "reopened" and entry["path"] == str(path)
