"""The operator's opt-outs in the simulator (DESIGN 10): people are listed (``opt-out
add``, while the source runs), forgotten (``forget`` while no source runs: right after a
crash) and taken off the list again (``opt-out remove``), at random times drawn from a
generator of their own (the run's other draws keep their order), through the same
store functions the CLI calls.

Checked at the end of the run: no profile request for a person while listed (from the
tick after the listing on); their deltas on every canvas sum to 0 while listed (the
withdrawal); none in an export; a person taken off the list is counted again (the usual
conservation and "applied" checks hold for them). A listed person renamed later is left
out of the checks under the new name (the pxls id recognises them only once read).
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING

import attrs

from ...store import optout
from ...store.reader import StoreReader
from ...store.writer import Store
from ...util.times import us

if TYPE_CHECKING:
    from .final import FinalChecks
    from .host import Host
    from .instance import Instance
    from .world import World


@attrs.define
class OptOuts:
    """See the module docstring. ``spans``: per name, [listed, unlisted or None)."""

    rng: random.Random
    spans: dict[str, list[list[datetime | None]]] = attrs.field(factory=lambda: defaultdict(list))
    actions: int = 0

    def listed_at(self, name: str, at: datetime) -> bool:
        """Whether ``name`` was on the list at true time ``at`` (from its listing on)."""
        return any(
            start is not None and start < at and (end is None or at < end)
            for start, end in self.spans.get(name, [])
        )

    def listed_now(self) -> list[str]:
        return sorted(n for n, spans in self.spans.items() if spans and spans[-1][1] is None)

    def touched_since(self, name: str, at: datetime) -> bool:
        """Listed or unlisted at or after ``at`` (its final score may not be re-read)."""
        return any(
            (s is not None and s >= at) or (e is not None and e >= at)
            for s, e in self.spans.get(name, [])
        )

    async def maybe_act(self, host: Host, inst: Instance) -> None:
        """At one of the host's events: sometimes list someone ``inst``'s source knows,
        or take someone off the list (the CLI's path: one transaction beside the
        source's)."""
        if host.true >= inst.world.calm_from or self.rng.random() < 0.6:
            return
        listed = self.listed_now()
        if listed and self.rng.random() < 0.35:
            name = self.rng.choice(listed)
            db, now = inst.settings.db_path, us(host.true)
            await optout.edit_list(db, [name], add_names=False, now=now)
            self.spans[name][-1][1] = host.true
            # the opt-out erased what the source knew of them, their pxls id too: back on
            # the board they are a new user until a profile read (a rename before it is
            # not merged: seed 4110)
            inst.checker.profile_answers.pop(name, None)
        else:
            chosen = self._candidate(inst)
            if chosen is None:
                return
            db, now = inst.settings.db_path, us(host.true)
            await optout.edit_list(db, [chosen], add_names=True, now=now)
            self.spans[chosen].append([host.true, None])
        self.actions += 1

    async def maybe_forget(self, host: Host, inst: Instance) -> None:
        """Right after a crash, before the new source opens: ``forget`` with no source
        running (the whole withdrawal and erasure at once, the lock taken)."""
        if host.true >= inst.world.calm_from or self.rng.random() < 0.5:
            return
        name = self._candidate(inst)
        if name is None:
            return
        async with await Store.open(inst.settings.db_path) as store:
            await store.opt_out_add([name], host.true)
            await store.apply_opt_outs(None, host.true)
        self.spans[name].append([host.true, None])
        self.actions += 1

    def _candidate(self, inst: Instance) -> str | None:
        """Someone the source has handed out a delta for, not listed now."""
        known = sorted({d.user for d in inst.checker.ledger} - set(self.listed_now()))
        return self.rng.choice(known) if known else None

    def covers(self, world: World, name: str, at: datetime) -> bool:
        """Whether the person holding ``name`` at ``at`` is listed now under any of
        their names (a rename does not bring them back: their new name is not counted)."""
        person = world.holder(name, at)
        if person is None:
            return name in self.listed_now()
        names = {person.name, *(old for _, p, old, _ in world.renames if p is person)}
        names |= {new for _, p, _, new in world.renames if p is person}
        return bool(names & set(self.listed_now()))

    async def check(self, host: FinalChecks) -> None:
        """The end-of-run checks (see the module docstring)."""
        for request in host.world.requests:
            if (
                request.endpoint == "profile"
                and request.name
                and self.listed_at(request.name, request.at)
            ):
                host.checker.fail(
                    "no request for opted-out people",
                    f"profile of {request.name} asked at {request.at:%m-%d %H:%M:%S}, while listed",
                )
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for d in host.checker.ledger:
            sums[(d.user, d.canvas)] += d.delta
        listed = set(self.listed_now())
        for (name, canvas), total in sorted(sums.items()):
            if name in listed and total != 0:
                host.checker.fail(
                    "opted-out people are withdrawn",
                    f"{name} (listed) still sums to {total:+d} on canvas {canvas}",
                )
        async with await StoreReader.open(host.settings.db_path) as reader:
            exported = {row[0] async for row in reader.export_rows()}
        for name in sorted(exported & listed):
            host.checker.fail("opted-out people are not exported", name)
