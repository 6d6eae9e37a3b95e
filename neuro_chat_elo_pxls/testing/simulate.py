"""A deterministic simulator: the real source against a model pxls and a model host.

Every promise of the README and DESIGN is checked as an invariant over whole runs,
one seed at a time: the real :class:`~neuro_chat_elo_pxls.PxlsSource`, with its real
SQLite file, driven in simulated time by

* a model pxls (:class:`World`): people painting at varied rates, a toplist of the top
  N regenerated every 15 minutes (``generatedAt`` in Europe/Berlin wall time, DST
  nights included), followed people outside it, canvas resets with a stale
  stats.json and a flapping ``/info``, renames, bans, rollbacks, ``-snip-`` rows, and
  faults drawn per request (429 with and without a wait, 5xx, timeouts, 403 and
  challenges in outages, bad bodies, absurd counts). Bodies go through the package's
  real parsers (JSON and HTML profiles);
* a model host (:class:`Host`): ticks at the source's ``next_due_at`` or at its own
  cadence, overlapping hook calls, cancellation inside a request, crashes (the source
  abandoned without ``on_shutdown``, its connection and lock gone as at a process's
  death) and clean restarts (sometimes with new credentials), host clock jumps, both
  delivery modes, ``source.follow()`` calls, and a follow file that changes and turns
  hostile (a FIFO, bad UTF-8, a directory, too big).

Invariants (:class:`Checker`), while it runs and at the end: per name and canvas the
deltas add up to the last score and every delta's score is the model's count at its
``observed_at``; no ``seq`` handed out twice with other content; one request in
flight; profile requests at least ``profile_cooldown`` apart; nothing sent to a key
within 15 minutes of its 403 or before a server-given wait ends, across restarts
(new credentials may try at once); ``/info`` and stats.json requests per hour
bounded; every sweep finishes when the budget allows it; followed people refreshed;
``next_due_at`` never makes a host spin; no exception reaches the host; no ERROR
without an injected cause; what pxls answered is applied by the end (the last three
simulated hours are calm). The simulated world and the host's choices depend on the
seed only, and so does the whole run: SQLite statements run on the event loop's
thread (:func:`inline_sqlite`), each still an await point, so no worker thread's
wake-up decides where a cancellation lands (``--sqlite thread`` runs aiosqlite's own
worker thread instead: real interleavings, not reproducible).

    python -m neuro_chat_elo_pxls.testing.simulate --seeds 200 --hours 48
    python -m neuro_chat_elo_pxls.testing.simulate --seed 17 --hours 48 -v
    python -m neuro_chat_elo_pxls.testing.simulate --seeds 20 --sqlite thread

prints one line per violation (with the command that replays its seed) and last
``N seeds, H simulated hours each: M violations``; exit status 1 on any.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import heapq
import logging
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import attrs

from ..errors import AuthError, MalformedDataError, NotFoundError, RateLimitedError, TransientError
from ..models import CanvasInfo, EloDelta, Profile, Snapshot
from ..pxls.parsing import parse_info, parse_profile_html, parse_profile_json, parse_stats
from ..settings import PxlsSettings, Secret
from ..source import PxlsSource
from .pages import SimUser, gson_json, php_json, profile_dict, profile_page

BERLIN = ZoneInfo("Europe/Berlin")
REGENERATION = timedelta(minutes=15)
PAINT_STEP = timedelta(minutes=5)
AUTH_FLOOR = timedelta(minutes=15)
#: The end of every run is calm for this long (no new faults, jumps or hostile files),
#: so that "what pxls answered is applied" can be checked.
CALM_END = timedelta(hours=3)
#: Requests per rolling hour an endpoint may see (a normal hour: 4-8 of each).
MAX_PER_HOUR = {"info": 40, "stats": 30}
#: Where a run can start: ordinary days and the nights the clocks change in Berlin.
STARTS = (
    datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 28, 12, 0, tzinfo=UTC),  # spring forward 2026-03-29 01:00 UTC
    datetime(2026, 10, 24, 12, 0, tzinfo=UTC),  # fall back 2026-10-25 01:00 UTC
    datetime(2026, 6, 14, 21, 30, tzinfo=UTC),
)
#: When Berlin's clocks change (UTC) in those runs.
DST_CHANGES = (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC))
LEADERBOARD, PROFILE = "leaderboard", "profile"


# -- the model pxls ----------------------------------------------------------------


@attrs.define(eq=False)
class Person:
    pxls_id: int
    name: str
    rate: float  # mean pixels per paint step
    discord: str | None
    faction: tuple[int, str, str, int] | None
    snip: bool = False
    banned_until: datetime | None = None
    count: int = 0  # on the current canvas
    alltime: int = 0
    #: canvas → [(true time, count)] at every change
    history: dict[str, list[tuple[datetime, int]]] = attrs.field(factory=dict)

    def count_at(self, canvas: str, at: datetime) -> int:
        changes = self.history.get(canvas, [])
        i = bisect.bisect_right(changes, at, key=lambda c: c[0])
        return changes[i - 1][1] if i else 0


@attrs.frozen
class Generation:
    at: datetime  # true UTC time of generatedAt (whole seconds)
    canvas: str
    rows: tuple[tuple[str, int], ...]  # rank order; "-snip-" rows included


@attrs.frozen
class Request:
    at: datetime  # true time
    endpoint: str  # info, stats, profile
    name: str | None
    outcome: str  # ok, 404, or the fault


@attrs.define
class FaultPlan:
    """Per-seed fault rates and outages (true time)."""

    rate: float
    auth_outages: list[list[datetime]]  # [start, end): profile requests answer 403
    storms: list[tuple[datetime, datetime]]  # [start, end): 429 with long waits

    def auth_outage(self, at: datetime) -> bool:
        return any(s <= at < e for s, e in self.auth_outages)

    def end_outages(self, at: datetime) -> None:
        """New credentials: an outage in progress ends now."""
        for window in self.auth_outages:
            if window[0] <= at < window[1]:
                window[1] = at


class World:
    """The model pxls: people, canvases, generations, faults; implements ``PxlsApi``.

    The host sets :attr:`now` (true time) before every hook call; requests are answered
    from the model at that time. :class:`Checker` sees every request.
    """

    def __init__(self, rng: random.Random, start: datetime, end: datetime, checker: Checker):
        self.rng, self.now, self.end, self.checker = rng, start, end, checker
        self.canvas = str(rng.randint(60, 90))
        self.canvases = [self.canvas]
        self.toplist_size = rng.choice((8, 15, 25))
        self.endpoint = rng.choice(("api", "api", "html"))
        self.people: list[Person] = []
        self.holders: dict[str, list[tuple[datetime, Person | None]]] = {}
        self.generations: list[Generation] = []
        self.cron_stalled_until: datetime | None = None
        self.flap_until: datetime | None = None
        self.flap_rate = 0.0
        self.new_code_answered = True
        self.in_flight = 0
        self.cancel_next_request = False
        self.skewed = False  # the host's clock is wrong on this tick
        self.requests: list[Request] = []
        self.injected: list[tuple[datetime, str]] = []
        self.renames: list[tuple[datetime, Person, str, str]] = []
        self.calm_from = end - CALM_END
        calm = self.calm_from
        hours = max(1.0, (calm - start).total_seconds() / 3600)
        self.faults = FaultPlan(
            rate=rng.choice((0.0, 0.01, 0.03, 0.08)),
            auth_outages=[
                [s, min(calm, s + timedelta(minutes=rng.randint(5, 180)))]
                for s in self._times(rng.choice((0, 0, 1, 2)), start, calm)
            ],
            storms=[
                (s, min(calm, s + timedelta(minutes=rng.randint(5, 60))))
                for s in self._times(rng.choice((0, 1)), start, calm)
            ],
        )
        for i in range(rng.randint(10, 25)):
            self._add_person(f"painter_{i}", start)
        self._events: list[tuple[datetime, int, str, Any]] = []
        self._seq = 0
        # whole seconds: a generation is stamped at the instant whose state it lists
        # (pxls's generatedAt has no fraction; a rename 0.6 s before the stamp's
        # second ended looked like one after it: seed 1176)
        first_paint = start.replace(minute=start.minute - start.minute % 5, second=0, microsecond=0)
        self._push(first_paint + PAINT_STEP, "paint", None)
        boundary = start.replace(minute=start.minute - start.minute % 15, second=0, microsecond=0)
        self._push(boundary + timedelta(seconds=rng.randint(5, 60)), "generate", boundary)
        for at in self._times(rng.choice((0, 1, 1, 2)), start, calm):
            self._push(at, "reset", None)
        for at in self._times(int(hours / 8 * rng.random()) + 1, start, calm):
            self._push(at, "rename", None)
        for at in self._times(rng.randint(0, 3), start, calm):
            self._push(at, "ban", None)
        for at in self._times(rng.randint(0, 3), start, calm):
            self._push(at, "rollback", None)
        self._generate(boundary - REGENERATION + timedelta(seconds=30))

    def _times(self, n: int, start: datetime, end: datetime) -> list[datetime]:
        span = (end - start).total_seconds()
        return sorted(
            start + timedelta(seconds=int(self.rng.random() * span)) for _ in range(max(0, n))
        )

    def _add_person(self, name: str, at: datetime, rate: float | None = None) -> Person:
        rng = self.rng
        faction = rng.choice(
            (None, None, (3680, "SWRM", "The  Swarm", 0x7F00FF), (12, "a]b", "x", 1))
        )
        person = Person(
            pxls_id=100_000 + len(self.people),
            name=name,
            rate=rng.choice((0.0, 0.3, 2.0, 8.0, 30.0)) if rate is None else rate,
            discord=rng.choice((None, f"{name}.dc", f"{name}#0001")),
            faction=faction,
            snip=rng.random() < 0.05,
        )
        person.count = rng.choice((0, rng.randint(1, 3000)))
        person.alltime = person.count + rng.randint(0, 50_000)
        person.history[self.canvas] = [(at - timedelta(days=1), person.count)]
        self.people.append(person)
        self.holders.setdefault(name, []).append((at - timedelta(days=1), person))
        return person

    def _push(self, at: datetime, kind: str, data: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, kind, data))

    # -- time --------------------------------------------------------------------

    def advance(self, to: datetime) -> None:
        """Run the model up to true time ``to``."""
        while self._events and self._events[0][0] <= to:
            at, _, kind, data = heapq.heappop(self._events)
            getattr(self, f"_on_{kind}")(at, data)
        self.now = max(self.now, to)

    def _set(self, person: Person, at: datetime, count: int) -> None:
        if count != person.count:
            person.alltime += max(0, count - person.count)
            person.count = count
            person.history.setdefault(self.canvas, []).append((at, count))

    def _on_paint(self, at: datetime, _: Any) -> None:
        rng = self.rng
        for p in self.people:
            if p.rate and rng.random() < 0.7:
                self._set(p, at, p.count + int(rng.expovariate(1 / p.rate)))
        self._push(at + PAINT_STEP, "paint", None)

    def _on_generate(self, at: datetime, boundary: datetime) -> None:
        nxt = boundary + REGENERATION
        self._push(nxt + timedelta(seconds=self.rng.randint(5, 60)), "generate", nxt)
        if self.cron_stalled_until is not None and at < self.cron_stalled_until:
            return  # the reset broke cron.php: the old stats.json stays
        self._generate(at)

    def _generate(self, at: datetime) -> None:
        assert not at.microsecond, "a generation lists the state at its whole-second stamp"
        listed = sorted(
            (p for p in self.people if p.count > 0 and not self._banned(p, at)),
            key=lambda p: (-p.count, p.pxls_id),
        )[: self.toplist_size]
        rows = tuple(("-snip-" if p.snip else p.name, p.count) for p in listed)
        self.generations.append(Generation(at, self.canvas, rows))

    def _banned(self, p: Person, at: datetime) -> bool:
        return p.banned_until is not None and at < p.banned_until

    def _on_reset(self, at: datetime, _: Any) -> None:
        self.canvas = str(int(self.canvas) + self.rng.choice((1, 1, 2)))
        self.canvases.append(self.canvas)
        for p in self.people:
            p.count = 0
            p.history[self.canvas] = [(at, 0)]
        self.cron_stalled_until = at + timedelta(minutes=self.rng.choice((0, 20, 45)))
        # an edge cache may answer the old code again, once the new one was answered
        self.flap_until = at + timedelta(minutes=self.rng.choice((0, 10, 40)))
        self.flap_rate = self.rng.choice((0.4, 1.0))  # flapping, or a stuck edge cache
        self.new_code_answered = False

    def _on_rename(self, at: datetime, _: Any) -> None:
        candidates = [p for p in self.people if not p.snip]
        person = self.rng.choice(candidates)
        old, new = person.name, f"{person.name.split('_r')[0]}_r{len(self.renames) + 1}"
        person.name = new
        self.holders[old].append((at, None))
        self.holders.setdefault(new, []).append((at, person))
        self.renames.append((at, person, old, new))

    def _on_ban(self, at: datetime, _: Any) -> None:
        self.rng.choice(self.people).banned_until = at + timedelta(hours=self.rng.randint(1, 12))

    def _on_rollback(self, at: datetime, _: Any) -> None:
        person = self.rng.choice(self.people)
        self._set(person, at, max(0, person.count - self.rng.randint(1, 200)))

    # -- truth -------------------------------------------------------------------

    def holder(self, name: str, at: datetime) -> Person | None:
        changes = self.holders.get(name, [])
        i = bisect.bisect_right(changes, at, key=lambda c: c[0])
        return changes[i - 1][1] if i else None

    def truth(self, name: str, canvas: str, at: datetime) -> int:
        person = self.holder(name, at)
        return 0 if person is None else person.count_at(canvas, at)

    def by_name(self, name: str) -> Person | None:
        return self.holder(name, self.now)

    # -- faults ------------------------------------------------------------------

    def _fault(self, endpoint: str) -> str | None:
        rng, now, plan = self.rng, self.now, self.faults
        if now >= self.calm_from:
            return None
        if endpoint == "profile" and plan.auth_outage(now):
            return rng.choice(("forbidden", "forbidden", "challenge"))
        if any(s <= now < e for s, e in plan.storms) and rng.random() < 0.5:
            return "429-wait"
        if rng.random() >= plan.rate:
            return None
        return rng.choice(
            (
                "429-wait",
                "429",
                "500",
                "503",
                "timeout",
                "truncated",
                "html",
                "absurd",
                "challenge" if endpoint != "profile" else "forbidden",
            )
        )

    async def _request(self, endpoint: str, name: str | None = None) -> str | None:
        """Start a request: the checker sees it; returns the fault to answer (or None)."""
        key = PROFILE if endpoint == "profile" else LEADERBOARD
        self.checker.request(self, key, endpoint)
        self.in_flight += 1
        try:
            await asyncio.sleep(0)  # the answer takes a while: overlapping calls show
            if self.cancel_next_request:  # the host cancels the hook in mid-request
                self.cancel_next_request = False
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.requests.append(Request(self.now, endpoint, name, "cancelled"))
            raise
        finally:
            self.in_flight -= 1
        fault = self._fault(endpoint)
        self.requests.append(Request(self.now, endpoint, name, fault or "ok"))
        if fault is not None:
            self.injected.append((self.now, fault))
            self._raise(fault, key, endpoint)
        return None

    def _raise(self, fault: str, key: str, what: str) -> None:
        if fault == "429-wait":
            wait = float(self.rng.choice((5, 60, 900, 3600)))
            self.checker.server_wait(key, self.now + timedelta(seconds=wait), fault)
            raise RateLimitedError(f"{what}: rate limited (HTTP 429, wait {wait:.0f} s)", wait)
        if fault == "429":
            raise RateLimitedError(f"{what}: rate limited (HTTP 429, no wait given)", None)
        if fault in ("500", "503"):
            raise TransientError(f"{what}: HTTP {fault}")
        if fault == "timeout":
            raise TransientError(f"{what}: no complete answer within 20 s")
        if fault in ("forbidden", "challenge"):
            self.checker.server_wait(key, self.now + AUTH_FLOOR, fault)
            raise AuthError(f"{what}: HTTP 403 ({fault})", challenge=fault == "challenge")
        if fault == "html":
            raise MalformedDataError(f"{what}: HTML page where JSON was expected")
        # truncated and absurd bodies are made by the endpoint and parsed for real

    # -- PxlsApi -----------------------------------------------------------------

    async def fetch_info(self) -> CanvasInfo:
        fault = await self._request("info")
        code = self.canvas
        flapping = self.flap_until is not None and self.now < self.flap_until
        if flapping and self.new_code_answered and self.rng.random() < self.flap_rate:
            code = self.canvases[-2]
        if code == self.canvas:
            self.new_code_answered = True
        body = php_json({"canvasCode": code, "width": 100, "height": 100})
        return parse_info(body[:7] if fault in ("truncated", "absurd") else body)

    async def fetch_stats(self) -> Snapshot:
        fault = await self._request("stats")
        served = [g for g in self.generations if g.at <= self.now][-1]
        rows: list[dict[str, Any]] = [
            {"username": n, "pixels": c, "place": i + 1} for i, (n, c) in enumerate(served.rows)
        ]
        if fault == "absurd" and rows:
            rows[0] = {**rows[0], "pixels": 10**13}
        local = served.at.astimezone(BERLIN)
        body = php_json(
            {
                "toplist": {"alltime": rows, "canvas": rows},
                "generatedAt": local.strftime("%Y/%m/%d - %H:%M:%S (Europe/Berlin)"),
            }
        )
        snapshot = parse_stats(body[: len(body) // 2] if fault == "truncated" else body)
        if fault != "absurd":
            self.checker.served_generation(served)
        return snapshot

    async def fetch_profile(self, username: str) -> Profile:
        fault = await self._request("profile", username)
        person = self.by_name(username)
        if person is None:
            raise NotFoundError(f"profile: HTTP 404 ({username})")
        count = 10**15 if fault == "absurd" else person.count
        user = SimUser(person.pxls_id, person.name, person.discord, person.faction, count)
        user.banned_until = person.banned_until if self._banned(person, self.now) else None
        if self.endpoint == "html":
            page = profile_page(user).encode()
            body = page[: len(page) // 3] if fault == "truncated" else page
            profile = parse_profile_html(body, username)
        else:
            raw = gson_json(profile_dict(user))
            profile = parse_profile_json(raw[:40] if fault == "truncated" else raw, username)
        if fault != "absurd":
            self.checker.served_profile(self, username, person)
        return profile

    async def close(self) -> None:
        pass


# -- the invariants ----------------------------------------------------------------


@attrs.define
class Violation:
    seed: int
    invariant: str
    detail: str

    def line(self, hours: float) -> str:
        return (
            f"seed {self.seed}: {self.invariant}: {self.detail} "
            f"(replay: python -m neuro_chat_elo_pxls.testing.simulate --seed {self.seed} "
            f"--hours {hours:g})"
        )


@attrs.define
class Checker:
    """Checks the invariants as the run goes (see the module docstring)."""

    seed: int
    cooldown: timedelta
    violations: list[Violation] = attrs.field(factory=list)
    _seen: set[str] = attrs.field(factory=set)
    forbidden: dict[str, tuple[datetime, str]] = attrs.field(factory=dict)
    last_profile_at: datetime | None = None
    per_hour: dict[str, deque[datetime]] = attrs.field(factory=lambda: defaultdict(deque))
    seqs: dict[int, EloDelta] = attrs.field(factory=dict)
    ledger: list[EloDelta] = attrs.field(factory=list)
    #: name → true times its profile was answered (successfully, not cancelled)
    profile_answers: dict[str, list[datetime]] = attrs.field(factory=lambda: defaultdict(list))
    generations_served: list[Generation] = attrs.field(factory=list)

    def fail(self, invariant: str, detail: str, *, once: bool = True) -> None:
        if once and invariant in self._seen:
            return
        self._seen.add(invariant)
        self.violations.append(Violation(self.seed, invariant, detail))

    def request(self, world: World, key: str, endpoint: str) -> None:
        now = world.now
        if world.in_flight:
            self.fail("one request in flight", f"{endpoint} sent at {now} with another pending")
        forbidden = self.forbidden.get(key)
        wrong_clock = world.skewed  # a clock far ahead makes every wait look over: the
        # source cannot know; such a tick's requests are not held against it
        if wrong_clock:
            # (and it ends the wait: the pacing that tick sets replaces it, and is pulled
            # back to its own length on the next sane tick. A known limit, documented.)
            self.forbidden.pop(key, None)
        elif forbidden is not None and now < forbidden[0]:
            self.fail(
                f"{key} waits honoured",
                f"{endpoint} sent at {now:%m-%d %H:%M:%S}, "
                f"{(forbidden[0] - now).total_seconds():.0f} s before the wait after "
                f"{forbidden[1]} ended",
            )
        if key == PROFILE:
            early = self.last_profile_at is not None and now - self.last_profile_at < self.cooldown
            if early and not wrong_clock and self.last_profile_at is not None:
                self.fail(
                    "profile cooldown",
                    f"profile requests {(now - self.last_profile_at).total_seconds():.3f} s "
                    f"apart at {now:%m-%d %H:%M:%S} (cooldown "
                    f"{self.cooldown.total_seconds():g} s)",
                )
            self.last_profile_at = now
        else:
            times = self.per_hour[endpoint]
            times.append(now)
            while times and times[0] <= now - timedelta(hours=1):
                times.popleft()
            if len(times) > MAX_PER_HOUR[endpoint]:
                self.fail(
                    f"{endpoint} requests per hour bounded",
                    f"{len(times)} {endpoint} requests in the hour before {now:%m-%d %H:%M}",
                )

    def server_wait(self, key: str, until: datetime, why: str) -> None:
        current = self.forbidden.get(key)
        if current is None or until > current[0]:
            self.forbidden[key] = (until, why)

    def new_credentials(self) -> None:
        """A restart with other credentials may try profiles at once (DESIGN 4)."""
        key_wait = self.forbidden.get(PROFILE)
        if key_wait is not None and key_wait[1] in ("forbidden", "challenge"):
            del self.forbidden[PROFILE]

    def served_generation(self, generation: Generation) -> None:
        self.generations_served.append(generation)

    def served_profile(self, world: World, name: str, person: Person) -> None:
        self.profile_answers[name].append(world.now)

    def collected(self, deltas: Iterable[EloDelta]) -> None:
        for delta in deltas:
            seen = self.seqs.get(delta.seq)
            if seen is not None:
                if seen != delta:
                    self.fail("no seq reused", f"seq {delta.seq}: {seen} then {delta}")
                continue  # at-least-once (ack): the same delta again
            if self.ledger and delta.seq < self.ledger[-1].seq:
                self.fail("seq increases", f"seq {delta.seq} after {self.ledger[-1].seq}")
            self.seqs[delta.seq] = delta
            self.ledger.append(delta)


# -- the model host ----------------------------------------------------------------


def _write_bytes(path: str, data: bytes, size: int | None = None) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        if size is not None:
            handle.truncate(size)  # sparse: NUL bytes


def _kill(source: PxlsSource) -> Awaitable[None]:
    """What a process's death does to a source: its database connection and lock go,
    nothing else runs (no ``on_shutdown``, no last save)."""
    store = source._db.store
    if store is None:

        async def nothing() -> None:
            return None

        return nothing()
    return store.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Host:
    """Drives sources like a real host would, and sometimes like a hostile one."""

    def __init__(self, seed: int, hours: float, workdir: str) -> None:
        self.seed = seed
        rng = self.rng = random.Random(seed)
        start = rng.choice(STARTS) + timedelta(minutes=rng.randint(0, 120), seconds=rng.random())
        self.true = start
        self.end = start + timedelta(hours=hours)
        cooldown = rng.choice(
            (
                timedelta(seconds=1),
                timedelta(seconds=30),
                timedelta(minutes=2),
                timedelta(minutes=5),
            )
        )
        self.checker = Checker(seed, cooldown)
        self.world = World(rng, start, self.end, self.checker)
        self.workdir = workdir
        self.follow_path = os.path.join(workdir, "follow.txt")
        world = self.world
        outside = [
            world._add_person(f"swarm_{i}", start, rate=rng.choice((0.2, 1.0, 3.0)))
            for i in range(rng.choice((0, 3, 6, 12)))
        ]
        for p in outside:
            p.count = min(p.count, 30)
            p.history[world.canvas] = [(start - timedelta(days=1), p.count)]
        self.followed_config = [p.name for p in outside[: len(outside) // 2]]
        self.followed_file = [p.name for p in outside[len(outside) // 2 :]]
        self.file_good = True
        self.use_file = bool(self.followed_file) or rng.random() < 0.3
        if self.use_file:
            self._write_follow_file([*self.followed_file, "# comment", "not a name!"])
        self.token = 1
        self.settings = PxlsSettings(
            base_url="http://simulated.invalid",
            db_path=os.path.join(workdir, "pxls.sqlite3"),
            token=Secret(f"sim-token-{self.token}"),
            cf_auth=None,
            profile_endpoint=world.endpoint,
            delivery=rng.choice(("drain", "ack")),
            leaderboard_interval=rng.choice(
                (timedelta(minutes=5), timedelta(minutes=20), timedelta(hours=1))
            ),
            sweep_interval=rng.choice(
                (timedelta(hours=3), timedelta(hours=8), timedelta(hours=24))
            ),
            profile_cooldown=cooldown,
            enrichment_hold=rng.choice((timedelta(minutes=20), timedelta(hours=1))),
            follow=tuple(self.followed_config),
            follow_file=self.follow_path if self.use_file else None,
            follow_factions=(3680,) if rng.random() < 0.3 else (),
            follow_interval=rng.choice((timedelta(minutes=30), timedelta(hours=1))),
        )
        self.source = self._new_source()
        self.skew = timedelta(0)
        self.host_times: dict[datetime, datetime] = {}  # skewed host now → true time
        self.unacked: int = 0
        self.handler = _Records()
        self.ticks = 0
        self.idle_due_streak = 0
        self.restarts = 0
        self.restart_times: list[datetime] = []
        self.sent = False
        self.cadence: tuple[timedelta, timedelta] | None = None
        self._fifo = False
        self.fifo_blocked = False

    def _new_source(self) -> PxlsSource:
        return PxlsSource(self.settings, client=self.world, rng=random.Random(self.rng.random()))

    def _write_follow_file(self, lines: list[str]) -> None:
        tmp = self.follow_path + ".new"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, self.follow_path)

    # -- hooks, guarded ------------------------------------------------------------

    async def _hook(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Call a hook; an exception (but our own cancellation) is a violation."""
        try:
            return await call()
        except asyncio.CancelledError:
            return None
        except Exception as exc:
            self.checker.fail("no exception reaches the host", f"{what}: {exc!r}", once=False)
            return None

    async def tick(self) -> None:
        host_now = self.true + self.skew
        self.host_times[host_now] = self.true
        self.world.advance(self.true)
        self.world.skewed = bool(self.skew)
        rng = self.rng
        if self.true < self.world.calm_from and rng.random() < 0.01:
            self.world.cancel_next_request = True
        calls: list[Awaitable[Any]] = [self._hook("on_tick", lambda: self.source.on_tick(host_now))]
        if rng.random() < 0.05:  # an overlapping call
            calls.append(
                self._collect()
                if rng.random() < 0.5
                else self._hook("on_tick", lambda: self.source.on_tick(host_now))
            )
        before = len(self.world.requests)
        await self._guarded(asyncio.gather(*calls), "on_tick")
        self.world.cancel_next_request = False
        self.ticks += 1
        self.sent = len(self.world.requests) > before

    async def _guarded(self, call: Awaitable[Any], what: str) -> None:
        """A hook that does not return within 20 real seconds is stuck (a FIFO read on
        the event loop would block even this: the watchdog thread unblocks it)."""
        fifo = self.follow_path if self._fifo else None
        done = threading.Event()

        def watchdog() -> None:
            if not done.wait(20) and fifo is not None:
                self.checker.fail("hooks return", f"{what} blocked on the follow file (a FIFO)")
                self.fifo_blocked = True
                with contextlib.suppress(OSError):
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)

        guard = threading.Thread(target=watchdog, daemon=True) if fifo else None
        if guard:
            guard.start()
        try:
            await asyncio.wait_for(call, 120)
        except TimeoutError:
            self.checker.fail("hooks return", f"{what} did not return within 120 s")
        finally:
            done.set()
        if self.fifo_blocked:  # found once is enough: give the run back its speed
            self.fifo_blocked = False
            self._restore_file()

    async def _collect(self) -> None:
        deltas = await self._hook("collect_deltas", self.source.collect_deltas)
        if deltas:
            self.checker.collected(deltas)
            if self.settings.delivery == "ack":
                if self.rng.random() < 0.9:
                    await self._hook("ack", lambda: self.source.ack_deltas(deltas[-1].seq))
                else:
                    self.unacked += 1  # stored, not yet acknowledged (a crash brings them again)

    async def _cancel_collect(self) -> None:
        """A host that gives collect_deltas a few event-loop steps only: where the
        cancellation lands inside the database call depends on the machine."""
        task = asyncio.ensure_future(self.source.collect_deltas())
        for _ in range(self.rng.randint(1, 6)):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            deltas = await task
            if deltas:
                self.checker.collected(deltas)
                if self.settings.delivery == "ack":
                    await self.source.ack_deltas(deltas[-1].seq)
        await self._collect()  # the next call hands out what the cancelled one took

    # -- the run -------------------------------------------------------------------

    async def run(self) -> None:
        logger = logging.getLogger("neuro_chat_elo_pxls")
        logger.addHandler(self.handler)
        previous_level = logger.level
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            await self._loop()
            await self._finish()
        finally:
            await self.source.on_shutdown()
            logger.removeHandler(self.handler)
            logger.setLevel(previous_level)
            logger.propagate = True

    async def _loop(self) -> None:
        rng = self.rng
        cadence_until = self.true
        step = timedelta(seconds=30)
        next_event = self.true + timedelta(minutes=rng.randint(10, 90))
        while self.true < self.end:
            if self.true >= next_event:
                await self._event()
                next_event = self.true + timedelta(minutes=rng.randint(10, 180))
            await self.tick()
            if rng.random() < 0.02:
                await self._cancel_collect()
            else:
                await self._collect()
            host_now = self.true + self.skew
            if self.skew:  # one tick from a wrong clock, then back
                self.skew = timedelta(0)
            due = self.source.next_due_at(host_now)
            if self.true < cadence_until:
                self.true += step  # a host with its own cadence
                continue
            if due is None:
                wait = timedelta(minutes=15)
            elif due <= host_now:
                self.idle_due_streak = 0 if self.sent else self.idle_due_streak + 1
                if self.idle_due_streak > 20:
                    self.checker.fail(
                        "no spin",
                        f"next_due_at said 'now' {self.idle_due_streak} times in a row at "
                        f"{host_now:%m-%d %H:%M:%S} and the ticks sent nothing",
                    )
                wait = timedelta(milliseconds=1)
            else:
                wait = min(due - host_now, timedelta(minutes=15))
            if wait > timedelta(milliseconds=1):
                self.idle_due_streak = 0
            if self.cadence is not None:  # from now on, a host with its own cadence
                cadence_until, step = self.true + self.cadence[0], self.cadence[1]
                self.cadence = None
            self.true += wait

    async def _event(self) -> None:
        """Something the host or its operator does."""
        rng, world = self.rng, self.world
        calm = self.true >= world.calm_from
        kind = rng.choice(("crash", "restart", "follow", "file", "jump", "cadence", "nothing"))
        if calm and kind in ("jump", "file"):
            kind = "nothing"
        if kind == "jump" and any(abs(self.true - c) < timedelta(hours=3) for c in DST_CHANGES):
            kind = "nothing"  # a wrong clock in the repeated hour: no reading can be right
        if kind in ("crash", "restart"):
            self.restart_times.append(self.true)
        if kind == "crash":
            await _kill(self.source)
            self.restarts += 1
            self.source = self._new_source()
        elif kind == "restart":
            await self._hook("on_shutdown", self.source.on_shutdown)
            self.restarts += 1
            if rng.random() < 0.5 and world.faults.auth_outage(self.true):
                self.token += 1  # the operator renewed PXLS_TOKEN
                self.settings = attrs.evolve(self.settings, token=Secret(f"sim-token-{self.token}"))
                world.faults.end_outages(self.true)
                self.checker.new_credentials()
            self.source = self._new_source()
        elif kind == "follow":
            renamed = [new for _, _, _, new in world.renames]
            names = rng.sample(renamed, min(len(renamed), 2)) + [
                p.name for p in rng.sample(world.people, 2)
            ]
            if rng.random() < 0.2:
                names += ["<b>bad</b>", "x" * 40]
            await self._hook("follow", lambda: self.source.follow(names, self.true + self.skew))
        elif kind == "file" and self.use_file:
            await self._hostile_file()
        elif kind == "cadence":
            self.cadence = (
                timedelta(minutes=rng.randint(5, 30)),
                timedelta(seconds=rng.choice((5, 20, 60))),
            )
        elif kind == "jump":
            # one tick from a clock far ahead, then back (DESIGN 3); a clock behind sets
            # every wait in the past, which no source can tell from a long sleep
            self.skew = rng.choice((timedelta(days=365), timedelta(hours=5)))

    async def _hostile_file(self) -> None:
        rng = self.rng
        path = self.follow_path
        if self._fifo or not self.file_good:
            self._restore_file()
            return
        choice = rng.choice(("fifo", "utf8", "directory", "big", "edit"))
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        if choice == "fifo":
            os.mkfifo(path)
            self._fifo = True
        elif choice == "utf8":
            text = "\n".join(self.followed_file) + "\n\xff\xfe bad\n"
            await asyncio.to_thread(_write_bytes, path, text.encode("latin-1"))
        elif choice == "directory":
            os.mkdir(path)
        elif choice == "big":
            await asyncio.to_thread(_write_bytes, path, b"", 64 * 1024 * 1024)
        else:
            self._write_follow_file([*self.followed_file, "# edited"])
            return
        self.file_good = False

    def _restore_file(self) -> None:
        path = self.follow_path
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self._fifo = False
        self.file_good = True
        self._write_follow_file(self.followed_file)

    # -- the end -------------------------------------------------------------------

    async def _finish(self) -> None:
        """Collect what is left, then check the invariants that need the whole run."""
        await self._collect()
        await self._check_sweep()
        self._check_accounting()
        self._check_applied()
        self._check_errors()

    async def _check_sweep(self) -> None:
        """Every sweep finishes within its interval when the budget allows it (DESIGN 7),
        give or take the time profile requests were paused by the model's faults."""
        status = await self._hook("status", lambda: self.source.status(self.end))
        sweep = (status or {}).get("sweep", {})
        if not sweep.get("active") or not sweep.get("interval_possible", True):
            return
        started = datetime.fromisoformat(sweep["started_at"])
        paused = sum(
            ((min(e, self.end) - max(s, started)) for s, e in self.world.faults.auth_outages),
            timedelta(0),
        )
        limit = self.settings.sweep_interval + timedelta(hours=2) + max(paused, timedelta(0))
        if self.end - started > limit:
            self.checker.fail(
                "every sweep finishes",
                f"sweep {sweep.get('number')} started {started:%m-%d %H:%M} is still active "
                f"at the end, {sweep.get('remaining')} of {sweep.get('total')} users left "
                f"(sweep_interval {self.settings.sweep_interval})",
            )

    def _true_time(self, observed: datetime) -> datetime:
        return self.host_times.get(observed, observed)

    def _check_accounting(self) -> None:
        sums: dict[tuple[str, str], int] = defaultdict(int)
        last: dict[tuple[str, str], EloDelta] = {}
        for d in self.checker.ledger:
            sums[(d.user, d.canvas)] += d.delta
            last[(d.user, d.canvas)] = d
            at = self._true_time(d.observed_at)
            truth = self.world.truth(d.user, d.canvas, at)
            if d.score != truth:
                self.checker.fail(
                    "scores are the truth",
                    f"{d.user} on {d.canvas}: score {d.score} (delta {d.delta:+d}, via {d.via}) "
                    f"at {at:%m-%d %H:%M:%S}, the model says {truth}",
                )
        for key, total in sums.items():
            if total != last[key].score:
                self.checker.fail(
                    "conservation", f"{key}: deltas sum to {total}, last score {last[key].score}"
                )
        # a rename merged by pxls id leaves nothing on the old name (DESIGN 3)
        for at, _, old, new in self.world.renames:
            held = last.get((old, self.world.canvas))
            answered = [t for t in self.checker.profile_answers.get(new, []) if t > at]
            read = bool(answered) and answered[0] < self.end - timedelta(hours=1)
            # (merged by the pxls id the old name's profile gave)
            read = read and any(t < at for t in self.checker.profile_answers.get(old, []))
            if held is not None and held.score and read and self.world.endpoint == "api":
                self.checker.fail(
                    "a rename counts once",
                    f"{old} renamed to {new} at {at:%m-%d %H:%M}: {old} still holds "
                    f"{held.score} on {self.world.canvas} after {new}'s profile was read",
                )

    def _check_applied(self) -> None:
        """What pxls answered in the calm end is applied by the end: the last score
        handed out for a name is its count at that answer or a later one."""
        world, canvas = self.world, self.world.canvas
        last: dict[str, int] = {}
        for d in self.checker.ledger:
            if d.canvas == canvas:
                last[d.user] = d.score
        seen: dict[str, tuple[datetime, str]] = {}
        horizon = self.end - timedelta(hours=1, minutes=30)
        for g in self.checker.generations_served:
            if world.calm_from <= g.at <= horizon and g.canvas == canvas:
                for name, _ in g.rows:
                    if name != "-snip-":
                        seen[name] = (g.at, "toplist")
        for name, answers in self.checker.profile_answers.items():
            # a count waiting for /info lives in memory: a restart before its /info drops
            # it (the next profile read observes it again), so those are not expected
            calm = [
                t
                for t in answers
                if world.calm_from <= t <= horizon
                and not any(t <= r <= t + timedelta(minutes=20) for r in self.restart_times)
            ]
            if calm and (name not in seen or seen[name][0] < calm[-1]):
                seen[name] = (calm[-1], "profile")
        for name, (at, via) in sorted(seen.items()):
            person = world.holder(name, self.end)
            if person is None or world.holder(name, at) is not person:
                continue
            since = person.count_at(canvas, at)
            later = {c for t, c in person.history.get(canvas, []) if t > at}
            if since == 0 and name not in last:
                continue
            if last.get(name) not in {since, *later}:
                self.checker.fail(
                    "what pxls answered is applied",
                    f"{name}: {via} answered {since} px at {at:%m-%d %H:%M}; the last score "
                    f"handed out is {last.get(name)}",
                )
        wanted = set(self.followed_config) | set(self.followed_file)
        if self.settings.profile_cooldown > timedelta(seconds=30):
            return  # a tight budget: follow refreshes may slip (DESIGN 7)
        for name in sorted(wanted):
            person = world.holder(name, self.end)
            answers = [
                t for t in self.checker.profile_answers.get(name, []) if t >= world.calm_from
            ]
            listed = any(name in dict(g.rows) for g in self.checker.generations_served[-6:])
            if person is not None and not answers and not listed:
                self.checker.fail(
                    "followed people refreshed",
                    f"{name} (followed, outside the toplist) had no profile read in the calm "
                    f"last {CALM_END}",
                )

    def _check_errors(self) -> None:
        injected = {f for _, f in self.world.injected}
        for record in self.handler.records:
            message = record.getMessage()
            caused = injected and not record.exc_info and "unexpected" not in message
            if not caused:
                self.checker.fail("no ERROR without a cause", message[:200])


@contextlib.contextmanager
def inline_sqlite() -> Iterator[None]:
    """Inside: aiosqlite runs each statement on the calling (event-loop) thread.

    A statement runs at once and its ``await`` then yields one event-loop step, as
    aiosqlite's worker thread would: a cancelled caller loses the result, the
    statement still ran. Waking the worker thread was ~80 % of a simulated run's
    time and made the number of loop steps a unit takes depend on the machine; inline,
    a seed runs ~4x faster and every interleaving is fixed by the seed. Connections
    opened inside are opened with ``check_same_thread=False``. This patches
    aiosqlite's private ``Connection._execute`` (checked by ``tests/test_simulate.py``)
    and restores it on exit.
    """
    execute = aiosqlite.Connection._execute
    connect = aiosqlite.connect

    async def inline(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        result = fn(*args, **kwargs)
        await asyncio.sleep(0)
        return result

    def connect_anywhere(database: Any, *args: Any, **kwargs: Any) -> aiosqlite.Connection:
        kwargs["check_same_thread"] = False
        return connect(database, *args, **kwargs)

    aiosqlite.Connection._execute = inline  # type: ignore[method-assign]
    aiosqlite.connect = connect_anywhere
    try:
        yield
    finally:
        aiosqlite.Connection._execute = execute  # type: ignore[method-assign]
        aiosqlite.connect = connect


async def _run(seed: int, hours: float) -> tuple[list[Violation], dict[str, Any]]:
    shm = "/dev/shm"  # noqa: S108 (a private mkdtemp under it: tmpfs, fast)
    base = shm if os.access(shm, os.W_OK) else None
    workdir = tempfile.mkdtemp(prefix=f"pxls-sim-{seed}-", dir=base)
    try:
        host = Host(seed, hours, workdir)
        await host.run()
        stats = {
            "ticks": host.ticks,
            "requests": len(host.world.requests),
            "deltas": len(host.checker.ledger),
            "restarts": host.restarts,
        }
        return host.checker.violations, stats
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_seed_with_stats(
    seed: int, hours: float = 48, *, sqlite: str = "inline"
) -> tuple[list[Violation], dict[str, Any]]:
    """Run one seed: the violations it found (none: every promise held) and its
    figures (ticks, requests, deltas, restarts). ``sqlite="thread"`` keeps aiosqlite's
    worker thread (see :func:`inline_sqlite`)."""
    if sqlite == "thread":
        return asyncio.run(_run(seed, hours))
    with inline_sqlite():
        return asyncio.run(_run(seed, hours))


def run_seed(seed: int, hours: float = 48, *, sqlite: str = "inline") -> list[Violation]:
    """Run one seed; the violations it found (none: every promise held)."""
    return run_seed_with_stats(seed, hours, sqlite=sqlite)[0]


def _run_in_worker(
    args: tuple[int, float, str],
) -> tuple[int, list[Violation], dict[str, Any]]:
    seed, hours, sqlite = args
    violations, stats = run_seed_with_stats(seed, hours, sqlite=sqlite)
    return seed, violations, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neuro_chat_elo_pxls.testing.simulate",
        description="Check every promise as an invariant over simulated runs.",
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--hours", type=float, default=48, help="simulated hours per seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--sqlite",
        choices=("inline", "thread"),
        default="inline",
        help="inline (default: reproducible, ~4x faster) or aiosqlite's worker thread",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="per-seed figures")
    args = parser.parse_args(argv)
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    )
    started = time.monotonic()
    total = 0
    work = [(s, args.hours, args.sqlite) for s in seeds]
    if args.jobs > 1 and len(seeds) > 1:
        # spawned, not forked: a caller such as pytest may have threads running
        with ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            results = pool.map(_run_in_worker, work, chunksize=8)
            total = _report(results, args)
    else:
        total = _report(map(_run_in_worker, work), args)
    print(
        f"{len(seeds)} seeds, {args.hours:g} simulated hours each: {total} violations "
        f"({time.monotonic() - started:.0f} s)"
    )
    return 1 if total else 0


def _report(results: Iterable[tuple[int, list[Violation], dict[str, Any]]], args: Any) -> int:
    total = 0
    for seed, violations, stats in results:
        if args.verbose:
            print(f"seed {seed}: {stats}", flush=True)
        for violation in violations:
            print(violation.line(args.hours), flush=True)
        total += len(violations)
    return total


if __name__ == "__main__":
    sys.exit(main())
