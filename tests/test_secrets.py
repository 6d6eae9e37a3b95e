"""Secrets never leak: a faulty run at DEBUG level, everything captured and searched."""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.testing import Fault, PxlsStandIn, Scenario

from .helpers import T0, FakeClock, drive

pytestmark = pytest.mark.integration
TOKEN = "201733|TOPSECRET-session-cookie-value"
CF = "CFAUTH-TOPSECRET-key-value"


async def test_faulty_run_leaks_no_secret(
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    standin = PxlsStandIn(
        Scenario(users=15, seed=2, token=TOKEN, slow_seconds=0.3), lambda: clock.now
    )
    await standin.start()
    for endpoint in ("profile", "stats", "info"):
        for fault in (
            Fault.FORBIDDEN,
            Fault.CHALLENGE,
            Fault.RATE_LIMIT_TEXT,
            Fault.SERVER_500,
            Fault.TRUNCATED,
            Fault.SLOW,
        ):
            standin.inject(endpoint, fault)
    db = tmp_path / "db.sqlite3"
    settings = PxlsSettings(
        base_url=standin.base_url,
        db_path=str(db),
        token=Secret(TOKEN),
        cf_auth=Secret(CF),
        request_timeout=timedelta(seconds=0.1),
    )
    source = PxlsSource(settings, rng=random.Random(3))
    try:
        with caplog.at_level(logging.DEBUG):  # every logger, aiohttp and aiosqlite included
            await drive(source, clock, T0 + timedelta(hours=6))
            status = await source.status(clock.now)
            await source.collect_deltas()
    finally:
        await source.on_shutdown()
        await standin.stop()
    assert any(r.levelno >= logging.WARNING for r in caplog.records)  # faults happened
    assert any(
        r.path.startswith("/api/v1/profile") and r.status == 200 for r in standin.requests
    )  # and the token was really used
    captured = capsys.readouterr()
    texts = [
        caplog.text,
        captured.out,
        captured.err,
        repr(source),
        repr(settings),
        str(settings),
        str(status),
    ]
    texts += [repr(r.exc_info) for r in caplog.records if r.exc_info]
    blobs = _read_all(tmp_path)
    for secret in (TOKEN, CF, "TOPSECRET"):
        assert all(secret not in t for t in texts), secret
        assert all(secret.encode() not in b for b in blobs), secret


def _read_all(folder: Path) -> list[bytes]:
    """The database, its WAL and lock file: secrets must not be stored either."""
    return [p.read_bytes() for p in folder.iterdir() if p.is_file()]
