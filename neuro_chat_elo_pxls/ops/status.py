"""Operators' view of a source: canvas, counts, last pull, sweep with ETA, keys.

:func:`build_status` works from a database alone (the ``status`` command reads it
with a :class:`~.store.StoreReader` while a source runs); a running source adds its
live queue and key states. :func:`format_status` renders it for a terminal.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from ..engine.queue import Key
from ..engine.state import EngineState, KeyState
from ..jobs.follow import profile_capacity_per_hour, profile_demand_per_hour
from ..jobs.sweep import sweep_eta, sweep_possible
from ..settings import TOKEN_ENV, PxlsSettings
from ..store.lockfile import lock_holder
from ..store.reader import StoreReader
from ..util.text import shown
from ..util.times import fmt_duration, ts, us
from ..version import VERSION
from .health import default_outbox_age, health_problems


def _ts(value: datetime | None) -> str | None:
    return None if value is None else ts(value)


def key_records_json(keys: dict[str, KeyState]) -> dict[str, dict[str, Any]]:
    """Every key's state as ``status`` shows it (see :meth:`KeyState.to_json`)."""
    return {name: k.to_json() for name, k in keys.items()}


async def _sweep_status(
    reader: StoreReader, state: EngineState, now: datetime, settings: PxlsSettings
) -> dict[str, Any]:
    sweep: dict[str, Any] = {
        "number": state.sweep_number,
        "active": state.sweep_active,
        "started_at": _ts(state.sweep_started_at),
        "finished_at": _ts(state.sweep_finished_at),
    }
    if state.sweep_active:
        remaining = await reader.count_sweep_remaining(state.sweep_number)
        # users who arrived since the sweep started are in it too: the total grows
        # with them, so that done + remaining = total in the text and the JSON alike
        total = max(state.sweep_total, remaining)
        done = total - remaining
        elapsed = now - (state.sweep_started_at or now)
        eta = sweep_eta(elapsed, done, remaining, settings.profile_cooldown)
        sweep.update(
            total=total,
            remaining=remaining,
            done=done,
            eta_seconds=round(eta.total_seconds()),
            # False: even alone at one profile per cooldown, it cannot finish in time
            interval_possible=sweep_possible(
                total, settings.profile_cooldown, settings.sweep_interval
            ),
        )
    return sweep


async def _follow_status(
    reader: StoreReader, state: EngineState, settings: PxlsSettings, users: int
) -> dict[str, Any]:
    listed = None if state.last_pull_at is None else us(state.last_pull_at)
    counts = await reader.follow_counts(listed)
    demand = profile_demand_per_hour(settings, users, counts["outside_toplist"])
    return {
        **counts,
        "not_found_names": await reader.not_found_names(),
        "interval_seconds": settings.follow_interval.total_seconds(),
        "demand_per_hour": round(demand, 1),
        "capacity_per_hour": round(profile_capacity_per_hour(settings), 1),
        "last_round_finished_at": _ts(state.follow_round_finished_at),
    }


async def _settling_status(reader: StoreReader, state: EngineState) -> dict[str, Any] | None:
    """After a reset: how many people credited on the previous canvas are settled
    from their all-time count (DESIGN 3); None before any reset."""
    if not state.canvas_history or state.canvas is None:
        return None
    previous = state.canvas_history[-1]
    counts = await reader.settling_counts(previous, state.canvas)
    return {"canvas": previous, **counts}


def _next_pull(state: EngineState) -> datetime | None:
    """The pull's due time, or later if the leaderboard key is cooling down."""
    due = state.pull_due_at
    key = state.keys.get(Key.LEADERBOARD.value)
    cooling = key.ready_at if key is not None else None
    if due is None or cooling is None:
        return due
    return max(due, cooling)


async def build_status(
    reader: StoreReader,
    state: EngineState,
    now: datetime,
    settings: PxlsSettings,
    *,
    max_outbox_age: timedelta | None = None,
) -> dict[str, Any]:
    """The status of the database behind ``reader`` (JSON-serialisable), with its
    health (:func:`~.health.health_problems`; ``max_outbox_age`` defaults to
    :func:`~.health.default_outbox_age`).

    What the running source knows (profiles enabled, key states, last error) is
    what it persisted; the queue is derived from the database. A running source
    replaces queue and keys with its live view.
    """
    counts = await reader.counts()
    sweep = await _sweep_status(reader, state, now, settings)
    oldest = await reader.oldest_outbox()
    limit = max_outbox_age or default_outbox_age(settings)
    problems = health_problems(state, settings, now, oldest_outbox=oldest, max_outbox_age=limit)
    return {
        "version": VERSION,
        "instance": state.instance or settings.instance_name,  # (--db alone: the database's)
        "db_path": settings.db_path,
        "checked_at": ts(now),
        "healthy": not problems,
        "problems": problems,
        "canvas": state.canvas,
        "canvas_first_seen": _ts(state.canvas_first_seen),
        "last_pull_at": _ts(state.last_pull_at),
        "last_generated_at": _ts(state.last_generated_at),
        "next_pull_at": _ts(_next_pull(state)),
        "source_pid": lock_holder(settings.db_path),  # None: none runs; 0: cannot tell
        "profiles_enabled": state.profiles_enabled,
        "secret_envs": list(settings.secret_envs),  # what this instance reads
        "last_error": state.last_error or None,
        "last_error_at": _ts(state.last_error_at),
        "oldest_outbox_at": _ts(oldest),
        **counts,
        "queue": {
            "pull": 0,
            "enrich": counts["awaiting_enrichment"],
            "sweep": sweep.get("remaining", 0),
        },
        "sweep": sweep,
        "follow": await _follow_status(reader, state, settings, counts["users"]),
        "settling": await _settling_status(reader, state),
        "keys": key_records_json(state.keys),
    }


def when_text(value: str | None, checked_at: str | None, missing: str = "-") -> str:
    """A time of the status for a terminal: ``2026-01-05 12:00:00Z (3m09s ago)`` or
    ``(in 5m00s)``, to the second (the JSON keeps the exact time); text that is not
    a time is shown as it is (escaped)."""
    if not value:
        return missing
    try:
        at = datetime.fromisoformat(value)
        now = datetime.fromisoformat(checked_at) if checked_at else None
    except (TypeError, ValueError):
        return shown(str(value))
    if at.tzinfo is None or now is None or now.tzinfo is None:
        return shown(value)
    shown_at = at.strftime("%Y-%m-%d %H:%M:%SZ")
    if abs(at - now) < timedelta(seconds=1):
        return f"{shown_at} (now)"
    if at < now:
        return f"{shown_at} ({fmt_duration(now - at)} ago)"
    return f"{shown_at} (in {fmt_duration(at - now)})"


def format_status(status: dict[str, Any]) -> str:
    """``status`` as aligned lines for a terminal; times to the second, with how long
    ago (or how soon) from when the status was taken."""
    sweep = status["sweep"]
    canvas = shown(status["canvas"]) if status["canvas"] else "-"
    checked = status.get("checked_at")

    def when(key: str, missing: str = "-", record: dict[str, Any] = status) -> str:
        return when_text(record.get(key), checked, missing)

    lines = [
        f"instance        {shown(status.get('instance') or '-')}",
        f"database        {status['db_path']}",
        f"canvas          {canvas} (first seen {when('canvas_first_seen')})",
        f"last pull       {when('last_pull_at', 'never')} "
        f"(stats.json generatedAt {when('last_generated_at')})",
        f"next pull       {when('next_pull_at', 'at the next tick')}",
        f"users           {status['users']} total: {status['dirty']} changed since their last "
        f"profile read, {status['awaiting_enrichment']} awaiting enrichment, "
        f"{status['missing']} not found (404), {status['never_enriched']} never enriched",
        f"opted out       {status.get('opted_out', 0)} names (not counted, not requested)",
        f"outbox          {status['outbox']} deltas not yet collected"
        + (f" (oldest observed {when('oldest_outbox_at')})" if status["outbox"] else ""),
        f"source          {_source_text(status.get('source_pid', 0))}",
        "profiles        "
        + _profiles_text(
            status["profiles_enabled"], status.get("secret_envs"), status.get("source_pid", 0)
        ),
    ]
    if status["last_error"]:
        lines.append(f"last error      {when('last_error_at')}: {shown(status['last_error'])}")
    follow = status.get("follow")
    if follow:
        lines.extend(_follow_lines(follow, checked))
    settling = status.get("settling")
    if settling and settling["waiting"]:
        people = settling["settled"] + settling["waiting"]
        lines.append(
            f"settling        canvas {shown(settling['canvas'])}: {settling['settled']} of "
            f"{people} people ({settling['unsettleable']} cannot be settled: no all-time count)"
        )
    if sweep["active"]:
        eta = fmt_duration(timedelta(seconds=sweep["eta_seconds"]))
        lines.append(
            f"sweep           #{sweep['number']}: {sweep['done']}/{sweep['total']} "
            f"checked, {sweep['remaining']} left, ETA {eta}"
        )
    else:
        lines.append(
            f"sweep           #{sweep['number']} finished {when('finished_at', record=sweep)}"
        )
    lines.extend(_key_lines(status["keys"], checked))
    if status["healthy"]:
        lines.append("health          OK")
    else:
        lines.extend(f"UNHEALTHY       {shown(problem)}" for problem in status["problems"])
    return "\n".join(lines)


def _key_lines(keys: dict[str, dict[str, Any]], checked_at: str | None) -> list[str]:
    """One line per cooldown key: ready, or cooling until when and why."""
    lines = []
    for key, st in keys.items():
        until = st.get("cooling_until")
        state_text = (
            f"cooling until {when_text(until, checked_at)}: {shown(st['reason'])}"
            if until and (checked_at is None or _later(until, checked_at))
            else "ready"  # (a wait that has ended is no wait)
        )
        lines.append(
            f"key {key:<11} {state_text} ({st.get('consecutive_failures', 0)} consecutive failures)"
        )
    return lines


def _later(value: str, than: str) -> bool:
    """``value`` is a later time than ``than`` (both ISO texts; unreadable: True)."""
    try:
        return datetime.fromisoformat(value) > datetime.fromisoformat(than)
    except (TypeError, ValueError):
        return True


def _follow_lines(follow: dict[str, Any], checked_at: str | None) -> list[str]:
    """The follow list's line, and the names not found if there are any."""
    lines = [
        f"follow          {follow['followed']} followed, {follow['outside_toplist']} outside "
        f"the toplist, {follow['not_found']} not found; profile demand "
        f"{follow['demand_per_hour']:.0f}/h of {follow['capacity_per_hour']:.0f}/h; "
        f"last round {when_text(follow['last_round_finished_at'], checked_at)}"
    ]
    if follow["not_found_names"]:
        names = ", ".join(shown(n) for n in follow["not_found_names"])
        lines.append(f"                not found (renamed or deleted?): {names}")
    return lines


def _source_text(pid: int | None) -> str:
    """Whether a process holds the database (a source runs on it)."""
    if pid is None:
        return "not running (no process holds the database): what follows is what it left"
    return f"running (process {pid})" if pid else "running or not (this system cannot tell)"


def _profiles_text(
    enabled: bool | None, secret_envs: list[str] | None = None, pid: int | None = 0
) -> str:
    """As the source last opened the database with them (not this process), naming the
    token variable this instance reads (``PXLS_TOKEN_NAME`` for a
    ``[pxls.instances.NAME]`` table); in the past tense when no source runs."""
    token_env = secret_envs[0] if secret_envs else TOKEN_ENV
    runs = "ran" if pid is None else "runs"
    if enabled is None:
        return "unknown (no source has opened this database yet)"
    if enabled:
        return f"enabled (the source {runs} with {token_env})"
    return f"DISABLED: the source {runs} without {token_env}"
