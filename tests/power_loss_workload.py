"""The workload tests/test_power_loss.py traces: a real source against the local
stand-in for some simulated hours, with a host that durably records what it received.

``python -m tests.power_loss_workload MODE SYNCHRONOUS WORKDIR HOURS``

* ``drain``: a library host (:class:`PxlsSource`, ``delivery = "drain"``): tick,
  ``collect_deltas``, append the batch to ``WORKDIR/host.jsonl`` in one ``write`` and
  fsync it (the file's directory fsynced when it is created), sleep until the next due
  time (simulated time jumps).
* ``ack``: the standalone host's loop with ``--out WORKDIR/host.jsonl`` (``demo``:
  :func:`~neuro_chat_elo_pxls.host.run_host`, the code ``run --out`` runs, on a jumping
  clock): written, fsynced, then acknowledged.

``SYNCHRONOUS`` replaces :data:`neuro_chat_elo_pxls.store.schema.SYNCHRONOUS` (``FULL``,
or ``NORMAL`` to show what the test catches). The database is ``WORKDIR/pxls.sqlite3``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource, jsonlines
from neuro_chat_elo_pxls.cli import main as cli_main
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.store import schema
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
USERS = 40
HOST_FILE = "host.jsonl"
DB_FILE = "pxls.sqlite3"


def _create_durably(path: str) -> int:
    """``path`` created for appending, its directory entry fsynced."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return fd


async def drain_host(workdir: str, hours: float) -> None:
    clock = JumpClock(START)
    standin = PxlsStandIn(Scenario(users=USERS, seed=5, toplist_size=USERS * 2 // 3), clock.now)
    url = await standin.start()
    settings = PxlsSettings(
        base_url=url,
        db_path=os.path.join(workdir, DB_FILE),
        delivery="drain",
        token=Secret(standin.scenario.token),
        cf_auth=None,
        request_timeout=timedelta(seconds=120),  # simulated time: nothing may time out
    )
    source = PxlsSource(settings)
    fd = _create_durably(os.path.join(workdir, HOST_FILE))
    until = START + timedelta(hours=hours)
    try:
        while clock.now() < until:
            now = clock.now()
            await source.on_tick(now)
            batch = await source.collect_deltas()
            if batch:
                os.write(fd, "".join(jsonlines.dumps(d) + "\n" for d in batch).encode())
                os.fsync(fd)
            due = source.next_due_at(clock.now())
            if due is None or due > until:
                clock.current = until
            elif due <= clock.now():
                clock.current += timedelta(milliseconds=1)  # a real host re-ticks at once
            else:
                clock.current = due
    finally:
        await source.on_shutdown()
        await standin.stop()
        os.close(fd)


def main(argv: list[str]) -> int:
    mode, synchronous, workdir, hours = argv
    schema.SYNCHRONOUS = synchronous
    if mode == "drain":
        asyncio.run(drain_host(workdir, float(hours)))
        return 0
    args = ["--log-level", "WARNING", "demo", "--hours", hours, "--users", str(USERS)]
    args += ["--db", os.path.join(workdir, DB_FILE), "--out", os.path.join(workdir, HOST_FILE)]
    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
