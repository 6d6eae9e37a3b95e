"""The smallest complete neuro_chat_elo host, for host authors (see docs/hosts.md).

    python examples/minimal_host.py                                # a local pxls stand-in
    python examples/minimal_host.py --base-url https://pxls.space  # the real pxls.space
    python examples/minimal_host.py --base-url https://pxls.space --db /var/lib/pxls.sqlite3

It finds the pxls source through its entry point, ticks it with an aware UTC ``now``,
writes every delta as a JSON line on stdout, acknowledges them through the
``acknowledge`` hook once written (``delivery = "ack"``: nothing is lost if it dies
in between), sleeps until the earliest ``next_due_at`` (a default when no source says),
and shuts down cleanly on Ctrl-C or SIGTERM. Without ``--base-url`` it starts the
package's local stand-in of pxls.space on 127.0.0.1 (with the stand-in's session as
``PXLS_TOKEN``, so profiles are read and deltas carry Discord names and factions):
copying this file never points anything at the real pxls.space by accident.

The database: with ``--base-url`` it is ``--db``, by default ``pxls.sqlite3`` in the
current directory, and it must outlive the process. The source counts a user's
pixels against the last score its database holds; a new, empty database would count
every user's whole score again on each start (a restart would credit everyone twice).
Only the stand-in (a new one each start, without ``--base-url``) gets a throw-away
database in a temporary folder unless ``--db`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

import pluggy

from neuro_chat_elo_pxls import hookspecs, jsonlines
from neuro_chat_elo_pxls.hookspecs import call_async_hook

#: The database with ``--base-url`` and no ``--db``: a file that outlives the process (a
#: temporary one would count every score again after a restart).
PERSISTENT_DB = "pxls.sqlite3"

#: How long to sleep when no source says when it has work next (pluggy drops None).
POLL = timedelta(seconds=30)


async def run_host(config: dict[str, Any], stop: asyncio.Event) -> None:
    """Tick, write, acknowledge, sleep; until ``stop`` is set."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    pm.hook.register_sources(register=pm.register, config=config)
    try:
        while not stop.is_set():
            now = datetime.now(UTC)  # aware UTC: a naive datetime is refused
            await call_async_hook(pm.hook.on_tick, now=now)
            written = []
            for batch in await call_async_hook(pm.hook.collect_deltas):
                for delta in batch:  # delta.delta is signed: a rollback is negative
                    sys.stdout.write(jsonlines.dumps(delta) + "\n")
                    written.append(delta)
            sys.stdout.flush()  # stored (here: handed on) before acknowledged
            await call_async_hook(pm.hook.acknowledge, deltas=written)
            wake = min(pm.hook.next_due_at(now=now), default=now + POLL)
            delay = (wake - datetime.now(UTC)).total_seconds()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, min(delay, POLL.total_seconds())))
    finally:
        await call_async_hook(pm.hook.on_shutdown)


def database_path(given: str | None, scratch: str | None) -> str:
    """``--db``; else a throw-away file in ``scratch`` (the stand-in's runs), or, for a
    real instance, :data:`PERSISTENT_DB` in the current directory (it must outlive
    this process)."""
    if given:
        return os.path.abspath(given)
    return os.path.join(scratch, "pxls.sqlite3") if scratch else os.path.abspath(PERSISTENT_DB)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", help="a pxls instance (default: a local stand-in)")
    parser.add_argument(
        "--db",
        default=None,
        help=f"the source's database file; keep it across restarts (with --base-url the "
        f"default is {PERSISTENT_DB} in the current directory; with the stand-in, a "
        "temporary file)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    scratch = tempfile.TemporaryDirectory(prefix="pxls-host-")  # removed at the end
    standin = None
    base_url = args.base_url
    if base_url is None:  # a new stand-in each start: a throw-away database fits it
        from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario

        standin = PxlsStandIn(Scenario(users=30, seed=1), lambda: datetime.now(UTC))
        base_url = await standin.start()
        # the stand-in's session (not a secret): profiles are read, as on the real site
        os.environ["PXLS_TOKEN"] = standin.scenario.token
        logging.info("a local pxls stand-in at %s (not pxls.space)", base_url)
    db = database_path(args.db, scratch.name if standin else None)
    logging.info("database %s", db)
    config = {"pxls": {"base_url": base_url, "db_path": db, "delivery": "ack"}}
    try:
        await run_host(config, stop)
    finally:
        if standin is not None:
            await standin.stop()
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
