"""What the stand-in and the simulator's model pxls serve, shaped like pxls.space: PHP
and Gson JSON escapes, the profile JSON and pxls-web HTML page of a simulated user,
pxls-web error pages, the backend's and Cloudflare's rate-limit answers, a
Cloudflare challenge and a maintenance page."""

from __future__ import annotations

import html
import json
from datetime import datetime

import attrs
from aiohttp import web

PALETTE = "ffffff,b9c3cf,777f8c,424651,1f1e26,000000"


@attrs.define
class SimUser:
    """A simulated pxls user: ``faction`` is (id, tag, name, color); ``score`` the
    current canvas's count; ``banned_until`` simulated UTC time."""

    pxls_id: int
    name: str
    discord: str | None
    faction: tuple[int, str, str, int] | None
    score: int = 0
    activity: float = 1.0  # mean pixels per simulated minute while active
    banned_until: datetime | None = None
    snip: bool = False  # logged in with IP: shown as -snip-
    #: the all-time count (None: not served, as in snip mode or the older template)
    alltime: int | None = None


def php_json(value: object) -> bytes:
    """PHP ``json_encode`` defaults: compact, ``\\/`` escapes, non-ASCII as ``\\uXXXX``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def gson_json(value: object) -> bytes:
    """Gson defaults: compact, ``< > & = '`` escaped as ``\\u00XX``, non-ASCII raw."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char in "<>&='":
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text.encode()


def profile_dict(user: SimUser) -> dict[str, object]:
    """``/api/v1/profile``'s JSON object for ``user``, as pxls.space serves it. Pure."""
    signup = 1_689_093_291_139
    profile: dict[str, object] = {
        "id": user.pxls_id,
        "name": user.name,
        "signupTime": signup,
        "pixelCount": user.score,
        "roles": [],
        "displayedFactionId": user.faction[0] if user.faction else 0,
        "factions": []
        if user.faction is None
        else [
            {
                "id": user.faction[0],
                "name": user.faction[2],
                "tag": user.faction[1],
                "color": user.faction[3],
                "ownerId": 90211,
                "ownerName": "collective_lead",
                "canvasCode": "86",
                "created": 1_717_430_400_000,
            }
        ],
        "isBanned": user.banned_until is not None,
        "isPermaBanned": False,
        "isChatBanned": False,
        "isPermaChatBanned": False,
        "chatBanExpiry": signup,
        "isFactionRestricted": False,
    }
    if user.alltime is not None:
        profile["pixelCountAllTime"] = user.alltime
    if user.discord is not None:
        profile["discordName"] = user.discord
    return {
        "user": profile,
        "self": {"id": 1, "name": "standin_bot", "pixelCountAllTime": 1},
        "palette": PALETTE,
        "snipMode": False,
    }


def profile_page(user: SimUser, site: str = "pxls.space", template: str = "current") -> str:
    """pxls-web's profile page of ``user``: the ``current`` template (pxls.space:
    ``Current Canvas Pixels`` and ``Alltime Pixels`` rows) or the ``older`` one other
    instances run (``Canvas Pixels``, no all-time row); titled ``{name} - {site}``."""
    e = html.escape
    faction = (
        '<td class="text-left text-muted">(None)</td>'
        if user.faction is None
        else f'<td class="text-left">[{e(user.faction[1])}] {e(user.faction[2])} '
        f"(ID: {user.faction[0]})</td>"
    )
    count = f'<td class="text-left number">{user.score}</td>'
    rows = (
        [("Alltime Pixels", f'<td class="text-left number">{user.alltime}</td>')]
        if template == "current" and user.alltime is not None
        else []
    ) + [
        ("Current Canvas Pixels" if template == "current" else "Canvas Pixels", count),
        ("Discord Tag", f'<td class="text-left">{e(user.discord or "Not Set")}</td>'),
        ("Faction", faction),
    ]
    tag = "" if user.faction is None else f"[{e(user.faction[1])}] "
    body = "\n".join(
        f'<tr>\n<th class="text-right pr-3">{label}</th>\n{cell}\n</tr>' for label, cell in rows
    )
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="UTF-8">\n'
        f'<title>{e(user.name)} - {e(site)}</title>\n</head>\n<body>\n<main role="main">\n'
        f"<h1>{tag}{e(user.name)}&#x27;s Profile</h1>\n"
        f'<div id="tab-details" class="tab-pane text-center active" data-tab="details">\n'
        f'<h3></h3>\n<table class="inline-block">\n<tbody>\n{body}\n</tbody>\n</table>\n'
        f"</div>\n</main>\n</body>\n</html>\n"
    )


_ERROR_TEXT = {
    403: ("Not Authenticated", "You must be logged in to access this data."),
    404: ("Not Found", "The content you requested could not be found at this URL."),
}


def error_html(status: int) -> str:
    """The text of pxls-web's HTML error page for a GET whose backend status was
    ``status`` (served as ``text/html; charset=utf-8``)."""
    heading, text = _ERROR_TEXT.get(
        status,
        (
            "Not Allowed",
            "The action you attempted to perform is not allowed or resulted in an error.",
        ),
    )
    return (
        f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="UTF-8">\n'
        f'<title>{status} - pxls.space</title>\n</head>\n<body>\n<main role="main" '
        f'class="mb-3">\n<div class="container">\n<h1>{heading}</h1>\n<hr>\n<p>{text}</p>\n'
        f"</div>\n</main>\n</body>\n</html>\n"
    )


def error_page(status: int) -> web.Response:
    """pxls-web's HTML error page for a GET whose backend status was ``status``."""
    return web.Response(
        status=status, text=error_html(status), content_type="text/html", charset="utf-8"
    )


def rate_limited_text(seconds: int) -> bytes:
    """The backend's plain-text 429 body (no ``Retry-After``)."""
    return f"You're doing that too much. Try again in {seconds} seconds.".encode()


#: Cloudflare's 1015 page (a 429 that comes with ``Retry-After``; ``Server: cloudflare``)
CLOUDFLARE_1015_HTML = "<!DOCTYPE html>Error 1015 You are being rate limited"
#: Cloudflare's challenge page (a 403 with ``cf-mitigated: challenge``)
CHALLENGE_HTML = "<title>Just a moment...</title>"
#: A 200 HTML page where JSON was expected
MAINTENANCE_HTML = "<html>maintenance</html>"
#: The backend's JSON 404 for an unknown user (a client talking to it without pxls-web)
USER_NOT_FOUND_JSON = b'{"success":false,"message":"Not Found","details":"USER_NOT_FOUND"}'
