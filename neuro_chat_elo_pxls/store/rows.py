"""The ``users`` and ``outbox`` tables as the code sees them: row types, the SQL of
the one-statement ingest, and outbox rows → :class:`EloDelta`.

Time columns hold integer microseconds since the Unix epoch (see :mod:`.times`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

import aiosqlite
import attrs

from ..models import EloDelta, Faction
from ..util.times import EPOCH


class StateRows(Protocol):
    """What the store persists as the engine state: its rows of the ``state`` table
    (``EngineState``; the store does not know the type)."""

    def to_rows(self) -> dict[str, str | None]:
        """The ``state`` table's rows (None: the key has no value)."""
        ...


USER_COLS = (
    "id, name, pxls_id, discord, faction_id, faction_tag, faction_name, faction_color, "
    "score, canvas, held_score, held_canvas, held_observed_at, held_since, swept_in"
)
#: the columns :meth:`Store.export_users` returns, in order
EXPORT_FIELDS = (
    "name",
    "pxls_id",
    "discord",
    "faction_id",
    "faction_tag",
    "faction_name",
    "score",
    "canvas",
)
#: a user seen in a pull since its last profile check (the sweep visits these first)
DIRTY = "(last_profile_check IS NULL OR last_seen > last_profile_check)"
#: the whole snapshot in one statement: ``:rows`` a JSON object {name: pixels}
#: (json_each yields key = name, value = pixels, in toplist order), ``:canvas``,
#: ``:obs`` generatedAt, ``:now`` host time (named: numbered parameters bound from a
#: sequence are deprecated since Python 3.12). One statement instead of
#: ``executemany``: SQLite walks the rows in C and sets the accounting triggers up
#: once, not once per row (566 → 407 ms for 100,000 changed rows when measured; see
#: benchmarks/RESULTS.md).
_UPSERT_SET = (
    "ON CONFLICT (name) DO UPDATE SET "
    "score = CASE WHEN held_score IS NULL THEN excluded.score ELSE score END, "
    "canvas = CASE WHEN held_score IS NULL THEN :canvas ELSE canvas END, "
    "observed_at = CASE WHEN held_score IS NULL THEN :obs ELSE observed_at END, "
    "observed_via = CASE WHEN held_score IS NULL THEN 'toplist' ELSE observed_via END, "
    "held_score = CASE WHEN held_score IS NULL THEN NULL ELSE excluded.score END, "
    "held_observed_at = CASE WHEN held_score IS NULL THEN NULL ELSE :obs END, "
    "last_seen = :now "
    # an observation older than the last one applied to this user is ignored (a
    # profile answer may be newer than the snapshot)
    "WHERE held_score IS NOT NULL OR canvas IS NOT :canvas OR observed_at IS NULL "
    "OR observed_at <= :obs"
)
#: (both upserts skip the rows of people on an opt-out list: DESIGN 10)
UPSERT_HOLD = (
    "INSERT INTO users (name, score, held_score, held_canvas, held_observed_at, held_since, "
    "first_seen, last_seen) SELECT key, 0, value, :canvas, :obs, :now, :now, :now "
    "FROM json_each(:rows) WHERE key NOT IN (SELECT name FROM opted_out) "
    + _UPSERT_SET.replace("excluded.score", "excluded.held_score")
)
#: a new user's first score is handed out at once (no profiles)
UPSERT_RELEASE = (
    "INSERT INTO users (name, score, canvas, observed_at, first_seen, last_seen) "
    "SELECT key, value, :canvas, :obs, :now, :now FROM json_each(:rows) "
    "WHERE key NOT IN (SELECT name FROM opted_out) " + _UPSERT_SET
)


@attrs.define
class UserRow:
    """A user as the accounting code sees it (mutable working copy)."""

    id: int
    name: str
    pxls_id: int | None
    discord: str | None
    faction_id: int | None
    faction_tag: str | None
    faction_name: str | None
    faction_color: int | None
    score: int
    canvas: str | None
    held_score: int | None
    held_canvas: str | None
    held_observed_at: int | None
    held_since: int | None
    swept_in: int

    @property
    def held(self) -> bool:
        """The user's first delta is held until the profile is read."""
        return self.held_score is not None


@attrs.frozen
class IngestResult:
    """What one snapshot did: counts for the pull's log line."""

    seen: int
    new: int
    deltas: int
    held: int
    unchanged: int
    #: rows of people on an opt-out list: skipped, nothing of theirs written
    opted_out: int = 0


@attrs.frozen
class ProfileOutcome:
    """What applying a profile did. ``renamed_from``: the old name merged into this user."""

    released: bool
    renamed_from: str | None
    corrected: int


async def save_users(conn: aiosqlite.Connection, users: Iterable[UserRow]) -> None:
    """Write every column of ``users`` back (inside the caller's transaction)."""
    await conn.executemany(
        "UPDATE users SET name=?, pxls_id=?, discord=?, faction_id=?, faction_tag=?, "
        "faction_name=?, faction_color=?, score=?, canvas=?, held_score=?, held_canvas=?, "
        "held_observed_at=?, held_since=?, swept_in=? WHERE id=?",
        [
            (
                u.name,
                u.pxls_id,
                u.discord,
                u.faction_id,
                u.faction_tag,
                u.faction_name,
                u.faction_color,
                u.score,
                u.canvas,
                u.held_score,
                u.held_canvas,
                u.held_observed_at,
                u.held_since,
                u.swept_in,
                u.id,
            )
            for u in users
        ],
    )


async def outbox_rows(
    conn: aiosqlite.Connection, after_seq: int, instance: str = ""
) -> list[EloDelta]:
    """The outbox's deltas with ``seq`` above ``after_seq``, in seq order, as
    :class:`EloDelta` of ``instance`` (read only; the caller's unit)."""
    async with conn.execute(
        "SELECT seq, user, pxls_id, discord, faction_id, faction_tag, faction_name, "
        "faction_color, delta, score, canvas, observed_at, via FROM outbox WHERE seq > ? "
        "ORDER BY seq",
        (after_seq,),
    ) as cur:
        # rows become EloDeltas as SQLite yields them, in aiosqlite's thread: the
        # event loop is not held (~0.1 s per 100,000) and no list of row tuples
        # is built only to be thrown away
        cur.row_factory = _delta_factory(instance)  # type: ignore[assignment]
        return cast(list[EloDelta], await cur.fetchall())


def _delta_factory(instance: str) -> Callable[[sqlite3.Cursor, tuple[Any, ...]], EloDelta]:
    """A row factory: outbox row → EloDelta. Times and factions repeat a lot: each
    is built once per call of the factory."""
    times: dict[int, datetime] = {}
    factions: dict[tuple[Any, ...], Faction] = {}

    def make(_cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> EloDelta:
        seq, user, pxls_id, discord, fid, ftag, fname, fcolor, delta, score, canvas, obs, via = row
        observed_at = times.get(obs)
        if observed_at is None:
            observed_at = times[obs] = EPOCH + timedelta(microseconds=obs)
        faction = None
        if fid is not None:
            key = (fid, ftag, fname, fcolor)
            faction = factions.get(key)
            if faction is None:
                faction = factions[key] = Faction(fid, ftag or "", fname or "", fcolor)
        return EloDelta(
            seq, user, pxls_id, discord, faction, delta, score, canvas, observed_at, via, instance
        )

    return make


async def fetch_users(
    conn: aiosqlite.Connection, where: str, params: Sequence[Any] = ()
) -> list[UserRow]:
    """Users matching ``where`` (an SQL clause of module constants; values bound)."""
    async with conn.execute(f"SELECT {USER_COLS} FROM users {where}", params) as cur:
        return [UserRow(*row) for row in await cur.fetchall()]
