"""PxlsClient against every fixture and failure shape, with aioresponses (no network)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import attrs
import pytest
from aioresponses import aioresponses

from neuro_chat_elo_pxls import PxlsSettings
from neuro_chat_elo_pxls.errors import (
    AuthError,
    MalformedDataError,
    NotFoundError,
    RateLimitedError,
    TransientError,
)
from neuro_chat_elo_pxls.models import Faction
from neuro_chat_elo_pxls.pxls.client import PxlsClient

from .conftest import CF_AUTH, TOKEN
from .helpers import fixture_bytes

BASE = "http://pxls.test"
JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html; charset=utf-8"}
PROFILE_URL = re.compile(r"^http://pxls\.test/api/v1/profile\?username=.*$")


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with aioresponses() as m:
        yield m


@pytest.fixture
async def client(make_settings: Callable[..., PxlsSettings]) -> AsyncIterator[PxlsClient]:
    async with PxlsClient(make_settings()) as c:
        yield c


async def test_stats_fixture(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/stats/stats.json", body=fixture_bytes("stats.json"), headers=JSON)
    snap = await client.fetch_stats()
    assert list(snap.rows) == [
        ("grid_master", 25877),
        ("night_owl_99", 19410),
        ("veteran_vera", 15002),
        ("example_painter", 4821),
        ("quiet_lurker", 12),
    ]
    assert snap.generated_at == datetime(2025, 3, 14, 17, 45, 2, tzinfo=UTC)


async def test_info_fixture(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/info", body=fixture_bytes("info.json"), headers=JSON)
    assert (await client.fetch_info()).canvas_code == "86"


@pytest.mark.parametrize("endpoint", ["api", "html"])
@pytest.mark.parametrize(
    ("fixture", "name", "pxls_id", "discord", "faction"),
    [
        (
            "profile_with_discord_and_faction",
            "example_painter",
            184467,
            "example.painter",
            Faction(4242, "EX♥", "Example Painters' Guild", 8339391),
        ),
        ("profile_no_discord_no_faction", "quiet_lurker", 233901, None, None),
        ("profile_banned_example", "timed_out_tom", 120055, "tom#4821", None),
    ],
)
async def test_profile_fixtures(
    make_settings: Callable[..., PxlsSettings],
    mocked: aioresponses,
    endpoint: str,
    fixture: str,
    name: str,
    pxls_id: int,
    discord: str | None,
    faction: Faction | None,
) -> None:
    if endpoint == "api":
        mocked.get(PROFILE_URL, body=fixture_bytes(f"{fixture}.json"), headers=JSON)
    else:
        mocked.get(f"{BASE}/profile/{name}", body=fixture_bytes(f"{fixture}.html"), headers=HTML)
    async with PxlsClient(make_settings(profile_endpoint=endpoint)) as client:
        profile = await client.fetch_profile(name)
    assert profile.name == name
    assert profile.discord == discord
    if endpoint == "api":
        assert profile.pxls_id == pxls_id
        assert profile.faction == faction
    else:  # the page has no user id and no colour
        assert profile.pxls_id is None
        expected = None if faction is None else Faction(faction.id, faction.tag, faction.name)
        assert profile.faction == expected


async def test_profile_request_carries_secrets_and_encodes_name(
    client: PxlsClient, mocked: aioresponses
) -> None:
    mocked.get(
        PROFILE_URL, status=404, body=fixture_bytes("error_404_logged_in.html"), headers=HTML
    )
    with pytest.raises(NotFoundError):
        await client.fetch_profile("no_such-user")
    (_method, url), calls = next(iter(mocked.requests.items()))
    assert str(url).endswith("username=no_such-user")
    headers = calls[0].kwargs["headers"]
    assert f"pxls-token={TOKEN}" in headers["Cookie"]
    assert headers["X-Pxls-CFAuth"] == CF_AUTH
    assert "neuro-chat-elo-pxls" in headers["User-Agent"]


async def test_stats_request_does_not_send_the_session_token(
    client: PxlsClient, mocked: aioresponses
) -> None:
    mocked.get(f"{BASE}/stats/stats.json", body=fixture_bytes("stats.json"), headers=JSON)
    await client.fetch_stats()
    calls = next(iter(mocked.requests.values()))
    assert "pxls-token" not in calls[0].kwargs["headers"]["Cookie"]


@pytest.mark.parametrize(
    "name", ["", "a" * 33, "../etc", "x?y=1", "robert'); DROP TABLE users;--", "名前", "a b"]
)
async def test_hostile_names_never_reach_a_url(
    client: PxlsClient, mocked: aioresponses, name: str
) -> None:
    with pytest.raises(MalformedDataError):
        await client.fetch_profile(name)
    assert not mocked.requests


async def test_no_token_sends_nothing(
    make_settings: Callable[..., PxlsSettings], mocked: aioresponses
) -> None:
    async with PxlsClient(make_settings(token=None)) as client:
        with pytest.raises(AuthError, match="PXLS_TOKEN"):
            await client.fetch_profile("someone")
    assert not mocked.requests


async def test_429_plain_text_wait(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(PROFILE_URL, status=429, body=fixture_bytes("ratelimited_backend_429.txt"))
    with pytest.raises(RateLimitedError) as info:
        await client.fetch_profile("someone")
    assert info.value.retry_after == 73


async def test_429_retry_after_header_wins(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        PROFILE_URL,
        status=429,
        headers={"Retry-After": "30", **HTML},
        body="<html>Error 1015</html>",
    )
    with pytest.raises(RateLimitedError) as info:
        await client.fetch_profile("someone")
    assert info.value.retry_after == 30


async def test_429_html_page_has_no_wait(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        PROFILE_URL, status=429, body=fixture_bytes("error_429_via_frontend.html"), headers=HTML
    )
    with pytest.raises(RateLimitedError) as info:
        await client.fetch_profile("someone")
    assert info.value.retry_after is None


async def test_403_anonymous_page(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        PROFILE_URL, status=403, body=fixture_bytes("error_403_anonymous.html"), headers=HTML
    )
    with pytest.raises(AuthError) as info:
        await client.fetch_profile("someone")
    assert not info.value.challenge
    assert "PXLS_TOKEN" in str(info.value)
    assert TOKEN not in str(info.value)


async def test_cloudflare_challenge(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        f"{BASE}/info",
        status=403,
        headers={"cf-mitigated": "challenge", **HTML},
        body="<title>Just a moment...</title>",
    )
    with pytest.raises(AuthError) as info:
        await client.fetch_info()
    assert info.value.challenge
    assert "PXLS_CF_AUTH" in str(info.value)


#: a bare PXLS_TOKEN / PXLS_CF_AUTH, not the ironmouse instance's own variables
BARE = re.compile(r"PXLS_(TOKEN|CF_AUTH)(?!_IRONMOUSE)")


async def test_auth_messages_name_the_variables_the_instance_reads(
    tmp_path: Path, mocked: aioresponses, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue item 11: instance ``ironmouse`` reads only ``PXLS_TOKEN_IRONMOUSE`` (and
    ``PXLS_CF_AUTH_IRONMOUSE``), but its 403 said "check PXLS_TOKEN and PXLS_CF_AUTH"."""
    from neuro_chat_elo_pxls.settings import instances_from_config

    monkeypatch.setenv("PXLS_TOKEN_IRONMOUSE", TOKEN)
    section = {"db_path": str(tmp_path / "p.sqlite3"), "instances": {"ironmouse": {}}}
    (settings,) = instances_from_config({"base_url": BASE, **section})
    mocked.get(PROFILE_URL, status=403, body=b"<html>403</html>", headers=HTML)
    mocked.get(f"{BASE}/info", status=403, headers={"cf-mitigated": "challenge", **HTML})
    messages = []
    async with PxlsClient(settings) as client:
        with pytest.raises(AuthError) as forbidden:
            await client.fetch_profile("someone")
        with pytest.raises(AuthError) as challenge:
            await client.fetch_info()
        messages += [str(forbidden.value), str(challenge.value)]
    async with PxlsClient(attrs.evolve(settings, token=None)) as client:
        with pytest.raises(AuthError) as no_token:
            await client.fetch_profile("someone")
        messages.append(str(no_token.value))
    assert "check PXLS_TOKEN_IRONMOUSE" in messages[0] and "PXLS_CF_AUTH_IRONMOUSE" in messages[0]
    assert "ironmouse refused the session" in messages[0]
    assert "check PXLS_CF_AUTH_IRONMOUSE" in messages[1]
    assert "PXLS_TOKEN_IRONMOUSE is not set" in messages[2]
    assert not [m for m in messages if BARE.search(m)], messages


def test_no_message_names_a_fixed_secret_variable() -> None:
    """Every message takes the variable names from the settings (``secret_envs``): no
    string in the package but the settings' own and the help text spells them out."""
    import ast

    root = Path(__file__).parent.parent / "neuro_chat_elo_pxls"
    allowed = {root / "settings.py", root / "cli" / "parser.py"}
    found = []
    for path in sorted(root.rglob("*.py")):
        if path in allowed:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        found += [
            f"{path.relative_to(root)}:{node.lineno}: {node.value!r}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and re.search(r"PXLS_(TOKEN|CF_AUTH)", node.value)
        ]
    assert not found, found


@pytest.mark.parametrize("status", [500, 502, 503, 504, 520])
async def test_5xx_is_transient(client: PxlsClient, mocked: aioresponses, status: int) -> None:
    mocked.get(
        f"{BASE}/stats/stats.json",
        status=status,
        body=fixture_bytes("error_500_via_frontend.html"),
        headers=HTML,
    )
    with pytest.raises(TransientError, match=str(status)):
        await client.fetch_stats()


async def test_timeout_is_transient(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/info", exception=TimeoutError())
    with pytest.raises(TransientError, match="within 20 s"):
        await client.fetch_info()


async def test_connection_error_is_transient(client: PxlsClient, mocked: aioresponses) -> None:
    import aiohttp

    mocked.get(f"{BASE}/info", exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(TransientError, match="refused"):
        await client.fetch_info()


async def test_a_refused_connection_says_so_plainly(
    make_settings: Callable[..., PxlsSettings],
) -> None:
    """A real refused connection on loopback (nothing listens on the port): one plain
    line, without aiohttp's ``ssl:default`` for an http URL (issue 21, item 5)."""
    import socket

    with socket.socket() as sock:  # a free port, closed again: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with PxlsClient(make_settings(base_url=f"http://127.0.0.1:{port}")) as c:
        with pytest.raises(TransientError) as caught:
            await c.fetch_info()
    message = str(caught.value)
    assert message.startswith(f"/info: cannot connect to 127.0.0.1:{port}: "), message
    assert "ssl" not in message


async def test_html_where_json_expected(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        f"{BASE}/stats/stats.json",
        status=200,
        body=fixture_bytes("error_500_via_frontend.html"),
        headers=HTML,
    )
    with pytest.raises(MalformedDataError, match="HTML"):
        await client.fetch_stats()


async def test_truncated_json(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(f"{BASE}/stats/stats.json", body=fixture_bytes("stats.json")[:1500], headers=JSON)
    with pytest.raises(MalformedDataError, match="not valid JSON"):
        await client.fetch_stats()


async def test_body_over_cap(
    make_settings: Callable[..., PxlsSettings], mocked: aioresponses
) -> None:
    mocked.get(f"{BASE}/stats/stats.json", body=b"[" * 5000, headers=JSON)
    async with PxlsClient(make_settings(max_stats_bytes=4096)) as client:
        with pytest.raises(MalformedDataError, match="cap"):
            await client.fetch_stats()


async def test_wrong_profile_returned(client: PxlsClient, mocked: aioresponses) -> None:
    mocked.get(
        PROFILE_URL, body=fixture_bytes("profile_with_discord_and_faction.json"), headers=JSON
    )
    with pytest.raises(MalformedDataError, match="asked for"):
        await client.fetch_profile("someone_else")


async def test_borrowed_session_is_not_closed(
    make_settings: Callable[..., PxlsSettings], mocked: aioresponses
) -> None:
    import aiohttp

    mocked.get(f"{BASE}/info", body=fixture_bytes("info.json"), headers=JSON)
    async with aiohttp.ClientSession() as session:
        client = PxlsClient(make_settings(), session)
        assert (await client.fetch_info()).canvas_code == "86"
        await client.close()
        assert not session.closed


async def test_aioresponses_compat_shim_matches_this_aiohttp(client: PxlsClient) -> None:
    """The shim is applied exactly when aiohttp requires ``stream_writer`` (3.14+),
    and a mocked response then reads like a real one (status, headers, body)."""
    import aiohttp
    from aioresponses import core as aioresponses_core

    from . import aiohttp_compat

    patched = vars(aioresponses_core)["ClientResponse"] is aiohttp_compat.CompatClientResponse
    major_minor = tuple(int(p) for p in aiohttp.__version__.split(".")[:2])
    assert aiohttp_compat.needs_shim() == (major_minor >= (3, 14))
    assert patched == aiohttp_compat.needs_shim()
    with aioresponses() as m:
        m.get(f"{BASE}/info", status=200, body=b'{"canvasCode":"86"}', headers=JSON)
        info = await client.fetch_info()
    assert info.canvas_code == "86"


async def test_another_transport_is_read_by_the_same_code(
    make_settings: Callable[..., PxlsSettings],
) -> None:
    """A client given a transport sends through it (headers, timeout) and reads its
    answer with its own code: a 429 whose wait is in the body; close closes it. A
    session and a transport together are refused."""
    from collections.abc import Mapping
    from contextlib import asynccontextmanager
    from typing import TypeVar

    import aiohttp

    from neuro_chat_elo_pxls.testing.simulate.wire import Body, Response

    T = TypeVar("T")
    sent: list[tuple[str, float]] = []
    closed: list[bool] = []
    text = b"You're doing that too much. Try again in 3600 seconds."

    class Transport:
        @asynccontextmanager
        async def get(
            self,
            url: str,
            *,
            headers: Mapping[str, str],
            timeout: float,  # noqa: ASYNC109 (the Transport protocol's)
        ) -> AsyncIterator[Response]:
            assert "pxls-validate=" in headers["Cookie"]
            sent.append((url, timeout))
            body = Body(text, cut=None, error=None, size=len(text))
            yield Response(429, [("Content-Type", "text/plain")], body)

        async def off_loop(self, fn: Callable[[bytes], T], body: bytes) -> T:
            return fn(body)

        async def close(self) -> None:
            closed.append(True)

    settings = make_settings()
    async with PxlsClient(settings, transport=Transport()) as client:
        with pytest.raises(RateLimitedError) as caught:
            await client.fetch_info()
    assert caught.value.retry_after == 3600
    assert sent == [(f"{BASE}/info", 20.0)] and closed == [True]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ValueError, match="not both"):
            PxlsClient(settings, session, transport=Transport())
