"""``status``: the source's state and health, read from its database without
disturbing a running source (``--check``: exit 1 when unhealthy)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import StoreError
from ..ops.status import build_status, format_status, when_text
from ..util.text import shown
from .config import configured_instances, load_config, open_database


async def status_command(args: argparse.Namespace) -> int:
    """Print the status; with ``--check`` exit 1 when unhealthy (0 otherwise). A
    database that cannot be read exits 2; with ``--json`` stdout still gets an object
    (``healthy: false`` and the ``error``), for a script that parses it. A config with
    several pxls instances and no ``--instance``: every instance (text: a heading line
    each; JSON: ``{"healthy": ..., "instances": {name: status}}``), unhealthy if any is."""
    names: list[str | None] = [None]
    headings: dict[str, str] = {}  # instance name → the operator's name (the table's)
    if getattr(args, "instance", None) is None and getattr(args, "config", None):
        found = configured_instances(load_config(args))
        names = [s.instance_name for s in found] if len(found) > 1 else [None]
        headings = {s.instance_name: s.label or s.instance_name for s in found}
    statuses: dict[str, dict[str, Any]] = {}
    for name in names:
        chosen = args if name is None else argparse.Namespace(**{**vars(args), "instance": name})
        try:
            statuses[name or ""] = await _build(chosen)
        except StoreError as exc:
            if not args.json:
                raise
            statuses[name or ""] = {"healthy": False, "error": str(exc), "problems": [str(exc)]}
    healthy = all(status["healthy"] for status in statuses.values())
    if args.json:
        if names == [None]:
            print(json.dumps(statuses[""], indent=2))
        else:
            print(json.dumps({"healthy": healthy, "instances": statuses}, indent=2))
        errors = [status["error"] for status in statuses.values() if "error" in status]
        if errors:
            raise StoreError(errors[0])  # stderr too, and exit 2
    else:
        for name, status in statuses.items():
            if name:
                print(f"== pxls instance {shown(headings.get(name, name))}")
            _print(status, check=args.check)
    return 0 if healthy or not args.check else 1


async def _build(args: argparse.Namespace) -> dict[str, Any]:
    """The status of the one instance ``args`` selects. Raises :class:`StoreError`."""
    reader, state, settings = await open_database(args)
    max_age = None if args.max_outbox_age is None else timedelta(seconds=args.max_outbox_age)
    async with reader:
        return await build_status(
            reader, state, datetime.now(UTC), settings, max_outbox_age=max_age
        )


def _print(status: dict[str, Any], *, check: bool) -> None:
    if check:
        for problem in status["problems"]:
            print(f"UNHEALTHY: {shown(problem)}")
        if status["healthy"]:
            last = when_text(status["last_pull_at"], status.get("checked_at"), "never")
            print(f"OK: last pull {last}, {status['outbox']} deltas waiting")  # (as status)
    else:
        print(format_status(status))
