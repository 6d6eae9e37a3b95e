"""Health of a source judged from its database: what ``status --check`` reports.

:func:`health_problems` is a pure function of the persisted engine state, the
settings and the time the check runs (aware UTC). It returns one line per
problem; none means healthy. The rules:

* no snapshot accepted within 2 x the pull period (or none ever): pulls follow the
  15-minute regeneration grid, so the period is ``leaderboard_interval`` rounded up to
  whole 15 minutes (a 5-minute interval still pulls every 15 minutes);
* a key paused after a 403 or a challenge (the token or the Cloudflare cookie
  needs renewing);
* with profiles enabled, the current sweep started more than 2 x ``sweep_interval``
  ago (it runs too long, or no new sweep starts);
* the oldest delta not yet collected is older than ``max_outbox_age`` (the host
  stopped collecting, or ``delivery = "ack"`` and nothing acknowledges).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from ..engine.state import EngineState
from ..jobs.pull import REGENERATION
from ..settings import PxlsSettings
from ..util.text import shown
from ..util.times import fmt_duration, ts


def default_outbox_age(settings: PxlsSettings) -> timedelta:
    """The default limit for the oldest uncollected delta: a new user's first delta
    may wait ``enrichment_hold`` for its profile; one more hour on top."""
    return settings.enrichment_hold + timedelta(hours=1)


def pull_period(settings: PxlsSettings) -> timedelta:
    """How far apart pulls are when all is well: ``leaderboard_interval`` rounded up to
    whole regenerations (DESIGN 8: the pull grid follows the data)."""
    periods = max(1, -(-settings.leaderboard_interval // REGENERATION))
    return REGENERATION * periods


def _when(value: datetime) -> str:
    return ts(value)[:19] + "Z"


def health_problems(
    state: EngineState,
    settings: PxlsSettings,
    now: datetime,
    *,
    oldest_outbox: datetime | None,
    max_outbox_age: timedelta,
) -> list[str]:
    """One line per problem, in a fixed order; an empty list means healthy."""
    problems: list[str] = []
    period = pull_period(settings)
    pull_limit = period * 2
    last = state.last_pull_at
    if last is None:
        problems.append("no successful pull yet")
    elif now - last > pull_limit:
        grid = "" if period == settings.leaderboard_interval else " on the 15-minute grid"
        problems.append(
            f"no successful pull for {fmt_duration(now - last)} (last at {_when(last)}; "
            f"limit 2 x leaderboard_interval{grid} = {fmt_duration(pull_limit)})"
        )
    for name, key in sorted(state.keys.items()):
        if key.paused_for_auth(now) and key.ready_at is not None:
            problems.append(
                f"{name} requests paused for auth until {_when(key.ready_at)} "
                f"({shown(key.reason)}): renew {' / '.join(settings.secret_envs)}"
            )
    started = state.sweep_started_at
    sweep_limit = settings.sweep_interval * 2
    if state.profiles_enabled and started is not None and now - started > sweep_limit:
        what = "is still running" if state.sweep_active else "finished and no new one started"
        problems.append(
            f"sweep #{state.sweep_number} started {fmt_duration(now - started)} ago and {what} "
            f"(limit 2 x sweep_interval = {fmt_duration(sweep_limit)})"
        )
    if oldest_outbox is not None and now - oldest_outbox > max_outbox_age:
        problems.append(
            f"the oldest uncollected delta is {fmt_duration(now - oldest_outbox)} old "
            f"(limit {fmt_duration(max_outbox_age)}): is the host collecting deltas?"
        )
    return problems
