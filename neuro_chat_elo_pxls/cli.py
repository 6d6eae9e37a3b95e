"""Console script ``neuro-chat-elo-pxls``: run, demo, status, export.

``run`` is the standalone host (:mod:`.host`) against pxls.space (or ``--base-url``);
``demo`` runs it against the local stand-in on an accelerated clock; ``status`` and
``export`` read the database without disturbing a running source.
Secrets come only from the environment (``PXLS_TOKEN``, ``PXLS_CF_AUTH``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import os
import secrets
import sqlite3
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from .engine.state import SchedulerState
from .errors import ConfigError, PxlsError
from .host import OutputError, install_signal_handlers, run_host
from .ops.status import build_status, format_status
from .settings import TOKEN_ENV, PxlsSettings
from .store.reader import StoreReader
from .store.rows import EXPORT_FIELDS
from .util.clock import SimClock
from .util.logs import setup_logging
from .util.text import shown
from .version import VERSION

log = logging.getLogger("neuro_chat_elo_pxls")


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    """The host config: the TOML file (``--config``) with flags applied to ``[pxls]``.

    Nothing starts by accident: a config file must have a ``[pxls]`` section and no
    other top-level section (a typo such as ``[pxl]`` would otherwise mean the
    defaults, i.e. pxls.space); ``run`` without a config file needs ``--base-url``.
    """
    config: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        try:
            config = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
        unknown = sorted(set(config) - {"pxls"})
        if unknown:
            raise ConfigError(
                f"{path}: unknown top-level section(s) {', '.join(map(repr, unknown))}; "
                "the settings go in [pxls]"
            )
        if "pxls" not in config:
            raise ConfigError(f"{path}: no [pxls] section (the settings go in [pxls])")
        if not isinstance(config["pxls"], dict):
            raise ConfigError(f"{path}: pxls must be a [pxls] table, got {config['pxls']!r:.40}")
    elif args.command == "run" and getattr(args, "base_url", None) is None:
        raise ConfigError(
            "run needs --config FILE with a [pxls] section (or --base-url): nothing "
            "contacts pxls.space unless you say so"
        )
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


#: ``run``'s exit status when the deltas could not be written (EX_TEMPFAIL): a service
#: manager restarts it (2 means a configuration mistake, and is not restarted)
EXIT_OUTPUT_FAILED = 75


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


async def _demo(args: argparse.Namespace) -> int:
    from .testing.standin import PxlsStandIn, Scenario  # the stand-in only for the demo

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
    to_file = args.out is None and sys.stdout.isatty()  # keep the terminal for the story
    workdir = tempfile.mkdtemp(prefix="pxls-demo-") if to_file or not args.db else ""
    db = args.db or os.path.join(workdir, "demo.sqlite3")
    out_path = os.path.join(workdir, "deltas.jsonl") if to_file else args.out
    swarm = sorted(n for n, u in standin.users.items() if u.faction and u.faction[0] == 3680)
    config = _demo_config(url, db, swarm)
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
    out = _open_output(out_path)
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
    profiles = sum(1 for r in standin.requests if "profile" in r.path)
    log.info(
        "demo done: %d requests to the stand-in (%d profiles), at most %d in flight",
        len(standin.requests),
        profiles,
        standin.max_in_flight,
    )
    where = "stdout" if out_path in (None, "-") else out_path
    log.info("demo: %d JSON-lines deltas went to %s; the database is %s", totals.deltas, where, db)
    return 0


async def _read(args: argparse.Namespace) -> tuple[StoreReader, SchedulerState, PxlsSettings]:
    config = load_config(args)
    settings = PxlsSettings.from_mapping(config["pxls"])
    reader = await StoreReader.open(settings.db_path)
    try:
        return reader, await reader.load_state(), settings
    except BaseException:
        await reader.close()
        raise


async def _status(args: argparse.Namespace) -> int:
    """Print the status; with ``--check`` exit 1 when unhealthy (0 otherwise)."""
    reader, state, settings = await _read(args)
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


#: first characters that make a spreadsheet read a cell as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula
    gets a leading apostrophe (OWASP's advice for CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


async def _write_export(reader: StoreReader, canvas: str | None, fmt: str, out: TextIO) -> None:
    """Stream the users from the database to ``out`` (memory stays flat)."""
    rows = reader.export_rows(canvas=canvas)
    if fmt == "pxls-json":
        # the host's reader: PXLS_USERNAME String, DISCORD_TAG Option<String>,
        # FACTION Option<u64> (faction id), SCORE u64
        out.write('{"users":[')
        first = True
        async for name, _pid, discord, faction_id, _tag, _fname, score, _canvas in rows:
            user = {
                "PXLS_USERNAME": name,
                "DISCORD_TAG": discord,
                "FACTION": faction_id,
                "SCORE": max(0, int(score)),
            }
            out.write(("" if first else ",") + json.dumps(user, separators=(",", ":")))
            first = False
        out.write("]}\n")
        return
    writer = csv.writer(out)
    writer.writerow(["pxls_username", *EXPORT_FIELDS[1:]])
    async for row in rows:
        writer.writerow([csv_cell(value) for value in row])


#: how an export's temporary file is opened: created here or not at all (``O_EXCL``
#: also refuses a planted symlink), never through an existing name
_EXCLUSIVE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _temp_beside(target: Path) -> tuple[int, str]:
    """A new temporary file beside ``target`` (created exclusively), or a one-line
    :class:`ConfigError` naming ``target`` when it cannot be written there.

    The file is created with mode 0666 and the kernel applies the umask (or the
    directory's default ACL), like any file a tool creates: 0644 under umask 0022,
    0640 under 0027, so a batch running as another user can read the export. (No
    ``mkstemp``: it forces 0600. No reading of the umask either: ``os.umask`` is
    process-wide and racy to read.)
    """
    if target.is_dir():
        raise ConfigError(f"-o {target}: is a directory; give the file to write")
    if not target.parent.is_dir():
        raise ConfigError(f"-o {target}: the directory {target.parent} does not exist")
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, _EXCLUSIVE, 0o666), str(tmp)
        except FileExistsError:
            continue  # someone else's name (or a planted link): another name
        except OSError as exc:
            raise ConfigError(
                f"-o {target}: cannot create a file in {target.parent}: {exc.strerror or exc}"
            ) from exc
    raise ConfigError(f"-o {target}: cannot find a free temporary name in {target.parent}")


async def _export(args: argparse.Namespace) -> int:
    reader, state, _ = await _read(args)
    canvas = None if args.all_canvases else (state.canvas or "")
    async with reader:
        if args.output in (None, "-"):
            await _write_export(reader, canvas, args.format, sys.stdout)
            return 0
        target = Path(args.output)
        fd, tmp = _temp_beside(target)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
                await _write_export(reader, canvas, args.format, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return 0


def _positive_number(text: str) -> float:
    """A positive, finite number (seconds, hours: argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 10**9:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


DESCRIPTION = """\
pxls.space canvas activity as a neuro-chat-elo score source.

  run     the standalone host against pxls.space (or --base-url)
  demo    the host against a local pxls.space stand-in, on an accelerated clock
  status  the source's state and health, read from its database (--check: exit 1
          when unhealthy)
  export  users and scores as the host's pxls.json (or CSV)

Secrets come only from the environment: PXLS_TOKEN, PXLS_CF_AUTH.
"""


def _logging_flags(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--log-level/--log-format, accepted before and after the subcommand (after it,
    no defaults, so that the values given before are kept)."""
    parser.add_argument(
        "--log-level",
        default="INFO" if defaults else argparse.SUPPRESS,
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="default INFO",
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text" if defaults else argparse.SUPPRESS,
        help="text (default) or json: one JSON object per record, with event fields",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="neuro-chat-elo-pxls",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _logging_flags(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"%(prog)s {VERSION}")
    flags = argparse.ArgumentParser(add_help=False)
    _logging_flags(flags, defaults=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="TOML host config; the [pxls] section holds settings")
        p.add_argument("--db", help="database path (overrides [pxls] db_path)")

    run = sub.add_parser(
        "run", parents=[flags], help="run the standalone host (JSON-lines deltas on stdout)"
    )
    common(run)
    run.add_argument("--base-url", help="pxls instance (default https://pxls.space)")
    run.add_argument("--out", help="append JSON-lines deltas to this file (default stdout)")
    run.add_argument(
        "--table-every",
        type=_positive_number,
        metavar="HOURS",
        help="log a running table of totals this often, in hours (default: never)",
    )
    # testing aids: run on a simulated clock shared with a stand-in in another process
    run.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    run.add_argument("--sim-start", help=argparse.SUPPRESS)
    run.add_argument("--sim-epoch", type=float, help=argparse.SUPPRESS)

    demo = sub.add_parser(
        "demo", parents=[flags], help="run the host against the local stand-in, accelerated"
    )
    demo.add_argument("--db", help="database path (default: a new temporary file)")
    demo.add_argument(
        "--speed",
        type=float,
        default=3600.0,
        help="simulated seconds per real second (default 3600)",
    )
    demo.add_argument(
        "--hours", type=float, default=30.0, help="simulated hours to run (default 30)"
    )
    demo.add_argument("--users", type=int, default=150, help="simulated users (default 150)")
    demo.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    demo.add_argument(
        "--out",
        help="JSON-lines deltas to this file (default: stdout, or a file beside the "
        "database when stdout is a terminal)",
    )

    status = sub.add_parser(
        "status", parents=[flags], help="show the source's state and health from its database"
    )
    common(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--check",
        action="store_true",
        help="health check: print the problems and exit 1 if there are any, 0 if healthy",
    )
    status.add_argument(
        "--max-outbox-age",
        type=_positive_number,
        metavar="SECONDS",
        help="unhealthy when the oldest uncollected delta is older "
        "(default: enrichment_hold + 1 hour, i.e. 2 hours)",
    )

    export = sub.add_parser("export", parents=[flags], help="export users and scores")
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
    except sqlite3.DatabaseError as exc:  # e.g. a damaged page found while exporting
        print(
            f"neuro-chat-elo-pxls {args.command}: error: the database is damaged or "
            f"unreadable ({exc}); it is a cache: stop the source and delete it to start over",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:  # an output file or directory: name it, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(
            f"neuro-chat-elo-pxls {args.command}: error: {exc.strerror or exc}{where}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
