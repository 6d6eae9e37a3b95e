"""Following the people the host counts, beyond the top 1000 (DESIGN 7).

Followed are the names in ``follow`` and ``follow_file`` (re-read when it
changes), users whose displayed faction is in ``follow_factions``, and names a host
adds with ``await source.follow(names)``. Followed users absent from the latest
accepted toplist get their profile read every ``follow_interval`` (users in the
toplist are covered by the pull); each read's pixel count becomes an observation
(:mod:`.observations`). At most :data:`FOLLOW_WINDOW` follow commands are queued
(the rest wait in the database), so memory stays flat with 100,000 followed users.
One log line per round; one warning when the profile demand exceeds the capacity.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Iterable
from datetime import datetime

import attrs

from ..engine.queue import CommandQueue, Key, Kind
from ..engine.state import StateKeeper
from ..engine.window import Window
from ..pxls.parsing import is_valid_username
from ..settings import PxlsSettings
from ..store.follows import BY_CONFIG, BY_HOST
from ..store.writer import Store
from ..util.logs import event
from ..util.text import shown
from ..util.times import fmt_duration, us
from .profiles import Visit

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many follow commands wait in the queue at once.
FOLLOW_WINDOW = 16
_WINDOW = Window(Kind.FOLLOW, FOLLOW_WINDOW)


#: A follow file is read only up to this size (a bigger one keeps the last good list).
FOLLOW_FILE_MAX_BYTES = 16 * 1024 * 1024
#: How many invalid names a report shows (the rest are counted).
SHOWN_INVALID = 5


class FollowFileError(ValueError):
    """The follow file is not a regular file, is too big, or is not UTF-8 text."""


def read_follow_file(path: str, limit: int | None = None) -> list[str]:
    """Names in ``path``: one per line; ``#`` starts a comment; blank lines skipped.

    Blocking (call it off the event loop). Only a regular file of at most ``limit``
    bytes (default :data:`FOLLOW_FILE_MAX_BYTES`) is read: a FIFO, a device
    (``/dev/zero``) or a directory raises :class:`FollowFileError` without waiting or
    reading (opened non-blocking, checked with ``fstat`` on the opened file, so a
    swapped name cannot slip through), as do more than ``limit`` bytes and bytes that
    are not UTF-8. OSError if unreadable.
    """
    limit = FOLLOW_FILE_MAX_BYTES if limit is None else limit
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FollowFileError("not a regular file")
        if st.st_size > limit:
            raise FollowFileError(f"{st.st_size} bytes, over the cap of {limit}")
        chunks, size = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise FollowFileError(f"over the cap of {limit} bytes")
    finally:
        os.close(fd)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FollowFileError(f"not UTF-8 text (byte {exc.start})") from None
    return [n for line in text.splitlines() if (n := line.split("#", 1)[0].strip())]


def split_valid(names: Iterable[str]) -> tuple[list[str], int, list[str]]:
    """``names`` → (the valid pxls names, how many were invalid, the first few invalid).
    Pure and blocking on a big list: run it off the event loop."""
    valid: list[str] = []
    invalid, shown_names = 0, list[str]()
    for name in names:
        if is_valid_username(name):
            valid.append(name)
        else:
            invalid += 1
            if len(shown_names) < SHOWN_INVALID:
                shown_names.append(shown(repr(name)[:40]))
    return valid, invalid, shown_names


def profile_demand_per_hour(settings: PxlsSettings, users: int, outside: int) -> float:
    """Profile requests per hour the settings ask for: refreshes of the ``outside``
    followed users absent from the toplist, plus a sweep of all ``users``."""
    return outside * 3600 / settings.follow_interval.total_seconds() + (
        users * 3600 / settings.sweep_interval.total_seconds()
    )


def profile_capacity_per_hour(settings: PxlsSettings) -> float:
    """At most one profile request per ``profile_cooldown``."""
    return 3600 / settings.profile_cooldown.total_seconds()


@attrs.define
class Round:
    """One follow round's figures (for its log line); ``started_at`` host time."""

    started_at: datetime
    refreshed: int = 0
    changed: int = 0
    not_found: int = 0


@attrs.define
class FollowList:
    """Who is followed, and their refreshes; see the module docstring. It plans FOLLOW
    commands; the tick runs them as profile reads (:mod:`.profiles`) and hands it each
    read (:meth:`count`). Its state is its own (in memory) but for
    ``follow_round_finished_at`` of the engine state, whose one writer it is."""

    settings: PxlsSettings
    state: StateKeeper
    _round: Round | None = None
    _backlog: bool = False  # maybe more due than queued
    _wake: datetime | None = None  # the next followed user due, when in the future
    _synced: bool = False
    _file_stamp: tuple[float, int] | None = None
    _file_names: list[str] = attrs.field(factory=list)  # the file's last good list
    _file_problem: str | None = None  # what is wrong with the file (reported once)
    _file_read: bool = False  # read well once since the start
    _invalid: dict[str, tuple[int, list[str]]] = attrs.field(factory=dict)  # last reports
    _given_up: set[int] = attrs.field(factory=set)  # failed for good: next round again
    _warned_demand: bool = False
    #: the last refill found nobody due: (toplist, names version) it looked with, and
    #: when the next followed user becomes due; no query until one of them changes
    _quiet: tuple[int | None, int] | None = None
    _next: datetime | None = None
    _version: int = 0  # bumped when who is followed (or skipped) may have changed

    async def plan(self, store: Store, queue: CommandQueue, now: datetime, held: bool) -> bool:
        """Sync who is followed (always: names a host added with ``source.follow()``
        live in the database), then, unless ``held``, queue due refreshes. True if
        refreshes wait (queued, or more due than queued). Raises what the store raises."""
        await self.sync(store, now)
        if not held:
            await self.refill(store, queue, now)
        # a due time already past is covered by the queued commands (or belongs to
        # users given up on until the next round): only a future one wakes the host
        nxt = self._next if self._quiet is not None else None
        self._wake = nxt if nxt is not None and nxt > now else None
        return bool(queue.count(Kind.FOLLOW)) or self._backlog

    def next_due(self, now: datetime, queue: CommandQueue) -> datetime | None:
        """The earliest host time a refresh can be queued (None: none known)."""
        ready = max(now, queue.state(Key.PROFILE).ready_at or now)
        times = [ready] if self._backlog else []
        if self._wake is not None:
            times.append(max(self._wake, ready))
        return min(times) if times else None

    def gave_up(self, user_id: int) -> None:
        """Reading this profile failed for good: skip the user until the next round."""
        self._given_up.add(user_id)

    def count(self, visit: Visit) -> None:
        """A profile was read: a follow refresh counts in the round's figures."""
        if visit.command.kind is Kind.FOLLOW and self._round is not None:
            self._round.refreshed += 1
            self._round.changed += visit.changed
            self._round.not_found += visit.profile is None

    async def _valid(self, names: Iterable[str], where: str) -> list[str]:
        """The valid names (checked off the loop); the invalid are reported as one line
        (a count and the first few), not again while the same ones come back."""
        valid, invalid, first = await asyncio.to_thread(split_valid, names)
        report = (invalid, first)
        if invalid and self._invalid.get(where) != report:
            log.warning(
                "follow: %s lists %d invalid names (a pxls name is [A-Za-z0-9_-]{1,32}), "
                "skipped: %s%s",
                where,
                invalid,
                ", ".join(first),
                ", ..." if invalid > len(first) else "",
            )
        self._invalid[where] = report
        return valid

    def _file_trouble(self, path: str, problem: str | None) -> None:
        """Say once what is wrong with the follow file, and when it is good again."""
        if problem is not None and problem != self._file_problem:
            log.warning(
                "follow_file %s cannot be used (%s): the last good list (%d names) stays "
                "followed until it can",
                shown(path),
                problem,
                len(self._file_names),
            )
        elif problem is None and self._file_problem is not None:
            log.info("follow_file %s is readable again", shown(path))
        self._file_problem = problem

    async def sync(self, store: Store, now: datetime) -> None:
        """Bring the follow marks in line with the settings and the file (cheap when
        nothing changed: one ``stat`` of the file)."""
        path = self.settings.follow_file
        stamp = None
        if path is not None:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime, st.st_size)
            except OSError as exc:
                self._file_trouble(path, exc.strerror or str(exc))
        if self._synced and stamp == self._file_stamp:
            return
        names = await self._valid(self.settings.follow, "follow")
        if path is not None and stamp is not None:
            try:
                listed = await asyncio.to_thread(read_follow_file, path)
            except (OSError, FollowFileError) as exc:
                self._file_trouble(path, getattr(exc, "strerror", None) or str(exc))
            else:
                self._file_names = await self._valid(listed, f"follow_file {shown(path)}")
                self._file_trouble(path, None)
                self._file_read = True
        names += self._file_names  # a bad file keeps the last good list
        # a file not read since the start: its last good list is the database's marks,
        # so names are added and none taken away (a restart on a bad file unfollows none)
        new = await store.follows.set_followed_names(
            names, BY_CONFIG, now, replace=path is None or self._file_read
        )
        self._version += 1
        if not self._synced:
            await store.follows.set_faction_follow(self.settings.follow_factions)
        self._synced, self._file_stamp = True, stamp
        if not (names or path or self.settings.follow_factions):
            return
        log.info(
            "follow: %d names from the config%s (%d not seen before), factions %s",
            len(set(names)),
            f" and {path}" if path else "",
            new,
            list(self.settings.follow_factions) or "-",
        )

    async def add(self, store: Store, names: Iterable[str], now: datetime) -> int:
        """Follow ``names`` as well (the host's ``source.follow``); invalid ones are
        reported once and skipped. Returns how many valid names were given."""
        valid = await self._valid(names, "source.follow()")
        if valid:
            await store.follows.set_followed_names(valid, BY_HOST, now, replace=False)
            self._version += 1
        return len(valid)

    def _listed_before(self) -> int | None:
        last = self.state.current.last_pull_at
        return None if last is None else us(last)

    async def refill(self, store: Store, queue: CommandQueue, now: datetime) -> None:
        """Keep up to FOLLOW_WINDOW due refreshes queued; start and finish rounds."""
        queued = queue.count(Kind.FOLLOW)
        room = _WINDOW.room(queue)
        if not room:
            return
        quiet = (self._listed_before(), self._version)
        if not queued and self._quiet == quiet and (self._next is None or now < self._next):
            # nobody due before self._next (a pull or a change of names asks again)
            if (
                self._round is not None
                and now - self._round.started_at >= self.settings.follow_interval
            ):
                await self._finish(store, now)
            return
        exclude = self._given_up | _WINDOW.queued_ids(queue)
        cutoff = now - self.settings.follow_interval
        ids = await store.follow_due_ids(self._listed_before(), cutoff, room, exclude)
        self._backlog = _WINDOW.push(queue, ids, room)
        self._quiet = None
        if not ids and not queued:
            self._quiet = quiet
            self._next = await self._next_due(store)
        if ids and self._round is None:
            self._round = Round(now)
            await self._check_demand(store)
        elif (
            not ids
            and not queued
            and self._round is not None
            and now - self._round.started_at >= self.settings.follow_interval
        ):  # a round: every followed user outside the toplist refreshed once
            await self._finish(store, now)

    async def _finish(self, store: Store, now: datetime) -> None:
        assert self._round is not None
        r, self._round = self._round, None
        self._given_up.clear()
        self._version += 1
        await self.state.commit(store.save_state, follow_round_finished_at=now)
        log.info(
            "follow round: %d followed users outside the toplist refreshed, %d counts "
            "changed, %d not found (renamed or deleted?), took %s",
            r.refreshed,
            r.changed,
            r.not_found,
            fmt_duration(now - r.started_at),
            extra=event(
                "follow_round",
                refreshed=r.refreshed,
                changed=r.changed,
                not_found=r.not_found,
                took_s=(now - r.started_at).total_seconds(),
            ),
        )

    async def _check_demand(self, store: Store) -> None:
        if self._warned_demand:
            return
        counts = await store.follow_counts(self._listed_before())
        users = (await store.counts())["users"]
        demand = profile_demand_per_hour(self.settings, users, counts["outside_toplist"])
        capacity = profile_capacity_per_hour(self.settings)
        if demand > capacity:
            self._warned_demand = True
            log.warning(
                "profile demand %.0f requests/h exceeds the capacity %.0f/h (profile_cooldown "
                "%gs): %d followed users outside the toplist every %s plus a sweep of %d users "
                "every %s. New users' enrichment comes first, then follow refreshes (they "
                "slip: each is refreshed less often than follow_interval), the sweep last.",
                demand,
                capacity,
                self.settings.profile_cooldown.total_seconds(),
                counts["outside_toplist"],
                fmt_duration(self.settings.follow_interval),
                users,
                fmt_duration(self.settings.sweep_interval),
            )

    async def _next_due(self, store: Store) -> datetime | None:
        oldest = await store.follow_oldest_check(self._listed_before())
        return None if oldest is None else oldest + self.settings.follow_interval
