"""Clocks shared by a host and the stand-in: real time, or accelerated simulated time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta


class SimClock:
    """Simulated UTC time running ``speed`` times faster than real time.

    ``now()`` = ``start + (time() - epoch) * speed``. Two processes given the same
    ``start``, ``epoch`` (a ``time.time()`` value) and ``speed`` share one simulated
    clock (the crash test's host and stand-in). ``speed=1`` with ``start`` omitted is
    the wall clock. ``real_seconds(delta)`` converts a simulated wait to real seconds.
    """

    def __init__(
        self, start: datetime | None = None, speed: float = 1.0, epoch: float | None = None
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.epoch = time.time() if epoch is None else epoch
        self.start = start or datetime.fromtimestamp(self.epoch, UTC)
        self.speed = speed

    def now(self) -> datetime:
        """Simulated time now (aware UTC)."""
        return self.start + timedelta(seconds=(time.time() - self.epoch) * self.speed)

    def real_seconds(self, delta: timedelta) -> float:
        """Real seconds a simulated wait of ``delta`` takes (>= 0)."""
        return max(0.0, delta.total_seconds() / self.speed)


class JumpClock:
    """Host time that jumps: ``real_seconds`` advances it by the wait and returns 0.

    Lets the real host loop (:func:`neuro_chat_elo_pxls.host.run_host`) run days of
    host time in seconds, deterministically, in tests and benchmarks.
    """

    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        """Host time now (aware UTC): where the jumps have brought it."""
        return self.current

    def real_seconds(self, delta: timedelta) -> float:
        """Jump ahead by ``delta`` (if positive); no real wait: 0."""
        if delta > timedelta(0):
            self.current += delta
        return 0.0
