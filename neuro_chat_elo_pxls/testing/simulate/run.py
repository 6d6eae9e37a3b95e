"""Running seeds: one seed in simulated time (:func:`run_seed`, SQLite inline by
:func:`inline_sqlite`), many over worker processes, and the command line (:func:`main`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiosqlite

from .checker import Violation
from .host import Host


@contextlib.contextmanager
def inline_sqlite() -> Iterator[None]:
    """Inside: aiosqlite runs each statement on the calling (event-loop) thread.

    A statement runs at once and its ``await`` then yields one event-loop step, as
    aiosqlite's worker thread would: a cancelled caller loses the result, the
    statement still ran. Waking the worker thread was ~80 % of a simulated run's
    time and made the number of loop steps a unit takes depend on the machine; inline,
    a seed runs ~4x faster and every interleaving is fixed by the seed. Connections
    opened inside are opened with ``check_same_thread=False``. This patches
    aiosqlite's private ``Connection._execute`` (checked by ``tests/test_simulate.py``)
    and restores it on exit.
    """
    execute = aiosqlite.Connection._execute
    connect = aiosqlite.connect

    async def inline(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if not self._running or not self._connection:
            raise ValueError("Connection closed")
        result = fn(*args, **kwargs)
        await asyncio.sleep(0)
        return result

    def connect_anywhere(database: Any, *args: Any, **kwargs: Any) -> aiosqlite.Connection:
        kwargs["check_same_thread"] = False
        return connect(database, *args, **kwargs)

    aiosqlite.Connection._execute = inline  # type: ignore[method-assign]
    aiosqlite.connect = connect_anywhere
    try:
        yield
    finally:
        aiosqlite.Connection._execute = execute  # type: ignore[method-assign]
        aiosqlite.connect = connect


async def _run(seed: int, hours: float, power: bool) -> tuple[list[Violation], dict[str, Any]]:
    shm = "/dev/shm"  # noqa: S108 (a private mkdtemp under it: tmpfs, fast)
    base = shm if os.access(shm, os.W_OK) else None
    workdir = tempfile.mkdtemp(prefix=f"pxls-sim-{seed}-", dir=base)
    try:
        host = Host(seed, hours, workdir, power=power)
        await host.run()
        stats = {
            "ticks": host.ticks,
            "requests": sum(len(i.world.requests) for i in host.instances),
            "deltas": sum(len(i.checker.ledger) for i in host.instances),
            "restarts": host.restarts,
            "instances": len(host.instances),
            "output_failures": host.output_failures if host.out is not None else None,
            "power_losses": len(host.power.losses),
            "signals": len(host.signals.log) if host.out is not None else None,
        }
        return host.violations, stats
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_seed_with_stats(
    seed: int, hours: float = 48, *, sqlite: str = "inline", power: bool = True
) -> tuple[list[Violation], dict[str, Any]]:
    """Run one seed: the violations it found (none: every promise held) and its
    figures (ticks, requests, deltas, restarts). ``sqlite="thread"`` keeps aiosqlite's
    worker thread (see :func:`inline_sqlite`); ``power=False`` runs it without power
    losses (a test of something else keeps its seed's story)."""
    if sqlite == "thread":
        return asyncio.run(_run(seed, hours, power))
    with inline_sqlite():
        return asyncio.run(_run(seed, hours, power))


def run_seed(
    seed: int, hours: float = 48, *, sqlite: str = "inline", power: bool = True
) -> list[Violation]:
    """Run one seed; the violations it found (none: every promise held)."""
    return run_seed_with_stats(seed, hours, sqlite=sqlite, power=power)[0]


def _run_in_worker(
    args: tuple[int, float, str],
) -> tuple[int, list[Violation], dict[str, Any]]:
    seed, hours, sqlite = args
    violations, stats = run_seed_with_stats(seed, hours, sqlite=sqlite)
    return seed, violations, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m neuro_chat_elo_pxls.testing.simulate",
        description="Check every promise as an invariant over simulated runs.",
    )
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds (default 100)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--hours", type=float, default=48, help="simulated hours per seed")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument(
        "--sqlite",
        choices=("inline", "thread"),
        default="inline",
        help="inline (default: reproducible, ~4x faster) or aiosqlite's worker thread",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="per-seed figures")
    args = parser.parse_args(argv)
    seeds = (
        [args.seed] if args.seed is not None else list(range(args.first, args.first + args.seeds))
    )
    started = time.monotonic()
    total = 0
    work = [(s, args.hours, args.sqlite) for s in seeds]
    if args.jobs > 1 and len(seeds) > 1:
        # spawned, not forked: a caller such as pytest may have threads running
        with ProcessPoolExecutor(
            args.jobs, mp_context=multiprocessing.get_context("spawn")
        ) as pool:
            results = pool.map(_run_in_worker, work, chunksize=8)
            total = _report(results, args)
    else:
        total = _report(map(_run_in_worker, work), args)
    print(
        f"{len(seeds)} seeds, {args.hours:g} simulated hours each: {total} violations "
        f"({time.monotonic() - started:.0f} s)"
    )
    return 1 if total else 0


def _report(results: Iterable[tuple[int, list[Violation], dict[str, Any]]], args: Any) -> int:
    total = 0
    for seed, violations, stats in results:
        if args.verbose:
            print(f"seed {seed}: {stats}", flush=True)
        for violation in violations:
            print(violation.line(args.hours), flush=True)
        total += len(violations)
    return total
