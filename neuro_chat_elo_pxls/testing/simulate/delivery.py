"""The ``run`` host's delivery, modelled (:class:`ModelOut`, :class:`OutFileReader`): on
some seeds the model host delivers like ``neuro-chat-elo-pxls run --out FILE``: every
collect through the real :func:`~neuro_chat_elo_pxls.host.deliver` (``collect_deltas``,
the JSON lines written, flushed and fsynced, then ``acknowledge``) into the real
:class:`~neuro_chat_elo_pxls.cli.config.OutputFile` on a disk that fails now and then:
ENOSPC on a write, EIO on a flush (the unsynced lines then lost, kept, or cut inside
a line).
What ``run`` then does is modelled by the host: exit status 75 (restartable: the
failure must surface as :class:`~neuro_chat_elo_pxls.host.OutputError`), no last
delivery, ``on_shutdown``, and a restart (new sources, the file opened again, a partial
last line closed off). The file is what the checkers read: its whole lines are the
host's ledger (de-duplicated on ``(instance, seq)``, as its reader would).

No process is spawned: the file is a real file in the run's work directory, and the
failures are raised in the model's own write and flush (drawn from a generator of
their own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Callable
from typing import BinaryIO

from ...cli.config import OutputFile
from ...errors import MalformedDataError
from ...jsonlines import loads
from ...models import EloDelta

#: Per write, the chance of ENOSPC; per flush (once a batch), the chance of EIO.
WRITE_FAILS, FLUSH_FAILS = 0.001, 0.01


class PowerCut(BaseException):
    """The power went inside a flush (raised through ``deliver`` like nothing it could
    handle: nothing runs after a power loss)."""


class ModelOut:
    """``--out FILE`` (the real :class:`OutputFile`) on a disk that fails while
    ``failing()`` says so: a ``LineSink`` for :func:`~neuro_chat_elo_pxls.host.deliver`.

    What is written stays in a buffer until a flush that succeeds (then it is in the
    file, and ``deliver``'s fsync makes it durable). A failed write (ENOSPC) or flush
    (EIO) leaves the buffer unsynced: when ``run`` exits, any of it may have reached
    the disk, none, all, or a part cut inside a line (drawn)."""

    def __init__(self, path: str, rng: random.Random, failing: Callable[[], bool]) -> None:
        self.path, self.rng, self.failing = path, rng, failing
        self.file = OutputFile(path)
        self.pending: list[str] = []  # written, not yet flushed
        self.injected: list[str] = []  # the failures raised, and what the disk kept
        #: the power goes in the next flush, once the text is in the file (not fsynced)
        self.cut_at_flush = False

    def write(self, text: str, /) -> int:
        if self.failing() and self.rng.random() < WRITE_FAILS:
            self.injected.append("ENOSPC")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.pending.append(text)
        return len(text)

    def flush(self) -> None:
        if self.failing() and self.rng.random() < FLUSH_FAILS:
            self.injected.append("EIO")
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.file.write("".join(self.pending))
        self.pending.clear()
        self.file.flush()
        if self.cut_at_flush:
            self.cut_at_flush = False
            raise PowerCut

    def fileno(self) -> int:
        return self.file.fileno()

    def restart(self) -> None:
        """``run`` exits after a failure and is started again: of the unsynced text,
        the disk kept none, all or a part cut anywhere (a partial last line); the file
        is opened again on a fresh line (the real ``OutputFile`` closes a partial one
        off)."""
        unsynced = "".join(self.pending)
        self.pending.clear()
        if unsynced:
            kept = self.rng.choice(("none", "all", "cut"))
            if kept == "cut":
                unsynced = unsynced[: self.rng.randint(1, len(unsynced) - 1)]
                kept = "cut" if not unsynced.endswith("\n") else "all"
            self.injected.append(f"kept {kept}")
            if kept != "none":
                self.file.write(unsynced)
        with contextlib.suppress(OSError):  # (run's _close_output: nothing acknowledged)
            self.file.close()
        self.file = OutputFile(self.path)

    def lose_power(self) -> None:
        """The power went (the file's surviving part is :class:`~.disk.PowerLoss`'s):
        what was not yet flushed is gone with the process."""
        self.pending.clear()
        with contextlib.suppress(OSError):
            self.file.close()

    def writing_to(self, rotated: list[str]) -> str:
        """The name of the file the run writes to now: ``path``, or the name logrotate
        moved it to (one of ``rotated``) when the run was not yet told (SIGHUP)."""
        inode = os.fstat(self.file.fileno()).st_ino
        for name in (self.path, *reversed(rotated)):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(name).st_ino == inode:
                    return name
        return self.path

    def reopen(self, target: str, size: int) -> bool:
        """``run`` started again after the power went while it wrote to ``target``, of
        which the disk kept ``size`` bytes: ``path`` opened on a fresh line (closed off
        if it is ``target``); True when the power cut a line."""
        cut = False
        if size:
            with open(target, "rb") as handle:
                handle.seek(size - 1)
                cut = handle.read(1) != b"\n"
        self.file = OutputFile(self.path)
        return cut


class OutFileReader:
    """Reads the out file's new whole lines, as a consumer of ``run --out`` would, and
    follows it like ``tail -F``: a file moved away (logrotate) is read to its end, then
    the new file in its place from its start."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._handle: BinaryIO | None = None  # the file being read (by inode)
        self.offset = 0
        self.malformed: list[str] = []

    def truncated(self, inode: int, size: int) -> None:
        """The file ``inode`` now ends at ``size`` (a power loss): read on from there."""
        if self._handle is not None and os.fstat(self._handle.fileno()).st_ino == inode:
            self.offset = min(self.offset, size)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def new_deltas(self) -> list[EloDelta]:
        """The deltas of the whole lines appended since the last call (a line not yet
        ended is left for later; a malformed one is counted)."""
        deltas = self._whole_lines()
        if self._handle is not None and self._replaced():
            rest = self._rest()  # (a moved file grows no more: a partial line is malformed)
            if rest:
                self.malformed.append(rest[:80].decode("utf-8", errors="replace"))
            self.close()
            deltas += self._whole_lines()
        return deltas

    def _replaced(self) -> bool:
        assert self._handle is not None
        try:
            info = os.stat(self.path)
        except FileNotFoundError:  # moved away, the new one not yet opened
            return False
        return info.st_ino != os.fstat(self._handle.fileno()).st_ino

    def _rest(self) -> bytes:
        if self._handle is None:
            try:
                self._handle = open(self.path, "rb")  # noqa: SIM115 (kept open: tail -F)
            except FileNotFoundError:
                return b""
            self.offset = 0
        self._handle.seek(self.offset)
        return self._handle.read()

    def _whole_lines(self) -> list[EloDelta]:
        data = self._rest()
        end = data.rfind(b"\n") + 1
        self.offset += end
        deltas = []
        for line in data[:end].splitlines():
            try:
                deltas.append(loads(line.decode("utf-8", errors="replace")))
            except MalformedDataError:
                self.malformed.append(line[:80].decode("utf-8", errors="replace"))
        return deltas
