"""The versioned JSON-lines format of contributions, for hosts in other languages.

One JSON object per line, UTF-8, ``\\n``-terminated. Version 1 fields:

=============  =====================  ==================================================
field          type                   meaning
=============  =====================  ==================================================
``v``          int                    format version, 1
``seq``        int (≥ 1)              strictly increasing per database; de-duplicate on it
``user``       string                 pxls username (``[A-Za-z0-9_-]{1,32}``)
``pxls_id``    int or null            stable pxls user id (null until a profile was read)
``discord``    string or null         self-declared Discord name (not verified by pxls)
``faction``    object or null         ``{"id": int, "tag": str, "name": str,
                                      "color": int or null}`` (color = 0xRRGGBB)
``delta``      int (signed)           pixels to add to the user's score
``score``      int (≥ 0)              the user's absolute score on ``canvas`` after it
``canvas``     string                 pxls canvas code
``observed_at`` string                when the change was observed, ISO 8601 UTC, "Z"
``via``        string                 ``"toplist"`` (``observed_at`` = the snapshot's
                                      ``generatedAt``), ``"profile"`` (host time of
                                      the profile answer) or ``"opt-out"`` (the person
                                      asked not to be counted: minus what was credited
                                      on ``canvas``, ``score`` 0, no Discord name or
                                      faction) or ``"reset"`` (after a canvas reset:
                                      ``score`` the final count on the old ``canvas``,
                                      from the profile's all-time count; ``delta``
                                      negative after a rollback); absent in older
                                      lines: ``"toplist"``
``instance``   string                 the pxls instance (``"pxls.space"``); ``seq`` is
                                      per source: de-duplicate on ``(instance, seq)``;
                                      absent in older lines: ``""``
=============  =====================  ==================================================

A reader must ignore unknown fields (later minor additions) and reject ``v`` > 1.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .errors import MalformedDataError
from .models import EloDelta, Faction
from .util.text import json_safe

VERSION = 1


def delta_to_dict(delta: EloDelta) -> dict[str, Any]:
    """``delta`` as one JSON line's object (format :data:`VERSION`; times as ISO-8601
    UTC text). Pure."""
    faction = delta.faction
    return {
        "v": VERSION,
        "seq": delta.seq,
        "user": delta.user,
        "pxls_id": delta.pxls_id,
        "discord": delta.discord,
        "faction": None
        if faction is None
        else {"id": faction.id, "tag": faction.tag, "name": faction.name, "color": faction.color},
        "delta": delta.delta,
        "score": delta.score,
        "canvas": delta.canvas,
        "observed_at": delta.observed_at.astimezone(UTC)
        .isoformat(timespec="microseconds")
        .replace("+00:00", "Z"),
        "via": delta.via,
        "instance": delta.instance,
    }


def dumps(delta: EloDelta) -> str:
    """One line (without the newline), non-ASCII kept as UTF-8 except U+2028, U+2029
    and U+0085, which are escaped (line-splitting readers would break on them)."""
    return json_safe(json.dumps(delta_to_dict(delta), ensure_ascii=False, separators=(",", ":")))


#: where a change was observed, or why it was made (``opt-out``: a withdrawal;
#: ``reset``: an old canvas settled after a reset)
VIAS = ("toplist", "profile", "opt-out", "reset")


def _via(value: object) -> str:
    if value not in VIAS:
        raise ValueError(f"via is not one of {', '.join(VIAS)}: {value!r:.40}")
    return str(value)


def _utc(text: object) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"observed_at is not an ISO 8601 UTC time: {text!r:.40}")
    return datetime.fromisoformat(text).astimezone(UTC)


def loads(line: str) -> EloDelta:
    """Parse one line; raises :class:`MalformedDataError` for anything else."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise MalformedDataError(f"not a v{VERSION} delta line: {line[:80]!r}")
        raw = data["faction"]
        faction = (
            None
            if raw is None
            else Faction(
                int(raw["id"]),
                str(raw["tag"]),
                str(raw["name"]),
                None if raw["color"] is None else int(raw["color"]),
            )
        )
        return EloDelta(
            seq=int(data["seq"]),
            user=str(data["user"]),
            pxls_id=None if data["pxls_id"] is None else int(data["pxls_id"]),
            discord=None if data["discord"] is None else str(data["discord"]),
            faction=faction,
            delta=int(data["delta"]),
            score=int(data["score"]),
            canvas=str(data["canvas"]),
            observed_at=_utc(data["observed_at"]),
            via=_via(data.get("via", "toplist")),
            instance=str(data.get("instance", "")),
        )
    except MalformedDataError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedDataError(f"bad delta line ({exc}): {line[:80]!r}") from exc
