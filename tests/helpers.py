"""Test doubles: a fake clock, an in-memory fake pxls.space, a host-like driver."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs

from neuro_chat_elo_pxls import EloDelta, PxlsSource
from neuro_chat_elo_pxls.errors import NotFoundError
from neuro_chat_elo_pxls.models import CanvasInfo, Faction, Profile, Snapshot, ToplistRow

FIXTURES = Path(__file__).parent / "fixtures"
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@attrs.define
class FakeUser:
    pxls_id: int
    score: int = 0
    discord: str | None = None
    faction: Faction | None = None
    banned: bool = False
    #: the all-time count a profile serves (None: none, as in snip mode)
    alltime: int | None = None

    def paint(self, pixels: int) -> None:
        """Place (or, negative, lose) ``pixels`` on the canvas: both counts move."""
        self.score += pixels
        if self.alltime is not None:
            self.alltime += pixels


@attrs.define
class FakePxls:
    """The source's view of pxls.space, in memory, with scripted failures.

    ``failures[endpoint]`` is a list of exceptions raised by the next calls to that
    endpoint ("info", "stats", "profile"). ``requests`` records (endpoint, arg, now).
    """

    clock: FakeClock
    canvas: str = "86"
    users: dict[str, FakeUser] = attrs.field(factory=dict)
    snips: int = 0
    generated_at: datetime | None = None
    top: int = 1000  # how many rows toplist.canvas lists
    failures: dict[str, list[Exception]] = attrs.field(factory=lambda: defaultdict(list))
    requests: list[tuple[str, str | None, datetime]] = attrs.field(factory=list)
    _next_id: int = 1000

    def add(self, name: str, score: int = 0, **kw: object) -> FakeUser:
        self._next_id += 1
        user = FakeUser(self._next_id, score, **kw)  # type: ignore[arg-type]
        self.users[name] = user
        return user

    def regenerate(self) -> None:
        self.generated_at = self.clock.now.replace(microsecond=0)

    def _fail(self, endpoint: str) -> None:
        if self.failures[endpoint]:
            raise self.failures[endpoint].pop(0)

    async def fetch_info(self) -> CanvasInfo:
        self.requests.append(("info", None, self.clock.now))
        self._fail("info")
        return CanvasInfo(self.canvas)

    async def fetch_stats(self) -> Snapshot:
        self.requests.append(("stats", None, self.clock.now))
        self._fail("stats")
        if self.generated_at is None:
            self.regenerate()
        assert self.generated_at is not None
        rows = sorted(
            (ToplistRow(n, u.score) for n, u in self.users.items() if u.score > 0 and not u.banned),
            key=lambda r: -r.pixels,
        )
        return Snapshot.from_rows(self.generated_at, rows[: self.top], (), self.snips)

    async def fetch_profile(self, username: str) -> Profile:
        self.requests.append(("profile", username, self.clock.now))
        self._fail("profile")
        user = self.users.get(username)
        if user is None:
            raise NotFoundError(f"/api/v1/profile: HTTP 404 ({username})")
        return Profile(username, user.pxls_id, user.discord, user.faction, user.score, user.alltime)

    async def close(self) -> None:
        pass

    def profile_requests(self) -> list[tuple[str, datetime]]:
        return [(arg or "", at) for kind, arg, at in self.requests if kind == "profile"]


@attrs.define
class FakeClock:
    now: datetime = T0

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


@attrs.define
class Ledger:
    """What a host would have received: all deltas, checked for conservation."""

    deltas: list[EloDelta] = attrs.field(factory=list)

    def add(self, batch: list[EloDelta]) -> None:
        self.deltas.extend(batch)

    def sums(self) -> dict[tuple[str, str], int]:
        out: dict[tuple[str, str], int] = defaultdict(int)
        for d in self.deltas:
            out[(d.user, d.canvas)] += d.delta
        return dict(out)

    def last_scores(self) -> dict[tuple[str, str], int]:
        return {(d.user, d.canvas): d.score for d in self.deltas}

    def check_conservation(self) -> None:
        seqs = [d.seq for d in self.deltas]
        assert seqs == sorted(seqs), "seq not increasing"
        assert len(set(seqs)) == len(seqs), "seq repeated"
        sums, last = self.sums(), self.last_scores()
        bad = {k: (sums[k], last[k]) for k in sums if sums[k] != last[k]}
        assert not bad, f"sum of deltas != last score handed out: {bad}"

    def score(self, user: str, canvas: str) -> int | None:
        return self.last_scores().get((user, canvas))


async def drive(
    source: PxlsSource,
    clock: FakeClock,
    until: datetime,
    ledger: Ledger | None = None,
    *,
    max_ticks: int = 1_000_000,
) -> int:
    """Run the source like a host: tick, collect, sleep until the next due time."""
    ticks = 0
    while clock.now < until:
        await source.on_tick(clock.now)
        ticks += 1
        assert ticks < max_ticks, "host loop did not make progress"
        if ledger is not None:
            ledger.add(await source.collect_deltas())
        due = source.next_due_at(clock.now)
        if due is None or due > until:
            clock.now = until
        elif due <= clock.now:
            clock.now += timedelta(milliseconds=1)  # a real host re-ticks almost at once
        else:
            clock.now = due
    return ticks


def check_holds_latest(ledger: Ledger, snapshot: Snapshot, canvas: str) -> None:
    """The host holds, per user, the newest observation: the snapshot's count, or a
    profile count observed after the snapshot (never less: within a canvas the
    stand-in's counts only grow)."""
    last: dict[tuple[str, str], EloDelta] = {}
    for delta in ledger.deltas:
        last[(delta.user, delta.canvas)] = delta
    for name, pixels in snapshot.rows:
        held = last.get((name, canvas))
        assert held is not None, f"{name}: nothing handed out on {canvas}"
        if held.via == "profile" and held.observed_at > snapshot.generated_at:
            assert held.score >= pixels, (name, held.score, pixels)
        else:
            assert held.score == pixels, (name, held.score, pixels)
