"""pxls and hosts are not always in order: DST, a future generatedAt, host clock jumps,
a canvas flap from a stale cache. Each case checks conservation, observed_at and
that nothing stalls."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from neuro_chat_elo_pxls import PxlsSource
from neuro_chat_elo_pxls.engine.state import EngineState, StateKeeper
from neuro_chat_elo_pxls.errors import AuthError
from neuro_chat_elo_pxls.jobs.pull import Pull
from neuro_chat_elo_pxls.models import CanvasInfo, Snapshot
from neuro_chat_elo_pxls.pxls.parsing import parse_stats
from neuro_chat_elo_pxls.store.writer import Store

from .helpers import FakeClock, FakePxls, Ledger, drive

BERLIN = ZoneInfo("Europe/Berlin")
PERIOD = timedelta(minutes=15)


class BerlinPxls(FakePxls):
    """stats.json as pxls.space writes it: generatedAt in Berlin wall time, parsed by
    the real parser (so the repeated autumn hour is really ambiguous)."""

    async def fetch_stats(self) -> Snapshot:
        plain = await super().fetch_stats()
        assert self.generated_at is not None
        local = self.generated_at.astimezone(BERLIN)
        body = {
            "generatedAt": local.strftime("%Y/%m/%d - %H:%M:%S (Europe/Berlin)"),
            "toplist": {"canvas": [{"username": n, "pixels": p} for n, p in plain.rows]},
        }
        return parse_stats(orjson.dumps(body))


async def run_days(
    source: PxlsSource,
    fake: FakePxls,
    clock: FakeClock,
    ledger: Ledger,
    until: datetime,
    *,
    reset_at: datetime | None = None,
) -> dict[str, dict[str, int]]:
    """Every 15 minutes each user paints and stats.json is regenerated; a reset at
    ``reset_at``. Returns the truth per canvas: the scores of its last generation."""
    truth: dict[str, dict[str, int]] = {}
    boundary = clock.now
    generations: set[datetime] = set()
    while boundary < until:
        await drive(source, clock, boundary, ledger)
        if reset_at is not None and fake.canvas == "86" and boundary >= reset_at:
            fake.canvas = "87"
            for user in fake.users.values():
                user.score = 0
        for i, user in enumerate(fake.users.values()):
            user.score += 3 + i
        fake.regenerate()
        generations.add(fake.clock.now.replace(microsecond=0))
        truth[fake.canvas] = {n: u.score for n, u in fake.users.items()}
        boundary += PERIOD
    await drive(source, clock, until + timedelta(hours=2), ledger)
    ledger.add(await source.collect_deltas())
    observed = {d.observed_at for d in ledger.deltas}
    assert observed <= generations, (
        f"observed_at off the real generations: {observed - generations}"
    )
    return truth


@pytest.mark.parametrize("interval", [timedelta(minutes=15), timedelta(hours=1)])
@pytest.mark.parametrize(
    ("start", "reset_at"),
    [
        # autumn: 2026-10-25 03:00 CEST -> 02:00 CET (00:00-01:00 UTC is the repeated hour)
        (datetime(2026, 10, 24, 21, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        (datetime(2026, 10, 24, 21, 0, tzinfo=UTC), None),
        # spring: 2026-03-29 02:00 CET -> 03:00 CEST
        (datetime(2026, 3, 28, 22, 0, tzinfo=UTC), datetime(2026, 3, 29, 1, 15, tzinfo=UTC)),
    ],
)
async def test_dst_changes_drop_or_mislabel_no_snapshot(
    make_settings: Callable[..., object],
    clock: FakeClock,
    interval: timedelta,
    start: datetime,
    reset_at: datetime | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import random

    clock.now = start
    fake = BerlinPxls(clock)
    for i in range(20):
        fake.add(f"owl_{i:02d}")
    settings = make_settings(token=None, leaderboard_interval=interval)
    source = PxlsSource(settings, client=fake, rng=random.Random(1))  # type: ignore[arg-type]
    ledger = Ledger()
    caplog.set_level(logging.INFO)
    try:
        truth = await run_days(
            source, fake, clock, ledger, start + timedelta(hours=6), reset_at=reset_at
        )
    finally:
        await source.on_shutdown()
    ledger.check_conservation()
    final = truth[fake.canvas]
    credited = {u: s for (u, c), s in ledger.last_scores().items() if c == fake.canvas}
    assert credited == final, "the final canvas: every pixel handed out, none twice"
    if interval == PERIOD:
        # every generation is pulled and handed out with its true time, the repeated
        # autumn hour included; the old canvas up to its last generation
        # (a generation from the very moment of a reset predates the pull that saw the
        # new code: it is not counted for the new canvas, by design; the next one is)
        observed = {d.observed_at for d in ledger.deltas}
        expected = {start + PERIOD * k for k in range(24)} - {reset_at}
        assert expected <= observed, sorted(expected - observed)
        if reset_at is not None:
            old = {u: s for (u, c), s in ledger.last_scores().items() if c == "86"}
            assert old == truth["86"]


async def test_future_generated_at_is_rejected_and_blocks_nothing(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    fake.add("a_user", 10)
    source = make_source(token=None)
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=1), ledger)
    fake.users["a_user"].score = 20
    fake.generated_at = datetime(2099, 1, 1, tzinfo=UTC)  # a server clock glitch
    await drive(source, clock, clock.now + timedelta(hours=1, minutes=1), ledger)
    assert [d.score for d in ledger.deltas] == [10]
    assert any("ahead of host time" in r.getMessage() for r in caplog.records)
    fake.users["a_user"].score = 30
    fake.regenerate()
    await drive(source, clock, clock.now + timedelta(minutes=20), ledger)
    assert [d.score for d in ledger.deltas] == [10, 30]


async def test_a_stored_future_generated_at_is_pulled_back(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    make_settings: Callable[..., object],
) -> None:
    settings = make_settings()
    async with await Store.open(settings.db_path) as store:  # type: ignore[attr-defined]
        # what an earlier version stored after one glitched snapshot
        await store.save_state(
            EngineState(canvas="86", last_generated_at=datetime(2099, 1, 1, tzinfo=UTC))
        )
    fake.add("a_user", 10)
    source = make_source(token=None)
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    assert [d.score for d in ledger.deltas] == [10]


async def test_host_clock_a_year_ahead_for_one_tick_stalls_nothing(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
) -> None:
    for i in range(30):
        fake.add(f"user_{i:02d}", 5 + i)
    source = make_source(profile_cooldown=timedelta(seconds=1))
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=2), ledger)
    start = clock.now
    await source.on_tick(start + timedelta(days=365))  # one tick from a wrong clock
    ledger.add(await source.collect_deltas())
    # back to the right time: pulls and profiles go on as before
    for user in fake.users.values():
        user.score += 7
    fake.regenerate()
    await drive(source, clock, start + timedelta(hours=3), ledger)
    pulls = [
        at
        for kind, _, at in fake.requests
        if kind == "stats" and start < at < start + timedelta(hours=3)
    ]
    assert len(pulls) >= 2, "hourly pulls continue"
    profiles = [at for kind, _, at in fake.requests if kind == "profile" and at > start]
    assert profiles, "profile requests continue"
    ledger.check_conservation()
    assert {u: s for (u, _), s in ledger.last_scores().items()} == {
        n: u.score for n, u in fake.users.items()
    }
    # and across a restart: nothing a year out was persisted
    await source.on_shutdown()
    again = make_source(profile_cooldown=timedelta(seconds=1))
    due = again.next_due_at(clock.now)
    await again.on_tick(clock.now)
    due = again.next_due_at(clock.now)
    assert due is not None and due <= clock.now + timedelta(hours=1, minutes=21)


async def test_a_pull_from_a_clock_a_year_ahead_keeps_no_one_listed(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
) -> None:
    """A pull on a +1 y tick stamps the listed users seen a year ahead; after the clock
    is back, a followed user who left the toplist must be refreshed again, not count as
    listed for a year (simulator seed 1438: 0 reads of a followed user in 27 h)."""
    fake.top = 2
    fake.add("topper", 1000)
    fake.add("fan", 950)
    fake.add("third", 10)
    source = make_source(
        follow=["fan"], follow_interval=timedelta(minutes=10), profile_cooldown=timedelta(seconds=1)
    )
    await drive(source, clock, clock.now + timedelta(minutes=5))
    start = clock.now + timedelta(hours=1, minutes=5)  # the next pull is due
    clock.now = start
    fake.regenerate()
    await source.on_tick(start + timedelta(days=365))  # it runs on a wrong clock
    fake.users["third"].score = 5000  # the fan leaves the toplist
    for _ in range(12):  # stats.json regenerated every 15 minutes
        fake.regenerate()
        await drive(source, clock, clock.now + timedelta(minutes=15))
    reads = [at for kind, name, at in fake.requests if kind == "profile" and name == "fan"]
    assert sum(at > start + timedelta(hours=1) for at in reads) >= 6, reads


class FlappingPxls(FakePxls):
    """After a reset, /info answers the old code again for a while (stale cache)."""

    stale: tuple[datetime, datetime] | None = None

    async def fetch_info(self) -> CanvasInfo:
        info = await super().fetch_info()
        if self.stale is not None and self.stale[0] <= self.clock.now < self.stale[1]:
            return CanvasInfo("86")
        return info


async def test_canvas_flap_from_a_stale_cache_is_not_another_reset(
    make_settings: Callable[..., object], clock: FakeClock
) -> None:
    import random

    fake = FlappingPxls(clock)
    fake.add("flappy", 50)
    source = PxlsSource(make_settings(token=None), client=fake, rng=random.Random(1))  # type: ignore[arg-type]
    ledger = Ledger()
    try:
        await drive(source, clock, clock.now + timedelta(minutes=1), ledger)
        fake.users["flappy"].score = 60
        fake.regenerate()
        await drive(source, clock, clock.now + timedelta(hours=1, minutes=5), ledger)
        assert ledger.sums()[("flappy", "86")] == 60
        # reset 86 -> 87, seen by a pull; then /info says 86 again for 40 minutes
        fake.canvas = "87"
        fake.users["flappy"].score = 10
        clock.advance(minutes=5)
        fake.regenerate()
        await drive(source, clock, clock.now + timedelta(hours=1), ledger)  # sees 87
        fake.regenerate()  # (the stats.json of before the reset was not counted for 87)
        await drive(source, clock, clock.now + timedelta(minutes=20), ledger)
        assert ledger.sums()[("flappy", "87")] == 10
        fake.stale = (clock.now, clock.now + timedelta(minutes=40))
        for _ in range(6):
            fake.users["flappy"].score += 10
            clock.advance(minutes=1)
            fake.regenerate()
            await drive(source, clock, clock.now + timedelta(minutes=20), ledger)
        fake.stale = None
        await drive(source, clock, clock.now + timedelta(hours=2), ledger)
    finally:
        await source.on_shutdown()
    ledger.check_conservation()
    sums = ledger.sums()
    assert sums[("flappy", "86")] == 60
    assert sums[("flappy", "87")] == fake.users["flappy"].score == 70


def test_a_repeated_hour_reading_is_placed_only_when_it_can_be() -> None:
    """The repeated autumn hour (02:00-03:00 Berlin twice): a file whose either reading
    is the last one processed is that file again (a stalled cron after a reset), and a
    file newer than the last one processed whose readings straddle the reset could be
    either canvas's: both are skipped for now. Simulator seed 129 before: the stale
    file's second reading was credited to the new canvas (+5441, true 233)."""
    first = datetime(2026, 10, 25, 0, 0, 50, tzinfo=UTC)  # 02:00:50 CEST
    alt = first + timedelta(hours=1)  # 02:00:50 CET
    snapshot = Snapshot(generated_at=first, toplist=b"{}", size=0, generated_alt=alt)
    reset_seen = datetime(2026, 10, 25, 0, 40, tzinfo=UTC)

    def pull(last: datetime | None, changed: datetime | None) -> Pull:
        state = EngineState(last_generated_at=last, canvas_changed_at=changed)
        return Pull(StateKeeper(state), timedelta(hours=1))

    assert "already processed" in (pull(first, reset_seen)._ambiguous(snapshot) or "")
    assert "already processed" in (pull(alt, None)._ambiguous(snapshot) or "")
    before = first - timedelta(minutes=30)
    assert "which canvas" in (pull(before, reset_seen)._ambiguous(snapshot) or "")
    # the first reading older than the last file processed: it can only be the second
    assert pull(first + timedelta(minutes=15), reset_seen)._ambiguous(snapshot) is None
    assert pull(before, None)._ambiguous(snapshot) is None  # no reset: the newer fits
    plain = Snapshot(generated_at=first, toplist=b"{}", size=0)
    assert pull(first, reset_seen)._ambiguous(plain) is None  # left to _skip_reason


@pytest.mark.parametrize("profiles", ["answered", "forbidden"])
async def test_holds_begun_on_a_clock_a_year_ahead_begin_now(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    profiles: str,
) -> None:
    """The first pull runs on a tick a year ahead, so its new users' holds begin a
    year ahead; back on the right clock they begin now (said once), and every user's
    count arrives within the hour's hold, not a year later: with its profile, or, with
    every profile answered 403, when the hold ends (fails without the pull-back)."""
    for i in range(5):
        fake.add(f"user_{i}", 10 + i, discord=f"user_{i}#1")
    if profiles == "forbidden":
        fake.failures["profile"] = [AuthError("HTTP 403", challenge=False) for _ in range(50)]
    source = make_source(profile_cooldown=timedelta(seconds=1))
    caplog.set_level(logging.INFO, logger="neuro_chat_elo_pxls")
    ledger = Ledger()
    await source.on_tick(clock.now + timedelta(days=365))  # the pull: all five held
    ledger.add(await source.collect_deltas())
    await drive(source, clock, clock.now + timedelta(minutes=70), ledger)
    pulled = [r.getMessage() for r in caplog.records if "began in the future" in r.getMessage()]
    assert pulled == ["host clock: 5 holds began in the future: pulled back to now"], pulled
    ledger.check_conservation()
    assert {u: s for (u, _), s in ledger.last_scores().items()} == {
        n: u.score for n, u in fake.users.items()
    }
    discords = {f"user_{i}#1" for i in range(5)} if profiles == "answered" else {None}
    assert {d.discord for d in ledger.deltas} == discords
