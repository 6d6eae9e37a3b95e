"""Console script ``neuro-chat-elo-pxls``: run, demo, status, export.

``run`` is the standalone host (:mod:`.host`) against pxls.space (or ``--base-url``);
``demo`` runs it against the local stand-in on an accelerated clock; ``status`` and
``export`` read the database without disturbing a running source.
Secrets come only from the environment (``PXLS_TOKEN``, ``PXLS_CF_AUTH``).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import logging
import os
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, PxlsError
from .host import install_signal_handlers, run_host
from .settings import TOKEN_ENV, PxlsSettings
from .source import build_status
from .store import EXPORT_FIELDS, Store
from .testing.clock import SimClock
from .testing.standin import PxlsStandIn, Scenario

log = logging.getLogger("neuro_chat_elo_pxls")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record (for log shippers)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    """The host config: the TOML file (``--config``) with flags applied to ``[pxls]``."""
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            config = tomllib.loads(Path(args.config).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{args.config}: {exc}") from None
    section = dict(config.get("pxls", {}))
    for flag, key in (("base_url", "base_url"), ("db", "db_path")):
        value = getattr(args, flag, None)
        if value is not None:
            section[key] = value
    config["pxls"] = section
    PxlsSettings.from_mapping(section)  # fail fast, naming a bad key
    return config


def _open_output(path: str | None) -> TextIO:
    """stdout, or ``path`` opened for appending on a fresh line.

    A host killed in the middle of a write may leave a partial last line; its
    deltas were not acknowledged (``delivery = "ack"``) and come again, so the
    partial line is just closed off here and readers skip it as malformed.
    """
    if path in (None, "-"):
        return sys.stdout
    with open(path, "ab+") as raw:
        if raw.seek(0, os.SEEK_END) > 0:
            raw.seek(-1, os.SEEK_END)
            if raw.read(1) != b"\n":
                raw.write(b"\n")
    return open(path, "a", encoding="utf-8")


async def _run(args: argparse.Namespace) -> int:
    config = load_config(args)
    if not os.environ.get(TOKEN_ENV):
        log.warning("%s is not set: deltas flow, but without Discord names or factions", TOKEN_ENV)
    stop = asyncio.Event()
    install_signal_handlers(stop)
    out = _open_output(args.out)
    try:
        clock = SimClock(
            start=datetime.fromisoformat(args.sim_start) if args.sim_start else None,
            speed=args.speed,
            epoch=args.sim_epoch,
        )
        await run_host(config, clock=clock, out=out, stop=stop)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


async def _demo(args: argparse.Namespace) -> int:
    clock = SimClock(speed=args.speed)
    start = clock.now()
    scenario = Scenario(
        users=args.users,
        seed=args.seed,
        resets=[start + timedelta(hours=args.hours * 0.7)],
        renames=[(start + timedelta(hours=5), "", "")],
        bans=[],
    )
    standin = PxlsStandIn(scenario, clock.now)
    # rename a real user of the scenario, five simulated hours in
    victim = sorted(standin.users)[0]
    scenario.renames[:] = [(start + timedelta(hours=5), victim, f"{victim[:24]}_renamed")]
    standin._pending_renames = list(scenario.renames)
    url = await standin.start()
    os.environ[TOKEN_ENV] = scenario.token  # the stand-in's session, not a real secret
    db = args.db or os.path.join(tempfile.mkdtemp(prefix="pxls-demo-"), "demo.sqlite3")
    config = {"pxls": {"base_url": url, "db_path": db, "request_timeout": 5, "backoff_initial": 30}}
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
    stop = asyncio.Event()
    install_signal_handlers(stop)
    out = _open_output(args.out)
    try:
        await run_host(
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
    profiles = sum(1 for r in standin.requests if "profile" in r.path)
    log.info(
        "demo done: %d requests to the stand-in (%d profiles), at most %d in flight",
        len(standin.requests),
        profiles,
        standin.max_in_flight,
    )
    return 0


async def _read(args: argparse.Namespace) -> tuple[Store, dict[str, str], PxlsSettings]:
    config = load_config(args)
    settings = PxlsSettings.from_mapping(config["pxls"])
    store = await Store.open_readonly(settings.db_path)
    return store, await store.get_state(), settings


async def _status(args: argparse.Namespace) -> int:
    store, state, settings = await _read(args)
    try:
        status = await build_status(store, state, datetime.now(UTC), settings)
    finally:
        await store.close()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    sweep = status["sweep"]
    lines = [
        f"database        {status['db_path']}",
        f"canvas          {status['canvas'] or '-'} (first seen {status['canvas_first_seen']})",
        f"last pull       {status['last_pull_at'] or 'never'} "
        f"(stats.json generatedAt {status['last_generated_at'] or '-'})",
        f"next pull       {status['next_pull_at'] or 'at the next tick'}",
        f"users           {status['users']} total, {status['dirty']} dirty, "
        f"{status['awaiting_enrichment']} awaiting enrichment, {status['missing']} missing (404),"
        f" {status['never_enriched']} never enriched",
        f"outbox          {status['outbox']} deltas not yet collected",
        f"profiles        {'enabled' if status['profiles_enabled'] else 'DISABLED (PXLS_TOKEN)'}",
    ]
    if sweep["active"]:
        eta = timedelta(seconds=sweep["eta_seconds"])
        lines.append(
            f"sweep           #{sweep['number']}: {sweep['done']}/{sweep['total']} "
            f"checked, {sweep['remaining']} left, ETA {eta}"
        )
    else:
        lines.append(f"sweep           #{sweep['number']} finished {sweep['finished_at'] or '-'}")
    for key, st in status["keys"].items():
        state_text = (
            f"cooling until {st['cooling_until']}: {st['reason']}"
            if st.get("cooling_until")
            else "ready"
        )
        lines.append(
            f"key {key:<11} {state_text} ({st.get('consecutive_failures', 0)} consecutive failures)"
        )
    print("\n".join(lines))
    return 0


async def _export(args: argparse.Namespace) -> int:
    store, state, _ = await _read(args)
    try:
        users = await store.export_users()
    finally:
        await store.close()
    canvas = state.get("canvas")
    if not args.all_canvases:
        users = [u for u in users if u["canvas"] == canvas]
    buffer = io.StringIO()
    if args.format == "pxls-json":
        # the host's reader: PXLS_USERNAME String, DISCORD_TAG Option<String>,
        # FACTION Option<u64> (faction id), SCORE u64
        json.dump(
            {
                "users": [
                    {
                        "PXLS_USERNAME": u["name"],
                        "DISCORD_TAG": u["discord"],
                        "FACTION": u["faction_id"],
                        "SCORE": max(0, int(u["score"])),
                    }
                    for u in users
                ]
            },
            buffer,
            ensure_ascii=False,
        )
        buffer.write("\n")
    else:
        writer = csv.writer(buffer)
        writer.writerow(["pxls_username", *EXPORT_FIELDS[1:]])
        for u in users:
            writer.writerow([u[field] for field in EXPORT_FIELDS])
    if args.output in (None, "-"):
        sys.stdout.write(buffer.getvalue())
    else:
        await asyncio.to_thread(write_atomic, args.output, buffer.getvalue())
    return 0


def write_atomic(path: str, text: str) -> None:
    """Write via a temporary file and rename: readers never see half a file."""
    tmp = f"{path}.tmp"
    Path(tmp).write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuro-chat-elo-pxls",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML host config; the [pxls] section holds settings")
        p.add_argument("--db", help="database path (overrides [pxls] db_path)")

    run = sub.add_parser("run", help="run the standalone host (JSON-lines deltas on stdout)")
    common(run)
    run.add_argument("--base-url", help="pxls instance (default https://pxls.space)")
    run.add_argument("--out", help="append JSON-lines deltas to this file (default stdout)")
    # testing aids: run on a simulated clock shared with a stand-in in another process
    run.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    run.add_argument("--sim-start", help=argparse.SUPPRESS)
    run.add_argument("--sim-epoch", type=float, help=argparse.SUPPRESS)

    demo = sub.add_parser("demo", help="run the host against the local stand-in, accelerated")
    demo.add_argument("--db", help="database path (default: a new temporary file)")
    demo.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="simulated seconds per real second (default 3600)",
    )
    demo.add_argument("--hours", type=float, default=30.0, help="simulated hours to run")
    demo.add_argument("--users", type=int, default=150)
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--out", help="JSON-lines deltas to this file (default stdout)")

    status = sub.add_parser("status", help="show the source's state from its database")
    common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")

    export = sub.add_parser("export", help="export users and scores")
    common(export)
    export.add_argument("--format", choices=["pxls-json", "csv"], default="pxls-json")
    export.add_argument("--output", "-o", help="file to write (atomically); default stdout")
    export.add_argument(
        "--all-canvases",
        action="store_true",
        help="include users whose last score is on an older canvas",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    handler = {"run": _run, "demo": _demo, "status": _status, "export": _export}[args.command]
    try:
        return asyncio.run(handler(args))
    except (PxlsError, RuntimeError) as exc:
        print(f"neuro-chat-elo-pxls {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
