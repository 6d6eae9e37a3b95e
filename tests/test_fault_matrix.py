"""Fault matrix: every endpoint x every fault, real HTTP against the local stand-in.

For each cell: the fault reaches the client with the right status; the wait or
backoff is applied in host time; the other request key keeps running; the
accounting stays exact; the next timer recovers. The table of expected waits is
in README.md ("Failure behaviour").
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.testing import Fault, PxlsStandIn, RequestRecord, Scenario

from .helpers import T0, FakeClock, Ledger, check_holds_latest, drive

pytestmark = pytest.mark.integration

BACKOFF = timedelta(seconds=30)
AUTH_PAUSE = timedelta(minutes=15)
#: fault → (HTTP status the stand-in answers, the least wait before the key retries)
EXPECTED: dict[Fault, tuple[int, timedelta]] = {
    Fault.RATE_LIMIT_TEXT: (429, timedelta(seconds=73)),
    Fault.RATE_LIMIT_RETRY_AFTER: (429, timedelta(seconds=30)),
    Fault.RATE_LIMIT_HTML: (429, BACKOFF),
    Fault.SERVER_500: (500, BACKOFF),
    Fault.BAD_GATEWAY: (502, BACKOFF),
    Fault.UNAVAILABLE: (503, BACKOFF),
    Fault.GATEWAY_TIMEOUT: (504, BACKOFF),
    Fault.HTML_200: (200, BACKOFF),
    Fault.SLOW: (200, BACKOFF),
    Fault.TRUNCATED: (200, BACKOFF),
    Fault.WRONG_TYPES: (200, BACKOFF),
    Fault.CHALLENGE: (403, AUTH_PAUSE),
    Fault.FORBIDDEN: (403, AUTH_PAUSE),
}
ENDPOINTS = {  # matrix row → (stand-in fault endpoint, path prefix, profile_endpoint)
    "stats": ("stats", "/stats/stats.json", "api"),
    "info": ("info", "/info", "api"),
    "profile_json": ("profile", "/api/v1/profile", "api"),
    "profile_html": ("profile", "/profile/", "html"),
}
LEADERBOARD_PATHS = ("/info", "/stats/stats.json")
#: real seconds: the client gives up on the SLOW fault after SLOW_TIMEOUT, and the
#: stand-in's SLOW answer waits until the client has gone (or SLOW_SECONDS, far beyond
#: any machine's delay): no outcome depends on which real timer fires first (it did:
#: a 1 s answer against a 0.5 s timeout arrived in time on a loaded machine). Every
#: other cell has a generous timeout: a request that times out by accident leaves its
#: handler running on the server, and the stand-in then sees two requests at once.
SLOW_SECONDS, SLOW_TIMEOUT, TIMEOUT = 3600.0, 0.5, 10.0


def _key(record: RequestRecord) -> str:
    return "leaderboard" if record.path.startswith(LEADERBOARD_PATHS) else "profile"


@pytest.fixture
async def standin(clock: FakeClock) -> AsyncIterator[PxlsStandIn]:
    server = PxlsStandIn(Scenario(users=20, seed=5, slow_seconds=SLOW_SECONDS), lambda: clock.now)
    await server.start()
    yield server
    await server.stop()


@pytest.mark.parametrize("fault", list(Fault))
@pytest.mark.parametrize("row", list(ENDPOINTS))
async def test_fault_matrix(
    row: str, fault: Fault, standin: PxlsStandIn, clock: FakeClock, tmp_path: Path
) -> None:
    endpoint, prefix, profile_endpoint = ENDPOINTS[row]
    status, least_wait = EXPECTED[fault]
    settings = PxlsSettings(
        base_url=standin.base_url,
        db_path=str(tmp_path / "db.sqlite3"),
        token=Secret(standin.scenario.token),
        cf_auth=None,
        profile_endpoint=profile_endpoint,
        sweep_interval=timedelta(minutes=10),  # a sweep (20 profiles) every 10 minutes
        request_timeout=timedelta(seconds=SLOW_TIMEOUT if fault is Fault.SLOW else TIMEOUT),
        leaderboard_interval=timedelta(minutes=1),  # a pull after every regeneration
    )
    source = PxlsSource(settings, rng=random.Random(1))
    ledger = Ledger()
    try:
        await drive(source, clock, T0 + timedelta(minutes=20), ledger)  # warm: users enriched
        standin.inject(endpoint, fault)
        fault_from = len(standin.requests)
        await drive(source, clock, T0 + timedelta(hours=1, minutes=15), ledger)
    finally:
        await source.on_shutdown()

    after = sorted(standin.requests[fault_from:], key=lambda r: r.at)  # by start time
    faulted = next(r for r in after if r.path.startswith(prefix))
    assert faulted.status == status
    key = _key(faulted)
    same_key = [r for r in after if _key(r) == key and r.at > faulted.at]
    assert same_key, "the key recovered"
    assert same_key[0].at - faulted.at >= least_wait  # the wait/backoff was applied
    assert same_key[0].at - faulted.at <= least_wait * 1.25 + timedelta(seconds=2)
    other = [
        r
        for r in after
        if _key(r) != key
        and faulted.at < r.at <= faulted.at + max(least_wait, timedelta(minutes=25))
    ]
    assert other, "the other key kept running"
    if least_wait >= AUTH_PAUSE:  # a long pause of one key does not stop the other
        assert any(r.at < same_key[0].at for r in other)
    if fault is not Fault.SLOW:  # a timed-out handler lingers on the server side
        assert standin.max_in_flight == 1
    # accounting exact and recovered: the host holds the last served snapshot
    ledger.check_conservation()
    snapshot = parse_stats(standin.served_stats)
    check_holds_latest(ledger, snapshot, standin.canvas)


async def test_persistent_5xx_retries_are_bounded(
    standin: PxlsStandIn, clock: FakeClock, tmp_path: Path
) -> None:
    settings = PxlsSettings(
        base_url=standin.base_url,
        db_path=str(tmp_path / "db.sqlite3"),
        token=Secret(standin.scenario.token),
        cf_auth=None,
    )
    source = PxlsSource(settings, rng=random.Random(1))
    standin.inject("stats", Fault.UNAVAILABLE, 1000)
    try:
        await drive(source, clock, T0 + timedelta(minutes=59))
    finally:
        await source.on_shutdown()
    stats = [r for r in standin.requests if r.path == "/stats/stats.json"]
    assert len(stats) == settings.max_attempts  # then it gives up until the next timer


async def test_connection_refused_backs_off(clock: FakeClock, tmp_path: Path) -> None:
    settings = PxlsSettings(
        base_url="http://127.0.0.1:9",
        db_path=str(tmp_path / "db.sqlite3"),
        token=Secret("t"),
        cf_auth=None,
    )
    source = PxlsSource(settings, rng=random.Random(1))
    ticks: list[int] = []
    try:
        ticks.append(await drive(source, clock, T0 + timedelta(minutes=30)))
        status = await source.status(clock.now)
    finally:
        await source.on_shutdown()
    assert ticks[0] <= 2 * settings.max_attempts + 5  # a few attempts, not a hot loop
    assert status["keys"]["leaderboard"]["consecutive_failures"] == 0  # gave up, reset
    assert status["last_pull_at"] is None
