"""A short soak (the full 30-day one: ``python -m benchmarks.soak``)."""

from __future__ import annotations

import os

import pytest

from benchmarks.soak import run_soak

pytestmark = pytest.mark.integration


@pytest.mark.no_cover  # a long run: see tests/conftest.py
async def test_soak_conserves_and_stays_polite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PXLS_TOKEN", "standin-token")
    days = int(os.environ.get("SOAK_DAYS", "4"))
    users = int(os.environ.get("SOAK_USERS", "200"))
    result = await run_soak(days, users)
    assert result["problem_count"] == 0, result["problems"]
    assert result["faults_injected"] > 10
    assert result["max_in_flight"] == 1
    assert result["deltas"] > users
