"""Following at scale: ``python -m benchmarks.follow``.

100,000 known users of whom 10,000 (or 100) are followed and outside the toplist,
in a real SQLite file. Measures, in a fresh process each:

* tick cost while the profile key cools down (what every host tick pays), 10,000
  followed vs 100 followed: ratio (target <= 1.5);
* the achieved profile rate while demand exceeds capacity (a fake pxls.space that
  answers at once, simulated time): achieved / capacity (target >= 0.95);
* peak RSS (VmHWM) of the 10,000-followed run (target < 200 MB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.models import CanvasInfo, Profile, Snapshot
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.store.writer import Store

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)
USERS = 100_000


class InstantPxls:
    """Answers at once: the toplist lists the first 1,000 users; profiles count up."""

    def __init__(self) -> None:
        self.profiles = 0

    async def fetch_info(self) -> CanvasInfo:
        return CanvasInfo("86")

    async def fetch_stats(self) -> Snapshot:
        return Snapshot.from_scores(NOW, {f"user_{i:06d}": 10 + i for i in range(1000)})

    async def fetch_profile(self, username: str) -> Profile:
        self.profiles += 1
        return Profile(username, int(username[5:]) + 1, None, None, 5 + self.profiles % 7)

    async def close(self) -> None:
        pass


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _prepare(db: str, followed: int) -> None:
    async with await Store.open(db) as store:
        scores = {f"user_{i:06d}": 10 + i for i in range(USERS)}
        await store.ingest("86", Snapshot.from_scores(NOW, scores), NOW, hold_new=False, state=None)
        await store.outbox().drain()
        names = [f"user_{i:06d}" for i in range(USERS - followed, USERS)]
        await store.follows.set_followed_names(names, 1, NOW)


async def probe(followed: int, ticks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "follow.sqlite3")
        await _prepare(db, followed)
        fake = InstantPxls()
        names = [f"user_{i:06d}" for i in range(USERS - followed, USERS)]
        settings = PxlsSettings(
            db_path=db, base_url="http://pxls.test", token=Secret("t"), follow=names
        )
        source = PxlsSource(settings, client=fake, rng=random.Random(1))
        now = NOW + timedelta(minutes=1)
        await source.on_tick(now)  # pull, sync the follow list
        await source.collect_deltas()
        # tick cost while the profile key cools (a host waking between profile reads)
        times = []
        for _ in range(ticks):
            t0 = time.perf_counter()
            await source.on_tick(now)
            times.append(time.perf_counter() - t0)
            await source.collect_deltas()
        # achieved rate over 10 simulated minutes of host ticks at each due time
        start, sent = now, fake.profiles
        until = start + timedelta(minutes=10)
        while now < until:
            await source.on_tick(now)
            await source.collect_deltas()
            due = source.next_due_at(now)
            now = due if due is not None and due > now else now + timedelta(milliseconds=1)
        capacity = (until - start).total_seconds() / settings.profile_cooldown.total_seconds()
        await source.on_shutdown()
    return {
        "tick_ms": statistics.median(times) * 1000,
        "rate_ratio": (fake.profiles - sent) / capacity,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run(followed: int, ticks: int) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.follow",
            "--probe",
            str(followed),
            "--ticks",
            str(ticks),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if args.probe is not None:
        print(orjson.dumps(asyncio.run(probe(args.probe, args.ticks))).decode())
        return
    ratios, rates, rss = [], [], []
    for _ in range(args.repeat):
        many, few = _run(10_000, args.ticks), _run(100, args.ticks)
        ratios.append(many["tick_ms"] / few["tick_ms"])
        rates.append(many["rate_ratio"])
        rss.append(many["peak_rss_mb"])

    def mmm(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{xs[0]:.2f} / {statistics.median(xs):.2f} / {xs[-1]:.2f}"

    print("| what | min / median / max | target |")
    print("|---|---|---|")
    print(f"| tick cost, 10,000 followed vs 100 (100,000 users) | {mmm(ratios)} | <= 1.5x |")
    print(f"| achieved / capacity profile rate, demand > capacity | {mmm(rates)} | >= 0.95 |")
    print(f"| peak RSS, 10,000 followed of 100,000, MB | {mmm(rss)} | < 200 MB |")


if __name__ == "__main__":
    main()
