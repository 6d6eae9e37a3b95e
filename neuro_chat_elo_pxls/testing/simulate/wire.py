"""The in-memory transport (:class:`WireTransport`) between the real ``PxlsClient`` and
the model pxls: the client's GET goes to :meth:`World.serve <.world.World.serve>`, and
its :class:`~.world.Answer` comes back as an HTTP response read the way the client
reads aiohttp's (status, case-insensitive headers, Content-Type and Content-Length
as aiohttp derives them, a body in chunks), with aiohttp's exceptions where aiohttp
raises them: ``TimeoutError`` for no answer, its read timeout for a body that
stalls, ``ClientPayloadError`` for a connection closed before the Content-Length.

No socket, thread or timer: a request takes one event-loop step (in the model, where
the host may cancel it), and the client's off-loop parse runs inline and then yields
one step, as :func:`~.run.inline_sqlite` does for SQLite. Whatever the client does
with the answer is the real client's code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
from aiohttp.helpers import HeadersMixin
from multidict import CIMultiDict, CIMultiDictProxy

from ...settings import PxlsSettings

if TYPE_CHECKING:
    from .world import Answer, World

_T = TypeVar("_T")
_PAD = b" " * (64 * 1024)


class _Chunks:
    """The async iterator of :meth:`Body.iter_chunked` (a class, not an async generator:
    an abandoned generator's finalizer would schedule a task of its own)."""

    def __init__(self, body: Body, n: int) -> None:
        self._body, self._n = body, n

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        return self._body.next_chunk(self._n)


class Body:
    """A response body: ``data`` (its first ``cut`` bytes only, then ``error``), and
    past it, for a body over the cap, spaces up to ``size``."""

    def __init__(
        self, data: bytes, *, cut: int | None, error: BaseException | None, size: int
    ) -> None:
        self._data = data if cut is None else data[:cut]
        self._error = error
        self.size = size
        self.handed_out = 0
        self.largest_read = 0
        self.finished = False

    def iter_chunked(self, n: int) -> _Chunks:
        self.largest_read = max(self.largest_read, n)
        return _Chunks(self, n)

    def next_chunk(self, n: int) -> bytes:
        at = self.handed_out
        if at < len(self._data):
            chunk = self._data[at : at + n]
        elif self._error is not None:
            raise self._error
        elif at < self.size:
            chunk = _PAD[: min(n, self.size - at)]
        else:
            self.finished = True
            raise StopAsyncIteration
        self.handed_out += len(chunk)
        return chunk


class Response(HeadersMixin):
    """What the client reads of an answer; Content-Type and Content-Length are
    derived by aiohttp's own :class:`~aiohttp.helpers.HeadersMixin`."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: Body) -> None:
        self.status = status
        self._headers = CIMultiDictProxy(CIMultiDict(headers))
        self.content = body

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._headers  # type: ignore[return-value]


class _Exchange:
    """``async with transport.get(...) as response``: one request to the model pxls."""

    def __init__(
        self, wire: WireTransport, url: str, headers: Mapping[str, str], timeout: float
    ) -> None:
        self._wire, self._url, self._headers, self._timeout = wire, url, headers, timeout
        self._body: Body | None = None
        self._limit = 0

    async def __aenter__(self) -> Response:
        wire, world = self._wire, self._wire.world
        parts = urlsplit(self._url)
        path, query = parts.path, parse_qs(parts.query)
        name: str | None = None
        if path == "/info":
            endpoint, self._limit = "info", wire.settings.max_page_bytes
        elif path == "/stats/stats.json":
            endpoint, self._limit = "stats", wire.settings.max_stats_bytes
        elif path == "/api/v1/profile" and len(query.get("username", ())) == 1:
            endpoint, self._limit = "profile", wire.settings.max_page_bytes
            name = query["username"][0]
        elif path.startswith("/profile/"):
            endpoint, self._limit = "profile", wire.settings.max_page_bytes
            name = unquote(path.removeprefix("/profile/"))
        else:
            world.checker.fail("requests go to pxls's URLs", f"GET {self._url}")
            raise aiohttp.ClientConnectionError(f"no such URL in the model: {self._url}")
        if parts.scheme + "://" + parts.netloc != wire.base:
            world.checker.fail("requests go to pxls's URLs", f"GET {self._url}")
        cookies = {c.split("=", 1)[0].strip() for c in self._headers.get("Cookie", "").split(";")}
        answer = await world.serve(endpoint, name, cookies)
        try:
            return self._response(answer)
        except BaseException:
            world.done()
            raise

    def _response(self, answer: Answer) -> Response:
        if answer.timeout and answer.cut is None:  # no answer: the total timeout fires
            raise TimeoutError
        error: BaseException | None = None
        if answer.cut is not None:
            error = (
                aiohttp.SocketTimeoutError("Timeout on reading data from socket")
                if answer.timeout
                else aiohttp.ClientPayloadError(
                    "Response payload is not completed: <ContentLengthError: 400, "
                    "message='Not enough data to satisfy content length header.'>"
                )
            )
        size = self._limit + 4 * len(_PAD) if answer.oversize else len(answer.body)
        body = Body(answer.body, cut=answer.cut, error=error, size=size)
        self._body = body
        headers = list(answer.headers)
        if answer.length:
            headers.append(("Content-Length", str(size)))
        return Response(answer.status, headers, body)

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._wire.world.done()
        body = self._body
        # the client stops reading once past its cap: never the whole body, and no
        # more than one read past the cap
        if body is None or body.size <= self._limit:
            return
        if body.finished or body.handed_out > self._limit + body.largest_read:
            self._wire.world.checker.fail(
                "size caps hold",
                f"{body.handed_out} bytes of a {body.size}-byte body read from "
                f"{self._url.split('?')[0]} (cap {self._limit})",
            )


class WireTransport:
    """The simulator's ``Transport`` for ``PxlsClient``: GETs answered by ``world``.

    One transport serves every client of a run (a restart's new source gets a new
    client on the same transport), so :meth:`close` does nothing.
    """

    def __init__(self, world: World, settings: PxlsSettings) -> None:
        self.world = world
        self.settings = settings
        parts = urlsplit(settings.base_url)
        self.base = parts.scheme + "://" + parts.netloc

    def get(self, url: str, *, headers: Mapping[str, str], timeout: float) -> _Exchange:
        return _Exchange(self, url, headers, timeout)

    async def off_loop(self, fn: Callable[[bytes], _T], body: bytes) -> _T:
        """Inline, then one event-loop step (a worker thread's hop): a cancelled
        caller loses the result."""
        result = fn(body)
        await asyncio.sleep(0)
        return result

    async def close(self) -> None:
        return None
