"""``PxlsStandIn``: an aiohttp server that answers like pxls.space (see shared API notes).

Same URLs, status codes, headers and body shapes: ``/stats/stats.json`` (PHP
``json_encode`` escapes, ``generatedAt`` in Europe/Berlin, regenerated every 15
simulated minutes), ``/info`` (``canvasCode``), ``/api/v1/profile?username=``
(Gson escapes; 403 without the ``pxls-token`` cookie), ``/profile/<name>`` (pxls-web
HTML), and pxls-web style HTML error pages for every GET error.

The population evolves against a clock (the host's, possibly simulated): pixel
activity, new users, canvas resets (the stale stats.json is served on for a while),
renames, temporary bans and ``-snip-`` rows. Faults can be injected per endpoint.
Every request is recorded (path, host time, requests in flight) so tests can check
pacing and politeness. Binds to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict, deque
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import attrs
from aiohttp import web

from .pages import SimUser, error_page, gson_json, php_json, profile_dict, profile_page

BERLIN = ZoneInfo("Europe/Berlin")
STATS_PERIOD = timedelta(minutes=15)
ZERO = timedelta(0)
FACTIONS = [
    (4242, "EX♥", "Example Painters' Guild", 8339391),
    (17, "GK", "Grid Keepers", 0x33AA33),
    (5120, "💜", "💜 Purple Pact", 0xA630D2),
    (77, "<b>", 'Tags & <Brackets> "quoted"', 0x000000),
]
#: factions whose tags and names the HTML page shows ambiguously (API.md section 9):
#: ``]`` and spaces in a tag, ``(ID: n)`` and untrimmed whitespace in a name, entities
HOSTILE_FACTIONS = [
    (12, "a] b", "Grid] (ID: 12) Keepers", 0x112233),
    (3682, "sp", "  Spaced  Out  ", 0x445566),
    (3683, "x (", "(ID: 1) first", 0),
    (3684, "&amp;", "&lt;b&gt; &#x27;quoted&#x27; = `tick`", 0x778899),
    (3685, "🐢 ]", "] emoji 💜 ]", 0x8A2BE2),
]
#: the faction neuro-chat-elo's casual board counts
SWARM = (3680, "🐢", "Neuro swarm", 0x8A2BE2)


class Fault(StrEnum):
    """Injectable faults. Endpoints: ``stats``, ``info``, ``profile`` (JSON and HTML)."""

    RATE_LIMIT_TEXT = "429_text"  # 429, plain text "Try again in N seconds" (backend style)
    RATE_LIMIT_RETRY_AFTER = "429_retry_after"  # 429 + Retry-After (Cloudflare 1015 style)
    RATE_LIMIT_HTML = "429_html"  # 429 pxls-web HTML page, no wait given
    SERVER_500 = "500"
    BAD_GATEWAY = "502"
    UNAVAILABLE = "503"
    GATEWAY_TIMEOUT = "504"
    HTML_200 = "html200"  # 200 with an HTML page where JSON is expected
    SLOW = "slow"  # answers after the client's timeout
    TRUNCATED = "truncated"  # 200, JSON cut in half
    WRONG_TYPES = "wrong_types"  # 200, JSON with wrong field types
    CHALLENGE = "challenge"  # Cloudflare 403 challenge
    FORBIDDEN = "403"  # 403 as for a missing session


@attrs.frozen
class RequestRecord:
    path: str
    at: datetime  # host (simulated) time
    in_flight: int  # requests being served when this one arrived (including it)
    status: int


@attrs.define
class Scenario:
    """The population and its scripted life. Times are simulated UTC."""

    users: int = 300
    seed: int = 1
    canvas: str = "86"
    new_users_per_hour: float = 2.0
    #: when to reset the canvas (simulated times)
    resets: list[datetime] = attrs.field(factory=list)
    #: how long the pre-reset stats.json is still served after a reset
    stale_after_reset: timedelta = timedelta(minutes=20)
    #: (time, old name, new name)
    renames: list[tuple[datetime, str, str]] = attrs.field(factory=list)
    #: (time, name, duration)
    bans: list[tuple[datetime, str, timedelta]] = attrs.field(factory=list)
    snip_users: int = 3
    token: str = "standin-token"  # noqa: S105 (the stand-in's fake session, not a secret)
    slow_seconds: float = 30.0
    #: probability that a request gets a random fault (never SLOW) on top of inject()
    fault_rate: float = 0.0
    #: how long a stats.json generation takes (uniform, seconds): generatedAt is stamped,
    #: and the file replaced, when it finishes
    generation_seconds: tuple[float, float] = (0.0, 0.0)
    #: nobody paints from then on (tests compare totals with a settled truth)
    quiet_after: datetime | None = None
    #: rows in toplist.canvas (pxls.space: 1000; a small demo lists fewer)
    toplist_size: int = 1000
    #: share of new users in the Neuro swarm (faction 3680), most of them quiet
    swarm_share: float = 0.0
    #: regenerate on the quarter hours of the clock (as pxls.space's cron does) instead
    #: of every 15 minutes from the first request
    align_stats: bool = False
    #: the factions new users may display (None: :data:`FACTIONS`)
    factions: list[tuple[int, str, str, int]] | None = None
    #: the site name in profile pages' titles, and their template ("current" as on
    #: pxls.space, or "older": "Canvas Pixels", no all-time row)
    site: str = "pxls.space"
    page_template: str = "current"


class PxlsStandIn:
    """The stand-in server. ``await start()`` → ``base_url``; ``await stop()``."""

    def __init__(self, scenario: Scenario, clock: Callable[[], datetime]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.rng = random.Random(scenario.seed)
        self.canvas = scenario.canvas
        self.users: dict[str, SimUser] = {}
        self._ids = 100_000
        self.requests: list[RequestRecord] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.faults_served = 0
        self._fault_rng = random.Random(scenario.seed + 1)
        self._in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""
        self._sim_time: datetime | None = None  # activity simulated up to here
        self._stats_body = b""
        self.served_stats = b""  # the last stats.json served without a fault
        self._stats_generated: datetime | None = None
        self._generations: deque[tuple[datetime, bytes]] = deque()  # finishing, not served
        self._generation_rng = random.Random(scenario.seed + 2)
        self._swarm_rng = random.Random(scenario.seed + 3)
        self.generated: list[datetime] = []  # every generatedAt, for tests and benchmarks
        #: (host time served, generatedAt of the body) of every stats.json served whole
        self.stats_served: list[tuple[datetime, datetime]] = []
        self._stale_until: datetime | None = None
        self._pending_resets = sorted(scenario.resets)
        self._pending_renames = sorted(scenario.renames)
        self._pending_bans = sorted(scenario.bans)
        self.renamed: dict[str, str] = {}  # old -> new, for tests
        for _ in range(scenario.users):
            self._new_user()
        for user in self.rng.sample(
            list(self.users.values()), min(scenario.snip_users, len(self.users))
        ):
            user.snip = True

    # -- population ----------------------------------------------------------

    def _new_user(self) -> SimUser:
        self._ids += self.rng.randint(1, 50)
        name = (
            f"{self.rng.choice(['grid', 'night', 'pixel', 'quiet', 'neuro', 'vedal'])}_"
            f"{self.rng.choice(['owl', 'master', 'fan', 'lurker', 'painter'])}{self._ids % 9973}"
        )
        roll = self.rng.random()
        discord = (
            None
            if roll < 0.3
            else (
                f"{name}#{self._ids % 10000:04d}" if roll < 0.4 else name.lower().replace("-", ".")
            )
        )
        faction = (
            self.rng.choice(self.scenario.factions or FACTIONS) if self.rng.random() < 0.5 else None
        )
        activity = self.rng.choice([0.05, 0.2, 1.0, 3.0])
        if self.scenario.swarm_share and self._swarm_rng.random() < self.scenario.swarm_share:
            # the casual board's people: the swarm's faction, a Discord name, and mostly
            # too quiet for the top 1000
            faction, discord = SWARM, discord or name.lower()
            activity = self._swarm_rng.choice([0.01, 0.02, 0.05, 0.05, 0.2, 1.0])
        user = SimUser(self._ids, name, discord, faction, activity=activity)
        self.users[name] = user
        return user

    def catch_up(self, now: datetime) -> None:
        """Advance the simulation to ``now`` in 15-minute steps (lazy, on each request)."""
        if self._sim_time is None:
            self._sim_time = now - STATS_PERIOD
            if self.scenario.align_stats:
                into = (now - now.replace(minute=0, second=0, microsecond=0)) % STATS_PERIOD
                self._sim_time = now - into
            self._step(self._sim_time)
        while self._sim_time + STATS_PERIOD <= now:
            self._sim_time += STATS_PERIOD
            self._step(self._sim_time)
        if not self._stats_body and self._generations:  # pxls always serves some file
            self._stats_generated, self._stats_body = self._generations.popleft()
        self._publish(now)

    def _step(self, at: datetime) -> None:
        minutes = STATS_PERIOD.total_seconds() / 60
        while self._pending_resets and self._pending_resets[0] <= at:
            self._pending_resets.pop(0)
            self.canvas = str(int(self.canvas) + 1) if self.canvas.isdigit() else self.canvas + "x"
            for user in self.users.values():
                user.score = 0
            self._stale_until = at + self.scenario.stale_after_reset
        while self._pending_renames and self._pending_renames[0][0] <= at:
            _, old, new = self._pending_renames.pop(0)
            if old in self.users:
                user = self.users.pop(old)
                user.name = new
                self.users[new] = user
                self.renamed[old] = new
        while self._pending_bans and self._pending_bans[0][0] <= at:
            when, name, duration = self._pending_bans.pop(0)
            if name in self.users:
                self.users[name].banned_until = when + duration
        for _ in range(self._poisson(self.scenario.new_users_per_hour * minutes / 60)):
            self._new_user()
        quiet = self.scenario.quiet_after is not None and at >= self.scenario.quiet_after
        for user in self.users.values():
            if user.banned_until is not None and user.banned_until <= at:
                user.banned_until = None
            if user.banned_until is None and not quiet:
                user.score += self._poisson(user.activity * minutes)
        if self._stale_until is not None and at < self._stale_until:
            return  # the cron fails during a reset: the old file stays
        self._stale_until = None
        self._render_stats(at)

    def _poisson(self, mean: float) -> int:
        # Knuth's method is fine for the small means used here
        if mean <= 0:
            return 0
        if mean > 30:
            return max(0, round(self.rng.gauss(mean, mean**0.5)))
        limit, k, p = 2.718281828459045**-mean, 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def visible(self) -> list[SimUser]:
        """Users in toplist.canvas right now (not banned, score > 0), best first, at most
        ``toplist_size`` (1000 on pxls.space)."""
        rows = [u for u in self.users.values() if u.score > 0 and u.banned_until is None]
        rows.sort(key=lambda u: (-u.score, u.pxls_id))
        return rows[: self.scenario.toplist_size]

    def _render_stats(self, at: datetime) -> None:
        low, high = self.scenario.generation_seconds
        at += timedelta(seconds=self._generation_rng.uniform(low, high)) if high > 0 else ZERO
        local = at.astimezone(BERLIN)
        canvas = [
            {"username": "-snip-" if u.snip else u.name, "pixels": u.score, "place": i}
            for i, u in enumerate(self.visible(), start=1)
        ]
        body = {
            "general": {
                "total_users": len(self.users),
                "total_pixels_placed": sum(u.score for u in self.users.values()),
                "users_active_this_canvas": len(canvas),
                "total_factions": len(FACTIONS),
                "nth_list": [],
            },
            "breakdown": {},
            "toplist": {"alltime": canvas, "canvas": canvas},
            "factions": [],
            "board_info": {"width": 2000, "height": 2000, "palette": []},
            "generatedAt": local.strftime("%Y/%m/%d - %H:%M:%S (Europe/Berlin)"),
        }
        self._generations.append((at, php_json(body)))
        self.generated.append(at)

    def _publish(self, now: datetime) -> None:
        """Generations that have finished by ``now`` replace the served file."""
        while self._generations and self._generations[0][0] <= now:
            self._stats_generated, self._stats_body = self._generations.popleft()

    # -- server --------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/stats/stats.json", self._stats)
        app.router.add_get("/info", self._info)
        app.router.add_get("/api/v1/profile", self._profile_json)
        app.router.add_get(r"/profile/{name:[\w-]+}", self._profile_html)
        app.router.add_get("/whoami", self._whoami)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None)
        assert sockets
        self.base_url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
        return self.base_url

    async def _linger(self, request: web.Request) -> None:
        """The SLOW fault: answer after ``slow_seconds``, but never while the client is
        still waiting for less: end as soon as the connection closes (the client gave
        up) or the stand-in stops, so no test depends on which real timer fires first."""
        deadline = asyncio.get_running_loop().time() + self.scenario.slow_seconds
        while (
            not self._stopping.is_set()
            and request.transport is not None
            and not request.transport.is_closing()
            and asyncio.get_running_loop().time() < deadline
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.05)

    async def stop(self) -> None:
        self._stopping.set()  # lingering SLOW answers end now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def schedule_rename(self, at: datetime, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` at simulated time ``at`` (the old name then 404s)."""
        self._pending_renames.append((at, old, new))
        self._pending_renames.sort()

    def schedule_ban(self, at: datetime, name: str, duration: timedelta) -> None:
        """Ban ``name`` from ``at`` for ``duration``: absent from stats.json meanwhile."""
        self._pending_bans.append((at, name, duration))
        self._pending_bans.sort()

    def inject(self, endpoint: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` requests to ``endpoint`` fail with ``fault``."""
        self.faults[endpoint].extend([fault] * times)

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[..., object]
    ) -> web.StreamResponse:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        at, in_flight, status = self.clock(), self._in_flight, 500
        try:
            self.catch_up(at)
            try:
                response = await handler(request)  # type: ignore[misc]
            except web.HTTPException as exc:  # unknown paths etc.: pxls-web's error page
                response = error_page(exc.status)
            assert isinstance(response, web.StreamResponse)
            status = response.status
            return response
        finally:
            self._in_flight -= 1
            self.requests.append(RequestRecord(request.path_qs, at, in_flight, status))

    async def _fault(
        self, endpoint: str, json_ok: bytes, request: web.Request
    ) -> web.StreamResponse | None:
        if self.scenario.fault_rate and self._fault_rng.random() < self.scenario.fault_rate:
            self.faults[endpoint].append(
                self._fault_rng.choice([f for f in Fault if f is not Fault.SLOW])
            )
        if not self.faults[endpoint]:
            return None
        fault = self.faults[endpoint].popleft()
        self.faults_served += 1
        if fault is Fault.RATE_LIMIT_TEXT:
            return web.Response(
                status=429, body=b"You're doing that too much. Try again in 73 seconds."
            )
        if fault is Fault.RATE_LIMIT_RETRY_AFTER:
            return web.Response(
                status=429,
                headers={"Retry-After": "30", "Server": "cloudflare"},
                content_type="text/html",
                text="<!DOCTYPE html>Error 1015 You are being rate limited",
            )
        if fault is Fault.RATE_LIMIT_HTML:
            return error_page(429)
        if fault.value.isdigit() and fault is not Fault.FORBIDDEN:
            return error_page(int(fault.value))
        if fault is Fault.HTML_200:
            return web.Response(
                status=200, content_type="text/html", text="<html>maintenance</html>"
            )
        if fault is Fault.SLOW:
            await self._linger(request)
            return web.Response(body=json_ok, content_type="application/json")
        if fault is Fault.TRUNCATED:
            return web.Response(body=json_ok[: len(json_ok) // 2], content_type="application/json")
        if fault is Fault.WRONG_TYPES:
            return web.Response(
                body=b'{"toplist": {"canvas": "x"}, "canvasCode": 5, "user": [], "generatedAt": 7}',
                content_type="application/json",
            )
        if fault is Fault.CHALLENGE:
            return web.Response(
                status=403,
                headers={"cf-mitigated": "challenge", "Server": "cloudflare"},
                content_type="text/html",
                text="<title>Just a moment...</title>",
            )
        return error_page(403)

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        fault = await self._fault("stats", self._stats_body, request)
        if fault is not None:
            return fault
        self.served_stats = self._stats_body
        if self._stats_generated is not None:
            self.stats_served.append((self.clock(), self._stats_generated))
        return web.Response(body=self._stats_body, content_type="application/json")

    def _info_body(self) -> bytes:
        return json.dumps(
            {
                "canvasCode": self.canvas,
                "width": 2000,
                "height": 2000,
                "palette": [],
                "snipMode": False,
            }
        ).encode()

    async def _info(self, request: web.Request) -> web.StreamResponse:
        body = self._info_body()
        response = await self._fault("info", body, request) or web.Response(
            body=body, content_type="application/json"
        )
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    def _logged_in(self, request: web.Request) -> bool:
        return request.cookies.get("pxls-token") == self.scenario.token

    async def _whoami(self, request: web.Request) -> web.StreamResponse:
        if self._logged_in(request):
            return web.json_response({"username": "standin_bot", "id": 1})
        return web.json_response({"username": "unauthed", "id": -1})

    def _lookup(self, request: web.Request, name: str) -> SimUser | web.StreamResponse:
        if not self._logged_in(request):
            return error_page(403)
        user = self.users.get(name)
        return error_page(404) if user is None else user

    async def _profile_json(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("username", "")
        found = self._lookup(request, name)
        if not isinstance(found, SimUser):
            return found
        body = gson_json(profile_dict(found))
        return await self._fault("profile", body, request) or web.Response(
            body=body, content_type="application/json"
        )

    async def _profile_html(self, request: web.Request) -> web.StreamResponse:
        found = self._lookup(request, request.match_info["name"])
        if not isinstance(found, SimUser):
            return found
        scenario = self.scenario
        page = profile_page(found, scenario.site, scenario.page_template).encode()
        return await self._fault("profile", page, request) or web.Response(
            body=page, content_type="text/html", charset="utf-8"
        )
