"""Soak: ``python -m benchmarks.soak`` — 30 simulated days, 1,000 users, in minutes.

The real host (entry points, scheduler) and source against the local stand-in over
loopback, on a jumping clock: hourly pulls, daily sweeps, a canvas reset, new users,
renames, bans and random faults (2 % of requests). Checks conservation from the
host's JSON lines (streamed, not kept) and reports RSS at day 1 and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from neuro_chat_elo_pxls import jsonlines
from neuro_chat_elo_pxls.host import run_host
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.testing import JumpClock, PxlsStandIn, Scenario

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def rss_mb() -> float:
    """Current resident set size of this process, MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class SamplingClock(JumpClock):
    """A jumping clock that samples RSS at every simulated day boundary."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.rss_by_day: dict[int, float] = {}

    def real_seconds(self, delta: timedelta) -> float:
        result = super().real_seconds(delta)
        day = (self.current - T0) // timedelta(days=1)
        if day not in self.rss_by_day:
            self.rss_by_day[day] = rss_mb()
        return result


class LedgerSink:
    """A text sink for the host's JSON lines that checks conservation as it goes."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], int] = defaultdict(int)
        self.last: dict[tuple[str, str], int] = {}
        self.last_seq = 0
        self.lines = 0
        self.errors: list[str] = []
        self._partial = ""

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            delta = jsonlines.loads(line)
            if delta.seq <= self.last_seq:
                self.errors.append(f"seq {delta.seq} after {self.last_seq}")
            self.last_seq = delta.seq
            key = (delta.user, delta.canvas)
            self.sums[key] += delta.delta
            self.last[key] = delta.score
            self.lines += 1
        return len(text)

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError("not a file")

    def check(self) -> list[str]:
        bad = [
            f"{k}: sum {self.sums[k]} != last {self.last[k]}"
            for k in self.sums
            if self.sums[k] != self.last[k]
        ]
        return self.errors + bad


async def run_soak(days: int, users: int, seed: int = 7) -> dict[str, Any]:
    clock = SamplingClock(T0)
    scenario = Scenario(
        users=users,
        seed=seed,
        new_users_per_hour=1.0,
        fault_rate=0.02,
        resets=[T0 + timedelta(days=days / 2, minutes=7)],
        slow_seconds=0.2,
    )
    standin = PxlsStandIn(scenario, clock.now)
    standin.catch_up(T0)
    visible = standin.visible()
    for i in range(min(5, len(visible))):
        when = T0 + timedelta(days=1 + i * days / 6, minutes=3)
        standin.schedule_rename(when, visible[i * 7].name, f"renamed_{i}")
        standin.schedule_ban(when, visible[i * 7 + 1].name, timedelta(hours=30))
    await standin.start()
    os.environ["PXLS_TOKEN"] = scenario.token
    sink = LedgerSink()
    db = os.path.join(tempfile.mkdtemp(), "soak.sqlite3")
    config = {"pxls": {"base_url": standin.base_url, "db_path": db, "request_timeout": 5}}
    try:
        await run_host(
            config,
            clock=clock,
            out=sink,
            stop=asyncio.Event(),
            until=T0 + timedelta(days=days),
            table_every=timedelta(days=1),
        )
    finally:
        await standin.stop()
    problems = sink.check()
    for name, pixels in parse_stats(standin.served_stats).rows:
        held = sink.last.get((name, standin.canvas))
        # counts only grow within a canvas: more than the snapshot is a newer profile count
        if held is None or held < pixels:
            problems.append(
                f"{name}: host has {sink.last.get((name, standin.canvas))}, pxls has {pixels}"
            )
    return {
        "days": days,
        "users_at_end": len(standin.users),
        "requests": len(standin.requests),
        "faults_injected": standin.faults_served,
        "deltas": sink.lines,
        "max_in_flight": standin.max_in_flight,
        "rss_day1_mb": round(clock.rss_by_day.get(1, 0.0), 1),
        "rss_end_mb": round(rss_mb(), 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "problems": problems[:20],
        "problem_count": len(problems),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = asyncio.run(run_soak(args.days, args.users))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
