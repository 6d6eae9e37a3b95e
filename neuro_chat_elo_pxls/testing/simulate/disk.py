"""A power loss, modelled (:class:`PowerLoss`): what the disk keeps of the files a run
wrote when the machine loses power at some instant (the *cut*).

* A source's SQLite database (WAL mode). Under ``synchronous=FULL`` the WAL is fsynced
  at every commit: the database file and its WAL as they are at the cut are on disk (a
  transaction not yet committed has no commit frame and is not read back). Under
  ``NORMAL`` the WAL is fsynced only when a checkpoint moves it into the database file:
  the model keeps the worst that setting allows, the database file alone (every commit
  since the last checkpoint rolled back). The level is read from the source's own
  connection at the cut, so a store opened with another setting is judged by it.
  ``tests/test_power_loss.py`` checks the same promise against crash states built from
  a traced real run (every write not made durable by an fsync dropped, at every fsync).
* Any other file (``run --out``'s): what an ``os.fsync`` covered (recorded while a seed
  runs, by :func:`recording_fsync`) is kept; of the bytes after it, a prefix of any
  length (drawn), possibly cut inside a line.

Everything after the cut is thrown away: the cut's snapshot is restored once the
sources are gone, and the host starts new ones on it.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
from collections.abc import Iterator

from ...source import PxlsSource

#: ``PRAGMA synchronous`` values (SQLite's numbering)
FULL = 2

#: (device, inode) → the file's size at its last fsync, while :func:`recording_fsync`
synced: dict[tuple[int, int], int] = {}


@contextlib.contextmanager
def recording_fsync() -> Iterator[None]:
    """Inside: every ``os.fsync`` (the real one runs) records the size of the file it made
    durable in :data:`synced`. SQLite's own fsyncs are in C and not seen (its durability
    is modelled from its setting instead)."""
    real = os.fsync

    def fsync(fd: int) -> None:  # (the signature of os.fsync with an int descriptor)
        real(fd)
        info = os.fstat(fd)
        synced[(info.st_dev, info.st_ino)] = info.st_size

    synced.clear()
    os.fsync = fsync  # type: ignore[assignment]
    try:
        yield
    finally:
        os.fsync = real
        synced.clear()


def synced_size(path: str) -> int:
    """How much of ``path`` the last recorded fsync made durable (0: none)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return 0
    return min(synced.get((info.st_dev, info.st_ino), 0), info.st_size)


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


async def synchronous_level(source: PxlsSource) -> int | None:
    """``PRAGMA synchronous`` of the source's open connection (None: no database open).
    Inline SQLite: read on the connection object itself, at once (no event-loop step),
    between two statements of a transaction if need be, without the store's lock. With
    aiosqlite's worker thread (``sqlite="thread"``, whose interleavings are not
    reproducible anyway) it is asked through that thread."""
    store = source._db.store
    if store is None:
        return None
    conn = store._db._conn
    raw = conn._connection  # aiosqlite's sqlite3.Connection
    if raw is None:
        return None
    try:
        row = raw.execute("PRAGMA synchronous").fetchone()
    except sqlite3.ProgrammingError:  # (created in aiosqlite's thread)
        async with conn.execute("PRAGMA synchronous") as cursor:
            row = await cursor.fetchone()
    assert row is not None
    level: int = row[0]
    return level


class PowerLoss:
    """The disk's state at one cut: :meth:`database` and :meth:`file` take what
    survives, at the cut (synchronously: no event-loop step in between); :meth:`restore`
    puts it back once every process that had those files open is gone."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._kept: dict[str, bytes | None] = {}
        self._cuts: dict[str, int] = {}
        #: per database and file, what the cut kept (for the run's figures and replays)
        self.what: list[str] = []

    def database(self, path: str, level: int | None) -> None:
        """What survives of the database at ``path`` opened with ``PRAGMA synchronous``
        ``level`` (None: not open, every commit long on disk)."""
        durable_wal = level is None or level >= FULL
        self._kept[path] = _read(path)
        self._kept[path + "-wal"] = _read(path + "-wal") if durable_wal else None
        self._kept[path + "-shm"] = None  # (rebuilt from the WAL at the next open)
        self.what.append(
            f"{os.path.basename(path)}: {'all commits' if durable_wal else 'WAL lost'}"
        )

    def file(self, path: str) -> int:
        """What survives of a plain file: its fsynced part and a drawn prefix of the
        rest; the size it will have."""
        size = os.path.getsize(path) if os.path.exists(path) else 0
        floor = synced_size(path)
        cut = self.rng.randint(floor, size) if size > floor else size
        self._cuts[path] = cut
        self.what.append(
            f"{os.path.basename(path)}: {cut - floor} of {size - floor} unsynced bytes kept"
        )
        return cut

    def restore(self) -> None:
        """Put back what the cut kept (every connection to these files closed)."""
        for path, data in self._kept.items():
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
            if data is not None:
                with open(path, "wb") as handle:
                    handle.write(data)
        for path, cut in self._cuts.items():
            with open(path, "r+b") as handle:
                handle.truncate(cut)
