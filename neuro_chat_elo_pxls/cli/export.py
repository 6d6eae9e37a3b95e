"""``export``: users and scores as the host's pxls.json (or CSV), streamed from the
database to stdout or written atomically to a file (``-o``)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError
from ..store.reader import StoreReader
from ..store.rows import EXPORT_FIELDS
from .config import open_database

#: first characters that make a spreadsheet read a cell as a formula
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a string starting like a formula
    gets a leading apostrophe (OWASP's advice for CSV injection)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


async def _write_export(reader: StoreReader, canvas: str | None, fmt: str, out: TextIO) -> None:
    """Stream the users from the database to ``out`` (memory stays flat). The rows'
    stream is closed on the way out, also when ``out`` fails (a closed pipe)."""
    async with contextlib.aclosing(reader.export_rows(canvas=canvas)) as rows:
        await _write_rows(rows, fmt, out)


async def _write_rows(rows: AsyncIterator[tuple[Any, ...]], fmt: str, out: TextIO) -> None:
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


async def export_command(args: argparse.Namespace) -> int:
    """``export``: the users of the current canvas (or all) as CSV or JSON lines; the
    exit status."""
    reader, state, _ = await open_database(args)
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
