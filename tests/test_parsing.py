"""Parsers: real shapes, malformed input, and property tests (only our own error escapes)."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuro_chat_elo_pxls.errors import MalformedDataError
from neuro_chat_elo_pxls.pxls.page import parse_profile_html
from neuro_chat_elo_pxls.pxls.parsing import (
    parse_generated_at,
    parse_info,
    parse_profile_json,
    parse_stats,
)

from .helpers import fixture_bytes

GEN = "2025/03/14 - 18:45:02 (Europe/Berlin)"


def stats(rows: Any, generated: Any = GEN, **extra: Any) -> bytes:
    return json.dumps({"toplist": {"canvas": rows}, "generatedAt": generated, **extra}).encode()


def test_generated_at_dst_and_php_escapes() -> None:
    assert parse_generated_at("2025/07/01 - 12:00:00 (Europe/Berlin)") == datetime(
        2025, 7, 1, 10, 0, tzinfo=UTC
    )  # CEST
    assert parse_generated_at("2025/01/01 - 12:00:00 (Europe/Berlin)") == datetime(
        2025, 1, 1, 11, 0, tzinfo=UTC
    )  # CET
    # PHP json_encode escapes "/" as "\/": json.loads undoes it
    snap = parse_stats(
        b'{"toplist":{"canvas":[]},"generatedAt":"2025\\/03\\/14 - 18:45:02 (Europe\\/Berlin)"}'
    )
    assert snap.generated_at == datetime(2025, 3, 14, 17, 45, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        None,
        5,
        "",
        "yesterday",
        "2025/13/40 - 99:00:00 (UTC)",
        "2025/03/14 - 18:45:02 (Mars/Olympus)",
    ],
)
def test_bad_generated_at_rejects_snapshot(value: Any) -> None:
    with pytest.raises(MalformedDataError, match="generatedAt"):
        parse_stats(stats([], value))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"toplist": []}',
        b'{"generatedAt": "x"}',
        stats(None),
        stats({"username": "a"}),
        b"[" * 100_000,
    ],
)
def test_unusable_snapshot_is_rejected_whole(body: bytes) -> None:
    with pytest.raises(MalformedDataError):
        parse_stats(body)


def test_bad_rows_dropped_good_rows_kept() -> None:
    rows = [
        {"username": "good_one", "pixels": 5, "place": 1},
        {"username": "-snip-", "pixels": 4, "place": 2},
        {"username": "robert'); DROP TABLE users;--", "pixels": 3},
        {"username": "../../etc/passwd", "pixels": 3},
        {"username": "x" * 10_000, "pixels": 3},
        {"username": "名前", "pixels": 3},
        {"username": "neg", "pixels": -1},
        {"username": "huge", "pixels": 2**63},
        {"username": "boolean", "pixels": True},
        {"username": "floaty", "pixels": 1.5},
        {"username": "numeric_str", "pixels": "42"},
        {"username": "good_one", "pixels": 9},
        "not an object",
        {"pixels": 3},
    ]
    snap = parse_stats(stats(rows, board_info=[]))
    # good_one is listed twice (5 and 9): ambiguous, so credited from neither row
    assert list(snap.rows) == [("numeric_str", 42)]
    assert snap.snipped == 1
    assert len(snap.rejected) == 11
    assert "good_one: listed twice, ambiguous: skipped" in snap.rejected
    assert all(len(r) < 200 for r in snap.rejected)  # hostile names are truncated in logs


@pytest.mark.parametrize(
    "body",
    [
        b"{}",
        b'{"canvasCode": 86}',
        b'{"canvasCode": ""}',
        b"<html>",
        json.dumps({"canvasCode": "x" * 65}).encode(),
    ],
)
def test_info_without_string_canvas_code(body: bytes) -> None:
    with pytest.raises(MalformedDataError):
        parse_info(body)


def test_profile_json_wrong_types() -> None:
    good = json.loads(fixture_bytes("profile_with_discord_and_faction.json"))
    for field, value in [
        ("id", "184467"),
        ("id", -1),
        ("discordName", 5),
        ("factions", {}),
        ("displayedFactionId", "x"),
    ]:
        bad = json.loads(json.dumps(good))
        bad["user"][field] = value
        with pytest.raises(MalformedDataError):
            parse_profile_json(json.dumps(bad), "example_painter")


def test_profile_html_error_pages_are_not_profiles() -> None:
    for page in ("error_404_logged_in.html", "error_403_anonymous.html"):
        with pytest.raises(MalformedDataError):
            parse_profile_html(fixture_bytes(page), "someone")


def test_profile_html_faction_with_brackets_and_parens() -> None:
    page = fixture_bytes("profile_with_discord_and_faction.html").replace(
        b"[EX\xe2\x99\xa5] Example Painters&#x27; Guild (ID: 4242)",
        b"[A]B] The (best) &amp; co (ID: 77)",
    )
    profile = parse_profile_html(page, "example_painter")
    assert profile.faction is not None
    assert (profile.faction.id, profile.faction.tag, profile.faction.name) == (
        77,
        "A]B",
        "The (best) & co",
    )  # split at the first "] ", id from the last "(ID: n)"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())))
def test_parsers_raise_only_their_own_error(body: bytes) -> None:
    for parse in (
        parse_stats,
        parse_info,
        lambda b: parse_profile_json(b, "someone"),
        lambda b: parse_profile_html(b, "someone"),
    ):
        with contextlib.suppress(MalformedDataError):
            parse(body)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.fixed_dictionaries({"username": json_values, "pixels": json_values}), max_size=20)
)
def test_stats_rows_fuzz_valid_or_rejected(rows: list[dict[str, Any]]) -> None:
    snap = parse_stats(stats(rows))
    snipped = sum(1 for r in rows if r["username"] == "-snip-")
    assert len(snap.rows) + len(snap.rejected) + snap.snipped == len(rows)
    assert snap.snipped == snipped
    for row in snap.rows:
        assert 0 <= row[1] <= 10**12


edge_names = st.sampled_from(["a", "A_-9", "x" * 32, "x" * 33, "", "-snip-", "é", 'q"uote', "a\\b"])
edge_pixels = st.sampled_from([0, 1, 10**12, 10**12 + 1, -1, True, False, 1.0, "7", None])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "username": edge_names | st.from_regex(r"[A-Za-z0-9_\-]{1,32}", fullmatch=True),
                "pixels": edge_pixels | st.integers(0, 99),
            }
        ),
        max_size=12,
    )
)
def test_bulk_path_agrees_with_row_by_row_path(rows: list[dict[str, Any]]) -> None:
    """The bulk check (one regex over the re-encoded toplist) accepts exactly what
    the row-by-row path accepts: a trailing bad row forces the latter."""
    bulk = parse_stats(stats(rows))
    row_by_row = parse_stats(stats([*rows, {"username": 5, "pixels": 1}]))
    assert bulk.rows == row_by_row.rows
    assert len(bulk) == len(row_by_row)
    assert len(bulk.rejected) + 1 == len(row_by_row.rejected)
    assert bulk.snipped == row_by_row.snipped


@pytest.mark.parametrize(
    ("pixels", "alltime", "kept"),
    [
        (4821, 37210, 4821),
        (10**12, None, 10**12),  # the bound itself, as for toplist rows
        (10**15, 3 * 10**15, None),  # absurd: not credited
        (2**63 - 1, None, None),
        (5000, 4000, None),  # above the all-time count
    ],
)
def test_profile_counts_are_bounded_like_toplist_rows(
    pixels: int, alltime: int | None, kept: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    data = json.loads(fixture_bytes("profile_with_discord_and_faction.json"))
    data["user"]["pixelCount"] = pixels
    if alltime is None:
        del data["user"]["pixelCountAllTime"]
    else:
        data["user"]["pixelCountAllTime"] = alltime
    profile = parse_profile_json(json.dumps(data), "example_painter")
    assert profile.canvas_pixels == kept
    # the all-time count is kept beside an accepted canvas count only (a pair)
    assert profile.alltime_pixels == (alltime if kept is not None else None)
    assert profile.discord == "example.painter"  # the rest of the profile still counts
    assert ("absurd" in caplog.text) == (kept is None)


@pytest.mark.parametrize(("template", "served"), [("current", 37210), ("older", None)])
def test_the_alltime_count_is_read_from_json_and_page(template: str, served: int | None) -> None:
    """JSON ``pixelCountAllTime`` and the page's "Alltime Pixels" row give the same
    all-time count; the older template (and snip mode) has none: None, not a guess."""
    user = SimUser(184467, "vedal987", None, None, score=4821, alltime=37210)
    from_page = parse_profile_html(profile_page(user, "pxls.space", template), "vedal987")
    assert from_page.alltime_pixels == served and from_page.canvas_pixels == 4821
    from_json = parse_profile_json(gson_json(profile_dict(user)), "vedal987")
    assert from_json.alltime_pixels == 37210
    user.alltime = None  # snip mode: the rows and the key are absent
    assert parse_profile_json(gson_json(profile_dict(user)), "vedal987").alltime_pixels is None
    assert parse_profile_html(profile_page(user), "vedal987").alltime_pixels is None


@pytest.mark.parametrize(
    ("cell", "kept"), [("4821", 4821), ("²", None), ("4²", None), ("9" * 15, None)]
)
def test_profile_page_counts_are_ascii_digits_and_bounded(cell: str, kept: int | None) -> None:
    page = fixture_bytes("profile_with_discord_and_faction.html").decode()
    page = page.replace(
        '<td class="text-left number">4821</td>', f'<td class="text-left number">{cell}</td>'
    )
    if cell == "9" * 15:
        page = page.replace(">37210<", ">" + "9" * 16 + "<")
    assert parse_profile_html(page, "example_painter").canvas_pixels == kept


# -- profile pages of any pxls instance, factions read exactly (issue 20) --------------

from neuro_chat_elo_pxls.testing.pages import SimUser, gson_json, profile_dict, profile_page  # noqa: E402
from neuro_chat_elo_pxls.testing.standin import FACTIONS, HOSTILE_FACTIONS, SWARM  # noqa: E402


@pytest.mark.parametrize("faction", [*FACTIONS, SWARM, *HOSTILE_FACTIONS])
@pytest.mark.parametrize(
    ("site", "template"),
    [("pxls.space", "current"), ("Ironmouse Canvas", "older"), ("pxls.space", "older")],
)
def test_html_and_json_give_the_same_faction_for_hostile_tags(
    faction: tuple[int, str, str, int], site: str, template: str
) -> None:
    """``]`` and spaces in a tag, ``(ID: n)`` and untrimmed double spaces in a name,
    entities and emoji: the page's ``<h1>`` gives the tag, the cell the rest. Before,
    tag ``a] b`` was read as ``a`` and ``  Spaced  Out  `` as ``Spaced Out``."""
    user = SimUser(184467, "vedal987", "vedal.", faction, score=4821)
    from_json = parse_profile_json(gson_json(profile_dict(user)), "vedal987")
    from_html = parse_profile_html(profile_page(user, site, template), "vedal987")
    assert from_json.faction is not None and from_html.faction is not None
    html_faction = (from_html.faction.id, from_html.faction.tag, from_html.faction.name)
    assert html_faction == (from_json.faction.id, from_json.faction.tag, from_json.faction.name)
    assert html_faction == faction[:3]
    assert from_html.discord == from_json.discord == "vedal."
    assert from_html.canvas_pixels == from_json.canvas_pixels == 4821


#: legacy Discord tags (``^.{2,32}#\d{4}$``) with leading or double spaces, entities
SPACED_DISCORD = [" lead#0001", "ab  cd#1234", "  two lead#0002", "a&amp; <b>  x#0003", "vedal."]


@pytest.mark.parametrize("discord", SPACED_DISCORD)
@pytest.mark.parametrize("template", ["current", "older"])
def test_html_and_json_give_the_same_discord_name(discord: str, template: str) -> None:
    """Issue item 13: ``profile_endpoint = "html"`` handed out ``'lead#0001'`` and
    ``'ab cd#1234'`` where the JSON says ``' lead#0001'`` and ``'ab  cd#1234'``: the
    page's cell was whitespace-collapsed. Now the cell is read as written (unescaped
    once), as the stand-in's page renders it."""
    user = SimUser(184467, "vedal987", discord, None, score=4821)
    from_json = parse_profile_json(gson_json(profile_dict(user)), "vedal987")
    from_html = parse_profile_html(profile_page(user, "pxls.space", template), "vedal987")
    assert from_html.discord == from_json.discord == discord


def test_the_discord_cell_of_the_real_template_is_exact() -> None:
    """The captured page's markup (API.md section 7.3), with a spaced legacy tag: the
    cell's text as written; a template that put the value on a line of its own would
    lose only that line's indentation and breaks."""
    page = fixture_bytes("profile_with_discord_and_faction.html").decode()
    cell = '<td class="text-left">example.painter</td>'
    assert cell in page
    spaced = page.replace(cell, '<td class="text-left"> lead  x&#x27;s#0001</td>')
    assert parse_profile_html(spaced, "example_painter").discord == " lead  x's#0001"
    own_line = page.replace(cell, '<td class="text-left">\n    lead#0001\n  </td>')
    assert parse_profile_html(own_line, "example_painter").discord == "lead#0001"


def test_a_page_of_another_instance_with_the_older_template() -> None:
    """The Ironmouse Canvas capture's shape (API.md section 9): title ``{name} -
    Ironmouse Canvas``, the pixel row labelled ``Canvas Pixels``, no all-time row.
    Before: refused for its title, and the count was None."""
    user = SimUser(1, "vedal987", None, None, score=230)
    page = profile_page(user, "Ironmouse Canvas", "older")
    assert "Alltime Pixels" not in page and '<th class="text-right pr-3">Canvas Pixels' in page
    profile = parse_profile_html(page, "vedal987")
    assert profile.canvas_pixels == 230 and profile.faction is None and profile.discord is None
    with pytest.raises(MalformedDataError, match="title"):
        parse_profile_html(page, "someone_else")
    with pytest.raises(MalformedDataError, match="title"):
        parse_profile_html(page.replace("vedal987 - Ironmouse Canvas", "vedal987 - "), "vedal987")


def test_a_page_whose_heading_hides_the_tag_is_read_the_old_way_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from neuro_chat_elo_pxls.pxls import page as parsing

    user = SimUser(1, "vedal987", None, (12, "GK", "Grid Keepers", 1), score=5)
    page = profile_page(user).replace("[GK] vedal987&#x27;s Profile", "vedal987&#x27;s Profile")
    parsing._inexact_said = False
    for _ in range(3):
        profile = parse_profile_html(page, "vedal987")
        assert profile.faction is not None
        assert (profile.faction.tag, profile.faction.name) == ("GK", "Grid Keepers")
    said = [r for r in caplog.records if "cannot be read exactly" in r.getMessage()]
    assert len(said) == 1 and 'profile_endpoint = "api"' in said[0].getMessage()
