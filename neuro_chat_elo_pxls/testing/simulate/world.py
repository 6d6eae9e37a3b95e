"""The model pxls (:class:`World`): people painting, the toplist's generations,
canvas resets, renames, bans, rollbacks and the faults it answers with; it implements
``PxlsApi`` and shows every request to the :class:`~.checker.Checker`."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ...errors import AuthError, MalformedDataError, NotFoundError, RateLimitedError, TransientError
from ...models import CanvasInfo, Profile, Snapshot
from ...pxls.page import parse_profile_html
from ...pxls.parsing import parse_info, parse_profile_json, parse_stats
from ..pages import SimUser, gson_json, php_json, profile_dict, profile_page
from .people import LEADERBOARD, PROFILE, FaultPlan, Generation, Person, Request

if TYPE_CHECKING:
    from .checker import Checker

__all__ = ["LEADERBOARD", "PROFILE", "FaultPlan", "Generation", "Person", "Request", "World"]

BERLIN = ZoneInfo("Europe/Berlin")
REGENERATION = timedelta(minutes=15)
PAINT_STEP = timedelta(minutes=5)
AUTH_FLOOR = timedelta(minutes=15)
#: The end of every run is calm for this long (no new faults, jumps or hostile files),
#: so that "what pxls answered is applied" can be checked.
CALM_END = timedelta(hours=3)


class World:
    """The model pxls: people, canvases, generations, faults; implements ``PxlsApi``.

    The host sets :attr:`now` (true time) before every hook call; requests are answered
    from the model at that time. :class:`Checker` sees every request.
    """

    def __init__(self, rng: random.Random, start: datetime, end: datetime, checker: Checker):
        self.rng, self.now, self.end, self.checker = rng, start, end, checker
        self.canvas = str(rng.randint(60, 90))
        self.canvases = [self.canvas]
        self.reset_at: dict[str, datetime] = {}  # canvas → when the reset began it
        self.first_info_at: datetime | None = None  # the first /info answered whole
        self.code_answered_at: dict[str, datetime] = {}  # canvas → its first whole answer
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
        self.reset_at[self.canvas] = at
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
        return fault  # (it said None here: no truncated or absurd body was ever made)

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
        body = php_json({"canvasCode": code, "width": 100, "height": 100})
        info = parse_info(body[:7] if fault in ("truncated", "absurd") else body)
        if code == self.canvas:  # answered whole: a truncated body told nobody (seed 266)
            self.new_code_answered = True
            self.code_answered_at.setdefault(code, self.now)
        if self.first_info_at is None:
            self.first_info_at = self.now
        return info

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
