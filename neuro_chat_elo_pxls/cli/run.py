"""``run`` and ``demo``: the standalone host (:mod:`..host`), against pxls.space (or
``--base-url``), or against the local stand-in on an accelerated clock."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..host import OutputError, Totals, install_signal_handlers, run_host
from ..settings import TOKEN_ENV
from ..util.clock import SimClock
from .config import OutputFile, load_config, open_output

if TYPE_CHECKING:
    from ..testing.standin import PxlsStandIn

log = logging.getLogger("neuro_chat_elo_pxls")

#: ``run``'s exit status when the deltas could not be written (EX_TEMPFAIL): a service
#: manager restarts it (2 means a configuration mistake, and is not restarted)
EXIT_OUTPUT_FAILED = 75


async def run_command(args: argparse.Namespace) -> int:
    config = load_config(args)
    # (no warning here when PXLS_TOKEN is unset: the source's own start-up says it once)
    stop = asyncio.Event()
    out = open_output(args.out)
    install_signal_handlers(stop, out.reopen if isinstance(out, OutputFile) else None)
    try:
        clock = SimClock(
            start=datetime.fromisoformat(args.sim_start) if args.sim_start else None,
            speed=args.speed,
            epoch=args.sim_epoch,
        )
        every = None if args.table_every is None else timedelta(hours=args.table_every)
        await run_host(config, clock=clock, out=out, stop=stop, table_every=every)
    except OutputError as exc:
        log.error(
            "run: %s (%s); exiting %d to be restarted",
            exc,
            args.out or "stdout",
            EXIT_OUTPUT_FAILED,
        )
        return EXIT_OUTPUT_FAILED
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _demo_config(url: str, db: str, swarm: list[str]) -> dict[str, Any]:
    """The demo's host config: the stand-in, and the casual board's people followed."""
    return {
        "pxls": {
            "base_url": url,
            "db_path": db,
            "request_timeout": 5,
            "backoff_initial": 30,
            "follow_factions": [3680],  # the casual board: the swarm, in or out of the toplist
            "follow": swarm,
        }
    }


def _demo_paths(args: argparse.Namespace) -> tuple[str, str | None]:
    """The demo's database and where its deltas go (None or "-": stdout). On a
    terminal without ``--out``, the deltas go to a file in a new temporary directory
    (the terminal is kept for the story), and so does a database not given."""
    to_file = args.out is None and sys.stdout.isatty()  # keep the terminal for the story
    workdir = tempfile.mkdtemp(prefix="pxls-demo-") if to_file or not args.db else ""
    db = args.db or os.path.join(workdir, "demo.sqlite3")
    out_path = os.path.join(workdir, "deltas.jsonl") if to_file else args.out
    return db, out_path


def _log_demo_start(args: argparse.Namespace, url: str, victim: str, db: str) -> None:
    log.info(
        "demo: stand-in %s with %d users; %gx time (1 simulated hour = %.1f s); "
        "canvas reset at hour %.0f, rename of %s at hour 5; db %s",
        url,
        args.users,
        args.speed,
        3600 / args.speed,
        args.hours * 0.7,
        victim,
        db,
    )


def _log_demo_done(standin: PxlsStandIn, totals: Totals, out_path: str | None, db: str) -> None:
    profiles = sum(1 for r in standin.requests if "profile" in r.path)
    log.info(
        "demo done: %d requests to the stand-in (%d profiles), at most %d in flight",
        len(standin.requests),
        profiles,
        standin.max_in_flight,
    )
    where = "stdout" if out_path in (None, "-") else out_path
    log.info("demo: %d JSON-lines deltas went to %s; the database is %s", totals.deltas, where, db)


async def demo_command(args: argparse.Namespace) -> int:
    from ..testing.standin import PxlsStandIn, Scenario  # the stand-in only for the demo

    clock = SimClock(speed=args.speed)
    start = clock.now()
    scenario = Scenario(
        users=args.users,
        seed=args.seed,
        resets=[start + timedelta(hours=args.hours * 0.7)],
        toplist_size=max(1, args.users * 2 // 3),  # a third of the users outside it
        swarm_share=0.2,
    )
    standin = PxlsStandIn(scenario, clock.now)
    # rename a real user of the scenario, five simulated hours in
    victim = sorted(standin.users)[0]
    standin.schedule_rename(start + timedelta(hours=5), victim, f"{victim[:24]}_renamed")
    url = await standin.start()
    os.environ[TOKEN_ENV] = scenario.token  # the stand-in's session, not a real secret
    db, out_path = _demo_paths(args)
    swarm = sorted(n for n, u in standin.users.items() if u.faction and u.faction[0] == 3680)
    config = _demo_config(url, db, swarm)
    _log_demo_start(args, url, victim, db)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    out = open_output(out_path)
    try:
        totals = await run_host(
            config,
            clock=clock,
            out=out,
            stop=stop,
            until=start + timedelta(hours=args.hours),
            table_every=timedelta(hours=6),
        )
    finally:
        await standin.stop()
        if out is not sys.stdout:
            out.close()
    _log_demo_done(standin, totals, out_path, db)
    return 0
