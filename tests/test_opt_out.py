"""People decide whether they are counted (DESIGN 10): opting out withdraws what was
credited, stops every request and delta, leaves them out of exports, and erases their
personal data from the database files; opting back in counts them as new users."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from neuro_chat_elo_pxls import Faction, PxlsSource
from neuro_chat_elo_pxls.cli import main

from .helpers import FakeClock, FakePxls, Ledger, drive

HOUR = timedelta(hours=1)
SWARM = Faction(3680, "NEURO", "Neuro Swarm", 1)


def _setup(fake: FakePxls) -> None:
    fake.add("grid_master", 120, discord="grid.master.discord", faction=SWARM)
    fake.add("quiet_lurker", 12, discord="lurker#0001")


async def _run(
    source: PxlsSource, clock: FakeClock, fake: FakePxls, ledger: Ledger, hours: float
) -> None:
    for _ in range(int(hours)):
        fake.regenerate()
        await drive(source, clock, clock.now + HOUR, ledger)


def _bytes(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def _sum(ledger: Ledger, user: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ledger.deltas:
        if d.user == user:
            out[d.canvas] = out.get(d.canvas, 0) + d.delta
    return out


async def test_opting_out_withdraws_stops_requests_and_erases(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock, tmp_path: Path
) -> None:
    _setup(fake)
    source = make_source()
    ledger = Ledger()
    await _run(source, clock, fake, ledger, 2)
    assert _sum(ledger, "grid_master") == {"86": 120}
    fake.users["grid_master"].score = 150
    fake.canvas = "87"  # a reset: they are credited on a second canvas too
    for user in fake.users.values():
        user.score = 30
    clock.advance(minutes=20)
    await _run(source, clock, fake, ledger, 2)
    assert _sum(ledger, "grid_master") == {"86": 120, "87": 30}
    store = source._db.store
    assert store is not None
    assert await store.opt_out_add(["grid_master"], clock.now) == 1  # as the CLI does
    asked = len(fake.profile_requests())
    fake.users["grid_master"].score = 99
    await _run(source, clock, fake, ledger, 30)  # a whole day: pulls, a sweep
    withdrawals = [d for d in ledger.deltas if d.via == "opt-out"]
    assert sorted((d.canvas, d.delta, d.score) for d in withdrawals) == [
        ("86", -120, 0),
        ("87", -30, 0),
    ]
    assert all(d.discord is None and d.faction is None for d in withdrawals)
    assert _sum(ledger, "grid_master") == {"86": 0, "87": 0}
    assert "grid_master" not in [name for name, _ in fake.profile_requests()[asked:]]
    ledger.check_conservation()
    out = tmp_path / "pxls.json"
    await source.on_shutdown()
    assert (
        await asyncio.to_thread(main, ["export", "--db", source.settings.db_path, "-o", str(out)])
        == 0
    )
    assert "grid_master" not in out.read_text() and "quiet_lurker" in out.read_text()
    for path in (Path(source.settings.db_path), Path(source.settings.db_path + "-wal")):
        data = await asyncio.to_thread(_bytes, path)
        assert b"grid.master.discord" not in data, path
    kept = await asyncio.to_thread(Path(source.settings.db_path).read_bytes)
    assert b"lurker#0001" in kept  # everyone else's data stays


async def test_a_config_opt_out_and_opting_back_in(
    make_source: Callable[..., PxlsSource],
    fake: FakePxls,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _setup(fake)
    ledger = Ledger()
    source = make_source()
    await _run(source, clock, fake, ledger, 1)
    await source.on_shutdown()
    caplog.clear()
    source = make_source(opt_out=["grid_master", "not a name!"])
    await _run(source, clock, fake, ledger, 2)
    assert _sum(ledger, "grid_master") == {"86": 0}
    assert "1 opted-out rows skipped" in caplog.text and "grid_master" not in caplog.text
    status = await source.status(clock.now)
    assert status["opted_out"] == 1
    await source.on_shutdown()
    source = make_source()  # the config no longer lists them: a new user again
    fake.users["grid_master"].score = 140
    await _run(source, clock, fake, ledger, 2)
    assert _sum(ledger, "grid_master") == {"86": 140}
    first_again = [d for d in ledger.deltas if d.user == "grid_master"][-1]
    assert (first_again.delta, first_again.score) == (140, 140)
    ledger.check_conservation()


async def test_a_rename_does_not_bring_them_back(
    make_source: Callable[..., PxlsSource], fake: FakePxls, clock: FakeClock
) -> None:
    _setup(fake)
    ledger = Ledger()
    source = make_source(opt_out=["grid_master"])
    await _run(source, clock, fake, ledger, 1)  # (never counted: listed before)
    await source.on_shutdown()
    source = make_source()
    await _run(source, clock, fake, ledger, 2)  # counted, with its pxls id
    store = source._db.store
    assert store is not None
    await store.opt_out_add(["grid_master"], clock.now)
    await _run(source, clock, fake, ledger, 1)
    assert _sum(ledger, "grid_master") == {"86": 0}
    fake.users["grid_renamed"] = fake.users.pop("grid_master")  # same pxls id
    fake.users["grid_renamed"].score = 200
    await _run(source, clock, fake, ledger, 3)
    assert _sum(ledger, "grid_renamed") == {"86": 0}  # seen, read once, withdrawn
    names = [entry[0] for entry in await store.opt_out_list()]
    assert names == ["grid_master", "grid_renamed"]
    ledger.check_conservation()


def test_the_cli_lists_adds_removes_and_forgets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``opt-out add/remove/list`` keep the database's list; ``forget`` erases at once
    with no source running and prints one line of what it did."""
    import sqlite3

    from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
    from neuro_chat_elo_pxls.store.writer import Store

    from .helpers import T0

    db = str(tmp_path / "pxls.sqlite3")

    async def populate() -> None:
        async with await Store.open(db) as store:
            rows = (ToplistRow("grid_master", 120), ToplistRow("quiet_lurker", 12))
            await store.ingest("86", Snapshot.from_rows(T0, rows), T0, hold_new=False, state=None)
            await store.outbox().drain()  # handed out

    asyncio.run(populate())
    conn = sqlite3.connect(db)
    conn.execute("UPDATE users SET discord = 'grid.master.discord' WHERE name = 'grid_master'")
    conn.commit()
    conn.close()
    assert main(["opt-out", "--db", db, "add", "quiet_lurker", "bad name!"]) == 2
    assert "bad name!" in capsys.readouterr().err
    assert main(["opt-out", "--db", db, "add", "quiet_lurker"]) == 0
    assert main(["opt-out", "--db", db, "list"]) == 0
    assert "quiet_lurker" in capsys.readouterr().out
    assert main(["opt-out", "--db", db, "remove", "quiet_lurker"]) == 0
    assert main(["forget", "--db", db, "grid_master"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("forget: 1 person withdrawn (1 delta of -120 points in all"), line
    for suffix in ("", "-wal"):
        path = db + suffix
        if os.path.exists(path):
            assert b"grid.master.discord" not in Path(path).read_bytes()


async def test_taking_a_name_off_the_list_takes_its_later_names_too(tmp_path: Path) -> None:
    """Found by the simulator (seed 22): a person listed, then renamed twice while
    listed (the source listed the new names by their pxls id), then taken off the list:
    the later names stayed listed (a DELETE whose subquery read the same table saw its
    own first deletion), so the person was never counted again."""
    from neuro_chat_elo_pxls.store import optout
    from neuro_chat_elo_pxls.store.writer import Store

    async with await Store.open(str(tmp_path / "db.sqlite3")) as store:

        async def edit(conn: object) -> int:
            import aiosqlite

            assert isinstance(conn, aiosqlite.Connection)
            rows = [("r1", 100000, "cli"), ("r4", 100000, "rename"), ("r5", 100000, "rename")]
            rows += [("r6", 100000, "rename"), ("someone_else", 7, "cli")]
            await conn.executemany(
                "INSERT INTO opted_out (name, pxls_id, listed_by, since) VALUES (?, ?, ?, 0)",
                rows,
            )
            await optout.add(conn, ["r6"], "cli", 1)  # the operator lists r6 too: kept
            return await optout.remove(conn, ["r1"])

        assert await store._db.write(edit) == 3
        assert [entry[0] for entry in await store.opt_out_list()] == ["r6", "someone_else"]


async def test_a_waiting_count_never_lands_on_the_new_user_who_got_an_erased_id(
    tmp_path: Path,
) -> None:
    """Found by the simulator (seed 3026): a listed person's profile count waited for
    /info; the opt-out erased their row, the next new user took the same id (SQLite
    reuses the highest rowid) and the waiting count was credited to that stranger. A
    count now applies only to the row with the id and the name it was read for."""
    from neuro_chat_elo_pxls.jobs.observations import Observation, Observations
    from neuro_chat_elo_pxls.models import Snapshot, ToplistRow
    from neuro_chat_elo_pxls.store.writer import Store

    from .helpers import T0

    async with await Store.open(str(tmp_path / "db.sqlite3")) as store:
        rows = (ToplistRow("painter_15_r3", 5000),)
        await store.ingest("89", Snapshot.from_rows(T0, rows), T0, hold_new=False, state=None)
        (erased_id,) = [row[0] for row in await store._db.rows("SELECT id FROM users")]
        observations = Observations()
        observations.add(Observation(erased_id, "painter_15_r3", 5335, T0, "89"))
        await store.opt_out_add(["painter_15_r3"], T0)
        await store.apply_opt_outs(None, T0)
        later = T0 + timedelta(minutes=5)
        rows = (ToplistRow("painter_1", 3),)
        await store.ingest("89", Snapshot.from_rows(later, rows), later, hold_new=False, state=None)
        (stranger,) = await store._db.rows("SELECT id FROM users WHERE name = 'painter_1'")
        assert stranger[0] == erased_id  # the id came back
        await store.outbox().drain()
        assert await observations.settle(store, "89", later) == 0
        assert await store.outbox().drain() == []  # painter_1 keeps 3, gets nothing
