"""``status``: the source's state and health, read from its database without
disturbing a running source (``--check``: exit 1 when unhealthy)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from ..errors import StoreError
from ..ops.status import build_status, format_status
from ..util.text import shown
from .config import open_database


async def status_command(args: argparse.Namespace) -> int:
    """Print the status; with ``--check`` exit 1 when unhealthy (0 otherwise). A
    database that cannot be read exits 2; with ``--json`` stdout still gets an object
    (``healthy: false`` and the ``error``), for a script that parses it."""
    try:
        reader, state, settings = await open_database(args)
    except StoreError as exc:
        if args.json:
            print(json.dumps({"healthy": False, "error": str(exc), "problems": [str(exc)]}))
        raise
    max_age = None if args.max_outbox_age is None else timedelta(seconds=args.max_outbox_age)
    async with reader:
        status = await build_status(
            reader, state, datetime.now(UTC), settings, max_outbox_age=max_age
        )
    if args.json:
        print(json.dumps(status, indent=2))
    elif args.check:
        for problem in status["problems"]:
            print(f"UNHEALTHY: {shown(problem)}")
        if status["healthy"]:
            print(f"OK: last pull {status['last_pull_at']}, {status['outbox']} deltas waiting")
    else:
        print(format_status(status))
    return 0 if status["healthy"] or not args.check else 1
