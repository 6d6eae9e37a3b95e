"""The pxls-web profile page ``/profile/<name>`` (the HTML profile endpoint) parsed.

:func:`parse_profile_html` takes bytes (or text) and returns a
:class:`~..models.Profile` or raises :class:`~..errors.MalformedDataError`;
synchronous, no I/O. Not pure: a page whose faction can be read only the old,
inexact way is said once per process in a WARNING line (the module flag
``_inexact_said`` remembers it), and an absurd count is logged by
:func:`~.parsing.checked_count`. The same input always gives the same value.
"""

from __future__ import annotations

import logging
import re
from html import unescape
from html.parser import HTMLParser

from ..errors import MalformedDataError
from ..models import Faction, Profile
from ..util.text import shown
from .parsing import MAX_PIXELS, checked_count, opt_str, paired

log = logging.getLogger("neuro_chat_elo_pxls")

#: digits of the longest count a cell may hold (as the toplist's bound)
_DIGITS = len(str(MAX_PIXELS)) - 1


class _ProfilePageParser(HTMLParser):
    """Collects ``<title>`` and the th/td pairs of ``div#tab-details``'s table."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.heading = ""  # the first <h1>: "[TAG] {name}'s Profile", as written
        self.rows: dict[str, str] = {}  # label → cell text, whitespace collapsed
        self.raw: dict[str, str] = {}  # label → cell text as written (names untrimmed)
        self._in_title = False
        self._in_heading = False
        self._headings = 0
        self._in_details = False
        self._div_depth = 0
        self._cell: str | None = None  # "th" | "td" while inside one
        self._text: list[str] = []
        self._label: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag == "h1":
            self._headings += 1
            self._in_heading = self._headings == 1
        elif tag == "div":
            if self._in_details:
                self._div_depth += 1
            elif dict(attrs).get("id") == "tab-details":
                self._in_details, self._div_depth = True, 1
        elif self._in_details and tag in ("th", "td"):
            self._cell, self._text = tag, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag == "h1":
            self._in_heading = False
        elif tag == "div" and self._in_details:
            self._div_depth -= 1
            self._in_details = self._div_depth > 0
        elif tag == self._cell:
            text = " ".join("".join(self._text).split())
            if tag == "th":
                self._label = text
            elif self._label is not None:
                self.rows[self._label] = text
                self.raw[self._label] = "".join(self._text)
                self._label = None
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        if self._in_heading:
            self.heading += data
        if self._cell is not None:
            self._text.append(data)


_FACTION_RE = re.compile(r"\[(?P<tag>.*?)\] (?P<name>.*) \(ID: (?P<id>\d{1,18})\)", re.DOTALL)
_FACTION_ID = re.compile(r" \(ID: (\d{1,18})\)\Z")
#: the pixel row's label in the current template, and in the older one other pxls
#: instances still run (API.md section 9)
_PIXEL_LABELS = ("Current Canvas Pixels", "Canvas Pixels")
#: the inexact faction reading was logged (once per process; the module's one state)
_inexact_said = False


def _faction_from_page(heading: str, cell: str, name: str) -> Faction:
    """The faction of a profile page, exactly: the tag from the ``<h1>`` (``[TAG]
    {name}'s Profile``), the name sliced from the cell between ``[TAG] `` and the last
    `` (ID: n)``, inner and outer whitespace kept (pxls stores names untrimmed; a tag
    may hold ``]`` and spaces). A page that allows no exact answer is read the old
    way (the first ``]`` ends the tag), said once in a log line."""
    global _inexact_said
    suffix = f"] {name}'s Profile"
    last_id = _FACTION_ID.search(cell)
    if heading.startswith("[") and heading.endswith(suffix) and last_id is not None:
        tag = heading[1 : -len(suffix)]
        prefix = f"[{tag}] "
        if cell.startswith(prefix) and len(prefix) <= last_id.start():
            return Faction(int(last_id[1]), tag, cell[len(prefix) : last_id.start()], None)
    match = _FACTION_RE.fullmatch(" ".join(cell.split()))
    if match is None:
        raise MalformedDataError(f"profile page: unparseable faction {cell[:80]!r}")
    if not _inexact_said:
        _inexact_said = True
        log.warning(
            "profile page of %s: the faction's tag and name cannot be read exactly from "
            'this page (its heading does not show the tag); profile_endpoint = "api" '
            "reads them exactly",
            shown(name),
        )
    return Faction(int(match["id"]), match["tag"], match["name"], None)


def _cell_value(raw: str) -> str:
    """A name cell's value as the JSON has it: the text exactly as written (entities
    unescaped once, by the parser), whitespace kept; a legacy Discord tag may start with
    a space or hold two (``' lead#0001'``, ``'ab  cd#1234'``). pxls-web writes the value
    inline (``<td class="text-left">NAME</td>``); only a template that puts it on a line
    of its own loses that line's indentation and breaks (a name holds no line break)."""
    if "\n" not in raw and "\r" not in raw:
        return raw
    lines = [line for line in raw.splitlines() if line.strip()]
    return lines[0].strip(" \t") if len(lines) == 1 else " ".join(raw.split())


def parse_profile_html(body: bytes | str, expected_name: str) -> Profile:
    """Parse the pxls-web page ``/profile/<name>`` (English labels) of any pxls
    instance: the title ``{name} - {site name}``, the pixel row under either template's
    label, the all-time row optional, the faction exact (:func:`_faction_from_page`).

    The page has no user id, so ``pxls_id`` is None. Entities are unescaped. Raises
    :class:`MalformedDataError`. Logs (once per process) when the faction can be read
    only the old, inexact way; logs an absurd count (:func:`checked_count`).
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    parser = _ProfilePageParser()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError) as exc:  # pragma: no cover - HTMLParser is lenient
        raise MalformedDataError(f"profile page: unparseable HTML ({exc})") from exc
    title = unescape(parser.title).strip()
    site = title.removeprefix(f"{expected_name} - ")
    if site == title or not site.strip():  # "{name} - {site name}", any pxls instance
        raise MalformedDataError(f"profile page: title is {title[:80]!r}, not {expected_name}'s")
    rows = parser.rows
    if "Discord Tag" not in rows or "Faction" not in rows:
        raise MalformedDataError("profile page: no Discord Tag/Faction rows (localized page?)")
    discord_text = _cell_value(parser.raw["Discord Tag"])
    discord = None if discord_text in ("", "Not Set") else opt_str(discord_text, "Discord Tag")
    faction: Faction | None = None
    if rows["Faction"] != "(None)":
        heading = parser.heading.strip(" \t\r\n")
        faction = _faction_from_page(heading, parser.raw["Faction"], expected_name)
    label = next((label for label in _PIXEL_LABELS if label in rows), None)
    canvas_pixels = _page_count(rows.get(label)) if label else None
    alltime = _page_count(rows.get("Alltime Pixels"))  # (absent from the older template)
    pixels = checked_count(canvas_pixels, alltime, expected_name)
    return Profile(expected_name, None, discord, faction, pixels, paired(pixels, alltime))


def _page_count(text: str | None) -> int | None:
    """A count cell of the profile page (ASCII digits only: ``"²".isdigit()`` is true
    and ``int("²")`` raises); None when absent or not a number."""
    if not text or not (text.isascii() and text.isdigit()) or len(text) > _DIGITS + 1:
        return None
    return int(text)
