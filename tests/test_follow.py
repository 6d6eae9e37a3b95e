"""Following people beyond the top 1000 (DESIGN 7): profile counts as observations,
confirmed by /info before and after, who is followed, one budget."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import Faction, PxlsSource

from .helpers import FakeClock, FakePxls, Ledger, drive

SWARM = Faction(3680, "🐢", "Neuro swarm", 0x8A2BE2)
H = timedelta(hours=1)


def last(ledger: Ledger, user: str) -> tuple[int, str] | None:
    found = [(d.score, d.via) for d in ledger.deltas if d.user == user]
    return found[-1] if found else None


async def test_followed_user_outside_the_toplist_gets_every_change(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.top = 2
    fake.add("big_a", 1000)
    fake.add("big_b", 900)
    small = fake.add("small_swarm_fan", 5, discord="fan#1", faction=SWARM)
    source = make_source(follow=["small_swarm_fan"])
    ledger = Ledger()
    lags: list[timedelta] = []
    for step in range(12):
        changed_at = clock.now
        small.score += 7 + step
        fake.users["big_a"].score += 10
        fake.regenerate()
        deadline = changed_at + H + timedelta(minutes=16)
        while last(ledger, "small_swarm_fan") != (small.score, "profile"):
            assert clock.now < deadline, f"step {step}: not observed in time"
            await drive(source, clock, clock.now + timedelta(minutes=1), ledger)
        lags.append(clock.now - changed_at)
        await drive(source, clock, changed_at + timedelta(minutes=80), ledger)
    ledger.check_conservation()
    deltas = [d for d in ledger.deltas if d.user == "small_swarm_fan"]
    assert deltas[0].delta == deltas[0].score  # first delta: the full canvas count
    assert deltas[0].discord == "fan#1" and deltas[0].faction == SWARM
    assert all(d.via == "profile" for d in deltas)
    assert max(lags) <= H + timedelta(minutes=16)
    status = await source.status(clock.now)
    assert status["follow"]["followed"] == 1 and status["follow"]["outside_toplist"] == 1
    assert status["follow"]["last_round_finished_at"] is not None


async def test_list_file_faction_and_host_each_follow(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.top = 2
    fake.add("topper", 10_000)
    for name in ("by_list", "by_file", "by_file_later", "by_host", "ignored"):
        fake.add(name, 3)
    swarm = fake.add("swarm_member", 400, faction=SWARM)  # in the toplist at first
    follow_file = tmp_path / "follow.txt"
    follow_file.write_text("# swarm regulars\nby_file   # since canvas 80\n\nnot a name!\n")
    source = make_source(
        follow=["by_list", "bad name"],
        follow_file=str(follow_file),
        follow_factions=[3680],
    )
    ledger = Ledger()
    caplog.set_level(logging.INFO)
    await drive(source, clock, clock.now + timedelta(minutes=30), ledger)
    assert await source.follow(["by_host", "also bad!"]) == 1
    follow_file.write_text("by_file\nby_file_later\n")  # re-read when it changes
    # swarm_member drops out of the toplist: followed through its displayed faction
    fake.add("newcomer", 5_000)
    fake.regenerate()
    await drive(source, clock, clock.now + timedelta(hours=1), ledger)
    swarm.score = 440
    await drive(source, clock, clock.now + timedelta(hours=2), ledger)
    credited = {d.user for d in ledger.deltas if d.via == "profile"}
    assert {"by_list", "by_file", "by_file_later", "by_host", "swarm_member"} <= credited
    assert "ignored" not in {d.user for d in ledger.deltas}
    assert last(ledger, "swarm_member") == (440, "profile")
    invalid = [r for r in caplog.records if "invalid names" in r.getMessage()]
    assert len(invalid) == 3  # one line for each place that lists an invalid name
    ledger.check_conservation()


async def test_unknown_followed_name_that_404s_is_reported(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("someone", 10)
    source = make_source(follow=["gone_user"])
    await drive(source, clock, clock.now + timedelta(minutes=10))
    status = await source.status(clock.now)
    assert status["follow"]["not_found"] == 1
    assert status["follow"]["not_found_names"] == ["gone_user"]
    requests = [n for n, _ in fake.profile_requests() if n == "gone_user"]
    await drive(source, clock, clock.now + timedelta(hours=3))
    assert [n for n, _ in fake.profile_requests() if n == "gone_user"] == requests  # not hammered


async def test_dropping_out_of_the_toplist_and_back_conserves_and_never_dips(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.top = 2
    fake.add("anchor", 10_000)
    mover = fake.add("mover", 500, faction=SWARM)
    other = fake.add("other", 400)
    source = make_source(follow_factions=[3680])
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    for step in range(30):
        mover.score += 13
        other.score += 40 if 5 <= step < 15 else 0  # overtakes mover, then falls behind
        fake.regenerate()
        await drive(source, clock, clock.now + timedelta(minutes=25), ledger)
        if step == 15:  # a rename while outside the toplist
            fake.users["mover_v2"] = fake.users.pop("mover")
    await drive(source, clock, clock.now + timedelta(hours=2), ledger)
    ledger.check_conservation()
    for user in ("mover", "mover_v2", "other"):
        scores = [d.score for d in ledger.deltas if d.user == user and d.score > 0]
        assert scores == sorted(scores), f"{user}: a score went down and back up {scores}"
    assert {d.via for d in ledger.deltas if d.user in ("mover", "mover_v2")} == {
        "toplist",
        "profile",
    }
    sums = ledger.sums()
    assert sums[("mover_v2", "86")] == mover.score  # the person's total moved with the name
    assert sums.get(("mover", "86"), 0) == 0


class ResettingPxls(FakePxls):
    """Resets the canvas right after answering one profile, before the next /info."""

    reset_after: str | None = None

    async def fetch_profile(self, username: str):  # type: ignore[no-untyped-def]
        profile = await super().fetch_profile(username)
        if username == self.reset_after:
            self.reset_after = None
            self.canvas = "87"
            for user in self.users.values():
                user.score = 0
        return profile


async def test_a_reset_between_a_profile_answer_and_the_next_info_credits_nothing_across(
    make_settings: Callable[..., object], clock: FakeClock
) -> None:
    import random

    fake = ResettingPxls(clock)
    fake.top = 1
    fake.add("anchor", 10_000)
    follower = fake.add("follower", 50)
    source = PxlsSource(
        make_settings(follow=["follower"]),  # type: ignore[arg-type]
        client=fake,
        rng=random.Random(2),
    )
    ledger = Ledger()
    try:
        await drive(source, clock, clock.now + timedelta(minutes=30), ledger)
        assert last(ledger, "follower") == (50, "profile")
        follower.score = 80
        fake.reset_after = "follower"  # the answer says 80 (canvas 86), then 86 -> 87
        await drive(source, clock, clock.now + H + timedelta(minutes=20), ledger)
        follower.score = 12
        fake.regenerate()
        await drive(source, clock, clock.now + H * 2, ledger)
    finally:
        await source.on_shutdown()
    ledger.check_conservation()
    sums = ledger.sums()
    assert sums[("follower", "86")] == 50, "the straddling count (80) was dropped"
    assert sums[("follower", "87")] == 12


async def test_one_budget_polite_and_enrichment_first(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.top = 5
    for i in range(5):
        fake.add(f"top_{i}", 10_000 + i)
    names = [f"fan_{i:03d}" for i in range(120)]
    for name in names:
        fake.add(name, 3)
    source = make_source(follow=names, profile_cooldown=timedelta(seconds=2))
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=3), ledger)
    # newcomers enter the toplist while follow refreshes are due: enrichment first
    for i in range(3):
        fake.add(f"newcomer_{i}", 20_000 + i)
    fake.regenerate()
    start = clock.now
    await drive(source, clock, start + H + timedelta(minutes=5), ledger)
    times = [at for _, at in fake.profile_requests()]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 2.0
    pull = next(at for kind, _, at in fake.requests if kind == "stats" and at >= start)
    newcomer_reads = [at for n, at in fake.profile_requests() if n.startswith("newcomer")]
    assert len(newcomer_reads) == 3
    assert max(newcomer_reads) - pull <= timedelta(seconds=2.1 * 3 + 40)  # ≤ one window ahead
    status = await source.status(clock.now)
    assert status["follow"]["capacity_per_hour"] == 1800
    assert status["follow"]["followed"] == 120


async def test_a_followed_profile_that_keeps_failing_is_skipped_until_the_next_round(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    from neuro_chat_elo_pxls.errors import TransientError

    fake.top = 1
    fake.add("anchor", 10_000)
    fake.add("flaky_fan", 5)
    fake.failures["profile"].extend(TransientError("HTTP 503") for _ in range(10_000))
    source = make_source(follow=["flaky_fan"], max_attempts=2)
    ticks = await drive(source, clock, clock.now + timedelta(hours=3), max_ticks=20_000)
    tries = [at for name, at in fake.profile_requests() if name == "flaky_fan"]
    assert len(tries) <= 2 * 4, "about one give-up per round, no hammering"
    assert ticks < 2_000, "the host never spins"


async def test_demand_beyond_the_profile_budget_is_warned_once(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """40 followed users outside the toplist every 10 minutes ask 240 profiles an hour
    (and the daily sweep 2 more) of a budget of 60 (one a minute): one warning that says
    so, and the requests keep the cooldown."""
    fake.top = 1
    fake.add("topper", 10_000)
    fans = [f"fan_{i:02d}" for i in range(40)]
    for name in fans:
        fake.add(name, 3)
    source = make_source(
        follow=fans, follow_interval=timedelta(minutes=10), profile_cooldown=timedelta(minutes=1)
    )
    caplog.set_level(logging.INFO, logger="neuro_chat_elo_pxls")
    await drive(source, clock, clock.now + 3 * H, Ledger())
    warned = [r.getMessage() for r in caplog.records if "exceeds the capacity" in r.getMessage()]
    assert len(warned) == 1, warned
    assert warned[0].startswith("profile demand 242 requests/h exceeds the capacity 60/h")
    assert "40 followed users outside the toplist every 10m00s" in warned[0]
    profiles = sorted(at for kind, _, at in fake.requests if kind == "profile")
    assert all(b - a >= timedelta(minutes=1) for a, b in itertools.pairwise(profiles))
