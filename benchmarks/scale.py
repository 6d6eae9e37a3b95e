"""Scale curves: ``python -m benchmarks.scale`` (about 5 minutes; ``--sizes`` to choose).

At 1,000 / 10,000 / 100,000 / 1,000,000 known users, each in a fresh database:

* **first pull**: parse + ``Store.ingest`` of a stats.json listing all N users;
* **steady pull**: parse + ingest of a 1,000-row stats.json (every score changed)
  with N users known: the hourly case, which must not grow with N;
* **collect_deltas**: the 1,000 deltas of that steady pull;
* **status**: ``build_status`` from a fresh read-only reader (counts scan the table);
* **export**: ``neuro-chat-elo-pxls export --format pxls-json -o FILE`` in a fresh
  process (time and peak RSS, VmHWM), against a baseline in a fresh process too: a
  raw ``sqlite3`` SELECT of the same columns, streamed through the same JSON encoder
  (``json.dumps`` per row) into a file.

Timings are min / median / max of ``--repeat`` runs. Writes the table between the
scale markers of ``benchmarks/RESULTS.md`` and a plot to ``benchmarks/scale.png``
(matplotlib, from the ``bench`` extra; without it, the plot is skipped).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from neuro_chat_elo_pxls.ops.status import build_status
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.settings import PxlsSettings
from neuro_chat_elo_pxls.store.reader import StoreReader
from neuro_chat_elo_pxls.store.writer import Store

from .data import stats_body

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
HERE = Path(__file__).parent
RESULTS = HERE / "RESULTS.md"
PLOT = HERE / "scale.png"
BEGIN, END = "<!-- scale: begin -->", "<!-- scale: end -->"
SIZES = [1_000, 10_000, 100_000, 1_000_000]
STEADY_ROWS = 1_000
OPERATIONS = ["first pull", "steady pull", "collect_deltas", "status", "export", "export baseline"]


def _vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- children: one export in a fresh process, printing {"seconds", "rss_mb"} ----------


def child_export(db: str, out: str) -> None:
    from neuro_chat_elo_pxls.cli import main

    start = time.perf_counter()
    code = main(["--log-level", "ERROR", "export", "--db", db, "--format", "pxls-json", "-o", out])
    seconds = time.perf_counter() - start
    assert code == 0, code
    print(json.dumps({"seconds": seconds, "rss_mb": _vmhwm_mb()}))


def child_baseline(db: str, out: str) -> None:
    import sqlite3

    start = time.perf_counter()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    canvas = conn.execute("SELECT value FROM state WHERE key = 'canvas'").fetchone()[0]
    cur = conn.execute(
        "SELECT name, discord, faction_id, score FROM users WHERE canvas = ? "
        "ORDER BY score DESC, name",
        (canvas,),
    )
    with open(out, "w", encoding="utf-8") as f:
        f.write('{"users":[')
        first = True
        while rows := cur.fetchmany(2000):
            for name, discord, faction, score in rows:
                user = {
                    "PXLS_USERNAME": name,
                    "DISCORD_TAG": discord,
                    "FACTION": faction,
                    "SCORE": max(0, int(score)),
                }
                f.write(("" if first else ",") + json.dumps(user, separators=(",", ":")))
                first = False
        f.write("]}\n")
    conn.close()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "rss_mb": _vmhwm_mb()}))


def _in_child(kind: str, db: str, out: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale", "--child", kind, db, out],
        capture_output=True,
        text=True,
        check=True,
    )
    data: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return data


# -- the in-process measurements ---------------------------------------------------


async def measure(n: int, repeat: int, tmp: str) -> dict[str, Any]:
    """Every operation at ``n`` known users: lists of seconds (and export RSS)."""
    path = os.path.join(tmp, f"scale{n}.sqlite3")
    times: dict[str, list[float]] = {op: [] for op in OPERATIONS}
    rss: dict[str, list[float]] = {"export": [], "export baseline": []}
    for _ in range(repeat):  # first pull: a fresh database each time
        for suffix in ("", "-wal", "-shm"):
            with_suffix = path + suffix
            if os.path.exists(with_suffix):
                os.unlink(with_suffix)
        body = stats_body(n)
        gc.collect()
        async with await Store.open(path) as store:
            start = time.perf_counter()
            snapshot = await asyncio.to_thread(parse_stats, body)
            await store.ingest("86", snapshot, NOW, hold_new=False, state=None)
            times["first pull"].append(time.perf_counter() - start)
            del snapshot, body
            await store.outbox().drain()
    async with await Store.open(path) as store:
        from neuro_chat_elo_pxls.engine.state import EngineState

        await store.save_state(EngineState(canvas="86", last_pull_at=NOW))
        for bump in range(1, repeat + 1):
            body = stats_body(STEADY_ROWS, bump=bump)
            gc.collect()
            start = time.perf_counter()
            snapshot = await asyncio.to_thread(parse_stats, body)
            result = await store.ingest(
                "86", snapshot, NOW + timedelta(hours=bump), hold_new=False, state=None
            )
            times["steady pull"].append(time.perf_counter() - start)
            assert result.deltas == STEADY_ROWS, result
            start = time.perf_counter()
            deltas = await store.outbox().drain()
            times["collect_deltas"].append(time.perf_counter() - start)
            assert len(deltas) == STEADY_ROWS
    settings = PxlsSettings(db_path=path, token=None)
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        async with await StoreReader.open(path) as reader:
            status = await build_status(
                reader, EngineState.from_rows(await reader.load_state_rows()), NOW, settings
            )
        times["status"].append(time.perf_counter() - start)
        assert status["users"] == n, status["users"]
    out = os.path.join(tmp, "pxls.json")
    for _ in range(repeat):
        for kind, name in (("export", "export"), ("baseline", "export baseline")):
            data = _in_child(kind, path, out)
            times[name].append(data["seconds"])
            rss[name].append(data["rss_mb"])
        assert len(json.loads(Path(out).read_text())["users"]) == n
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    return {"times": times, "rss": rss}


def _mmm(values: list[float], scale: float = 1000.0, digits: int = 1) -> str:
    lo, mid, hi = min(values), statistics.median(values), max(values)
    return f"{lo * scale:.{digits}f} / {mid * scale:.{digits}f} / {hi * scale:.{digits}f}"


def table(results: dict[int, dict[str, Any]], repeat: int) -> list[str]:
    sizes = sorted(results)
    lines = [
        f"`python -m benchmarks.scale`, {os.cpu_count()} cores, {datetime.now(UTC).date()}; "
        f"{repeat} runs each; milliseconds, min / median / max.",
        "",
        "| operation | " + " | ".join(f"{n:,} users" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for op in OPERATIONS:
        cells = [_mmm(results[n]["times"][op]) for n in sizes]
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    for op in ("export", "export baseline"):
        cells = [_mmm(results[n]["rss"][op], scale=1.0, digits=0) for n in sizes]
        lines.append(f"| {op} peak RSS (MB) | " + " | ".join(cells) + " |")
    lo, hi = sizes[0], sizes[-1]
    steady = [statistics.median(results[n]["times"]["steady pull"]) for n in (lo, hi)]
    collect = [statistics.median(results[n]["times"]["collect_deltas"]) for n in (lo, hi)]
    ratios = [
        e / b
        for e, b in zip(
            results[hi]["times"]["export"], results[hi]["times"]["export baseline"], strict=True
        )
    ]
    peak = max(results[hi]["rss"]["export"])
    lines += [
        "",
        f"* steady pull at {hi:,} / at {lo:,} known users: **{steady[1] / steady[0]:.2f}x** "
        f"(target <= 1.5x); collect_deltas: {collect[1] / collect[0]:.2f}x",
        f"* export at {hi:,} users / baseline, paired runs: "
        f"**{min(ratios):.2f} / {statistics.median(ratios):.2f} / {max(ratios):.2f}x** "
        f"(target <= 1.5x); peak RSS **{peak:.0f} MB** (target < 200 MB)",
        "",
        "![scale curves](scale.png)",
    ]
    return lines


def write_results(lines: list[str]) -> None:
    old = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else ""
    block = "\n".join([BEGIN, "## Scale: 1,000 to 1,000,000 known users", "", *lines, END])
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END) :]
    else:  # after the notes marker: benchmarks.run keeps what follows it
        marker = "<!-- notes: kept when the table is rewritten -->"
        at = old.index(marker) + len(marker) if marker in old else len(old)
        text = old[:at] + "\n" + block + "\n" + old[at:]
    RESULTS.write_text(text, encoding="utf-8")


def plot(results: dict[int, dict[str, Any]]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    sizes = sorted(results)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for op in OPERATIONS:
        medians = [statistics.median(results[n]["times"][op]) * 1000 for n in sizes]
        style = "--" if op == "export baseline" else "-"
        ax.plot(sizes, medians, style, marker="o", label=op)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("known users")
    ax.set_ylabel("milliseconds (median)")
    ax.set_title("neuro-chat-elo-pxls: cost against database size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DB", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.child:
        kind, db, out = args.child
        (child_export if kind == "export" else child_baseline)(db, out)
        return
    tmp = tempfile.mkdtemp(prefix="pxls-scale-")
    try:
        results = {}
        for n in args.sizes:
            started = time.perf_counter()
            results[n] = asyncio.run(measure(n, args.repeat, tmp))
            print(f"{n:>9,} users measured in {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = table(results, args.repeat)
    print("\n".join(lines))
    if not args.no_write:
        write_results(lines)
        plotted = plot(results)
        print(f"wrote {RESULTS}" + (f" and {PLOT}" if plotted else ""))


if __name__ == "__main__":
    main()
