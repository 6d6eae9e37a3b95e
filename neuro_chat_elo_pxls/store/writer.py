"""``Store``: the SQLite cache (aiosqlite) of users, the delta outbox and the engine state.

Contracts:

* One writer: :meth:`Store.open` takes an exclusive lock on the database file
  (:mod:`.lockfile`), so a second source (any process, any name of the file) fails
  with :class:`StoreLockedError`. :class:`~.reader.StoreReader` (its base: a writer
  reads too) reads without the lock (``status``/``export`` while a source runs). Both
  run their units on one :class:`~.connection.Database`; the follow marks and profile
  observations are written by :attr:`Store.follows` (:mod:`.follows`) on the same one.
* WAL journal; every write is one ``BEGIN IMMEDIATE`` … ``COMMIT`` unit. A score
  update and the outbox rows it produces commit together (conservation across
  crashes). Units and reads are serialised and run shielded from the caller's
  cancellation: a cancelled hook never leaves a transaction open and never sees
  another unit's uncommitted rows. Handing the outbox out is :mod:`.outbox`'s.
* Schema and migrations live in :mod:`.schema`.
* Accounting: ``users.score`` is the last score handed out on ``users.canvas``; the
  sum of the outbox deltas of a user on a canvas always equals it. A new user's
  first score waits in ``held_*`` until released.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Self, TypeVar

import aiosqlite

from ..errors import StoreError
from ..models import Profile, Snapshot
from ..util.times import us
from . import optout, schema
from .connection import Database, scalar
from .follows import BY_FACTION, FollowWrites
from .lockfile import DatabaseLock
from .outbox import Outbox
from .reader import StoreReader
from .rows import (
    UPSERT_HOLD,
    UPSERT_RELEASE,
    IngestResult,
    ProfileOutcome,
    StateRows,
    UserRow,
    fetch_users,
    save_users,
)

T = TypeVar("T")

__all__ = ["Store", "StoreReader"]


class Store(StoreReader):
    """Read-write access for the one running source; :meth:`open` locks and migrates."""

    def __init__(self, conn: aiosqlite.Connection, path: str, lock: DatabaseLock | None) -> None:
        super().__init__(Database(conn, path))
        self.follows = FollowWrites(self._db)
        self._lock = lock
        self._outbox: Outbox | None = None

    @classmethod
    async def open(cls, path: str) -> Self:
        """Open (creating if needed) and migrate the database at ``path``."""
        lock = None
        if path != ":memory:":
            lock = DatabaseLock(path)
            lock.acquire()
        try:
            conn = await aiosqlite.connect(path, isolation_level=None)
        except BaseException as exc:
            if lock:
                lock.release()
            if isinstance(exc, Exception):
                raise StoreError(f"{path}: cannot open the database: {exc}") from exc
            raise
        store = cls(conn, path, lock)
        try:
            await store._setup()
        except BaseException:
            await store.close()
            raise
        return store

    async def _setup(self) -> None:
        await self._db.alone(lambda conn: schema.prepare(conn, self.path))

    async def close(self) -> None:
        """Close the connection, then release the lock. Idempotent."""
        await super().close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- state ---------------------------------------------------------------

    @staticmethod
    async def _write_state(conn: aiosqlite.Connection, state: StateRows) -> None:
        """The one write path of the engine state (inside the caller's transaction)."""
        await conn.executemany(
            "INSERT INTO state (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            list(state.to_rows().items()),
        )

    async def save_state(self, state: StateRows) -> None:
        """Commit ``state`` on its own."""
        await self._db.write(lambda conn: self._write_state(conn, state))

    # -- users ---------------------------------------------------------------

    async def ingest(
        self,
        canvas: str,
        snapshot: Snapshot,
        now: datetime,
        *,
        hold_new: bool,
        state: StateRows | None,
    ) -> IngestResult:
        """Apply one snapshot of ``canvas`` and save ``state``, in one transaction.

        One statement upserts the whole snapshot (``snapshot.toplist`` through
        ``json_each``; the event loop does no per-user work); the outbox rows come
        from the accounting triggers. Known user: new score (its delta is
        ``new - baseline``, baseline 0 on another canvas; zero deltas make no row).
        Held user: the held score is replaced. New user: held when ``hold_new``, else
        handed out at once. Every user seen is marked dirty. Users still held for an
        older canvas are handed out first. Nothing here scans the whole table: new
        rows take the ids after ``MAX(id)``, held users are counted on their index.
        """
        ctx = {"canvas": canvas, "obs": us(snapshot.generated_at), "now": us(now)}

        async def unit(conn: aiosqlite.Connection) -> IngestResult:
            await self._release(conn, "held_canvas != :canvas", ctx)
            before = await scalar(conn, "SELECT COALESCE(MAX(seq), 0) FROM outbox")
            max_id = await scalar(conn, "SELECT COALESCE(MAX(id), 0) FROM users")
            rows = snapshot.toplist.decode()
            await conn.execute(
                UPSERT_HOLD if hold_new else UPSERT_RELEASE,
                {
                    "rows": rows,
                    "canvas": canvas,
                    "obs": ctx["obs"],
                    "now": ctx["now"],
                },
            )
            if state is not None:
                await self._write_state(conn, state)
            deltas = await scalar(conn, "SELECT COUNT(*) FROM outbox WHERE seq > ?", before)
            new = await scalar(conn, "SELECT COUNT(*) FROM users WHERE id > ?", max_id)
            held = await scalar(conn, "SELECT COUNT(*) FROM users WHERE held_score IS NOT NULL")
            skipped = await scalar(
                conn,
                "SELECT COUNT(*) FROM json_each(?) WHERE key IN (SELECT name FROM opted_out)",
                rows,
            )
            # a held new user makes no delta yet; a released new user's delta is counted
            changed = deltas + (new if hold_new else 0) + skipped
            unchanged = max(0, len(snapshot) - changed)
            return IngestResult(len(snapshot), new, deltas, held, unchanged, skipped)

        return await self._db.write(unit)

    @staticmethod
    async def _release(conn: aiosqlite.Connection, where: str, params: dict[str, Any]) -> int:
        """Hand out held scores of the users matching ``where`` (a constant SQL filter).

        The held score becomes the handed-out score; the trigger writes its delta
        (``held - baseline``, baseline 0 on another canvas). Returns users released.
        """
        async with conn.execute(
            "UPDATE users SET score = held_score, canvas = held_canvas, "
            "observed_at = held_observed_at, held_score = NULL, held_canvas = NULL, "
            f"held_observed_at = NULL, held_since = NULL WHERE held_score IS NOT NULL "
            f"AND ({where})",
            params,
        ) as cur:
            return max(0, cur.rowcount)

    async def release_held(self, held_before: datetime | None) -> int:
        """Hand out held scores held since ``held_before`` or earlier (None: all).

        Returns how many users were released.
        """
        if held_before is None:
            return await self._db.write(lambda conn: self._release(conn, "1", {}))
        before = {"before": us(held_before)}
        return await self._db.write(
            lambda conn: self._release(conn, "held_since <= :before", before)
        )

    async def pull_back_holds(self, now: datetime) -> int:
        """Holds that began after ``now`` (a host clock that jumped back) begin now."""

        async def unit(conn: aiosqlite.Connection) -> int:
            cur = await conn.execute(
                "UPDATE users SET held_since = ? WHERE held_score IS NOT NULL AND held_since > ?",
                (us(now), us(now)),
            )
            return max(0, cur.rowcount)

        return await self._db.write(unit)

    async def apply_profile(
        self,
        user_id: int,
        profile: Profile,
        now: datetime,
        sweep: int,
        follow_factions: Sequence[int] = (),
        canvas: str | None = None,
    ) -> ProfileOutcome:
        """Store a fetched profile, merge a rename, release a held delta; one transaction.

        Rename: another row with the same ``pxls_id`` is the same person under an old
        name. The score moves: the old name's score on the same canvas is withdrawn
        with one delta (``-old``, score 0) and the new name is credited its full
        score, so per name *and* per person the deltas add up to the score, and the
        pixels are never counted twice. The old row is deleted. ``canvas``: the current
        canvas, where the new name's count is credited (a followed name added by the
        host has none of its own yet); the old name's score there is what moves.
        """

        async def unit(conn: aiosqlite.Connection) -> ProfileOutcome:
            users = await fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return ProfileOutcome(False, None, 0)
            user = users[0]
            renamed_from, corrected = await self._merge_rename(conn, user, profile, now, canvas)
            if profile.pxls_id is not None and user.pxls_id not in (None, profile.pxls_id):
                # another person holds the name now: their counts pair with nothing kept
                await conn.execute(
                    "UPDATE users SET pair_canvas = NULL, pair_count = NULL, "
                    "pair_alltime = NULL WHERE id = ?",
                    (user.id,),
                )
            faction = profile.faction
            user.pxls_id = profile.pxls_id if profile.pxls_id is not None else user.pxls_id
            user.discord = profile.discord
            user.faction_id = faction.id if faction else None
            user.faction_tag = faction.tag if faction else None
            user.faction_name = faction.name if faction else None
            user.faction_color = faction.color if faction else None
            user.swept_in = max(user.swept_in, sweep)
            await save_users(conn, [user])
            await conn.execute(
                "UPDATE users SET missing = 0, enriched = 1, last_profile_check = ?, "
                "followed = (followed & ~?) | (CASE WHEN faction_id IN "
                "(SELECT value FROM json_each(?)) THEN ? ELSE 0 END) WHERE id = ?",
                (us(now), BY_FACTION, json.dumps(list(follow_factions)), BY_FACTION, user.id),
            )
            await self._release(conn, "id = :id", {"id": user.id})
            return ProfileOutcome(user.held, renamed_from, corrected)

        return await self._db.write(unit)

    async def _merge_rename(
        self,
        conn: aiosqlite.Connection,
        user: UserRow,
        profile: Profile,
        now: datetime,
        current: str | None,
    ) -> tuple[str | None, int]:
        """Fold an older row with the same ``pxls_id`` into ``user``: (old name, pixels moved)."""
        if profile.pxls_id is None:
            return None, 0
        others = await fetch_users(
            conn, "WHERE pxls_id = ? AND id != ?", (profile.pxls_id, user.id)
        )
        if not others:
            return None, 0
        old = others[0]
        corrected = 0
        canvas = user.held_canvas if user.held else (current or user.canvas)
        if old.score and old.canvas is not None and old.canvas == canvas:
            corrected = old.score  # withdrawn by the trigger: -old, score 0
            # the withdrawal is observed where the move was: the held delta's own
            # observation, or this profile answer (host time: via "profile", not the old
            # row's "toplist", whose observed_at is a generatedAt)
            observed = us(now) if user.held_observed_at is None else user.held_observed_at
            await conn.execute(
                "UPDATE users SET score = 0, observed_at = ?, observed_via = CASE WHEN ? "
                "THEN 'profile' ELSE (SELECT observed_via FROM users WHERE id = ?) END "
                "WHERE id = ?",
                (observed, user.held_observed_at is None, user.id, old.id),
            )
        user.swept_in = max(user.swept_in, old.swept_in)
        await conn.execute("DELETE FROM users WHERE id = ?", (old.id,))
        return old.name, corrected

    async def mark_missing(self, user_id: int, now: datetime, sweep: int) -> bool:
        """The profile 404'd: mark the name missing, release a held delta. True if released.
        The name's pairing goes (whoever holds the name next is another person)."""

        async def unit(conn: aiosqlite.Connection) -> bool:
            users = await fetch_users(conn, "WHERE id = ?", (user_id,))
            if not users:
                return False
            await conn.execute(
                "UPDATE users SET missing = 1, last_profile_check = ?, "
                "swept_in = MAX(swept_in, ?), pair_canvas = NULL, pair_count = NULL, "
                "pair_alltime = NULL WHERE id = ?",
                (us(now), sweep, user_id),
            )
            await self._release(conn, "id = :id", {"id": user_id})
            return users[0].held

        return await self._db.write(unit)

    async def mark_swept(self, user_id: int, sweep: int) -> None:
        """Count a user as visited by ``sweep`` without a profile (gave up on it)."""
        await self._db.write(
            lambda conn: conn.execute(
                "UPDATE users SET swept_in = MAX(swept_in, ?) WHERE id = ?", (sweep, user_id)
            )
        )

    # -- opt-out (DESIGN 10) ----------------------------------------------------

    async def opt_out_add(self, names: Sequence[str], now: datetime) -> int:
        """Put ``names`` on the database's opt-out list (the CLI's). Returns how many
        were new; a running source withdraws and erases them at its next tick."""
        return await self._db.write(lambda conn: optout.add(conn, names, "cli", us(now)))

    async def opt_out_remove(self, names: Sequence[str]) -> int:
        """Take ``names`` off the database's list: they are counted again as new users.
        Returns how many entries went (a name the config lists stays opted out)."""
        return await self._db.write(lambda conn: optout.remove(conn, names))

    async def apply_opt_outs(
        self, config_names: Sequence[str] | None, now: datetime
    ) -> optout.Applied:
        """Withdraw and erase everyone on an opt-out list not yet applied, in one
        transaction (:func:`.optout.apply`); ``config_names`` None: the config's list
        did not change since the last call. Nothing to do costs one read, no write.
        After an erasure the WAL is checkpointed and truncated, so the erased bytes are
        gone from both files."""
        if config_names is None and not await self._db.read(optout.pending):
            return optout.Applied()
        applied = await self._db.write(lambda conn: optout.apply(conn, config_names, us(now)))
        if applied.people:
            await self._db.read(optout.checkpoint)
        return applied

    # -- outbox --------------------------------------------------------------

    def outbox(self, instance: str = "") -> Outbox:
        """The delivery of this database's outbox (:mod:`.outbox`), one per open store:
        made at the first call, with the instance every delta it hands out names."""
        if self._outbox is None:
            self._outbox = Outbox(self._db, instance)
        return self._outbox
