"""Nothing the source reads from disk can stop it (DESIGN 4): the follow file is read
only when it is a regular file under a size cap, off the event loop; a bad file keeps
the last good list and is reported once; invalid names are one line, not one each."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls import PxlsSource
from neuro_chat_elo_pxls.jobs import follow as follow_module
from neuro_chat_elo_pxls.store import follows as followstore

from .helpers import FakeClock, FakePxls, Ledger, drive

MIN = timedelta(minutes=1)


def _followed_reads(fake: FakePxls, start: int, names: set[str]) -> set[str]:
    return {n for kind, n, _ in fake.requests[start:] if kind == "profile" and n in names}


async def _run(source: PxlsSource, clock: FakeClock, minutes: int, ledger: Ledger) -> None:
    # a hang guard only (a FIFO read on the loop would block forever): the ticks
    # themselves run in simulated time
    await asyncio.wait_for(drive(source, clock, clock.now + minutes * MIN, ledger), 60)


@pytest.mark.parametrize("hostile", ["fifo", "dev_zero", "not_utf8", "directory", "too_big"])
async def test_a_hostile_follow_file_keeps_the_last_good_list(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    hostile: str,
) -> None:
    fake.top = 1
    fake.add("topper", 10_000)
    names = {"fan_one", "fan_two"}
    for name in names:
        fake.add(name, 3)
    path = tmp_path / "follow.txt"
    path.write_text("fan_one\nfan_two\n")
    source = make_source(follow_file=str(path), follow_interval=timedelta(minutes=10))
    ledger = Ledger()
    caplog.set_level(logging.INFO)
    await _run(source, clock, 15, ledger)
    path.unlink()
    if hostile == "fifo":
        os.mkfifo(path)
    elif hostile == "dev_zero":
        path.symlink_to("/dev/zero")
    elif hostile == "not_utf8":
        path.write_bytes(b"fan_one\n\xff\xfe\n")  # fan_two gone too: the file is unusable
    elif hostile == "directory":
        path.mkdir()
    else:
        monkeypatch.setattr(follow_module, "FOLLOW_FILE_MAX_BYTES", 64)
        path.write_text("fan_one\nfan_two\n" + "#" * 100 + "\n")
    start, pulls = len(fake.requests), sum(k == "stats" for k, _, _ in fake.requests)
    await _run(source, clock, 90, ledger)
    assert sum(k == "stats" for k, _, _ in fake.requests) > pulls  # pulls go on
    assert _followed_reads(fake, start, names) == names  # both still followed
    trouble = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(trouble) == 1, [r.getMessage() for r in trouble]  # once, not every tick
    # mended: said once, and the mended list is the one followed
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink()
    path.write_text("fan_one\n")
    await _run(source, clock, 30, ledger)
    mended = [r.getMessage() for r in caplog.records if "is readable again" in r.getMessage()]
    assert len(mended) == 1, mended
    status = await source.status(clock.now)
    assert status["follow"]["followed"] == 1
    ledger.check_conservation()


async def test_invalid_names_are_one_line_with_a_count(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.add("topper", 10_000)
    fake.add("good_name", 3)
    bad = [f"bad name {i}" for i in range(150_000)]
    source = make_source(follow=["good_name", *bad[:1000]])
    caplog.set_level(logging.INFO)
    await drive(source, clock, clock.now + MIN)
    assert await source.follow([*bad, "good_name"], clock.now) == 1
    assert await source.follow(bad, clock.now) == 0  # the same again: not reported again
    warnings = [r.getMessage() for r in caplog.records if "invalid names" in r.getMessage()]
    assert len(warnings) == 2, warnings  # was 151,000 records: one per name
    assert "150000 invalid names" in warnings[1] and "'bad name 0'" in warnings[1]
    assert "1000 invalid names" in warnings[0]


async def test_following_a_million_names_leaves_the_loop_free(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name checks and the JSON for SQLite (1.95 s of CPU for 1,000,000 names) run
    in worker threads, not on the event loop."""
    fake.add("topper", 10_000)
    source = make_source()
    await drive(source, clock, clock.now + MIN)
    threads: list[str] = []
    for module, name in ((follow_module, "split_valid"), (followstore, "_names_json")):
        original = getattr(module, name)

        def spy(*args: Any, _original: Any = original) -> Any:
            threads.append(threading.current_thread().name)
            return _original(*args)

        monkeypatch.setattr(module, name, spy)
    names = [f"n{i}" for i in range(1_000_000)]
    assert await source.follow(names, clock.now) == 1_000_000
    assert len(threads) == 2 and threading.main_thread().name not in threads


async def test_a_restart_on_a_bad_follow_file_unfollows_nobody(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> None:
    """The last good list lives in the database: a source started while the file is
    bad keeps following its names (found by the simulator, seed 28)."""
    fake.top = 1
    fake.add("topper", 10_000)
    for name in ("fan_one", "fan_two", "by_config"):
        fake.add(name, 3)
    path = tmp_path / "follow.txt"
    path.write_text("fan_one\nfan_two\n")
    settings = {"follow": ["by_config"], "follow_file": str(path)}
    source = make_source(follow_interval=timedelta(minutes=10), **settings)
    ledger = Ledger()
    await _run(source, clock, 15, ledger)
    await source.on_shutdown()
    path.write_bytes(b"fan_one\n\xff\n")
    source = make_source(follow_interval=timedelta(minutes=10), **settings)
    start = len(fake.requests)
    await _run(source, clock, 60, ledger)
    names = {"fan_one", "fan_two", "by_config"}
    assert _followed_reads(fake, start, names) == names
