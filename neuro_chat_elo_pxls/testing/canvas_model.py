"""The stand-in's simulated canvas (:class:`CanvasModel`) and its script
(:class:`Scenario`): people, their pixels, resets, renames, bans and the stats.json
generations, in simulated time. :mod:`.standin` serves it over HTTP."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import attrs

from .pages import SimUser, php_json

BERLIN = ZoneInfo("Europe/Berlin")
STATS_PERIOD = timedelta(minutes=15)
ZERO = timedelta(0)
FACTIONS = [
    (4242, "EX♥", "Example Painters' Guild", 8339391),
    (17, "GK", "Grid Keepers", 0x33AA33),
    (5120, "💜", "💜 Purple Pact", 0xA630D2),
    (77, "<b>", 'Tags & <Brackets> "quoted"', 0x000000),
]
#: factions whose tags and names the HTML page shows ambiguously (API.md section 9):
#: ``]`` and spaces in a tag, ``(ID: n)`` and untrimmed whitespace in a name, entities
HOSTILE_FACTIONS = [
    (12, "a] b", "Grid] (ID: 12) Keepers", 0x112233),
    (3682, "sp", "  Spaced  Out  ", 0x445566),
    (3683, "x (", "(ID: 1) first", 0),
    (3684, "&amp;", "&lt;b&gt; &#x27;quoted&#x27; = `tick`", 0x778899),
    (3685, "🐢 ]", "] emoji 💜 ]", 0x8A2BE2),
]
#: the faction neuro-chat-elo's casual board counts
SWARM = (3680, "🐢", "Neuro swarm", 0x8A2BE2)


@attrs.define
class Scenario:
    """The population and its scripted life. Times are simulated UTC."""

    users: int = 300
    seed: int = 1
    canvas: str = "86"
    new_users_per_hour: float = 2.0
    #: when to reset the canvas (simulated times)
    resets: list[datetime] = attrs.field(factory=list)
    #: how long the pre-reset stats.json is still served after a reset
    stale_after_reset: timedelta = timedelta(minutes=20)
    #: (time, old name, new name)
    renames: list[tuple[datetime, str, str]] = attrs.field(factory=list)
    #: (time, name, duration)
    bans: list[tuple[datetime, str, timedelta]] = attrs.field(factory=list)
    snip_users: int = 3
    token: str = "standin-token"  # noqa: S105 (the stand-in's fake session, not a secret)
    slow_seconds: float = 30.0
    #: probability that a request gets a random fault (never SLOW) on top of inject()
    fault_rate: float = 0.0
    #: how long a stats.json generation takes (uniform, seconds): generatedAt is stamped,
    #: and the file replaced, when it finishes
    generation_seconds: tuple[float, float] = (0.0, 0.0)
    #: nobody paints from then on (tests compare totals with a settled truth)
    quiet_after: datetime | None = None
    #: rows in toplist.canvas (pxls.space: 1000; a small demo lists fewer)
    toplist_size: int = 1000
    #: share of new users in the Neuro swarm (faction 3680), most of them quiet
    swarm_share: float = 0.0
    #: regenerate on the quarter hours of the clock (as pxls.space's cron does) instead
    #: of every 15 minutes from the first request
    align_stats: bool = False
    #: the factions new users may display (None: :data:`FACTIONS`)
    factions: list[tuple[int, str, str, int]] | None = None
    #: the site name in profile pages' titles, and their template ("current" as on
    #: pxls.space, or "older": "Canvas Pixels", no all-time row)
    site: str = "pxls.space"
    page_template: str = "current"


class CanvasModel:
    """The simulated canvas and its people, evolved against a clock (the host's,
    possibly simulated): pixel activity, new users, canvas resets (the stale
    stats.json is served on for a while), renames, temporary bans, ``-snip-`` rows, and
    the stats.json generations. The server (:class:`~.standin.PxlsStandIn`) serves
    it; nothing here does I/O."""

    def __init__(self, scenario: Scenario, clock: Callable[[], datetime]) -> None:
        self.scenario = scenario
        self.clock = clock
        self.rng = random.Random(scenario.seed)
        self.canvas = scenario.canvas
        self.users: dict[str, SimUser] = {}
        self._ids = 100_000
        self._sim_time: datetime | None = None  # activity simulated up to here
        self._stats_body = b""
        self._stats_generated: datetime | None = None
        self._generations: deque[tuple[datetime, bytes]] = deque()  # finishing, not served
        self._generation_rng = random.Random(scenario.seed + 2)
        self._swarm_rng = random.Random(scenario.seed + 3)
        self.generated: list[datetime] = []  # every generatedAt, for tests and benchmarks
        self._stale_until: datetime | None = None
        self._pending_resets = sorted(scenario.resets)
        self._pending_renames = sorted(scenario.renames)
        self._pending_bans = sorted(scenario.bans)
        self.renamed: dict[str, str] = {}  # old -> new, for tests
        for _ in range(scenario.users):
            self._new_user()
        for user in self.rng.sample(
            list(self.users.values()), min(scenario.snip_users, len(self.users))
        ):
            user.snip = True

    # -- population ----------------------------------------------------------

    def _new_user(self) -> SimUser:
        self._ids += self.rng.randint(1, 50)
        name = (
            f"{self.rng.choice(['grid', 'night', 'pixel', 'quiet', 'neuro', 'vedal'])}_"
            f"{self.rng.choice(['owl', 'master', 'fan', 'lurker', 'painter'])}{self._ids % 9973}"
        )
        roll = self.rng.random()
        discord = (
            None
            if roll < 0.3
            else (
                f"{name}#{self._ids % 10000:04d}" if roll < 0.4 else name.lower().replace("-", ".")
            )
        )
        faction = (
            self.rng.choice(self.scenario.factions or FACTIONS) if self.rng.random() < 0.5 else None
        )
        activity = self.rng.choice([0.05, 0.2, 1.0, 3.0])
        if self.scenario.swarm_share and self._swarm_rng.random() < self.scenario.swarm_share:
            # the casual board's people: the swarm's faction, a Discord name, and mostly
            # too quiet for the top 1000
            faction, discord = SWARM, discord or name.lower()
            activity = self._swarm_rng.choice([0.01, 0.02, 0.05, 0.05, 0.2, 1.0])
        user = SimUser(self._ids, name, discord, faction, activity=activity, alltime=0)
        self.users[name] = user
        return user

    def catch_up(self, now: datetime) -> None:
        """Advance the simulation to ``now`` in 15-minute steps (lazy, on each request)."""
        if self._sim_time is None:
            self._sim_time = now - STATS_PERIOD
            if self.scenario.align_stats:
                into = (now - now.replace(minute=0, second=0, microsecond=0)) % STATS_PERIOD
                self._sim_time = now - into
            self._step(self._sim_time)
        while self._sim_time + STATS_PERIOD <= now:
            self._sim_time += STATS_PERIOD
            self._step(self._sim_time)
        if not self._stats_body and self._generations:  # pxls always serves some file
            self._stats_generated, self._stats_body = self._generations.popleft()
        self._publish(now)

    def _step(self, at: datetime) -> None:
        minutes = STATS_PERIOD.total_seconds() / 60
        while self._pending_resets and self._pending_resets[0] <= at:
            self._pending_resets.pop(0)
            self.canvas = str(int(self.canvas) + 1) if self.canvas.isdigit() else self.canvas + "x"
            for user in self.users.values():
                user.score = 0
            self._stale_until = at + self.scenario.stale_after_reset
        while self._pending_renames and self._pending_renames[0][0] <= at:
            _, old, new = self._pending_renames.pop(0)
            if old in self.users:
                user = self.users.pop(old)
                user.name = new
                self.users[new] = user
                self.renamed[old] = new
        while self._pending_bans and self._pending_bans[0][0] <= at:
            when, name, duration = self._pending_bans.pop(0)
            if name in self.users:
                self.users[name].banned_until = when + duration
        for _ in range(self._poisson(self.scenario.new_users_per_hour * minutes / 60)):
            self._new_user()
        quiet = self.scenario.quiet_after is not None and at >= self.scenario.quiet_after
        for user in self.users.values():
            if user.banned_until is not None and user.banned_until <= at:
                user.banned_until = None
            if user.banned_until is None and not quiet:
                placed = self._poisson(user.activity * minutes)
                user.score += placed
                user.alltime = (user.alltime or 0) + placed
        if self._stale_until is not None and at < self._stale_until:
            return  # the cron fails during a reset: the old file stays
        self._stale_until = None
        self._render_stats(at)

    def _poisson(self, mean: float) -> int:
        # Knuth's method is fine for the small means used here
        if mean <= 0:
            return 0
        if mean > 30:
            return max(0, round(self.rng.gauss(mean, mean**0.5)))
        limit, k, p = 2.718281828459045**-mean, 0, 1.0
        while True:
            p *= self.rng.random()
            if p <= limit:
                return k
            k += 1

    def visible(self) -> list[SimUser]:
        """Users in toplist.canvas right now (not banned, score > 0), best first, at most
        ``toplist_size`` (1000 on pxls.space)."""
        rows = [u for u in self.users.values() if u.score > 0 and u.banned_until is None]
        rows.sort(key=lambda u: (-u.score, u.pxls_id))
        return rows[: self.scenario.toplist_size]

    def _render_stats(self, at: datetime) -> None:
        low, high = self.scenario.generation_seconds
        at += timedelta(seconds=self._generation_rng.uniform(low, high)) if high > 0 else ZERO
        local = at.astimezone(BERLIN)
        canvas = [
            {"username": "-snip-" if u.snip else u.name, "pixels": u.score, "place": i}
            for i, u in enumerate(self.visible(), start=1)
        ]
        body = {
            "general": {
                "total_users": len(self.users),
                "total_pixels_placed": sum(u.score for u in self.users.values()),
                "users_active_this_canvas": len(canvas),
                "total_factions": len(FACTIONS),
                "nth_list": [],
            },
            "breakdown": {},
            "toplist": {"alltime": canvas, "canvas": canvas},
            "factions": [],
            "board_info": {"width": 2000, "height": 2000, "palette": []},
            "generatedAt": local.strftime("%Y/%m/%d - %H:%M:%S (Europe/Berlin)"),
        }
        self._generations.append((at, php_json(body)))
        self.generated.append(at)

    def _publish(self, now: datetime) -> None:
        """Generations that have finished by ``now`` replace the served file."""
        while self._generations and self._generations[0][0] <= now:
            self._stats_generated, self._stats_body = self._generations.popleft()

    def schedule_rename(self, at: datetime, old: str, new: str) -> None:
        """Rename ``old`` to ``new`` at simulated time ``at`` (the old name then 404s)."""
        self._pending_renames.append((at, old, new))
        self._pending_renames.sort()

    def schedule_ban(self, at: datetime, name: str, duration: timedelta) -> None:
        """Ban ``name`` from ``at`` for ``duration``: absent from stats.json meanwhile."""
        self._pending_bans.append((at, name, duration))
        self._pending_bans.sort()
