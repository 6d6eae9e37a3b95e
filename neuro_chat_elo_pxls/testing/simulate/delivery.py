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

from ...cli.config import OutputFile
from ...errors import MalformedDataError
from ...jsonlines import loads
from ...models import EloDelta

#: Per write, the chance of ENOSPC; per flush (once a batch), the chance of EIO.
WRITE_FAILS, FLUSH_FAILS = 0.001, 0.01


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


class OutFileReader:
    """Reads the out file's new whole lines, as a consumer of ``run --out`` would."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self.malformed: list[str] = []

    def new_deltas(self) -> list[EloDelta]:
        """The deltas of the whole lines appended since the last call (a line not yet
        ended is left for later; a malformed one is counted)."""
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        deltas = []
        for line in data[:end].splitlines():
            try:
                deltas.append(loads(line.decode("utf-8", errors="replace")))
            except MalformedDataError:
                self.malformed.append(line[:80].decode("utf-8", errors="replace"))
        return deltas
