"""Database side of following people beyond the top 1000 (DESIGN 7).

``users.followed`` is a bit set: :data:`BY_CONFIG` (named in ``follow`` or
``follow_file``), :data:`BY_FACTION` (displayed faction in ``follow_factions``),
:data:`BY_HOST` (added with ``source.follow()``). A followed name nobody has seen
gets a row with no canvas and score 0: its first delta is its full canvas count,
once its profile was read. A profile's pixel count is an *observation*, applied
through the same accounting triggers as a toplist row, never over a newer one.

A count read with the all-time count is also a *pairing* (``pair_canvas``,
``pair_count``, ``pair_alltime``): the last such reading on a confirmed canvas. After
a reset the first paired reading on the new canvas settles the previous one (DESIGN
3, "the last pixels of a canvas count"): the person finished it at ``pair_count +
(alltime - pair_alltime) - count``, and the difference from what was credited there
goes out as one delta with ``via = 'reset'``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import aiosqlite

from ..pxls.parsing import MAX_PIXELS
from ..util.times import us
from .connection import Database, scalar

BY_CONFIG = 1
BY_FACTION = 2
BY_HOST = 4


def _names_json(names: Iterable[str]) -> str:
    return json.dumps(sorted(set(names)))


#: the count a paired person finished the previous canvas at (DESIGN 3)
_FINAL = "(u.pair_count + (:alltime - u.pair_alltime) - :score)"

#: one row on the previous canvas: what its final count adds to what was credited
#: there (negative: a rollback after the last observation); not for a held first
#: delta, never a count below 0 or above the bound, nothing when nothing changes
_SETTLE = f"""
INSERT INTO outbox (user, pxls_id, discord, faction_id, faction_tag, faction_name,
                    faction_color, delta, score, canvas, observed_at, via)
SELECT u.name, u.pxls_id, u.discord, u.faction_id, u.faction_tag, u.faction_name,
       u.faction_color, {_FINAL} - COALESCE(c.score, 0), {_FINAL}, u.pair_canvas, :at,
       'reset'
FROM users u LEFT JOIN credited c ON c.user = u.name AND c.canvas = u.pair_canvas
WHERE u.id = :id AND u.name = :name AND u.held_score IS NULL AND u.pair_canvas = :previous
    AND {_FINAL} BETWEEN 0 AND :bound AND {_FINAL} != COALESCE(c.score, 0)
"""

#: the reading becomes the pairing, on the confirmed canvas (a held user's pairing
#: on another canvas waits: its settlement waits for the release)
_PAIR = """
UPDATE users SET pair_canvas = :canvas, pair_count = :score, pair_alltime = :alltime
WHERE id = :id AND name = :name
    AND (held_score IS NULL OR pair_canvas IS NULL OR pair_canvas = :canvas)
"""


def _next_canvas(previous: str | None, canvas: str) -> str | None:
    """``previous`` if ``canvas`` directly follows it (numeric codes, as pxls.space's,
    must be one apart: a canvas the source never saw in between would be counted in the
    all-time difference), else None: nothing is settled."""
    if previous is None or previous == canvas:
        return None
    if previous.isascii() and previous.isdigit() and canvas.isascii() and canvas.isdigit():
        return previous if int(canvas) == int(previous) + 1 else None
    return previous


class FollowWrites:
    """Writes of the follow list and of profile observations (``Store.follows``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_followed_names(
        self, names: Iterable[str], bit: int, now: datetime, *, replace: bool = True
    ) -> int:
        """Give ``names`` the follow ``bit`` (unknown names get a row); with ``replace``
        take it from every other name. Returns how many names were new to the database."""
        names_json = await asyncio.to_thread(_names_json, names)  # 1M names: 2 s of CPU

        async def unit(conn: aiosqlite.Connection) -> int:
            if replace:
                await conn.execute(
                    "UPDATE users SET followed = followed & ~:bit WHERE followed & :bit != 0 "
                    "AND name NOT IN (SELECT value FROM json_each(:names))",
                    {"bit": bit, "names": names_json},
                )
            before = await scalar(conn, "SELECT COALESCE(MAX(id), 0) FROM users")
            await conn.execute(
                "INSERT INTO users (name, score, first_seen, last_seen, followed) "
                "SELECT value, 0, :now, 0, :bit FROM json_each(:names) "
                "WHERE value NOT IN (SELECT name FROM opted_out) "  # (DESIGN 10)
                "ON CONFLICT (name) DO UPDATE SET followed = followed | :bit",
                {"bit": bit, "names": names_json, "now": us(now)},
            )
            return await scalar(conn, "SELECT COUNT(*) FROM users WHERE id > ?", before)

        return await self._db.write(unit)

    async def set_faction_follow(self, factions: Sequence[int]) -> int:
        """Make ``BY_FACTION`` mean "displayed faction in ``factions``" for every user
        (a scan of the table: at open, when the setting may have changed)."""
        ids = json.dumps(list(factions))

        async def unit(conn: aiosqlite.Connection) -> int:
            cur = await conn.execute(
                "UPDATE users SET followed = (followed & ~:bit) | (CASE WHEN faction_id IN "
                "(SELECT value FROM json_each(:ids)) THEN :bit ELSE 0 END) "
                "WHERE (followed & :bit != 0) "
                "!= (faction_id IS NOT NULL AND faction_id IN (SELECT value FROM json_each(:ids)))",
                {"bit": BY_FACTION, "ids": ids},
            )
            return max(0, cur.rowcount)

        return await self._db.write(unit)

    async def pull_back_observations(self, now: datetime) -> int:
        """User times after ``now`` (a host clock that jumped back) become ``now``:
        observation times (they would block every later observation), profile check
        times (a followed user would not be due for a year) and the times a pull saw
        them (a followed user would count as in the toplist for a year: simulator seed
        1438). Returns the observations moved; users with sane times are untouched."""

        async def unit(conn: aiosqlite.Connection) -> int:
            params = {"now": us(now)}
            for column in ("last_profile_check", "last_seen", "first_seen"):
                await conn.execute(
                    f"UPDATE users SET {column} = :now WHERE {column} > :now", params
                )
            cur = await conn.execute(
                "UPDATE users SET observed_at = :now WHERE observed_at > :now "
                "AND observed_via = 'profile'",
                params,
            )
            return max(0, cur.rowcount)

        return await self._db.write(unit)

    async def apply_observations(
        self,
        observations: Sequence[tuple[int, str, int, datetime, int | None]],
        canvas: str,
        previous: str | None = None,
    ) -> int:
        """Apply profile pixel counts ``(user id, name, pixels, observed at, all-time or
        None)`` confirmed to be on ``canvas``; one transaction. A count applies only to
        the row that still has that id and name (a row erased meanwhile, by an opt-out
        or a rename merge, may have left its id to a new user). A count older than the
        user's last applied observation on that canvas, or for a user whose first delta
        is held, is ignored. A count with its all-time count first settles the
        ``previous`` canvas (the one before ``canvas``) of a person paired there, then
        becomes the person's pairing (see the module docstring). Returns the deltas
        written (settlements included)."""
        rows = [
            {"score": pixels, "canvas": canvas, "at": us(at), "id": user_id, "name": name}
            for user_id, name, pixels, at, _ in observations
        ]
        settled_on = _next_canvas(previous, canvas)
        pairs = [
            {
                "score": pixels,
                "canvas": canvas,
                "at": us(at),
                "id": user_id,
                "name": name,
                "alltime": alltime,
                "previous": settled_on,
                "bound": MAX_PIXELS,
            }
            for user_id, name, pixels, at, alltime in observations
            if alltime is not None
        ]

        async def unit(conn: aiosqlite.Connection) -> int:
            before = await scalar(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")
            if pairs:
                if settled_on is not None:
                    await conn.executemany(_SETTLE, pairs)
                await conn.executemany(_PAIR, pairs)
            await conn.executemany(
                "UPDATE users SET score = :score, canvas = :canvas, observed_at = :at, "
                "observed_via = 'profile' WHERE id = :id AND name = :name "
                "AND held_score IS NULL "
                "AND (canvas IS NOT :canvas OR observed_at IS NULL OR observed_at < :at)",
                rows,
            )
            return await scalar(conn, "SELECT COUNT(*) FROM outbox WHERE seq > ?", before)

        return await self._db.write(unit)
