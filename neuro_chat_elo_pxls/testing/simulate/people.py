"""What the model pxls is made of, as plain records: people and their counts over
time, the toplist's generations, the requests it answered and the fault plan. The
:class:`~.world.World` keeps them; the :class:`~.checker.Checker` reads them."""

from __future__ import annotations

import bisect
from datetime import datetime

import attrs

LEADERBOARD, PROFILE = "leaderboard", "profile"


@attrs.define(eq=False)
class Person:
    pxls_id: int
    name: str
    rate: float  # mean pixels per paint step
    discord: str | None
    faction: tuple[int, str, str, int] | None
    snip: bool = False
    banned_until: datetime | None = None
    count: int = 0  # on the current canvas
    alltime: int = 0
    #: canvas → [(true time, count)] at every change
    history: dict[str, list[tuple[datetime, int]]] = attrs.field(factory=dict)

    def count_at(self, canvas: str, at: datetime) -> int:
        changes = self.history.get(canvas, [])
        i = bisect.bisect_right(changes, at, key=lambda c: c[0])
        return changes[i - 1][1] if i else 0


@attrs.frozen
class Generation:
    at: datetime  # true UTC time of generatedAt (whole seconds)
    canvas: str
    rows: tuple[tuple[str, int], ...]  # rank order; "-snip-" rows included


@attrs.frozen
class Request:
    at: datetime  # true time
    endpoint: str  # info, stats, profile
    name: str | None
    outcome: str  # ok, 404, or the fault


@attrs.define
class FaultPlan:
    """Per-seed fault rates and outages (true time)."""

    rate: float
    auth_outages: list[list[datetime]]  # [start, end): profile requests answer 403
    storms: list[tuple[datetime, datetime]]  # [start, end): 429 with long waits

    def auth_outage(self, at: datetime) -> bool:
        return any(s <= at < e for s, e in self.auth_outages)

    def end_outages(self, at: datetime) -> None:
        """New credentials: an outage in progress ends now."""
        for window in self.auth_outages:
            if window[0] <= at < window[1]:
                window[1] = at
