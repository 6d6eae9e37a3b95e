"""Console script ``neuro-chat-elo-pxls``: run, demo, status, export.

``run`` is the standalone host (:mod:`..host`) against pxls.space (or ``--base-url``);
``demo`` runs it against the local stand-in on an accelerated clock; ``status`` and
``export`` read the database without disturbing a running source.
Secrets come only from the environment (``PXLS_TOKEN``, ``PXLS_CF_AUTH``).

:func:`main` is the entry point; :mod:`.parser` holds the argparse tree,
:mod:`.config` what the commands share, :mod:`.run` ``run`` and ``demo``,
:mod:`.status` and :mod:`.export` the two commands that read the database.
"""

from __future__ import annotations

# isort: off
from . import hangup  # first: SIGHUP is recorded from here on, not fatal (issue 8)

# isort: on
import asyncio
import sqlite3
import sys
from collections.abc import Sequence

from ..errors import PxlsError
from ..host import OutputError
from ..util.logs import setup_logging
from .config import load_config
from .export import csv_cell, export_command
from .optout import forget_command, opt_out_command
from .parser import DESCRIPTION, build_parser
from .run import EXIT_OUTPUT_FAILED, demo_command, run_command
from .standin import standin_command
from .status import status_command

__all__ = ["DESCRIPTION", "EXIT_OUTPUT_FAILED", "build_parser", "csv_cell", "load_config", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: parse ``argv`` (default: the command line), set up logging,
    run the command; its exit status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    handler = {
        "run": run_command,
        "demo": demo_command,
        "status": status_command,
        "export": export_command,
        "opt-out": opt_out_command,
        "forget": forget_command,
        "standin": standin_command,
    }[args.command]
    try:
        return asyncio.run(handler(args))
    except BrokenPipeError:  # `status | head`: the reader has what it wanted; say nothing
        _quiet_stdout()
        return 0
    except OutputError as exc:  # the demo's deltas (run says it itself, and returns 75)
        print(f"neuro-chat-elo-pxls {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_OUTPUT_FAILED
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
    finally:
        hangup.hold()  # the loop's handlers are gone: a SIGHUP while exiting is harmless


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the pipe is closed, and flushing at exit would raise
    (and print) again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # (no real stdout: nothing to quiet)
        pass
