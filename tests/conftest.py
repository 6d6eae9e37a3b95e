from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

# the plugin module is loaded through its entry point, so first by some test: imported
# here, its module-level lines count for coverage whichever test loads it first
import neuro_chat_elo_pxls.plugin  # noqa: F401
from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.store.writer import Store

from . import aiohttp_compat
from .helpers import FakeClock, FakePxls

# Long runs (simulated hours of a whole source: the regression seeds, the follow, soak
# and 50-hour runs) carry ``@pytest.mark.no_cover``: what they prove is in their
# assertions, and coverage tracing doubled their time. Unit tests were added for the
# package's paths that only they reached (the branch coverage of the package with and
# without their tracing is compared in the closing note of issue 21).

#: the tests that take longest (seconds, real time or CPU), started first so that
#: ``pytest -n``'s workers finish together instead of one waiting on a late long test
LONGEST_FIRST = (
    "tests/test_crash.py::test_sigkill_at_random_points_loses_and_repeats_nothing",  # waits
    "tests/test_simulate.py::test_many_seeds_hold_every_promise",  # a subprocess each
    "tests/test_follow_integration.py::",
    "tests/test_power_loss.py::",  # four traced runs, some 600 crash states
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first (the rest keep pytest's order): a deterministic order, the same
    in every xdist worker, as xdist requires. Under ``--no-cov`` the ``no_cover``
    marks are dropped: pytest-cov 7.1 pauses a coverage it never started there
    (``AttributeError: 'NoneType' object has no attribute 'pause'``)."""
    if config.getoption("no_cov", default=False):
        for item in items:
            item.own_markers = [m for m in item.own_markers if m.name != "no_cover"]

    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, prefix in enumerate(LONGEST_FIRST) if item.nodeid.startswith(prefix)),
            len(LONGEST_FIRST),
        )

    items.sort(key=rank)


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
