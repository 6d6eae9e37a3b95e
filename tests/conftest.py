from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.store.writer import Store

from . import aiohttp_compat
from .helpers import FakeClock, FakePxls

TOKEN = "201733|s3cr3t-t0ken-value"
CF_AUTH = "cf-auth-k3y-value"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fake(clock: FakeClock) -> FakePxls:
    return FakePxls(clock)


@pytest.fixture(autouse=True)
async def _close_leaked_stores(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """A test that fails before it closes its store must fail, not hang pytest at exit
    waiting for the database thread: every store a test left open is closed."""
    opened: list[Store] = []
    original = Store.__init__

    def init(self: Store, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        opened.append(self)

    monkeypatch.setattr(Store, "__init__", init)
    yield
    for store in opened:
        await store.close()  # idempotent


@pytest.fixture(autouse=True)
def _aioresponses_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    """aioresponses 0.7.9 with aiohttp >= 3.14 (see ``aiohttp_compat``)."""
    aiohttp_compat.install(monkeypatch)


@pytest.fixture(autouse=True)
def _no_env_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PXLS_TOKEN", raising=False)
    monkeypatch.delenv("PXLS_CF_AUTH", raising=False)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., PxlsSettings]:
    def make(**kw: Any) -> PxlsSettings:
        kw.setdefault("db_path", str(tmp_path / "pxls.sqlite3"))
        kw.setdefault("base_url", "http://pxls.test")
        kw.setdefault("token", Secret(TOKEN))
        kw.setdefault("cf_auth", Secret(CF_AUTH))
        return PxlsSettings(**kw)

    return make


@pytest.fixture
async def make_source(
    make_settings: Callable[..., PxlsSettings], fake: FakePxls
) -> AsyncIterator[Callable[..., PxlsSource]]:
    import random

    sources: list[PxlsSource] = []

    def make(**kw: Any) -> PxlsSource:
        source = PxlsSource(make_settings(**kw), client=fake, rng=random.Random(7))
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.on_shutdown()
