"""The single-writer lock: one source per database file, whatever name it is opened by."""

from __future__ import annotations

import fcntl
import os

from ..errors import StoreError, StoreLockedError


class DatabaseLock:
    """An exclusive, non-blocking ``flock`` on the database file itself.

    ``flock`` belongs to the file (its inode), not to the name: a second source that
    opens the same database through a symlink, a hard link or another relative path
    is refused too. ``flock`` and SQLite's POSIX record locks do not interact on
    Linux; the descriptor is closed only after SQLite has closed the file (closing a
    descriptor of the file releases this process's POSIX locks on it).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the file if needed and lock it; :class:`StoreLockedError` if taken."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(
                f"{self.path}: cannot open the database file ({exc.strerror}); "
                "check that its directory exists and is writable"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(
                f"{self.path}: the database is already in use by another pxls source "
                "(two sources on one database would corrupt its accounting)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Unlock and close. Idempotent."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def lock_holder(path: str) -> int | None:
    """The process id that holds a source's lock on the database at ``path``, read from
    Linux's ``/proc/locks`` (nothing is locked or opened to find out, so a source
    starting meanwhile is never refused); None when no process holds it, 0 when it
    cannot be told (no ``/proc/locks``, the file missing)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            table = handle.read()
    except OSError:
        return 0
    file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in table.splitlines():
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2146489 0 EOF"
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[5] == file_id:
            return int(parts[4]) if parts[4].isdigit() else 0
    return None
