"""``standin``: the local pxls.space stand-in for a trial of ``run`` before production.

It serves on 127.0.0.1 only, on an accelerated clock (``--speed``, default 60: an hour
a minute), and prints the ``run`` command that shares that clock (``--speed``,
``--sim-start``, ``--sim-epoch``): stats.json generations, pulls, sweeps and pauses then
happen at the simulated pace, so ten minutes of a trial show ten hours of a source's
life. SIGINT/SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import UTC, datetime

from ..settings import TOKEN_ENV
from ..util.clock import SimClock


async def standin_command(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns 0."""
    from ..testing.standin import PxlsStandIn, Scenario

    stop = asyncio.Event()  # (before anything is printed: a reader may stop it at once)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    clock = SimClock(start=datetime.now(UTC), speed=args.speed)
    standin = PxlsStandIn(Scenario(users=args.users, seed=args.seed), clock.now)
    url = await standin.start(args.port)
    token = standin.scenario.token
    print(
        f"pxls.space stand-in on {url}: {args.users} users, {args.speed:g}x time, session "
        f"{token}. A trial of run on its clock (with [pxls.instances.NAME] tables: "
        f"{TOKEN_ENV}_NAME and --instance NAME):\n"
        f"  {TOKEN_ENV}={token} neuro-chat-elo-pxls run --config host.toml --base-url {url} "
        f"--db /tmp/trial.sqlite3 --out /tmp/trial.jsonl --speed {args.speed:g} "
        f"--sim-start {clock.start.isoformat()} --sim-epoch {clock.epoch!r}\n"
        "  neuro-chat-elo-pxls status --db /tmp/trial.sqlite3",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await standin.stop()
    print(f"stand-in stopped: served {len(standin.requests)} requests", file=sys.stderr)
    return 0
