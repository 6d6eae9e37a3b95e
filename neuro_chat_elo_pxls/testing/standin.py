"""``PxlsStandIn``: an aiohttp server that answers like pxls.space (see shared API notes).

Same URLs, status codes, headers and body shapes: ``/stats/stats.json`` (PHP
``json_encode`` escapes, ``generatedAt`` in Europe/Berlin, regenerated every 15
simulated minutes), ``/info`` (``canvasCode``), ``/api/v1/profile?username=``
(Gson escapes; 403 without the ``pxls-token`` cookie), ``/profile/<name>`` (pxls-web
HTML), and pxls-web style HTML error pages for every GET error.

The population evolves against a clock (the host's, possibly simulated) in
:class:`~.canvas_model.CanvasModel`, the base of the server: pixel activity, new
users, canvas resets (the stale stats.json is served on for a while), renames,
temporary bans and ``-snip-`` rows. Faults can be injected per endpoint.
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
from datetime import datetime
from enum import StrEnum

import attrs
from aiohttp import web

from .canvas_model import (
    BERLIN,
    FACTIONS,
    HOSTILE_FACTIONS,
    STATS_PERIOD,
    SWARM,
    ZERO,
    CanvasModel,
    Scenario,
)
from .pages import (
    CHALLENGE_HTML,
    CLOUDFLARE_1015_HTML,
    MAINTENANCE_HTML,
    SimUser,
    error_page,
    gson_json,
    profile_dict,
    profile_page,
    rate_limited_text,
)

__all__ = [
    "BERLIN",
    "FACTIONS",
    "HOSTILE_FACTIONS",
    "STATS_PERIOD",
    "SWARM",
    "ZERO",
    "Fault",
    "PxlsStandIn",
    "RequestRecord",
    "Scenario",
]


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
    """One request the stand-in served (``status``: the HTTP status it answered)."""

    path: str
    at: datetime  # host (simulated) time
    in_flight: int  # requests being served when this one arrived (including it)
    status: int


class PxlsStandIn(CanvasModel):
    """The stand-in server. ``await start()`` → ``base_url``; ``await stop()``."""

    def __init__(self, scenario: Scenario, clock: Callable[[], datetime]) -> None:
        super().__init__(scenario, clock)
        self.requests: list[RequestRecord] = []
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.faults_served = 0
        self._fault_rng = random.Random(scenario.seed + 1)
        self._in_flight = 0
        self.max_in_flight = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.base_url = ""
        self.served_stats = b""  # the last stats.json served without a fault
        #: (host time served, generatedAt of the body) of every stats.json served whole
        self.stats_served: list[tuple[datetime, datetime]] = []

    # -- server --------------------------------------------------------------

    async def start(self, port: int = 0) -> str:
        """Serve on 127.0.0.1:``port`` (0: any free port); the base URL."""
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
        """Stop serving (lingering slow answers end at once); idempotent."""
        self._stopping.set()  # lingering SLOW answers end now
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

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
            return web.Response(status=429, body=rate_limited_text(73))
        if fault is Fault.RATE_LIMIT_RETRY_AFTER:
            return web.Response(
                status=429,
                headers={"Retry-After": "30", "Server": "cloudflare"},
                content_type="text/html",
                text=CLOUDFLARE_1015_HTML,
            )
        if fault is Fault.RATE_LIMIT_HTML:
            return error_page(429)
        if fault.value.isdigit() and fault is not Fault.FORBIDDEN:
            return error_page(int(fault.value))
        if fault is Fault.HTML_200:
            return web.Response(status=200, content_type="text/html", text=MAINTENANCE_HTML)
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
                text=CHALLENGE_HTML,
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
