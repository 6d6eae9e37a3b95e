"""Accounting through the hooks: conservation, holds, resets, renames, restarts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import pytest

from neuro_chat_elo_pxls import Faction, PxlsSource
from neuro_chat_elo_pxls.errors import AuthError, TransientError

from .helpers import FakeClock, FakePxls, Ledger, check_holds_latest, drive

H = timedelta(hours=1)


async def test_new_users_held_until_enriched_then_deltas_are_signed(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("grid_master", 100, discord="grid.m", faction=Faction(17, "GK", "Grid Keepers", 1))
    fake.add("night_owl_99", 50)
    source = make_source()
    ledger = Ledger()

    await source.on_tick(clock.now)  # pull: both new, held
    assert await source.collect_deltas() == []
    await drive(source, clock, clock.now + timedelta(seconds=5), ledger)
    by_user = {d.user: d for d in ledger.deltas}
    assert by_user["grid_master"].delta == 100
    assert by_user["grid_master"].discord == "grid.m"
    assert by_user["grid_master"].faction == Faction(17, "GK", "Grid Keepers", 1)
    assert by_user["grid_master"].pxls_id == fake.users["grid_master"].pxls_id
    assert by_user["night_owl_99"].delta == 50
    assert by_user["night_owl_99"].discord is None

    fake.users["grid_master"].score = 130
    fake.users["night_owl_99"].score = 45  # a rollback: negative delta
    fake.regenerate()
    await drive(source, clock, clock.now + H + timedelta(minutes=2), ledger)
    later = [d for d in ledger.deltas if d.seq > by_user["night_owl_99"].seq]
    assert sorted((d.user, d.delta, d.score) for d in later) == [
        ("grid_master", 30, 130),
        ("night_owl_99", -5, 45),
    ]
    ledger.check_conservation()


async def test_zero_delta_not_emitted_and_duplicate_generated_at_ignored(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("a_user", 10)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    assert [d.delta for d in ledger.deltas] == [10]
    # same generatedAt, changed content: ignored
    fake.users["a_user"].score = 99
    await drive(source, clock, clock.now + H, ledger)
    assert [d.delta for d in ledger.deltas] == [10]
    # new snapshot with unchanged score: no delta
    fake.users["a_user"].score = 10
    fake.regenerate()
    await drive(source, clock, clock.now + H, ledger)
    assert [d.delta for d in ledger.deltas] == [10]
    stats_calls = [r for r in fake.requests if r[0] == "stats"]
    assert len(stats_calls) >= 3


async def test_absent_user_gets_no_delta_and_comes_back_without_double_count(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("banned_bob", 500)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    fake.users["banned_bob"].banned = True
    fake.regenerate()
    await drive(source, clock, clock.now + 3 * H, ledger)
    assert [d.delta for d in ledger.deltas] == [500]  # absent is not zero
    fake.users["banned_bob"].banned = False
    fake.users["banned_bob"].score = 520
    fake.regenerate()
    await drive(source, clock, clock.now + H, ledger)
    assert [d.delta for d in ledger.deltas] == [500, 20]
    ledger.check_conservation()


async def test_canvas_reset_restarts_from_zero_and_ignores_stale_snapshot(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("vera", 1000)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    # reset: /info changes at once, stats.json is still the old file for a while
    clock.advance(minutes=30)
    fake.canvas = "87"
    fake.regenerate()
    old_generated = fake.generated_at
    clock.advance(minutes=30)
    await drive(source, clock, clock.now + timedelta(minutes=1), ledger)
    assert fake.generated_at == old_generated
    assert [(d.canvas, d.delta) for d in ledger.deltas] == [("86", 1000)]
    # the new canvas's stats.json arrives
    clock.advance(minutes=20)
    fake.users["vera"].score = 40
    fake.regenerate()
    await drive(source, clock, clock.now + H, ledger)
    assert [(d.canvas, d.delta, d.score) for d in ledger.deltas] == [
        ("86", 1000, 1000),
        ("87", 40, 40),
    ]
    assert all(d.delta > 0 for d in ledger.deltas)
    ledger.check_conservation()


async def test_rename_moves_the_score_to_the_new_name_without_double_count(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("old_name", 300, discord="someone")
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    user = fake.users.pop("old_name")
    user.score = 310
    fake.users["new_name"] = user
    fake.regenerate()
    await drive(source, clock, clock.now + H, ledger)
    assert [(d.user, d.delta, d.score) for d in ledger.deltas] == [
        ("old_name", 300, 300),
        ("old_name", -300, 0),
        ("new_name", 310, 310),
    ]
    assert {d.pxls_id for d in ledger.deltas} == {user.pxls_id}
    ledger.check_conservation()
    status = await source.status(clock.now)
    assert status["users"] == 1


async def test_rename_after_hold_expired_withdraws_the_double_count(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("old_name", 300)
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    user = fake.users.pop("old_name")
    fake.users["new_name"] = user
    fake.regenerate()
    # profiles fail for longer than the hold: new_name is handed out un-enriched
    fake.failures["profile"].extend(AuthError("403", challenge=False) for _ in range(3))
    await drive(source, clock, clock.now + 6 * H, ledger)
    ledger.check_conservation()
    totals: dict[str, int] = {}
    for d in ledger.deltas:
        totals[d.user] = totals.get(d.user, 0) + d.delta
    assert totals == {"old_name": 0, "new_name": 300}


async def test_no_token_hands_out_new_users_at_once_and_sends_no_profile_request(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.add("a", 5)
    source = make_source(token=None)
    ledger = Ledger()
    with caplog.at_level(logging.WARNING):
        await drive(source, clock, clock.now + 30 * H, ledger)
    assert [d.delta for d in ledger.deltas] == [5]
    assert fake.profile_requests() == []
    warnings = [r.message for r in caplog.records if "PXLS_TOKEN" in r.message]
    assert len(warnings) == 1


async def test_hold_released_after_enrichment_hold_with_one_warning(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for i in range(3):
        fake.add(f"user{i}", 10 + i)
    fake.failures["profile"].extend(TransientError("HTTP 502") for _ in range(100))
    source = make_source(enrichment_hold=timedelta(minutes=30))
    ledger = Ledger()
    start = clock.now
    with caplog.at_level(logging.WARNING):
        await drive(source, clock, start + timedelta(minutes=29), ledger)
        assert ledger.deltas == []
        await drive(source, clock, start + timedelta(minutes=31), ledger)
    assert sorted(d.delta for d in ledger.deltas) == [10, 11, 12]
    releases = [r for r in caplog.records if "released 3 held" in r.message]
    assert len(releases) == 1
    assert "HTTP 502" in releases[0].getMessage()


async def test_snip_rows_skipped(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("real_user", 7)
    fake.snips = 3
    source = make_source()
    ledger = Ledger()
    await drive(source, clock, clock.now + timedelta(minutes=5), ledger)
    assert [d.user for d in ledger.deltas] == ["real_user"]


async def test_multi_day_run_with_restart_conserves_and_never_repeats_seq(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    import random

    rng = random.Random(42)
    for i in range(60):
        fake.add(f"painter_{i}", rng.randint(1, 500), discord=f"p{i}" if i % 2 else None)
    ledger = Ledger()
    source = make_source()
    end = clock.now + timedelta(days=3)
    restarted = False
    while clock.now < end:
        for user in list(fake.users.values()):
            if rng.random() < 0.5:
                user.score += rng.randint(0, 40)
            if rng.random() < 0.02:
                user.banned = not user.banned
        if rng.random() < 0.2:
            fake.add(f"late_{len(fake.users)}", rng.randint(1, 50))
        if rng.random() < 0.05:  # rename
            name = rng.choice(list(fake.users))
            fake.users[f"{name}_r"] = fake.users.pop(name)
        fake.regenerate()
        await drive(source, clock, clock.now + H, ledger)
        if not restarted and clock.now >= end - timedelta(days=1, hours=12):
            await source.on_shutdown()  # restart in the middle of a sweep
            source = make_source()
            restarted = True
    ledger.check_conservation()
    # what the host holds equals pxls's truth for every user in the last snapshot
    snapshot = await fake.fetch_stats()
    check_holds_latest(ledger, snapshot, "86")
    # every user was enriched (their profile was requested at least once)
    requested = {name for name, _ in fake.profile_requests()}
    assert {name for name, _ in snapshot.rows} <= requested


async def test_ack_delivery_redelivers_unacknowledged_after_restart(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    fake.add("a_user", 10)
    fake.add("b_user", 20)
    source = make_source(delivery="ack")
    await drive(source, clock, clock.now + timedelta(minutes=2))
    first = await source.collect_deltas()
    assert sorted(d.delta for d in first) == [10, 20]
    assert await source.collect_deltas() == []  # not handed out twice in one run
    await source.on_shutdown()  # the host "crashed" before acknowledging
    source = make_source(delivery="ack")
    again = await source.collect_deltas()
    assert again == first  # same seq, same content: the host de-duplicates on seq
    await source.ack_deltas(again[0].seq)
    await source.on_shutdown()
    source = make_source(delivery="ack")
    assert await source.collect_deltas() == again[1:]
