"""The engine state: what the source must remember across restarts, typed.

:class:`EngineState` is one ``@attrs.define`` value with ``datetime | None``
fields (aware UTC). The store loads it and saves it whole, in the same
transaction as the data it belongs to (a pull's state with the pull's scores);
:class:`StateKeeper` is the one write path: a change is persisted first and becomes
the in-memory copy as the save starts.

Each field has one writer (it calls :meth:`StateKeeper.commit` or ``propose`` with it):

============================================  ==========================================
``pull_due_at``, ``last_pull_at``,            ``jobs/pull.py`` (its clamp included)
``last_generated_at``
``canvas``, ``canvas_first_seen``,            ``jobs/canvas.py``
``canvas_changed_at``, ``canvas_history``
``sweep_number``, ``sweep_started_at``,       ``jobs/sweep.py``
``sweep_finished_at``, ``sweep_total``
``follow_round_finished_at``                  ``jobs/follow.py``
``last_error``, ``last_error_at``             ``engine/processor.py``
``credentials*``, ``instance``,               ``engine/core.py`` (at open)
``profiles_enabled``
``keys``                                      the queue's key states (:meth:`track_keys`);
                                              ``engine/core.py`` the restored ones at open
============================================  ==========================================

The key states live in the :class:`~.queue.CommandQueue` only: every save takes them
from there, and the in-memory copy holds none (``current.keys`` is empty; at open
the restored ones go to the queue). On disk it is the ``state`` table of text
key/value rows (times as ISO-8601 UTC text), so files written by earlier versions
load unchanged.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import attrs

from ..util.times import from_ts, ts


@attrs.frozen
class KeyState:
    """One cooldown key's state: the one type the queue runs on, the database keeps and
    ``status`` shows. A restarted source restores it (DESIGN 4: no restart lowers a
    pause), so a crash loop cannot hammer pxls.space.

    ``ready_at``: the key cools down until then (host time, UTC); ``paused_at``: when
    that pause began (a wrong clock's pause is pulled back to its own length);
    ``failures``: consecutive failures (the exponential backoff); ``auth_pauses``:
    consecutive 403/challenge pauses (a health problem until a request succeeds).
    Frozen: the queue owns the live ones and replaces them.
    """

    ready_at: datetime | None = None
    reason: str = ""
    failures: int = 0
    auth_pauses: int = 0
    paused_at: datetime | None = None

    def cooling(self, now: datetime) -> bool:
        """The key cools down at ``now`` (aware UTC)."""
        return self.ready_at is not None and now < self.ready_at

    def paused_for_auth(self, now: datetime) -> bool:
        """Paused after a 403 or a challenge (PXLS_TOKEN/PXLS_CF_AUTH need renewing)."""
        return self.auth_pauses > 0 and self.cooling(now)

    def to_json(self) -> dict[str, Any]:
        """The shape persisted in the ``keys`` row and shown by ``status``."""
        return {
            "cooling_until": ts(self.ready_at) if self.ready_at else None,
            "reason": self.reason,
            "consecutive_failures": self.failures,
            "auth_pauses": self.auth_pauses,
            "paused_at": ts(self.paused_at) if self.paused_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeyState:
        """The inverse of :meth:`to_json` (missing fields take the defaults)."""
        return cls(
            from_ts(data.get("cooling_until")),
            str(data.get("reason", "")),
            int(data.get("consecutive_failures", 0)),
            int(data.get("auth_pauses", 0)),
            from_ts(data.get("paused_at")),
        )


@attrs.define
class EngineState:
    """Timers, canvas and sweep progress, as persisted (see the module docstring for
    each field's writer). Every time is aware UTC host time, except
    ``last_generated_at`` (the accepted snapshot's ``generatedAt``)."""

    canvas: str | None = None
    canvas_first_seen: datetime | None = None
    canvas_changed_at: datetime | None = None  # when the current canvas replaced another
    canvas_history: list[str] = attrs.field(factory=list)  # earlier codes, oldest first
    last_generated_at: datetime | None = None
    last_pull_at: datetime | None = None
    pull_due_at: datetime | None = None
    sweep_number: int = 0
    sweep_started_at: datetime | None = None
    sweep_finished_at: datetime | None = None
    sweep_total: int = 0
    follow_round_finished_at: datetime | None = None
    #: every cooldown key (pacing, backoff, server waits, auth pauses) as saved from the
    #: queue, restored at open; empty in the keeper's in-memory copy
    keys: dict[str, KeyState] = attrs.field(factory=dict)
    #: salted fingerprints of the credentials the pauses were earned with (never the
    #: secrets), of the profile key's and of the leaderboard key's: a restart with other
    #: credentials may try that key at once
    credentials: str = ""
    leaderboard_credentials: str = ""
    credentials_salt: str = ""
    #: the pxls instance this database belongs to ("": not recorded yet): one
    #: database serves one instance, whose seqs it numbers
    instance: str = ""
    # the running source's view, for ``status`` from another process:
    profiles_enabled: bool | None = None  # had that source a PXLS_TOKEN? (None: unknown)
    last_error: str = ""  # the last failure's log line
    last_error_at: datetime | None = None

    @property
    def sweep_active(self) -> bool:
        """A sweep has started and not finished."""
        return self.sweep_started_at is not None and self.sweep_finished_at is None

    def to_rows(self) -> dict[str, str | None]:
        """The ``state`` table's rows (None: the key has no value)."""
        rows: dict[str, str | None] = {}
        for field in attrs.fields(EngineState):
            value = getattr(self, field.name)
            if field.name == "canvas_history":
                rows[field.name] = json.dumps(value)
            elif field.name == "keys":
                rows["keys"] = json.dumps(
                    {name: k.to_json() for name, k in value.items()}, sort_keys=True
                )
            elif isinstance(value, datetime):
                rows[field.name] = ts(value)
            elif isinstance(value, bool):
                rows[field.name] = "1" if value else "0"
            elif value is None:
                rows[field.name] = None
            else:
                rows[field.name] = str(value)
        return rows

    @classmethod
    def from_rows(cls, rows: Mapping[str, str | None]) -> EngineState:
        """Rows of the ``state`` table → state (missing keys take the defaults)."""
        kwargs: dict[str, Any] = {}
        for field in attrs.fields(EngineState):
            text = rows.get(field.name)
            if text is None:
                continue
            if field.name == "canvas_history":
                kwargs[field.name] = [str(code) for code in json.loads(text)]
            elif field.name == "keys":
                kwargs["keys"] = {
                    name: KeyState.from_json(k) for name, k in json.loads(text).items()
                }
            elif field.name in _INT_FIELDS:
                kwargs[field.name] = int(text)
            elif field.name in _TEXT_FIELDS:
                kwargs[field.name] = text
            elif field.name in _BOOL_FIELDS:
                kwargs[field.name] = text == "1"
            else:
                kwargs[field.name] = from_ts(text)
        return cls(**kwargs)


_INT_FIELDS = frozenset({"sweep_number", "sweep_total"})
_TEXT_FIELDS = frozenset(
    {
        "canvas",
        "last_error",
        "credentials",
        "leaderboard_credentials",
        "credentials_salt",
        "instance",
    }
)
_BOOL_FIELDS = frozenset({"profiles_enabled"})


@attrs.define
class StateKeeper:
    """Holds the committed :class:`EngineState` (without key states); the only way to
    change it.

    ``save`` persists a whole state (e.g. ``Store.save_state``). :meth:`commit` adopts
    the changed copy as the save starts and puts the previous one back if the save
    fails: memory and database agree once the save has ended, also for a caller
    cancelled while it runs (the shielded save still commits, and memory already holds
    what it commits). A store operation that writes the state in its own transaction
    takes :meth:`propose`'s copy and :meth:`adopt`\\ s it after.

    The key states are the queue's (:meth:`track_keys`): every proposal carries them as
    they are now, so no save writes older ones, and none is kept here (a save whose
    caller was cancelled commits without being adopted; the next save from the old
    copy overwrote a 429's wait, and a restart forgot it: simulator seed 23 with
    cancelled ticks).
    """

    current: EngineState = attrs.field(factory=EngineState)
    _live_keys: Callable[[], dict[str, KeyState]] | None = None

    def track_keys(self, live: Callable[[], dict[str, KeyState]]) -> None:
        """Take the key states from ``live`` (the queue's) in every proposal."""
        self._live_keys = live

    def propose(self, **changes: Any) -> EngineState:
        """A copy of the current state with ``changes`` (and the live key states);
        nothing is stored yet."""
        if self._live_keys is not None and "keys" not in changes:
            changes["keys"] = self._live_keys()
        return attrs.evolve(self.current, **changes)

    def adopt(self, state: EngineState) -> None:
        """Take ``state`` as current (it was committed by the caller; its key states
        are the queue's, and are not kept here)."""
        self.current = _without_keys(state)

    async def commit(self, save: Callable[[EngineState], Awaitable[None]], **changes: Any) -> None:
        """Persist the current state with ``changes`` through ``save``, and adopt it.

        ``save`` runs shielded (a store unit): a caller cancelled while it runs leaves
        it to commit, so the copy is adopted then too (simulator seed 3235: a cancelled
        tick's new canvas code was saved, not adopted, and a stale ``/info`` answering
        the old code then looked current). A save that fails puts the old copy back."""
        previous, proposed = self.current, self.propose(**changes)
        kept = self.current = _without_keys(proposed)
        try:
            await save(proposed)
        except asyncio.CancelledError:
            raise  # the save goes on and commits what memory now holds
        except BaseException:
            if self.current is kept:
                self.current = previous
            raise


def _without_keys(state: EngineState) -> EngineState:
    """``state`` with no key states (they live in the queue)."""
    return attrs.evolve(state, keys={}) if state.keys else state
