"""The model pxls (:class:`World`): people painting, the toplist's generations,
canvas resets, renames, bans, rollbacks and the faults it answers with. It answers
every GET with an HTTP answer (:class:`Answer`: status, headers, body, a connection
cut short or stalled), which the in-memory transport (:mod:`.wire`) hands to the
real ``PxlsClient``, and shows every request to the :class:`~.checker.Checker`."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import random
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import attrs

from ..pages import (
    CHALLENGE_HTML,
    CLOUDFLARE_1015_HTML,
    MAINTENANCE_HTML,
    USER_NOT_FOUND_JSON,
    SimUser,
    error_html,
    gson_json,
    php_json,
    profile_dict,
    profile_page,
    rate_limited_text,
)
from .people import LEADERBOARD, PROFILE, FaultPlan, Generation, Person, Request

if TYPE_CHECKING:
    from .checker import Checker

__all__ = [
    "LEADERBOARD",
    "PROFILE",
    "Answer",
    "FaultPlan",
    "Generation",
    "Person",
    "Request",
    "World",
]

BERLIN = ZoneInfo("Europe/Berlin")
REGENERATION = timedelta(minutes=15)
PAINT_STEP = timedelta(minutes=5)
AUTH_FLOOR = timedelta(minutes=15)
#: The end of every run is calm for this long (no new faults, jumps or hostile files),
#: so that "what pxls answered is applied" can be checked.
CALM_END = timedelta(hours=3)


class World:
    """The model pxls: people, canvases, generations, faults; answers GETs (:meth:`serve`).

    The host sets :attr:`now` (true time) before every hook call; requests are answered
    from the model at that time. :class:`Checker` sees every request. ``wire`` draws
    the shape of an answer (which of pxls's ways to say a 429, a Content-Type...):
    a generator apart from ``rng``, so that the model's own draws stay the seed's.
    """

    def __init__(
        self,
        rng: random.Random,
        start: datetime,
        end: datetime,
        checker: Checker,
        wire: random.Random | None = None,
    ):
        self.rng, self.now, self.end, self.checker = rng, start, end, checker
        self.wire = wire or random.Random(0)
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
        self.generations_served: list[Generation] = []  # the files answered whole
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
            person.alltime += count - person.count  # undo and rollback lower both
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

    async def serve(self, endpoint: str, name: str | None, cookies: Collection[str]) -> Answer:
        """One GET of ``endpoint`` (``name``: a profile's): the checker sees it; it takes
        a while (one event-loop step: overlapping calls show, the host may cancel it
        there); then the fault drawn, and the HTTP answer pxls gives. The request is
        in flight until the transport calls :meth:`done` (its response released)."""
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
            self.done()
            self.requests.append(Request(self.now, endpoint, name, "cancelled"))
            if key == LEADERBOARD:
                self.checker.setback(self.now)
            raise
        fault = self._fault(endpoint)
        self.requests.append(Request(self.now, endpoint, name, fault or "ok"))
        if fault is not None:
            self.injected.append((self.now, fault))
            if key == LEADERBOARD:
                self.checker.setback(self.now)
            error = self._error(fault, key)
            if error is not None:
                return error
        if endpoint == "info":
            return self._info(fault)
        if endpoint == "stats":
            return self._stats(fault)
        assert name is not None
        if "pxls-token" not in cookies:  # a guest: no user.profile permission
            return _page(403, error_html(403))
        return self._profile(name, fault)

    def done(self) -> None:
        """A request's answer is released (read, refused or abandoned)."""
        self.in_flight -= 1

    def _error(self, fault: str, key: str) -> Answer | None:
        """The answer of a fault that is an HTTP error (or no answer at all), in one of
        the shapes pxls.space, pxls-web, its backend or Cloudflare give it."""
        wire = self.wire
        if fault == "429-wait":
            wait = self.rng.choice((5, 60, 900, 3600))
            self.checker.server_wait(key, self.now + timedelta(seconds=wait), fault)
            shape = wire.choice(("retry-after", "text", "both"))
            if shape == "text":  # the backend's own answer
                return Answer(429, [("Content-Type", "text/plain")], rate_limited_text(wait))
            headers = [("Retry-After", str(wait)), ("Server", "cloudflare")]
            if shape == "both":
                return Answer(429, headers, rate_limited_text(wait))
            return _page(429, CLOUDFLARE_1015_HTML, headers)
        if fault == "429":  # pxls-web's page: no wait given
            return _page(429, error_html(429))
        if fault in ("500", "503"):
            return _page(int(fault), error_html(int(fault)))
        if fault == "timeout":
            return Answer(0, [], b"", timeout=True)
        if fault == "forbidden":
            self.checker.server_wait(key, self.now + AUTH_FLOOR, fault)
            return _page(403, error_html(403))
        if fault == "challenge":
            self.checker.server_wait(key, self.now + AUTH_FLOOR, fault)
            return _page(
                403, CHALLENGE_HTML, [("cf-mitigated", "challenge"), ("Server", "cloudflare")]
            )
        if fault == "html":
            return _page(200, MAINTENANCE_HTML)
        return None  # truncated and absurd bodies are made by the endpoint

    def _ok(self, body: bytes, content_type: str, fault: str | None) -> Answer:
        """A 200 of ``body``; a "truncated" fault makes a body that cannot be used:
        a file cut short (whole as HTTP), a connection closed before its
        Content-Length, a body stalled until the read timeout, or one over the size cap
        (declared or not). ``None`` from :meth:`whole` means: not served whole."""
        wire = self.wire
        shape = "whole" if fault != "truncated" else wire.choice(("file", "cut", "stall", "over"))
        headers = [] if content_type == "" else [("Content-Type", content_type)]
        if shape == "file":
            return Answer(200, headers, body[: max(7, len(body) // 3)], length=wire.random() < 0.8)
        if shape == "cut":
            return Answer(200, headers, body, cut=max(1, len(body) // 2))
        if shape == "stall":
            return Answer(200, headers, body, cut=max(1, len(body) // 2), timeout=True)
        if shape == "over":
            return Answer(200, headers, body, oversize=True, length=wire.random() < 0.5)
        return Answer(200, headers, body, length=wire.random() < 0.8)

    def _json_type(self) -> str:
        """The Content-Type of a JSON answer (a static file's may be missing)."""
        return self.wire.choice(("application/json", "application/json; charset=utf-8", ""))

    def _info(self, fault: str | None) -> Answer:
        code = self.canvas
        flapping = self.flap_until is not None and self.now < self.flap_until
        if flapping and self.new_code_answered and self.rng.random() < self.flap_rate:
            code = self.canvases[-2]
            self.checker.setback(self.now)  # a stale code: the pull is skipped
        body = php_json({"canvasCode": code, "width": 100, "height": 100})
        if fault in ("truncated", "absurd"):
            return self._ok(body, "application/json", "truncated")
        if code == self.canvas:  # answered whole: a truncated body told nobody (seed 266)
            self.new_code_answered = True
            self.code_answered_at.setdefault(code, self.now)
        if self.first_info_at is None:
            self.first_info_at = self.now
        return self._ok(body, "application/json", None)

    def _stats(self, fault: str | None) -> Answer:
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
        if fault is None:
            newer = not self.generations_served or served.at > self.generations_served[-1].at
            began = self.reset_at.get(self.canvas)
            wall = local.replace(tzinfo=None)
            ambiguous = (
                wall.replace(fold=0).replace(tzinfo=BERLIN).utcoffset()
                != wall.replace(fold=1).replace(tzinfo=BERLIN).utcoffset()
            )
            unplaceable = ambiguous and began is not None and self.now - began < timedelta(hours=2)
            answered = self.code_answered_at.get(self.canvas)
            unseen = began is not None and answered is not None and served.at < answered
            if not newer or served.canvas != self.canvas or unplaceable or unseen:
                # nothing newer, a file from before a reset (seed 217), one stamped in
                # the repeated autumn hour right after a reset (either reading may fall
                # before the new code was seen: DESIGN 3; seed 3471), or one generated
                # after the reset but before /info first told the source the new code
                # (seed 3914): skipped, the source looks again
                self.checker.setback(self.now)
            self.generations_served.append(served)
            self.checker.served_generation(served)
        return self._ok(body, self._json_type(), fault)

    def _profile(self, username: str, fault: str | None) -> Answer:
        person = self.by_name(username)
        html = self.endpoint == "html"
        if person is None:  # pxls-web's page, or the backend's JSON (no pxls-web between)
            if html or self.wire.random() < 0.7:
                return _page(404, error_html(404))
            return Answer(404, [("Content-Type", "application/json")], USER_NOT_FOUND_JSON)
        count = 10**15 if fault == "absurd" else person.count
        user = SimUser(person.pxls_id, person.name, person.discord, person.faction, count)
        user.alltime = person.alltime
        user.banned_until = person.banned_until if self._banned(person, self.now) else None
        if fault is None:
            self.checker.served_profile(self, username, person)
        if html:
            return self._ok(profile_page(user).encode(), "text/html; charset=utf-8", fault)
        return self._ok(gson_json(profile_dict(user)), "application/json", fault)


@attrs.define
class Answer:
    """An HTTP answer of the model pxls, as the in-memory transport hands it to the
    real client: ``status``, ``headers`` and ``body``; ``length``: with a
    Content-Length header (of the whole body); ``cut``: the connection ends after
    this many bytes (aiohttp's payload error, or with ``timeout`` its read timeout);
    ``timeout`` alone: no answer within the request timeout; ``oversize``: the body
    goes on (spaces) past the client's size cap."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    length: bool = True
    cut: int | None = None
    timeout: bool = False
    oversize: bool = False


def _page(status: int, page: str, headers: list[tuple[str, str]] | None = None) -> Answer:
    """An HTML page (pxls-web's error pages, Cloudflare's, a maintenance page)."""
    return Answer(
        status, [*(headers or []), ("Content-Type", "text/html; charset=utf-8")], page.encode()
    )
