"""SIGHUP is harmless from the console program's first lines on.

Importing the CLI and its dependencies takes about half a second; a SIGHUP in that
time (``systemctl reload`` right after a start, logrotate's ``postrotate``, a closed
terminal) used to end the process with status 129, which systemd does not restart.
This module imports nothing heavy and is the first thing :mod:`neuro_chat_elo_pxls.cli`
imports (the package's own ``__init__`` is lazy): at its import, a SIGHUP with the
default disposition (death) is recorded instead. ``run`` later installs its real handler
(reopen ``--out``); a SIGHUP recorded before means "reopen" at a moment when the file
has just been opened, so nothing more is done about it than saying so. An ignored
SIGHUP (``nohup``) or someone else's handler is left alone.
"""

from __future__ import annotations

import signal
from types import FrameType

#: SIGHUPs recorded while no real handler was installed (start-up, shutdown)
received = 0


def _record(signum: int, frame: FrameType | None) -> None:
    global received
    received += 1


def hold() -> bool:
    """Record SIGHUP instead of dying of it, if its disposition is the default one;
    True when this handler was installed (there is no SIGHUP on Windows, and only the
    main thread may set handlers)."""
    sig = getattr(signal, "SIGHUP", None)
    if sig is None:
        return False
    try:
        if signal.getsignal(sig) is not signal.SIG_DFL:
            return False
        signal.signal(sig, _record)
    except ValueError:  # not the main thread
        return False
    return True


def take() -> int:
    """The SIGHUPs recorded so far (the count starts again at 0)."""
    global received
    count, received = received, 0
    return count


hold()
