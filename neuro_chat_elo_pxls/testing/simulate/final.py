"""The end of a run, per pxls instance (the host has collected what is left): the
invariants that need the whole run (sweeps finished, scores the truth, conservation,
renames counted once, what pxls answered applied, followed people refreshed, no ERROR
without a cause)."""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ...models import EloDelta
from ...util.logs import INSTANCE_ATTR
from .optouts import OptOuts
from .world import CALM_END

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import Any

    from ...settings import PxlsSettings
    from ...source import PxlsSource
    from .checker import Checker
    from .host import Host
    from .instance import Instance
    from .people import Person
    from .world import World


class ErrorRecords(logging.Handler):
    """The ERROR records of a run (checked at its end: none without a cause)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FinalChecks:
    """The end of a run for one instance of the :class:`~.host.Host` (its model site,
    source, settings and checker; the host's times, restarts and log records)."""

    end: datetime
    world: World
    checker: Checker
    settings: PxlsSettings
    source: PxlsSource
    handler: ErrorRecords
    host_times: dict[datetime, datetime]
    restart_times: list[datetime]
    unacked: list[datetime]
    final_status: dict[str, Any]
    followed_config: list[str]
    followed_file: list[str]
    #: the log tag of this instance's records (None: untagged), and whether the
    #: untagged records are this instance's to judge (the first instance's)
    tag: str | None
    untagged: bool
    #: the faults injected anywhere (an untagged record may be any source's)
    injected_anywhere: bool
    _hook: Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
    #: the operator's opt-outs: the first instance's (the others' lists stay empty)
    opt_outs: OptOuts

    def __init__(self, host: Host, inst: Instance) -> None:
        assert inst.source is not None
        self.end, self.handler = host.end, host.handler
        self.host_times, self.restart_times = host.host_times, host.restart_times
        self._hook = host._hook
        self.world, self.checker, self.settings = inst.world, inst.checker, inst.settings
        self.source, self.unacked = inst.source, inst.unacked
        self.final_status = inst.final_status
        self.followed_config, self.followed_file = inst.followed_config, inst.followed_file
        self.tag, self.untagged = inst.settings.label, inst is host.instances[0]
        self.injected_anywhere = any(i.world.injected for i in host.instances)
        first = inst is host.instances[0]
        self.opt_outs = host.opt_outs if first else OptOuts(random.Random(0))

    async def run(self) -> None:
        """Check the invariants that need the whole run."""
        await self.opt_outs.check(self)
        await self._check_sweep()
        self._check_accounting()
        self._check_settled()
        self._check_applied()
        self._check_errors()

    async def _check_sweep(self) -> None:
        """Every sweep finishes within its interval when the budget allows it (DESIGN 7),
        give or take the time profile requests were paused by the model's faults; and
        the status at the end of the calm hours reports no problem."""
        status = await self._hook("status", lambda: self.source.status(self.end))
        self.final_status.clear()
        self.final_status.update(status or {})
        # status --check never cries wolf: after the calm hours (no faults, no jumps)
        # a source that did its work is healthy, whatever happened before
        # a batch the host left unacknowledged since its last restart stays in the
        # outbox: an old uncollected delta is then the truth, not a wolf (seed 30548);
        # a restart comes before the collect of the loop step it happens in, so a batch
        # held at the restart's own instant was held after it (seed 6694)
        since = max(self.restart_times, default=None)
        unacked = any(since is None or t >= since for t in self.unacked)
        for problem in (status or {}).get("problems", []):
            if problem.startswith("sweep #"):  # judged below, with the outages
                continue
            if unacked and problem.startswith("the oldest uncollected delta"):
                continue
            self.checker.fail("status --check never cries wolf", problem)
        sweep = (status or {}).get("sweep", {})
        if not sweep.get("active") or not sweep.get("interval_possible", True):
            return
        started = datetime.fromisoformat(sweep["started_at"])
        # an outage pauses profiles for its length, and the doubling auth pause after
        # its last 403 may outlast it by up to auth_pause_max (seed 2388 of an earlier
        # engine: the pause ran 1 h 45 min past the outage's end)
        outages = [(s, e) for s, e in self.world.faults.auth_outages if e > started]
        paused = sum(
            ((min(e, self.end) - max(s, started)) for s, e in outages), timedelta(0)
        ) + self.settings.auth_pause_max * len(outages)
        limit = self.settings.sweep_interval + timedelta(hours=2) + max(paused, timedelta(0))
        if self.end - started > limit:
            self.checker.fail(
                "every sweep finishes",
                f"sweep {sweep.get('number')} started {started:%m-%d %H:%M} is still active "
                f"at the end, {sweep.get('remaining')} of {sweep.get('total')} users left "
                f"(sweep_interval {self.settings.sweep_interval})",
            )

    def _true_time(self, delta: EloDelta) -> datetime:
        """The true time of a delta's observation. Only a profile's is a host ``now``
        (DESIGN 6), which a wrong clock may have put ahead; a toplist row's is its
        snapshot's ``generatedAt``, pxls's own time, never looked up among host times
        (seed 4959: a file stamped 19:45:17 was read as the tick whose +5 h clock had
        said 19:45:17, five hours earlier). A reset's settlement is a profile answer's."""
        if delta.via not in ("profile", "reset"):
            return delta.observed_at
        return self.host_times.get(delta.observed_at, delta.observed_at)

    def _check_accounting(self) -> None:
        sums: dict[tuple[str, str], int] = defaultdict(int)
        last: dict[tuple[str, str], EloDelta] = {}
        for d in self.checker.ledger:
            sums[(d.user, d.canvas)] += d.delta
            last[(d.user, d.canvas)] = d
            at = self._true_time(d)
            truth = self.world.truth(d.user, d.canvas, at)
            if d.via == "opt-out":  # a withdrawal: score 0 by design (checked in optouts)
                continue
            if d.score != truth and not self._unknowable(d, at):
                self.checker.fail(
                    "scores are the truth",
                    f"{d.user} on {d.canvas}: score {d.score} (delta {d.delta:+d}, via {d.via}) "
                    f"at {at:%m-%d %H:%M:%S}, the model says {truth}",
                )
        for key, total in sums.items():
            if total != last[key].score:
                self.checker.fail(
                    "conservation", f"{key}: deltas sum to {total}, last score {last[key].score}"
                )
        # a rename merged by pxls id leaves nothing on the old name (DESIGN 3)
        for at, _, old, new in self.world.renames:
            held = last.get((old, self.world.canvas))
            answered = [t for t in self.checker.profile_answers.get(new, []) if t > at]
            read = bool(answered) and answered[0] < self.end - timedelta(hours=1)
            # (merged by the pxls id the old name's profile gave)
            read = read and any(t < at for t in self.checker.profile_answers.get(old, []))
            if held is not None and held.score and read and self.world.endpoint == "api":
                self.checker.fail(
                    "a rename counts once",
                    f"{old} renamed to {new} at {at:%m-%d %H:%M}: {old} still holds "
                    f"{held.score} on {self.world.canvas} after {new}'s profile was read",
                )

    def _check_settled(self) -> None:
        """A finished canvas settled after its reset (a ``via="reset"`` delta, from the
        all-time count): per person and name, the deltas on it sum to the person's
        final count there, the pixels after the last observation included (DESIGN 3).
        Per name too: a rename read from HTML (no pxls id) is not merged, so the person
        is counted under both names (a known limit, not a reset's)."""
        sums: dict[tuple[int, str, str], int] = defaultdict(int)
        people: dict[int, Person] = {}
        settled: set[tuple[int, str, str]] = set()
        for d in self.checker.ledger:
            person = self.world.holder(d.user, self._true_time(d))
            if person is None:
                continue
            people[person.pxls_id] = person
            key = (person.pxls_id, d.user, d.canvas)
            sums[key] += d.delta
            if d.via == "reset":
                settled.add(key)
        for key in sorted(settled):
            pxls_id, name, canvas = key
            if name in self.opt_outs.spans or self.opt_outs.covers(self.world, name, self.end):
                continue  # withdrawn since (or counted again as new): not a settled sum
            final = people[pxls_id].count_at(canvas, self.end)
            if sums[key] != final:
                self.checker.fail(
                    "a settled canvas is exact",
                    f"{name} (id {pxls_id}) on finished canvas {canvas}: "
                    f"deltas sum to {sums[key]}, the final count is {final}",
                )

    def _unknowable(self, delta: EloDelta, at: datetime) -> bool:
        """A toplist row of a file generated before its canvas began, credited by a
        source that never had an ``/info`` answer before that reset (a new database
        right after a reset: stats.json carries no canvas code, so the first file
        cannot be placed; the next file puts the score right with a fall). A known
        limit, documented in the README (seed 3650)."""
        began = self.world.reset_at.get(delta.canvas)
        first = self.world.first_info_at
        return (
            delta.via == "toplist"
            and began is not None
            and at < began
            and (first is None or first >= began)
        )

    def _answered_in_calm(self) -> dict[str, tuple[datetime, str]]:
        """Per name, the last answer pxls gave in the calm end that a source can apply
        by the end: (when, "toplist" or "profile")."""
        world, canvas = self.world, self.world.canvas
        horizon = self.end - timedelta(hours=1, minutes=30)
        began = self._canvas_placeable_from(horizon)
        files = [
            g
            for g in self.checker.generations_served
            if g.canvas == canvas
            and began is not None
            and max(began, world.calm_from) <= g.at <= horizon
        ]
        seen = {name: (g.at, "toplist") for g in files for name, _ in g.rows if name != "-snip-"}
        for name, answers in self.checker.profile_answers.items():
            # a count waiting for /info lives in memory: a restart before its /info drops
            # it (the next profile read observes it again), so those are not expected
            calm = [
                t
                for t in answers
                if world.calm_from <= t <= horizon
                and not any(t <= r <= t + timedelta(minutes=20) for r in self.restart_times)
            ]
            if calm and (name not in seen or seen[name][0] < calm[-1]):
                seen[name] = (calm[-1], "profile")
        return seen

    def _canvas_placeable_from(self, horizon: datetime) -> datetime | None:
        """From when on the current canvas's files can be placed on it (true time).

        A file generated after a reset but before the source first saw the new code is
        not counted for the new canvas (DESIGN 3; seed 8852): that is the later of
        /info's first whole answer and the source's own first sight (a cancelled tick
        or a crash may lose an answer; its next /info tells it again). A reset before
        ``horizon`` that the source never saw is a violation: the calm end answers
        /info whole, and every pull asks it."""
        world, canvas = self.world, self.world.canvas
        if canvas not in world.reset_at:
            return world.calm_from
        answered = world.code_answered_at.get(canvas)
        status = self.final_status
        shown = status.get("canvas_first_seen") if status.get("canvas") == canvas else None
        seen = datetime.fromisoformat(shown) if shown else None
        if answered is None or seen is None:
            if world.reset_at[canvas] <= horizon:
                self.checker.fail(
                    "a canvas reset is seen",
                    f"canvas {canvas} began at {world.reset_at[canvas]:%m-%d %H:%M}; /info "
                    f"answered it {'never' if answered is None else f'at {answered:%H:%M}'}, "
                    f"the source's status says canvas {status.get('canvas')}",
                )
            return None
        return max(answered, self.host_times.get(seen, seen))

    def _check_applied(self) -> None:
        """What pxls answered in the calm end is applied by the end: the last score
        handed out for a name is its count at that answer or a later one."""
        world, canvas = self.world, self.world.canvas
        last: dict[str, int] = {}
        for d in self.checker.ledger:
            if d.canvas == canvas:
                last[d.user] = d.score
        seen = self._answered_in_calm()
        for name, (at, via) in sorted(seen.items()):
            person = world.holder(name, self.end)
            if person is None or world.holder(name, at) is not person:
                continue
            opted = self.opt_outs
            if opted.touched_since(name, world.calm_from) or opted.covers(world, name, at):
                continue  # listed: not counted (or counted again only from its next read)
            since = person.count_at(canvas, at)
            later = {c for t, c in person.history.get(canvas, []) if t > at}
            if since == 0 and name not in last:
                continue
            if last.get(name) not in {since, *later}:
                self.checker.fail(
                    "what pxls answered is applied",
                    f"{name}: {via} answered {since} px at {at:%m-%d %H:%M}; the last score "
                    f"handed out is {last.get(name)}",
                )
        wanted = set(self.followed_config) | set(self.followed_file)
        if self.settings.profile_cooldown > timedelta(seconds=30):
            return  # a tight budget: follow refreshes may slip (DESIGN 7)
        for name in sorted(wanted - set(self.opt_outs.spans)):
            person = world.holder(name, self.end)
            answers = [
                t for t in self.checker.profile_answers.get(name, []) if t >= world.calm_from
            ]
            listed = any(name in dict(g.rows) for g in self.checker.generations_served[-6:])
            if person is not None and not answers and not listed:
                self.checker.fail(
                    "followed people refreshed",
                    f"{name} (followed, outside the toplist) had no profile read in the calm "
                    f"last {CALM_END}",
                )

    def _check_errors(self) -> None:
        """No ERROR record without an injected cause: a record tagged with this
        instance's name needs a fault of its site; an untagged one (judged by the
        first instance, whose source logs untagged) a fault of any site. A record with
        a traceback, or the processor's "unexpected error in ...", is a bug whatever
        was injected (matched on the template: a cause's own text may say "unexpected",
        as orjson's "unexpected end of data" for a body cut inside a character)."""
        for record in self.handler.records:
            tag = getattr(record, INSTANCE_ATTR, None)
            if (tag is None and not self.untagged) or (tag is not None and tag != self.tag):
                continue
            injected = bool(self.world.injected) if tag is not None else self.injected_anywhere
            message = record.getMessage()
            bug = bool(record.exc_info) or str(record.msg).endswith("unexpected error in %s")
            caused = injected and not bug
            if not caused:
                self.checker.fail("no ERROR without a cause", message[:200])
