"""Exact across resets (DESIGN 3, "the last pixels of a canvas count"): the pixels a
person places between the source's last observation and a canvas reset are settled
on the old canvas from the profile's all-time count, as one ``via="reset"`` delta."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from neuro_chat_elo_pxls import PxlsSource
from neuro_chat_elo_pxls.ops.status import format_status

from .helpers import FakeClock, FakePxls, FakeUser, Ledger, drive

H = timedelta(hours=1)


async def _observed_then_reset(
    source: PxlsSource,
    fake: FakePxls,
    clock: FakeClock,
    ledger: Ledger,
    after_last_observation: dict[str, int],
    on_new_canvas: dict[str, int],
) -> None:
    """Run until everyone was read, change counts unseen, reset, run a day on."""
    await drive(source, clock, clock.now + 2 * H, ledger)
    for name, pixels in after_last_observation.items():
        fake.users[name].paint(pixels)  # never in a stats.json, never read: unseen
    fake.canvas = "87"
    for user in fake.users.values():
        user.score = 0  # the all-time count stays
    for name, pixels in on_new_canvas.items():
        fake.users[name].paint(pixels)
    fake.regenerate()
    await drive(source, clock, clock.now + 26 * H, ledger)
    ledger.check_conservation()


def _reset_deltas(ledger: Ledger, user: str) -> list[tuple[int, int, str]]:
    return [
        (d.delta, d.score, d.canvas) for d in ledger.deltas if d.user == user and d.via == "reset"
    ]


async def test_a_toplist_user_and_a_followed_user_are_credited_exactly_on_the_old_canvas(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.top = 1
    fake.add("big", 1000, alltime=50_000)
    fake.add("fan", 5, alltime=100)
    source = make_source(follow=["fan"])
    ledger = Ledger()
    await _observed_then_reset(
        source, fake, clock, ledger, {"big": 300, "fan": 20}, {"big": 40, "fan": 3}
    )
    sums = ledger.sums()
    assert sums[("big", "86")] == 1300 and sums[("fan", "86")] == 25
    assert _reset_deltas(ledger, "big") == [(300, 1300, "86")]
    assert _reset_deltas(ledger, "fan") == [(20, 25, "86")]
    assert sums[("big", "87")] == 40 and sums[("fan", "87")] == 3


async def test_a_rollback_after_the_last_observation_settles_negative(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("big", 1000, alltime=50_000)
    source = make_source()
    ledger = Ledger()
    await _observed_then_reset(source, fake, clock, ledger, {"big": -200}, {"big": 10})
    assert ledger.sums()[("big", "86")] == 800
    assert _reset_deltas(ledger, "big") == [(-200, 800, "86")]


async def test_without_an_alltime_count_the_old_canvas_stays_as_observed(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    """Snip mode (or the older page template): nothing is guessed."""
    fake.top = 1
    fake.add("big", 1000)
    fake.add("fan", 5)
    source = make_source(follow=["fan"])
    ledger = Ledger()
    await _observed_then_reset(
        source, fake, clock, ledger, {"big": 300, "fan": 20}, {"big": 40, "fan": 3}
    )
    sums = ledger.sums()
    assert sums[("big", "86")] == 1000 and sums[("fan", "86")] == 5
    assert not [d for d in ledger.deltas if d.via == "reset"]
    assert sums[("big", "87")] == 40 and sums[("fan", "87")] == 3


async def test_a_canvas_the_source_never_saw_in_between_is_not_settled(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    """86 → (88) → 88's successor 88 seen directly after 86: the all-time difference
    would count canvas 87 too, so the old canvas stays as observed."""
    big: FakeUser = fake.add("big", 1000, alltime=50_000)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + 2 * H, ledger)
    big.paint(300)
    big.score = 0
    big.paint(500)  # canvas 87, never seen
    big.score = 0
    big.paint(7)
    fake.canvas = "88"
    fake.regenerate()
    await drive(source, clock, clock.now + 26 * H, ledger)
    ledger.check_conservation()
    assert ledger.sums()[("big", "86")] == 1000 and ledger.sums()[("big", "88")] == 7
    assert not [d for d in ledger.deltas if d.via == "reset"]


async def test_a_name_another_person_holds_after_the_reset_settles_nothing(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    """The pairing is the person's: a profile with another pxls id under the name
    (renamed away, the name taken) pairs with nothing kept, so nothing is settled."""
    fake.add("big", 1000, alltime=50_000)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + 2 * H, ledger)
    fake.canvas = "87"
    fake.users["big"] = FakeUser(9999, 10, alltime=70_000)  # another person
    fake.regenerate()
    await drive(source, clock, clock.now + 26 * H, ledger)
    ledger.check_conservation()
    assert ledger.sums()[("big", "86")] == 1000
    assert not [d for d in ledger.deltas if d.via == "reset"]


async def test_status_shows_how_far_the_old_canvas_is_settled(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("big", 1000, alltime=50_000)
    fake.add("fan", 500, alltime=900)
    fake.add("snipped", 700)  # no all-time count: cannot be settled
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + 2 * H, ledger)
    assert (await source.status(clock.now))["settling"] is None  # no reset yet
    fake.canvas = "87"
    for user in fake.users.values():
        user.score = 0
    fake.regenerate()
    await drive(source, clock, clock.now + timedelta(minutes=20), ledger)
    status = await source.status(clock.now)
    assert status["settling"] == {"canvas": "86", "settled": 0, "waiting": 2, "unsettleable": 1}
    text = format_status(status)
    assert "settling        canvas 86: 0 of 2 people (1 cannot be settled" in text
    await drive(source, clock, clock.now + 26 * H, ledger)
    status = await source.status(clock.now)
    assert status["settling"] == {"canvas": "86", "settled": 2, "waiting": 0, "unsettleable": 1}
    assert "settling" not in format_status(status)


async def test_after_a_reset_the_active_and_the_followed_are_read_first(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    """Once the reset is seen, not at the next sweep: the followed, and those seen active on
    the old canvas after their pairing; a person whose credit is their pairing waits
    for the sweep (nothing shows they painted since)."""
    fake.top = 2
    fake.add("big", 1000, alltime=50_000)
    fake.add("quiet", 800, alltime=9_000)
    fake.add("fan", 5, alltime=100)
    source = make_source(follow=["fan"])
    ledger = Ledger()
    await drive(source, clock, clock.now + 2 * H, ledger)
    fake.users["big"].paint(50)  # seen in the next stats.json, after its pairing
    fake.regenerate()
    await drive(source, clock, clock.now + timedelta(minutes=16), ledger)
    fake.users["big"].paint(30)  # never seen
    fake.users["fan"].paint(4)
    fake.users["quiet"].paint(9)
    fake.canvas = "87"
    for user in fake.users.values():
        user.score = 0
    fake.regenerate()
    read_from = clock.now
    await drive(source, clock, clock.now + timedelta(minutes=90), ledger)
    assert _reset_deltas(ledger, "big") == [(30, 1080, "86")]
    assert _reset_deltas(ledger, "fan") == [(4, 9, "86")]
    assert _reset_deltas(ledger, "quiet") == []  # the sweep's, later
    read = [name for name, at in fake.profile_requests() if at >= read_from]
    assert "quiet" not in read and {"big", "fan"} <= set(read)
    status = await source.status(clock.now)
    assert status["settling"] == {"canvas": "86", "settled": 2, "waiting": 1, "unsettleable": 0}
