"""Database side of following people beyond the top 1000 (DESIGN 7).

``users.followed`` is a bit set: :data:`BY_CONFIG` (named in ``follow`` or
``follow_file``), :data:`BY_FACTION` (displayed faction in ``follow_factions``),
:data:`BY_HOST` (added with ``source.follow()``). A followed name nobody has seen
gets a row with no canvas and score 0: its first delta is its full canvas count,
once its profile was read. A profile's pixel count is an *observation*, applied
through the same accounting triggers as a toplist row, never over a newer one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import aiosqlite

from ..util.times import us
from .connection import Database, scalar

BY_CONFIG = 1
BY_FACTION = 2
BY_HOST = 4


def _names_json(names: Iterable[str]) -> str:
    return json.dumps(sorted(set(names)))


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
        self, observations: Sequence[tuple[int, int, datetime]], canvas: str
    ) -> int:
        """Apply profile pixel counts ``(user id, pixels, observed at)`` confirmed to be
        on ``canvas``; one transaction. A count older than the user's last applied
        observation on that canvas, or for a user whose first delta is held, is
        ignored. Returns the deltas written."""
        rows = [
            {"score": pixels, "canvas": canvas, "at": us(at), "id": user_id}
            for user_id, pixels, at in observations
        ]

        async def unit(conn: aiosqlite.Connection) -> int:
            before = await scalar(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")
            await conn.executemany(
                "UPDATE users SET score = :score, canvas = :canvas, observed_at = :at, "
                "observed_via = 'profile' WHERE id = :id AND held_score IS NULL "
                "AND (canvas IS NOT :canvas OR observed_at IS NULL OR observed_at < :at)",
                rows,
            )
            return await scalar(conn, "SELECT COUNT(*) FROM outbox WHERE seq > ?", before)

        return await self._db.write(unit)
