"""Parsers for what pxls.space serves: stats.json, /info, profile JSON and HTML.

Every parser takes bytes (or text) and returns a model value or raises
:class:`~neuro_chat_elo_pxls.errors.MalformedDataError`; no other exception escapes.
They are synchronous, do no I/O and keep no state; the one side effect is a log
line for an absurd profile count (:func:`checked_count`: the count is then None).
The same input always gives the same value or error. The HTML profile page, whose
parser logs once per process, is :mod:`.page`'s.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from operator import countOf, itemgetter
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from ..errors import MalformedDataError
from ..models import CanvasInfo, Faction, Profile, Snapshot, ToplistRow
from ..util.text import shown

log = logging.getLogger("neuro_chat_elo_pxls")

USERNAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
SNIP = "-snip-"
#: No pxls canvas comes near this; larger counts are treated as corrupt data.
MAX_PIXELS = 10**12
MAX_CANVAS_CODE_LEN = 64
_GENERATED_AT_RE = re.compile(
    r"(\d{4})/(\d{2})/(\d{2}) - (\d{2}):(\d{2}):(\d{2}) \(([A-Za-z0-9_+\-/]{1,64})\)"
)
_MAX_REJECT_REASONS = 20


def is_valid_username(name: object) -> bool:
    """True for a pxls username: ``[A-Za-z0-9_-]{1,32}``."""
    return isinstance(name, str) and USERNAME_RE.fullmatch(name) is not None


def _loads(body: bytes | str, what: str) -> Any:
    """orjson: strict JSON (no NaN), 64-bit integers, nesting limited to 1024."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedDataError(f"{what}: not valid JSON ({exc})") from exc


def parse_generated_at(value: object) -> datetime:
    """Parse stats.json ``generatedAt`` (``2025/03/14 - 18:45:02 (Europe/Berlin)``) to UTC.

    Returns the first reading of a wall time that happens twice (the repeated
    autumn hour); :func:`generated_at_readings` gives both.
    """
    return generated_at_readings(value)[0]


def generated_at_readings(value: object) -> tuple[datetime, ...]:
    """Every UTC instant ``generatedAt`` can mean: one, or two in the repeated autumn
    hour of its zone (first reading first)."""
    if not isinstance(value, str):
        raise MalformedDataError(f"stats.json: generatedAt is not a string: {value!r:.80}")
    match = _GENERATED_AT_RE.fullmatch(value)
    if match is None:
        raise MalformedDataError(f"stats.json: unparseable generatedAt {value!r:.80}")
    *parts, zone = match.groups()
    try:
        tz = ZoneInfo(zone)
        year, month, day, hour, minute, second = (int(p) for p in parts)
        local = datetime(year, month, day, hour, minute, second, tzinfo=tz)
        first = local.astimezone(UTC)
        second_reading = local.replace(fold=1).astimezone(UTC)
    except (ZoneInfoNotFoundError, ValueError, OverflowError) as exc:
        raise MalformedDataError(f"stats.json: bad generatedAt {value!r:.80} ({exc})") from exc
    return (first,) if second_reading == first else (first, second_reading)


def _parse_row(row: object) -> ToplistRow | str:
    """A valid row, or the reason it is rejected."""
    if not isinstance(row, dict):
        return f"row is not an object: {row!r:.60}"
    name = row.get("username")
    pixels = row.get("pixels")
    if not is_valid_username(name):
        return f"invalid username {name!r:.60}"
    assert isinstance(name, str)
    if isinstance(pixels, str) and pixels.isascii() and pixels.isdigit() and len(pixels) < 16:
        pixels = int(pixels)  # PHP may emit numeric strings
    if not isinstance(pixels, int) or isinstance(pixels, bool):
        return f"{name}: pixels is not an integer: {pixels!r:.60}"
    if not 0 <= pixels <= MAX_PIXELS:
        return f"{name}: pixels out of range: {pixels}"
    return ToplistRow(name, pixels)


_NAME_AND_PIXELS = itemgetter("username", "pixels")
_NAME = itemgetter("username")
#: the whole valid toplist as orjson writes it: names ``[A-Za-z0-9_-]{1,32}``, pixels
#: 0..MAX_PIXELS (orjson writes no sign, leading zero, exponent or escape for
#: these); possessive, so a bad body fails in one linear pass
_DIGITS = len(str(MAX_PIXELS)) - 1
assert MAX_PIXELS == 10**_DIGITS, "the toplist pattern below needs a power of ten"
_ROW = rb'"[A-Za-z0-9_\-]{1,32}":(?:[0-9]{1,%d}|%d)' % (_DIGITS, MAX_PIXELS)
_VALID_TOPLIST = re.compile(rb"\{\}|\{(?:" + _ROW + rb",)*+" + _ROW + rb"\}")


def _fast_toplist(canvas: list[Any]) -> tuple[bytes, int, int] | None:
    """The common case in bulk (C-level passes over the whole list), or None.

    Returns the toplist as JSON ``{name: pixels}`` in rank order, its row count and
    the ``-snip-`` count when every row is a dict with a valid name and an in-range
    int and no name (but ``-snip-``) repeats; otherwise None, and the row-by-row
    path finds and reports the bad rows.
    """
    try:  # a row that is not a dict, lacks a key or has an unhashable name raises
        scores: dict[Any, Any] = dict(map(_NAME_AND_PIXELS, canvas))
    except (TypeError, KeyError):
        return None
    snipped = countOf(map(_NAME, canvas), SNIP) if SNIP in scores else 0
    if len(scores) != len(canvas) - snipped + (1 if snipped else 0):
        return None  # a name listed twice: the slow path drops it and says so
    if snipped:
        del scores[SNIP]
    try:
        toplist = orjson.dumps(scores)
    except TypeError:  # a name that is not a str
        return None
    # one pass checks every name and every count (a bool, float or negative fails)
    if not _VALID_TOPLIST.fullmatch(toplist):
        return None
    return toplist, len(scores), snipped


def parse_stats(body: bytes | str) -> Snapshot:
    """Parse stats.json into the current canvas's toplist.

    ``-snip-`` rows are skipped; a malformed row is dropped (its reason is kept in
    ``Snapshot.rejected``) while the valid rows still count; a name listed twice is
    ambiguous and dropped with all its rows. ``Snapshot.generated_alt`` is the second
    reading of a ``generatedAt`` in the repeated autumn hour. Raises
    :class:`MalformedDataError` when the body is not JSON or lacks a usable
    ``toplist.canvas`` list or ``generatedAt``.
    """
    data = _loads(body, "stats.json")
    if not isinstance(data, dict):
        raise MalformedDataError("stats.json: top level is not an object")
    readings = generated_at_readings(data.get("generatedAt"))
    generated_at, alt = readings[0], (readings[1] if len(readings) > 1 else None)
    toplist = data.get("toplist")
    canvas = toplist.get("canvas") if isinstance(toplist, dict) else None
    if not isinstance(canvas, list):
        raise MalformedDataError("stats.json: toplist.canvas is missing or not a list")
    fast = _fast_toplist(canvas)
    if fast is not None:
        toplist, size, snipped = fast
        return Snapshot(generated_at, toplist, size, (), snipped, alt)
    rows: dict[str, int] = {}
    rejected: list[str] = []
    twice: set[str] = set()
    snipped = 0
    for raw in canvas:
        if isinstance(raw, dict) and raw.get("username") == SNIP:
            snipped += 1
            continue
        parsed = _parse_row(raw)
        if isinstance(parsed, str):
            rejected.append(parsed)
        elif parsed.username in rows or parsed.username in twice:
            twice.add(parsed.username)
            rows.pop(parsed.username, None)
        else:
            rows[parsed.username] = parsed.pixels
    rejected += [f"{name}: listed twice, ambiguous: skipped" for name in sorted(twice)]
    return Snapshot.from_scores(generated_at, rows, rejected, snipped, alt)


def parse_info(body: bytes | str) -> CanvasInfo:
    """Parse ``/info``; only ``canvasCode`` (a non-empty string) is required."""
    data = _loads(body, "/info")
    code = data.get("canvasCode") if isinstance(data, dict) else None
    if not isinstance(code, str) or not code.strip() or len(code) > MAX_CANVAS_CODE_LEN:
        raise MalformedDataError(f"/info: canvasCode is not a usable string: {code!r:.80}")
    return CanvasInfo(code)


def opt_str(value: object, field: str, max_len: int = 64) -> str | None:
    """An optional short string field of a profile (None and "" give None). Raises
    :class:`MalformedDataError` for anything else or longer than ``max_len``."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise MalformedDataError(f"profile: {field} is not a short string: {value!r:.80}")
    return value or None


def _int(value: object, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise MalformedDataError(f"profile: {field} is not a non-negative integer: {value!r:.80}")
    return value


def parse_profile_json(body: bytes | str, expected_name: str) -> Profile:
    """Parse ``/api/v1/profile?username=`` for another user.

    The displayed faction is the entry of ``user.factions`` whose id is
    ``displayedFactionId`` (0 or absent: none). Raises :class:`MalformedDataError`
    when the profile is not the one asked for.
    """
    data = _loads(body, "profile")
    user = data.get("user") if isinstance(data, dict) else None
    if not isinstance(user, dict):
        raise MalformedDataError("profile: no user object")
    name = user.get("name")
    if name != expected_name:
        raise MalformedDataError(f"profile: asked for {expected_name!r}, got {name!r:.60}")
    pxls_id = _int(user.get("id"), "id")
    discord = opt_str(user.get("discordName"), "discordName")
    displayed = user.get("displayedFactionId", 0)
    displayed = 0 if displayed is None else _int(displayed, "displayedFactionId")
    faction: Faction | None = None
    factions = user.get("factions", [])
    if not isinstance(factions, list):
        raise MalformedDataError("profile: factions is not a list")
    if displayed:
        for entry in factions:
            if isinstance(entry, dict) and entry.get("id") == displayed:
                color = entry.get("color")
                faction = Faction(
                    id=displayed,
                    tag=opt_str(entry.get("tag"), "faction tag") or "",
                    name=opt_str(entry.get("name"), "faction name", 256) or "",
                    color=(color & 0xFFFFFF)
                    if isinstance(color, int) and not isinstance(color, bool)
                    else None,
                )
                break
    pixels = user.get("pixelCount")
    canvas_pixels = _int(pixels, "pixelCount") if pixels is not None else None
    alltime_value = user.get("pixelCountAllTime")
    alltime = _int(alltime_value, "pixelCountAllTime") if alltime_value is not None else None
    pixels_checked = checked_count(canvas_pixels, alltime, name)
    return Profile(name, pxls_id, discord, faction, pixels_checked, paired(pixels_checked, alltime))


def paired(pixels: int | None, alltime: int | None) -> int | None:
    """The all-time count kept beside an accepted canvas count (None without one: the
    pair settles a canvas after a reset, DESIGN 3, so half a pair is no pair)."""
    if pixels is None or alltime is None or alltime > MAX_PIXELS:
        return None
    return alltime


def checked_count(pixels: int | None, alltime: int | None, name: str) -> int | None:
    """A profile's canvas count, bounded like a toplist row (at most :data:`MAX_PIXELS`,
    and never above the all-time count when both are given); an absurd one is
    rejected with a WARNING log line (None: the profile's other fields still count).
    Never raises."""
    if pixels is None:
        return None
    if pixels > MAX_PIXELS or (alltime is not None and pixels > alltime):
        log.warning(
            "profile of %s: canvas count %d is absurd (all-time %s, at most %d): not credited",
            shown(name),
            pixels,
            alltime if alltime is not None else "-",
            MAX_PIXELS,
        )
        return None
    return pixels
