"""Measurements that need a fresh process or real time; each prints one JSON line.

``python -m benchmarks.probes pacing|idle|memory|stall`` (used by ``benchmarks.run``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from neuro_chat_elo_pxls import PxlsSettings, PxlsSource
from neuro_chat_elo_pxls.host import run_host
from neuro_chat_elo_pxls.models import CanvasInfo, Profile, Snapshot
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.settings import Secret
from neuro_chat_elo_pxls.testing import PxlsStandIn, Scenario, SimClock

from .data import stats_body


async def _wait_enriched(standin: PxlsStandIn, timeout: float = 120) -> None:
    """Until every user of the last served stats.json had a profile request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        listed = len(parse_stats(standin.served_stats)) if standin.served_stats else -1
        fetched = sum(r.path.startswith("/api/v1/profile") for r in standin.requests)
        if fetched >= listed > 0:
            return
    raise TimeoutError("the host did not enrich every listed user in time")


async def pacing() -> dict[str, float]:
    """Achieved / configured profile rate of the real host against the stand-in, and
    the shortest gap as the stand-in saw it (arrivals) and as the client sent it
    (the moment ``fetch_profile`` is called, real time = host time here)."""
    from neuro_chat_elo_pxls.pxls.client import PxlsClient

    cooldown = 0.05
    sent: list[float] = []
    original = PxlsClient.fetch_profile

    async def fetch_profile(self: PxlsClient, username: str) -> Profile:
        sent.append(time.monotonic())
        return await original(self, username)

    PxlsClient.fetch_profile = fetch_profile  # type: ignore[method-assign]
    clock = SimClock()
    standin = PxlsStandIn(Scenario(users=200, seed=4, new_users_per_hour=0), clock.now)
    await standin.start()
    os.environ["PXLS_TOKEN"] = standin.scenario.token
    db = os.path.join(tempfile.mkdtemp(), "pacing.sqlite3")
    config = {"pxls": {"base_url": standin.base_url, "db_path": db, "profile_cooldown": cooldown}}
    stop = asyncio.Event()
    host = asyncio.create_task(run_host(config, clock=clock, out=open(os.devnull, "w"), stop=stop))  # noqa: SIM115

    def profiles() -> list[datetime]:
        return [r.at for r in standin.requests if r.path.startswith("/api/v1/profile")]

    await _wait_enriched(standin)
    stop.set()
    await host
    await standin.stop()
    times = profiles()
    span = (times[-1] - times[0]).total_seconds()
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    sender_gaps = [b - a for a, b in itertools.pairwise(sent)]
    PxlsClient.fetch_profile = original  # type: ignore[method-assign]
    from neuro_chat_elo_pxls.engine.policy import pacing_gap

    gap = pacing_gap(timedelta(seconds=cooldown)).total_seconds()
    return {
        "ratio": (len(times) - 1) / span * cooldown,
        "paced_ratio": (len(times) - 1) / span * gap,
        "max_rate_ratio": cooldown / min(gaps),
        "sender_max_rate_ratio": cooldown / min(sender_gaps),
        "requests": len(times),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle(seconds: float) -> dict[str, float]:
    """CPU use of the example host (a subprocess) while nothing is due."""
    clock = SimClock()
    standin = PxlsStandIn(Scenario(users=20, seed=4, new_users_per_hour=0), clock.now)
    await standin.start()
    tmp = tempfile.mkdtemp()
    config = Path(tmp, "host.toml")
    config.write_text(
        f'[pxls]\nbase_url = "{standin.base_url}"\n'
        f'db_path = "{tmp}/idle.sqlite3"\nprofile_cooldown = 0.1\n'
    )
    root = Path(__file__).parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            str(root / "examples" / "standalone_host.py"),
            "--log-level",
            "WARNING",
            "run",
            "--config",
            str(config),
        ],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PXLS_TOKEN": standin.scenario.token},
    )
    await _wait_enriched(standin)
    await asyncio.sleep(1.0)  # the last tick finishes; now nothing is due for an hour
    before, start = _cpu_seconds(proc.pid), time.monotonic()
    await asyncio.sleep(seconds)
    used, wall = _cpu_seconds(proc.pid) - before, time.monotonic() - start
    proc.terminate()
    proc.wait(10)
    await standin.stop()
    return {"cpu_per_wall": used / wall, "cpu_seconds": used, "wall_seconds": wall}


class BodyClient:
    """A fake pxls client that serves prepared stats.json bodies (no network)."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def fetch_info(self) -> CanvasInfo:
        return CanvasInfo("86")

    async def fetch_stats(self) -> Snapshot:
        return await asyncio.to_thread(parse_stats, self.body)

    async def fetch_profile(self, username: str) -> Profile:
        raise NotImplementedError

    async def close(self) -> None:
        pass


async def _ingest_twice(users: int, measure_stall: bool, collect: bool = False) -> float:
    """First pull (all new, held), a steady-state pull (all changed) and, with
    ``collect``, the host collecting every delta; all through the real source."""
    db = os.path.join(tempfile.mkdtemp(), "ingest.sqlite3")
    # Both bodies are made before the stall ticker starts: generating them is the
    # benchmark's own work, and it once showed up as a ~200 ms "stall" of the source.
    first, second = stats_body(users), stats_body(users, bump=1)
    client = BodyClient(first)
    settings = PxlsSettings(db_path=db, token=Secret("x"), cf_auth=None)
    source = PxlsSource(settings, client=client)
    worst = 0.0
    stop = False

    async def ticker() -> None:
        nonlocal worst
        while not stop:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - start - 0.001)

    task = asyncio.create_task(ticker()) if measure_stall else None
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    await source.on_tick(now)  # first pull: every user new
    client.body = second
    await source.on_tick(now + timedelta(hours=1))  # steady state: every score changed
    if collect:
        assert len(await source.collect_deltas()) == users
    stop = True
    if task is not None:
        await task
    await source.on_shutdown()
    return worst


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark (``VmHWM``).

    Not ``getrusage().ru_maxrss``: Linux carries that across ``execve``, so a probe
    started by a big parent (``benchmarks.run``) reported the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


async def memory(users: int) -> dict[str, float]:
    """Peak RSS of two 100,000-user pulls and the host collecting their deltas."""
    await _ingest_twice(users, measure_stall=False, collect=True)
    return {"peak_rss_mb": _peak_rss_mb()}


async def stall(users: int) -> dict[str, float]:
    """Longest lateness of a 1 ms ticker over two pulls and the host collecting."""
    return {"max_stall_ms": await _ingest_twice(users, measure_stall=True, collect=True) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("probe", choices=["pacing", "idle", "memory", "stall"])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    if args.probe == "pacing":
        result = asyncio.run(pacing())
    elif args.probe == "idle":
        result = asyncio.run(idle(args.seconds))
    elif args.probe == "memory":
        result = asyncio.run(memory(args.users))
    else:
        result = asyncio.run(stall(args.users))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
