"""Immutable values passed around the package and handed to the host."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import NamedTuple

import attrs
import orjson


@attrs.frozen
class Faction:
    """A pxls faction as displayed on a profile. ``color`` is 0xRRGGBB or None (HTML)."""

    id: int
    tag: str
    name: str
    color: int | None = None


@attrs.frozen
class EloDelta:
    """One contribution to a user's elo, as handed to the host by ``collect_deltas``.

    ``delta`` is signed pixels; ``score`` the new absolute score on ``canvas``;
    ``observed_at`` when the change was observed (aware, UTC): the snapshot's
    ``generatedAt`` for ``via="toplist"``, the host time of the profile answer for
    ``via="profile"``; ``seq`` strictly increases over the life of the database, so
    a host can de-duplicate (on ``(instance, seq)`` when it has several sources).
    ``via="opt-out"``: the person asked not to be counted: ``delta`` is minus what was
    credited to that name on ``canvas``, ``score`` 0, no Discord name or faction, and
    ``observed_at`` the host time of the withdrawal; nothing of theirs follows.
    ``via="reset"``: after a canvas reset, the pixels a person placed on the *old*
    ``canvas`` after the source's last observation there (read from the profile's
    all-time count): ``score`` is their final count on that canvas, ``delta`` its
    difference from what was handed out there before (negative after a rollback);
    ``observed_at`` the host time of the profile answer that settled it.
    """

    seq: int
    user: str
    pxls_id: int | None
    discord: str | None
    faction: Faction | None
    delta: int
    score: int
    canvas: str
    observed_at: datetime
    #: "toplist" or "profile" (where observed), "opt-out" (withdrawn), "reset" (an old
    #: canvas settled after a reset)
    via: str = "toplist"
    #: the pxls instance (``pxls.space``; a source's ``instance_name``): ``seq`` is per
    #: source, so a host with several sources de-duplicates on ``(instance, seq)``
    instance: str = ""


class ToplistRow(NamedTuple):
    """One valid row of ``toplist.canvas`` (a plain ``(username, pixels)`` pair will do)."""

    username: str
    pixels: int


@attrs.frozen
class Snapshot:
    """A parsed stats.json: the current canvas's toplist and when it was generated (UTC;
    in the repeated autumn hour ``generated_alt`` is the other reading, and the pull
    picks the one that fits).

    ``toplist`` is the valid rows as one compact JSON object ``{name: pixels}`` in
    rank order (names unique): the store hands it to SQLite as is, and a
    100,000-row snapshot keeps no per-row Python objects alive (they would scatter
    over the host's heap and slow every later allocation). ``size`` counts its rows,
    ``rejected`` lists one reason per dropped row, ``snipped`` counts ``-snip-`` rows
    skipped on purpose.
    """

    generated_at: datetime
    toplist: bytes
    size: int
    rejected: tuple[str, ...] = ()
    snipped: int = 0
    generated_alt: datetime | None = None  # second reading in the repeated autumn hour

    @classmethod
    def from_scores(
        cls,
        generated_at: datetime,
        scores: dict[str, int],
        rejected: Iterable[str] = (),
        snipped: int = 0,
        generated_alt: datetime | None = None,
    ) -> Snapshot:
        """From ``{name: pixels}`` in rank order."""
        return cls(
            generated_at,
            orjson.dumps(scores),
            len(scores),
            tuple(rejected),
            snipped,
            generated_alt,
        )

    @classmethod
    def from_rows(
        cls,
        generated_at: datetime,
        rows: Iterable[tuple[str, int]],
        rejected: Iterable[str] = (),
        snipped: int = 0,
    ) -> Snapshot:
        """From ``(name, pixels)`` pairs; a name listed twice keeps its first row."""
        scores: dict[str, int] = {}
        for name, pixels in rows:
            scores.setdefault(name, pixels)
        return cls.from_scores(generated_at, scores, rejected, snipped)

    @property
    def rows(self) -> list[ToplistRow]:
        """The rows as ``(username, pixels)`` pairs (decodes them: not for hot paths)."""
        return list(map(ToplistRow._make, orjson.loads(self.toplist).items()))

    def __len__(self) -> int:
        return self.size


@attrs.frozen
class CanvasInfo:
    """The part of ``/info`` this package uses."""

    canvas_code: str


@attrs.frozen
class Profile:
    """What a profile tells about a user. ``pxls_id`` is None when read from HTML.
    ``alltime_pixels``: the all-time count (JSON ``pixelCountAllTime``, the page's
    "Alltime Pixels" row); None when absent (snip mode, the older page template) or
    when the canvas count was rejected as absurd (the pair is read together)."""

    name: str
    pxls_id: int | None
    discord: str | None
    faction: Faction | None
    canvas_pixels: int | None
    alltime_pixels: int | None = None
