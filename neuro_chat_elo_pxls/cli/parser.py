"""The argparse tree of ``neuro-chat-elo-pxls``: the top-level options, then one
function per subcommand (``run``, ``demo``, ``status``, ``export``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..version import VERSION

if TYPE_CHECKING:
    #: the top-level parser's subparsers (what each subcommand is added to)
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def _positive_number(text: str) -> float:
    """A positive, finite number (seconds, a speed: argparse type)."""
    return _number(0, 10**9)(text)


#: the longest a run's hour-valued flags may say: a year (a date beyond 9999 overflows)
MAX_HOURS = 24 * 366
#: the demo's stand-in population, at most
MAX_USERS = 100_000


def _number(above: float, at_most: float) -> Callable[[str], float]:
    """argparse type: a finite number with ``above < value <= at_most`` (nan, inf and
    out-of-range values are a usage error, exit 2, not a traceback later)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not above < value <= at_most:  # (false for nan)
            what = "a positive number" if above == 0 else f"a number above {above:g}"
            raise argparse.ArgumentTypeError(f"expected {what} at most {at_most:g}, got {text!r}")
        return value

    return parse


def _count(least: int, most: int) -> Callable[[str], int]:
    """argparse type: a whole number from ``least`` to ``most``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {least} to {most}, got {text!r}"
            ) from None
        if not least <= value <= most:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {least} to {most}, got {text!r}"
            )
        return value

    return parse


def _epoch(text: str) -> float:
    """argparse type: a ``time.time()`` value (finite, not negative)."""
    return _number(-1e-9, 1e11)(text)


def _aware_time(text: str) -> str:
    """argparse type: an ISO 8601 time with its UTC offset (kept as text)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() is None:
        raise argparse.ArgumentTypeError(f"expected an ISO time with its offset, got {text!r}")
    return text


DESCRIPTION = """\
pxls.space canvas activity as a neuro-chat-elo score source.

  run     the standalone host against pxls.space (or --base-url)
  demo    the host against a local pxls.space stand-in, in simulated time
  status  the source's state and health, read from its database (--check: exit 1
          when unhealthy)
  export  users and scores as the host's pxls.json (or CSV)

Secrets come only from the environment: PXLS_TOKEN, PXLS_CF_AUTH (an instance
table [pxls.instances.NAME] reads PXLS_TOKEN_NAME, PXLS_CF_AUTH_NAME instead).
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


def _common(p: argparse.ArgumentParser) -> None:
    """--config and --db, for the subcommands that read a host config."""
    p.add_argument("--config", help="TOML host config; the [pxls] section holds settings")
    p.add_argument("--db", help="database path (overrides [pxls] db_path)")
    p.add_argument(
        "--instance",
        help="only this pxls instance of the config ([pxls.instances.NAME]; default: all "
        "for run, the only one for status and export)",
    )


def _add_run(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    run = sub.add_parser(
        "run", parents=[flags], help="run the standalone host (JSON-lines deltas on stdout)"
    )
    _common(run)
    run.add_argument("--base-url", help="pxls instance (default https://pxls.space)")
    run.add_argument("--out", help="append JSON-lines deltas to this file (default stdout)")
    run.add_argument(
        "--table-every",
        type=_number(0, MAX_HOURS),
        metavar="HOURS",
        help="log a running table of totals this often, in hours (default: never)",
    )
    # a trial: a simulated clock shared with the stand-in (`standin` prints these);
    # refused unless every instance is on this machine (127.0.0.1, localhost, ::1)
    run.add_argument(
        "--speed",
        type=_positive_number,
        default=1.0,
        help="trial only (against the local stand-in): simulated seconds per real second",
    )
    run.add_argument("--sim-start", type=_aware_time, help="trial only: the shared clock's start")
    run.add_argument("--sim-epoch", type=_epoch, help="trial only: the shared clock's epoch")


def _add_standin(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    standin = sub.add_parser(
        "standin",
        parents=[flags],
        help="a local pxls.space stand-in for a trial of run (127.0.0.1 only); it prints the "
        "run command that shares its clock",
    )
    standin.add_argument("--port", type=_count(0, 65535), default=8765, help="0: a free port")
    standin.add_argument("--users", type=_count(1, 100_000), default=300)
    standin.add_argument("--seed", type=int, default=1)
    standin.add_argument(
        "--speed",
        type=_number(0, 86400),
        default=60.0,
        help="simulated seconds per real second (default 60: an hour a minute)",
    )


def _add_demo(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo", parents=[flags], help="run the host against the local stand-in, in simulated time"
    )
    demo.add_argument("--db", help="database path (default: a new temporary file)")
    demo.add_argument(
        "--speed",
        type=_positive_number,
        default=None,
        help="simulated seconds per real second, e.g. 3600 to watch it happen (default: "
        "simulated time jumps to each next due time, so a seed gives the same run every time)",
    )
    demo.add_argument(
        "--hours",
        type=_number(0, MAX_HOURS),
        default=30.0,
        help=f"simulated hours to run, at most {MAX_HOURS} (default 30)",
    )
    demo.add_argument(
        "--users",
        type=_count(1, MAX_USERS),
        default=150,
        help=f"simulated users, 1 to {MAX_USERS} (default 150)",
    )
    demo.add_argument("--seed", type=int, default=1, help="scenario seed (default 1)")
    demo.add_argument(
        "--instances",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also an event canvas on another pxls site (older page template), as "
        "[pxls.instances] tables; every delta and source log line names its instance",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (database, deltas)"
    )
    demo.add_argument(
        "--hostile-names",
        action="store_true",
        help="adversarial faction tags and names (<b>, emoji, ']' in a tag), as the tests use",
    )
    demo.add_argument(
        "--out",
        help="JSON-lines deltas to this file (default: stdout, or a file beside the "
        "database when stdout is a terminal)",
    )


def _add_status(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    status = sub.add_parser(
        "status", parents=[flags], help="show the source's state and health from its database"
    )
    _common(status)
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


def _add_export(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    export = sub.add_parser("export", parents=[flags], help="export users and scores")
    _common(export)
    export.add_argument("--format", choices=["pxls-json", "csv"], default="pxls-json")
    export.add_argument("--output", "-o", help="file to write (atomically); default stdout")
    export.add_argument(
        "--all-canvases",
        action="store_true",
        help="include users whose last score is on an older canvas",
    )


def _add_opt_out(sub: Subcommands, flags: argparse.ArgumentParser) -> None:
    opt_out = sub.add_parser(
        "opt-out",
        parents=[flags],
        help="the database's opt-out list: people who asked not to be counted",
    )
    _common(opt_out)
    actions = opt_out.add_subparsers(dest="action", required=True)
    for action, text in (
        ("add", "list them: a running source withdraws and erases them at its next tick"),
        ("remove", "take them off the list: counted again, as new users"),
    ):
        one = actions.add_parser(action, help=text)
        one.add_argument("names", nargs="+", metavar="NAME", help="pxls user names")
    actions.add_parser("list", help="the list, with when each was added and applied")
    forget = sub.add_parser(
        "forget",
        parents=[flags],
        help="opt-out add and erase at once (a request to delete); one line of what it did",
    )
    _common(forget)
    forget.add_argument("names", nargs="+", metavar="NAME", help="pxls user names")


def build_parser() -> argparse.ArgumentParser:
    """The console script's parser: its commands and their options."""
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
    for add in (_add_run, _add_demo, _add_status, _add_export, _add_opt_out, _add_standin):
        add(sub, flags)
    return parser
