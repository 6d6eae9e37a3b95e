"""Synthetic pxls-shaped data for the benchmarks (deterministic)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

GENERATED = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def stats_body(users: int, *, seed: int = 1, bump: int = 0) -> bytes:
    """A stats.json with ``users`` rows in toplist.canvas (PHP escapes, Berlin time)."""
    rng = random.Random(seed)
    rows = [
        {"username": f"user_{i:06d}", "pixels": rng.randint(1, 50_000) + bump, "place": i + 1}
        for i in range(users)
    ]
    hour = 13 + (bump % 10)
    body = {
        "general": {"total_users": users},
        "toplist": {"alltime": [], "canvas": rows},
        "generatedAt": f"2026/01/05 - {hour:02d}:00:00 (Europe/Berlin)",
    }
    return json.dumps(body, separators=(",", ":")).replace("/", "\\/").encode()
