"""``python -m neuro_chat_elo_pxls.testing``: run the local pxls.space stand-in.

Binds to 127.0.0.1 only. Point a source at the printed URL with
``PXLS_TOKEN=standin-token``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from datetime import timedelta

from ..util.clock import SimClock
from .standin import PxlsStandIn, Scenario


async def serve(args: argparse.Namespace) -> None:
    """Run the stand-in until SIGINT or SIGTERM, then say what it served."""
    clock = SimClock(speed=args.speed)
    start = clock.now()
    scenario = Scenario(
        users=args.users,
        seed=args.seed,
        token=args.token,
        resets=[start + timedelta(hours=h) for h in args.reset_after_hours],
    )
    standin = PxlsStandIn(scenario, clock.now)
    url = await standin.start(args.port)
    print(
        f"pxls.space stand-in on {url} ({args.users} users, seed {args.seed}, "
        f"{args.speed:g}x time); token: {args.token}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await standin.stop()
    print(f"served {len(standin.requests)} requests, max {standin.max_in_flight} in flight")


def main(argv: list[str] | None = None) -> None:
    """The stand-in's command line (``argv`` default: the process's)."""
    parser = argparse.ArgumentParser(
        prog="python -m neuro_chat_elo_pxls.testing", description=__doc__
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="simulated seconds per real second (default 1: real time)",
    )
    parser.add_argument("--token", default="standin-token")
    parser.add_argument(
        "--reset-after-hours",
        type=float,
        nargs="*",
        default=[],
        help="simulated hours after start at which the canvas resets",
    )
    asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
