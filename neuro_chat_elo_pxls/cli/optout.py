"""``opt-out add|remove|list`` and ``forget``: the operator's answer when someone asks
not to be counted, or to be forgotten (DESIGN 10).

``opt-out add`` works while ``run`` runs (one short transaction beside the source's;
the source withdraws and erases at its next tick). ``forget`` does it all at once when
no source runs on the database (withdrawal, erasure, the WAL emptied) and prints one
line of what it did; with a source running it lists the names and says that the source
does the rest at its next tick. Names are checked before anything is written.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from ..errors import ConfigError, StoreLockedError
from ..pxls.parsing import is_valid_username
from ..store import optout
from ..store.writer import Store
from ..util.text import shown
from ..util.times import us
from .config import configured_instances, load_config


def _settings_db(args: argparse.Namespace) -> str:
    """The database of the one instance the command names (``--db``, or the config's)."""
    instances = configured_instances(load_config(args))
    if len(instances) > 1:
        names = ", ".join(s.instance_name for s in instances)
        raise ConfigError(f"several pxls instances ({names}): choose one with --instance NAME")
    return instances[0].db_path


def _checked(names: list[str]) -> list[str]:
    bad = [shown(repr(n)[:40]) for n in names if not is_valid_username(n)]
    if bad:
        raise ConfigError(f"not pxls names: {', '.join(bad)} (letters, digits, _ and -, 1-32)")
    return names


async def opt_out_command(args: argparse.Namespace) -> int:
    """``opt-out add|remove|list``."""
    db = _settings_db(args)
    now = datetime.now(UTC)
    if args.action == "list":
        from ..store.reader import StoreReader

        async with await StoreReader.open(db) as reader:
            for name, by, since, applied in await reader.opt_out_list():
                state = "applied" if applied is not None else "waiting for the source"
                when = datetime.fromtimestamp(since / 1e6, UTC).isoformat(timespec="seconds")
                print(f"{name}\t{by}\tsince {when}\t{state}")
        return 0
    names = _checked(args.names)
    changed = await optout.edit_list(db, names, add_names=args.action == "add", now=us(now))
    if args.action == "add":
        print(
            f"opt-out: {changed} of {len(names)} names added; a running source withdraws "
            "and erases them at its next tick (a stopped one when it starts)"
        )
    else:
        print(
            f"opt-out: {changed} entries removed; they are counted again as new users "
            "(a name the config's opt_out or opt_out_file lists stays out)"
        )
    return 0


async def forget_command(args: argparse.Namespace) -> int:
    """``forget NAME...``: opt-out add and the erasure at once."""
    db = _settings_db(args)
    names = _checked(args.names)
    now = datetime.now(UTC)
    try:
        store = await Store.open(db)
    except StoreLockedError:
        await optout.edit_list(db, names, add_names=True, now=us(now))
        print(
            f"forget: a source runs on {db}: {len(names)} names listed; it withdraws and "
            "erases them at its next tick (see its log line 'opt-out: ...')"
        )
        return 0
    async with store:
        await store.opt_out_add(names, now)
        applied = await store.apply_opt_outs(None, now)
    people = "person" if applied.people == 1 else "people"
    deltas = "delta" if applied.withdrawals == 1 else "deltas"
    print(
        f"forget: {applied.people} {people} withdrawn ({applied.withdrawals} {deltas} of "
        f"-{applied.points} points in all, handed out when the source next runs), "
        f"{applied.erased} user row{'' if applied.erased == 1 else 's'} erased; their "
        "Discord name, faction and counts are "
        f"gone from {db} and its WAL"
    )
    return 0
