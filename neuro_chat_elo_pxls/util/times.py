"""Time values: the host's ``now``, the database's time columns, durations in logs.

Contracts: every datetime that enters or leaves the package is aware UTC. Time
columns of ``users`` and ``outbox`` hold integer microseconds since the Unix epoch
(exact); the ``state`` table holds ISO-8601 UTC text with microseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def check_now(now: object) -> datetime:
    """The host's ``now`` as aware UTC; TypeError for anything else (naive, not a datetime)."""
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise TypeError(f"now must be an aware datetime (UTC), got {now!r}")
    return now.astimezone(UTC)


def ts(value: datetime) -> str:
    """Aware datetime → text for the ``state`` table (UTC, microseconds)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def from_ts(value: str | None) -> datetime | None:
    """Text written by :func:`ts` → aware datetime (None stays None)."""
    return None if value is None else datetime.fromisoformat(value)


def us(value: datetime) -> int:
    """Aware datetime → a time column's value (microseconds since the epoch, exact)."""
    return (value - EPOCH) // _MICROSECOND


def from_us(value: int | None) -> datetime | None:
    """A time column's value → aware UTC datetime (None stays None)."""
    return None if value is None else EPOCH + timedelta(microseconds=value)


def fmt_duration(delta: timedelta) -> str:
    """A duration for logs and terminals, one format everywhere: ``1h05m``, ``3m09s``, ``2d04h``."""
    seconds = max(0, int(delta.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
