"""``PxlsClient``: the one HTTP client that talks to pxls.space (async, aiohttp).

It applies the request timeout and body size caps, and maps every failure to
:mod:`.errors`. It decides on status code, headers and Content-Type, never on an
error page's text (pxls.space turns every GET error into an HTML page). It does no
pacing: the command processor sends one request at a time.

It sends its GETs through a :class:`Transport`: :class:`AiohttpTransport` (the
default; owns its :class:`aiohttp.ClientSession` or borrows one) or another that
answers with the same response shape (status, headers, Content-Type,
Content-Length, a body read in chunks) and raises aiohttp's exceptions, as the
simulator's in-memory model of pxls.space does. Everything after the transport
(status codes, ``Retry-After``, "Try again in N seconds", caps, Content-Type,
parsing) is this module's, whichever transport answers.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar
from urllib.parse import quote

import aiohttp

from ..errors import (
    AuthError,
    MalformedDataError,
    NotFoundError,
    RateLimitedError,
    TransientError,
)
from ..models import CanvasInfo, Profile, Snapshot
from ..settings import PxlsSettings
from .page import parse_profile_html
from .parsing import is_valid_username, parse_info, parse_profile_json, parse_stats

_TRY_AGAIN_RE = re.compile(rb"Try again in (\d{1,6}) seconds")
_CHUNK = 64 * 1024


def _retry_after(header: str | None, body: bytes, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) or a plain-text body."""
    if header:
        header = header.strip()
        if header.isascii() and header.isdigit():  # not "²": str.isdigit takes superscripts
            return float(header)
        try:
            when = parsedate_to_datetime(header)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    match = _TRY_AGAIN_RE.search(body[:4096])
    return float(match.group(1)) if match else None


_T = TypeVar("_T")


class Body(Protocol):
    """A response body read in chunks (aiohttp's ``StreamReader`` is one)."""

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class HttpResponse(Protocol):
    """What the client reads of a response (aiohttp's ``ClientResponse`` is one)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive keys
    @property
    def content_type(self) -> str: ...  # the media type alone, lower case
    @property
    def content_length(self) -> int | None: ...
    @property
    def content(self) -> Body: ...


class Transport(Protocol):
    """How :class:`PxlsClient` sends a GET and where it parses a big body.

    ``get`` answers with an :class:`HttpResponse` (any status: the client decides)
    or raises what aiohttp raises: ``TimeoutError``, ``aiohttp.ClientError`` (its
    ``ClientPayloadError`` for a body cut short, ``ClientConnectorError``...), also
    while the body is read. ``off_loop`` runs a CPU-heavy parse away from the event
    loop (a worker thread for aiohttp).
    """

    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float
    ) -> AbstractAsyncContextManager[HttpResponse]: ...
    async def off_loop(self, fn: Callable[[bytes], _T], body: bytes) -> _T: ...
    async def close(self) -> None: ...


class AiohttpTransport:
    """The production :class:`Transport`: an :class:`aiohttp.ClientSession`, created
    on first use and closed by :meth:`close`, or borrowed (never closed here)."""

    def __init__(self, settings: PxlsSettings, session: aiohttp.ClientSession | None = None):
        self._settings = settings
        self._session = session
        self._owns_session = session is None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._settings.request_timeout.total_seconds()),
                cookie_jar=aiohttp.DummyCookieJar(),  # we send our own cookies, keep none
                raise_for_status=False,
            )
            self._owns_session = True
        return self._session

    def get(
        self, url: str, *, headers: Mapping[str, str], timeout: float
    ) -> AbstractAsyncContextManager[HttpResponse]:
        return self._get_session().get(
            url,
            headers=dict(headers),
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        )

    async def off_loop(self, fn: Callable[[bytes], _T], body: bytes) -> _T:
        return await asyncio.to_thread(fn, body)

    async def close(self) -> None:
        """Close the session if this transport created it. Idempotent."""
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None


class PxlsApi(Protocol):
    """What the source needs from a pxls.space client (tests substitute a fake). Each
    fetch is one request (async); a failure raises a :class:`~..errors.PxlsError`
    (a profile's 404: :class:`~..errors.NotFoundError`)."""

    async def fetch_info(self) -> CanvasInfo:
        """``/info``: the current canvas code."""
        ...

    async def fetch_stats(self) -> Snapshot:
        """``/stats/stats.json``: the toplist and its ``generatedAt``."""
        ...

    async def fetch_profile(self, username: str) -> Profile:
        """One user's profile."""
        ...

    async def close(self) -> None:
        """Close the HTTP session (idempotent)."""
        ...


class PxlsClient:
    """Async client for stats.json, /info and profiles. Use as ``async with``.

    ``session``: borrow an existing session (not closed by :meth:`close`);
    otherwise the client creates and owns one on first use. ``transport``: send
    through another :class:`Transport` instead (closed by :meth:`close`; a
    transport shared by several clients makes its ``close`` a no-op).
    """

    def __init__(
        self,
        settings: PxlsSettings,
        session: aiohttp.ClientSession | None = None,
        *,
        transport: Transport | None = None,
    ):
        if transport is not None and session is not None:
            raise ValueError("give a session or a transport, not both")
        self._settings = settings
        self._transport: Transport = transport or AiohttpTransport(settings, session)
        self._base = settings.base_url.rstrip("/")
        self._validate = str(uuid.uuid4())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client created it. Idempotent."""
        await self._transport.close()

    def _headers(self, *, with_token: bool) -> dict[str, str]:
        headers = {"User-Agent": self._settings.user_agent}
        cookies = [f"pxls-validate={self._validate}"]
        if with_token and self._settings.token is not None:
            cookies.append(f"pxls-token={self._settings.token.reveal()}")
        headers["Cookie"] = "; ".join(cookies)
        if self._settings.cf_auth is not None:
            headers["X-Pxls-CFAuth"] = self._settings.cf_auth.reveal()
        return headers

    async def _get(
        self, path: str, *, limit: int, expect_json: bool, with_token: bool = False
    ) -> bytes:
        """GET ``path``; return the body of a 200 or raise a :mod:`.errors` exception."""
        url = self._base + path
        what = path.split("?")[0]
        try:
            async with self._transport.get(
                url,
                headers=self._headers(with_token=with_token),
                timeout=self._settings.request_timeout.total_seconds(),
            ) as resp:
                return await self._answer(resp, what, limit=limit, expect_json=expect_json)
        # causes dropped on purpose below: aiohttp's exceptions carry the request's
        # RequestInfo (headers with the pxls-token cookie and X-Pxls-CFAuth), and a
        # chained cause is printed by every traceback logger
        except TimeoutError:
            raise TransientError(
                f"{what}: no complete answer within "
                f"{self._settings.request_timeout.total_seconds():g} s"
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise TransientError(f"{what}: truncated response ({type(exc).__name__})") from None
        except aiohttp.ClientConnectorError as exc:
            # (aiohttp's own text says "ssl:default" for a plain http URL too)
            reason = exc.os_error.strerror or type(exc.os_error).__name__
            raise TransientError(
                f"{what}: cannot connect to {exc.host}:{exc.port}: {reason}"
            ) from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from None

    async def _answer(
        self, resp: HttpResponse, what: str, *, limit: int, expect_json: bool
    ) -> bytes:
        """The body of a 200, or the :mod:`.errors` exception its status means."""
        status = resp.status
        if resp.headers.get("cf-mitigated", "").lower() == "challenge":
            raise AuthError(
                f"{what}: Cloudflare challenge (HTTP {status}); a plain client cannot "
                f"pass it: check {self._settings.secret_envs[1]}",
                challenge=True,
            )
        if status == 200:
            body = await self._read_capped(resp, limit, what)
            if expect_json and "html" in resp.content_type:
                raise MalformedDataError(
                    f"{what}: HTML page ({resp.content_type}) where JSON was expected"
                )
            return body
        if status == 429:
            body = await self._read_capped(resp, 4096, what, truncate=True)
            wait = _retry_after(resp.headers.get("Retry-After"), body)
            shown = "no wait given" if wait is None else f"wait {wait:.0f} s"
            raise RateLimitedError(f"{what}: rate limited (HTTP 429, {shown})", wait)
        if status == 403:
            token_env, cf_env = self._settings.secret_envs
            raise AuthError(
                f"{what}: HTTP 403 Forbidden: {self._settings.instance_name} refused the "
                f"session; check {token_env} (logged-in pxls-token cookie) and {cf_env}",
                challenge=False,
            )
        if status == 404:
            raise NotFoundError(f"{what}: HTTP 404 Not Found")
        raise TransientError(f"{what}: HTTP {status}")

    @staticmethod
    async def _read_capped(
        resp: HttpResponse, limit: int, what: str, *, truncate: bool = False
    ) -> bytes:
        if not truncate and resp.content_length is not None and resp.content_length > limit:
            raise MalformedDataError(f"{what}: body of {resp.content_length} bytes over the cap")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                if truncate:
                    break
                raise MalformedDataError(f"{what}: body over the cap of {limit} bytes")
        return b"".join(chunks)

    # -- endpoints ---------------------------------------------------------------

    async def fetch_stats_body(self) -> bytes:
        """Raw ``/stats/stats.json`` (parse with :func:`.parsing.parse_stats`, off-loop)."""
        return await self._get(
            "/stats/stats.json", limit=self._settings.max_stats_bytes, expect_json=True
        )

    async def fetch_stats(self) -> Snapshot:
        """``/stats/stats.json`` parsed off the loop (big bodies must not block): in a
        worker thread, or where the transport's ``off_loop`` says."""
        body = await self.fetch_stats_body()
        return await self._transport.off_loop(parse_stats, body)

    async def fetch_info(self) -> CanvasInfo:
        """``/info`` → canvas code."""
        body = await self._get("/info", limit=self._settings.max_page_bytes, expect_json=True)
        return parse_info(body)

    async def fetch_profile(self, username: str) -> Profile:
        """A user's profile (needs ``PXLS_TOKEN``). The name is validated and URL-encoded.

        Raises :class:`NotFoundError` for an unknown (or renamed) name.
        """
        if not is_valid_username(username):
            raise MalformedDataError(f"refusing to request an invalid username {username!r:.60}")
        if self._settings.token is None:
            raise AuthError(
                f"profiles need a logged-in session: {self._settings.secret_envs[0]} is not set",
                challenge=False,
            )
        if self._settings.profile_endpoint == "html":
            body = await self._get(
                f"/profile/{quote(username, safe='')}",
                limit=self._settings.max_page_bytes,
                expect_json=False,
                with_token=True,
            )
            return parse_profile_html(body, username)
        body = await self._get(
            f"/api/v1/profile?username={quote(username, safe='')}",
            limit=self._settings.max_page_bytes,
            expect_json=True,
            with_token=True,
        )
        return parse_profile_json(body, username)
