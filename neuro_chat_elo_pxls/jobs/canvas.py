"""The canvas the source believes current: what ``/info`` said, and the resets it saw.

Every ``/info`` answer (a pull's or a confirm's) comes here first
(:meth:`Canvas.stale`, then :meth:`Canvas.see`). Canvas codes only move forward:
an ``/info`` answering a code seen before, or a lower numeric one, is a stale cache,
not a reset. A new code is recorded (``canvas``, ``canvas_first_seen``,
``canvas_changed_at``, ``canvas_history`` of the engine state: this part is their
one writer). Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import attrs

from ..engine.clockguard import far_ahead, say_pulled_back
from ..engine.state import StateKeeper
from ..store.writer import Store
from ..util.logs import event
from ..util.text import shown

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many earlier canvas codes are remembered (codes only move forward).
CANVAS_HISTORY = 50


@attrs.define
class Canvas:
    """The current canvas code and its history; see the module docstring."""

    state: StateKeeper

    @property
    def code(self) -> str | None:
        """The canvas code believed current (None: none seen yet)."""
        return self.state.current.canvas

    @property
    def previous(self) -> str | None:
        """The canvas before the current one, as this source saw it (None: no reset
        seen)."""
        history = self.state.current.canvas_history
        return history[-1] if history else None

    def stale(self, code: str) -> str | None:
        """Why ``code`` (what ``/info`` just answered) is a stale cache, for the log
        line; None if it is current (the same code, or a reset to a new one). Sync,
        changes nothing."""
        current = self.state.current
        if code in current.canvas_history or _older(code, current.canvas):
            return (
                f"/info answered canvas {shown(code)} again after "
                f"{shown(current.canvas or '-')}: a stale cache, not a reset"
            )
        return None

    async def clamp(self, store: Store, now: datetime) -> None:
        """Pull back the canvas times a wrong host clock stamped after ``now``."""
        current = self.state.current
        limits = {"canvas_first_seen": timedelta(0), "canvas_changed_at": timedelta(0)}
        changes = far_ahead(current, limits, now)
        if changes:
            say_pulled_back(current, list(changes), now)
            await self.state.commit(store.save_state, **changes)

    async def see(self, store: Store, code: str, now: datetime) -> None:
        """``/info`` answered the current ``code`` at ``now``: a new code is recorded
        (committed at once, logged as the first sight or a reset). Raises what the
        store raises."""
        current = self.state.current
        previous = current.canvas
        if code == previous:
            return
        history = [*current.canvas_history, previous] if previous is not None else []
        await self.state.commit(
            store.save_state,
            canvas=code,
            canvas_first_seen=now,
            canvas_changed_at=now if previous is not None else None,
            canvas_history=history[-CANVAS_HISTORY:],
        )
        if previous is None:
            log.info("canvas %s first seen", shown(code), extra=event("canvas", canvas=code))
        else:
            log.warning(
                "canvas reset: %s -> %s; scores restart from 0 on the new canvas",
                shown(previous),
                shown(code),
                extra=event("canvas_reset", canvas=code, previous=previous),
            )


def _older(code: str, current: str | None) -> bool:
    """Numeric codes (pxls.space's are: 86, 87, ...) move up: a lower one is an earlier
    canvas even if this source never saw it (two resets between pulls, then a stale
    cache answering the one in between)."""
    return (
        current is not None
        and code.isascii()
        and code.isdigit()
        and current.isascii()
        and current.isdigit()
        and int(code) < int(current)
    )
