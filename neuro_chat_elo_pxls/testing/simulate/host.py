"""The model host (:class:`Host`): drives a real source in simulated time like a real
host would, and sometimes like a hostile one (overlapping and cancelled calls, crashes,
restarts, clock jumps, a hostile follow file)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ...hookspecs import call_async_hook
from ...host import OutputError, Totals, deliver
from ...models import EloDelta
from ...source import PxlsSource
from .checker import Checker, Violation
from .disk import recording_fsync
from .final import ErrorRecords, FinalChecks
from .instance import Instance, instance_count
from .optouts import OptOuts
from .plugins import ForeignSource, plugin_manager
from .power import PowerCuts
from .signals import RunSignals

if TYPE_CHECKING:
    from .delivery import ModelOut, OutFileReader

#: Where a run can start: ordinary days and the nights the clocks change in Berlin.
STARTS = (
    datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 28, 12, 0, tzinfo=UTC),  # spring forward 2026-03-29 01:00 UTC
    datetime(2026, 10, 24, 12, 0, tzinfo=UTC),  # fall back 2026-10-25 01:00 UTC
    datetime(2026, 6, 14, 21, 30, tzinfo=UTC),
)
#: The share of the seeds with several instances whose host delivers like ``run
#: --out`` (:mod:`.delivery`).
DELIVER_SHARE = 0.4
#: When Berlin's clocks change (UTC) in those runs.
DST_CHANGES = (datetime(2026, 3, 29, 1, tzinfo=UTC), datetime(2026, 10, 25, 1, tzinfo=UTC))


def _write_bytes(path: str, data: bytes, size: int | None = None) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        if size is not None:
            handle.truncate(size)  # sparse: NUL bytes


def _kill(source: PxlsSource) -> Awaitable[None]:
    """What a process's death does to a source: its database connection and lock go,
    nothing else runs (no ``on_shutdown``, no last save)."""
    store = source._db.store
    if store is None:

        async def nothing() -> None:
            return None

        return nothing()
    return store.close()


class Host:
    """Drives sources like a real host would, and sometimes like a hostile one: one to
    three pxls instances (:class:`~.instance.Instance`, each its own model site, source
    and checker) and another plugin's source, all in one PluginManager."""

    def __init__(
        self,
        seed: int,
        hours: float,
        workdir: str,
        *,
        real_limit: float = 600.0,
        power: bool = True,
    ) -> None:
        self.seed = seed
        #: real seconds a seed may run: past them the run stops with a violation (a
        #: seed that spins forever is reported with its replay command, not hung)
        self.real_limit = real_limit
        rng = self.rng = random.Random(seed)
        start = rng.choice(STARTS) + timedelta(minutes=rng.randint(0, 120), seconds=rng.random())
        self.true = start
        self.end = start + timedelta(hours=hours)
        self.workdir = workdir
        #: the host's own invariants (no exception reaches it, no spin, hooks return,
        #: the seed finishes, instances apart); each instance has its site's checker
        self.checker = Checker(seed, timedelta(0))
        # the first instance draws from the host's generator in the order a host of
        # one source always did (a seed with one instance runs as it always ran); the
        # number of instances and everything about the others come from their own
        count = instance_count(seed)
        #: which instance an operator's action is about
        self.instances_rng = random.Random(f"instance-choices-{seed}")
        self.instances = [
            Instance.drawn(1, rng, random.Random(f"wire-{seed}"), start, self.end, workdir, seed)
        ]
        for n in range(2, count + 1):
            self.instances.append(
                Instance.drawn(
                    n,
                    random.Random(f"instance-{n}-{seed}"),
                    random.Random(f"wire-{n}-{seed}"),
                    start,
                    self.end,
                    workdir,
                    seed,
                )
            )
        if count > 1:
            for inst in self.instances:
                inst.checker.label = inst.instance_name
        self._check_instances_apart()
        self._delivery_mode(seed)
        self._plugins(seed)
        #: the operator's opt-outs, about the first instance (their own generator)
        self.opt_outs = OptOuts(random.Random(f"optout-{seed}"))
        for inst in self.instances:
            self._new_source(inst)
        self.skew = timedelta(0)
        self.host_times: dict[datetime, datetime] = {}  # host now → true time (every tick)
        self.handler = ErrorRecords()
        self.ticks = 0
        self.idle_due_streak = 0
        self.restarts = 0
        self.restart_times: list[datetime] = []
        #: power losses (``power=False``: none; their own generator: the run's other draws
        #: stay what they were either way)
        self.power = PowerCuts(random.Random(f"power-{seed}"), enabled=power)
        self.sent = False
        self.cadence: tuple[timedelta, timedelta] | None = None
        self.fifo_blocked: Instance | None = None

    @property
    def violations(self) -> list[Violation]:
        """Every violation of the run: the host's, then each instance's."""
        return [
            v for c in [self.checker, *(i.checker for i in self.instances)] for v in c.violations
        ]

    def _delivery_mode(self, seed: int) -> None:
        """On a share of the seeds with several instances (drawn apart), the host
        delivers like ``run --out``: through the real ``deliver`` into an out file that
        fails now and then, every source with ``delivery = "ack"`` (as ``run`` forces),
        no other plugin."""
        self.out: ModelOut | None = None
        self.reader: OutFileReader | None = None
        self.totals = Totals()
        self.output_failures = 0
        #: output failures and power losses so far: a line may come again only after one
        self.out_breaks = 0
        self.exit_statuses: list[int] = []
        #: SIGTERM and SIGHUP to ``run`` (their own generator)
        self.signals = RunSignals(random.Random(f"signals-{seed}"))
        #: (instance, seq) → ``out_breaks`` when the line was first read
        self.written: dict[tuple[str, int], int] = {}
        draw = random.Random(f"deliver-{seed}")
        if len(self.instances) == 1 or draw.random() >= DELIVER_SHARE:
            return  # (a seed with one instance runs as it always ran)
        from .delivery import ModelOut, OutFileReader  # (imports the cli package)

        for inst in self.instances:
            inst.settings = attrs.evolve(inst.settings, delivery="ack")
            inst.checker.settings = inst.settings
        path = os.path.join(self.workdir, "deltas.jsonl")
        calm_from = self.instances[0].world.calm_from
        self.out = ModelOut(path, draw, lambda: self.true < calm_from)
        self.reader = OutFileReader(path)

    def _check_instances_apart(self) -> None:
        """Two sources never share an instance name (``(instance, seq)`` names a delta
        across sources), a database or a follow file."""
        for what in ("instance_name", "db_path", "follow_file"):
            values = [getattr(i.settings, what) for i in self.instances]
            values = [v for v in values if v is not None]
            if len(set(values)) != len(values):
                self.checker.fail("instances apart", f"two instances share a {what}: {values}")

    def _plugins(self, seed: int) -> None:
        """The host's PluginManager (the pxls plugin found through its entry point) and
        another plugin's source, registered before or after the first pxls one. Drawn
        from a generator of their own, so the run's other draws stay what they were."""
        self.pm = plugin_manager()
        self.plugins_rng = random.Random(f"plugins-{seed}")
        registered: list[object] = []
        self.pm.hook.register_sources(register=registered.append, config={})
        if registered:  # opt-in: no [pxls] section, no source
            self.checker.fail("nothing starts by accident", f"registered {registered}")
        self.foreign = ForeignSource(random.Random(f"foreign-{seed}"))
        self.foreign_first = self.plugins_rng.random() < 0.5
        #: ack delivery: the acknowledge hook with every stored delta (else ack_deltas)
        self.ack_by_hook = self.plugins_rng.random() < 0.7
        if self.foreign_first and self.out is None:  # (run's host has pxls sources only)
            self.pm.register(self.foreign)

    def _new_source(self, inst: Instance) -> PxlsSource:
        """A new source for ``inst``, registered with the host's PluginManager (the one
        it replaces, if any, unregistered: its hooks are never called again)."""
        old = inst.source
        if old is not None:
            self.pm.unregister(old)
        source = inst.new_source()
        self.pm.register(source)
        if old is None and inst.number == 1 and not self.foreign_first and self.out is None:
            self.pm.register(self.foreign)
        return source

    def _drawn_instance(self) -> Instance:
        """The instance an operator's action is about (with one, that one: no draw)."""
        if len(self.instances) == 1:
            return self.instances[0]
        return self.instances_rng.choice(self.instances)

    # -- hooks, guarded ------------------------------------------------------------

    async def _hook(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Call a hook; an exception (but our own cancellation) is a violation."""
        try:
            return await call()
        except asyncio.CancelledError:
            return None
        except Exception as exc:
            self.checker.fail("no exception reaches the host", f"{what}: {exc!r}", once=False)
            return None

    async def tick(self) -> None:
        host_now = self.true + self.skew
        self.host_times[host_now] = self.true
        for inst in self.instances:
            inst.world.advance(self.true)
            inst.world.skewed = bool(self.skew)
            if self.skew:
                # a clock far ahead makes every wait look over, whether or not this tick
                # sends (a cancelled one still paces the key from the wrong time, and the
                # pull-back restarts that pace, not the wait before it): a documented limit
                inst.checker.forbidden.clear()
                # a pull at the wrong clock, and one after the clock is back
                inst.checker.setback(self.true)
                inst.checker.setback(self.true)
        rng = self.rng
        for inst in self.instances:  # (the first instance's draw is the host's)
            if self.true < inst.world.calm_from and inst.rng.random() < 0.01:
                inst.world.cancel_next_request = True
        cancelled = rng.random() < 0.03  # a host that waits a few loop steps only
        overlap = rng.random() < 0.05  # an overlapping call
        # (a tick cut by a power loss instead, when it is the only call)
        power = cancelled and not overlap and self.power.at_cut()
        calls: list[Awaitable[Any]] = [
            self._cancelled_tick(host_now, power=power)
            if cancelled
            else self._hook("on_tick", lambda: call_async_hook(self.pm.hook.on_tick, now=host_now))
        ]
        if overlap:
            calls.append(
                self._collect()
                if rng.random() < 0.5
                else self._hook(
                    "on_tick", lambda: call_async_hook(self.pm.hook.on_tick, now=host_now)
                )
            )
        before = self._requests()
        await self._guarded(asyncio.gather(*calls), "on_tick")
        for inst in self.instances:
            inst.world.cancel_next_request = False
        self.ticks += 1
        self.sent = self._requests() > before

    def _requests(self) -> int:
        """Requests every model site has seen so far."""
        return sum(len(inst.world.requests) for inst in self.instances)

    async def _guarded(self, call: Awaitable[Any], what: str) -> None:
        """A hook that does not return within 20 real seconds is stuck (a FIFO read on
        the event loop would block even this: the watchdog thread unblocks it)."""
        blocking = next((inst for inst in self.instances if inst.fifo), None)
        fifo = blocking.follow_path if blocking is not None else None
        done = threading.Event()

        def watchdog() -> None:
            if not done.wait(20) and fifo is not None:
                self.checker.fail("hooks return", f"{what} blocked on the follow file (a FIFO)")
                self.fifo_blocked = blocking
                with contextlib.suppress(OSError):
                    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                    os.close(fd)

        guard = threading.Thread(target=watchdog, daemon=True) if fifo else None
        if guard:
            guard.start()
        try:
            await asyncio.wait_for(call, 120)
        except TimeoutError:
            self.checker.fail("hooks return", f"{what} did not return within 120 s")
        finally:
            done.set()
        if self.fifo_blocked:  # found once is enough: give the run back its speed
            self._restore_file(self.fifo_blocked)
            self.fifo_blocked = None

    async def _collect(self) -> None:
        if self.out is not None:
            await self.deliver()
            return
        batches = await self._hook(
            "collect_deltas", lambda: call_async_hook(self.pm.hook.collect_deltas)
        )
        await self._stored(batches)

    async def _stored(self, batches: list[list[Any]] | None) -> None:
        """What a host does with the batches of one ``collect_deltas`` call: store them
        (each instance's checker's ledger, routed by ``delta.instance``), then
        acknowledge (ack delivery) with the hook, every plugin's deltas together but
        those of an instance whose batch the host keeps unacknowledged this time (each
        source must take exactly its own), or with each source's ``ack_deltas``."""
        stored = [d for batch in batches or [] for d in batch]
        deltas = [d for d in stored if isinstance(d, EloDelta)]
        if not deltas:
            return
        routed = self._route(deltas)
        held: set[str] = set()
        by_hook = False
        for inst in self.instances:
            mine = routed.get(inst.instance_name)
            if not mine or inst.settings.delivery != "ack":
                continue
            if inst.rng.random() >= 0.9:
                # stored, not yet acknowledged (a restart brings them again)
                inst.unacked.append(self.true)
                held.add(inst.instance_name)
            elif self.ack_by_hook:
                by_hook = True
            else:
                await self._ack(inst, mine[-1].seq)
        if by_hook:
            acked = [d for d in stored if not (isinstance(d, EloDelta) and d.instance in held)]
            await self._hook(
                "acknowledge", lambda: call_async_hook(self.pm.hook.acknowledge, deltas=acked)
            )

    async def deliver(self, started: Awaitable[None] | None = None) -> None:
        """``run``'s delivery: the real ``deliver`` into the model out file (or the one
        ``started`` already). An I/O failure must surface as ``OutputError`` (``run``
        exits 75 and is restarted); anything else would exit 1, and no service manager
        restarts that."""
        assert self.out is not None
        work = started or deliver(self.pm, self.out, self.totals)
        try:
            await self.signals.delivery(self, work)
        except OutputError:
            await self._output_failed()
        except Exception as exc:
            self.checker.fail(
                "an output failure is an OutputError (run exits 75)",
                f"deliver raised {exc!r} after {self.out.injected[-1:]}",
                once=False,
            )
        else:
            self.read_out()

    async def _output_failed(self) -> None:
        """What ``run`` does after a failed write: exit status 75 (EX_TEMPFAIL), no last
        delivery, ``on_shutdown``; its service manager starts it again (new sources, the
        file opened on a fresh line)."""
        from ...cli.run import EXIT_OUTPUT_FAILED

        assert self.out is not None
        self.exit_statuses.append(EXIT_OUTPUT_FAILED)
        for inst in self.instances:
            source = inst.source
            assert source is not None
            await self._hook("on_shutdown", source.on_shutdown)
        self.reopen_out(failed=True)
        self.restarted()

    def reopen_out(self, *, failed: bool) -> None:
        """``run`` exited (``failed``: its last write failed) and starts again: the file
        opened on a fresh line, what the closed file got read first (it counts as before
        the failure: seed 989), then the failure counted (a line may come again)."""
        assert self.out is not None
        self.out.restart()
        self.read_out()
        if failed:
            self.output_failures += 1
            self.out_breaks += 1

    def restarted(self) -> None:
        """The host process started again (after a crash, a failure, a SIGTERM or a
        power loss): a setback for every checker, a new source for every instance."""
        self.restart_times.append(self.true)
        self.restarts += 1
        for inst in self.instances:
            inst.checker.setback(self.true)
            self._new_source(inst)

    async def kill_sources(self) -> None:
        """Every source abandoned as at the process's death."""
        for inst in self.instances:
            assert inst.source is not None
            await _kill(inst.source)

    def _check_delivery(self) -> None:
        """``run``'s delivery at the end of the calm hours: every source's outbox is
        empty (each delta written, fsynced, acknowledged); a malformed line only where
        a failed write cut one (closed off by the restart); every failure exited 75."""
        if self.out is None or self.reader is None:
            return
        for inst in self.instances:
            left = inst.final_status.get("outbox")
            if left:
                inst.checker.fail("run delivers everything", f"{left} deltas left in the outbox")
        cut = self.out.injected.count("kept cut")
        if len(self.reader.malformed) > cut:
            self.checker.fail(
                "no malformed line but a cut one",
                f"{len(self.reader.malformed)} malformed lines, {cut} cut by a failed write: "
                f"{self.reader.malformed[:2]}",
            )
        if any(status != 75 for status in self.exit_statuses):
            self.checker.fail("an output failure exits 75", f"exit statuses {self.exit_statuses}")
        self.signals.check_statuses(self)
        self.reader.close()

    def read_out(self) -> None:
        """The out file's new whole lines are the host's ledger, routed per instance.
        A line again is at-least-once delivery: only after a failed write."""
        assert self.reader is not None
        self.signals.check_moved_files(self)
        fresh: list[EloDelta] = []
        for delta in self.reader.new_deltas():
            key = (delta.instance, delta.seq)
            if self.written.get(key) == self.out_breaks:
                self.checker.fail(
                    "a delta is written once (again only after a failed write or a power loss)",
                    f"{key} written twice with no failed write or power loss between",
                    once=False,
                )
            self.written.setdefault(key, self.out_breaks)
            fresh.append(delta)
        self._route(fresh)

    def _route(self, deltas: list[EloDelta]) -> dict[str, list[EloDelta]]:
        """Each instance's checker stores its own deltas (by ``delta.instance``)."""
        by_name = {inst.instance_name: inst for inst in self.instances}
        routed: dict[str, list[EloDelta]] = {}
        for delta in deltas:
            if delta.instance not in by_name:
                self.checker.fail("deltas name their instance", f"{delta}", once=False)
                continue
            routed.setdefault(delta.instance, []).append(delta)
        for name, mine in routed.items():
            by_name[name].checker.collected(mine)
        return routed

    async def _ack(self, inst: Instance, upto: int) -> None:
        source = inst.source
        assert source is not None
        await self._hook("ack", lambda: source.ack_deltas(upto))

    async def _cancelled_tick(self, host_now: datetime, *, power: bool = False) -> None:
        """``wait_for(on_tick, tiny)``: the tick is cancelled after 1-40 event-loop
        steps, at whatever await it has reached (a database statement, a request, a
        thread): nothing may be lost, no pause shortened.

        ``power``: the power goes at that step instead (:mod:`.power`). A wait
        pxls gave in this tick then binds the next process only if the source had
        stored it: an answer the power cut off before its commit cannot be known after
        the restart (a documented limit: at most one request again). The checker keeps
        the waits it knew before the tick, and a new canvas code pxls answered first in
        this tick counts as not yet answered (an edge cache answers the old code again
        only to a reader that stored the new one: :meth:`~.world.World._on_reset`)."""
        for inst in self.instances:  # (the cancellation may land in any source)
            inst.checker.setback(self.true)
        known = {
            inst.instance_name: (dict(inst.checker.forbidden), inst.world.new_code_answered)
            for inst in self.instances
        }
        # (a new canvas code /info answered in this tick may never reach the source's
        # store: the model's first answer is the next one)
        answered = {
            inst.instance_name: dict(inst.world.code_answered_at) for inst in self.instances
        }
        task = asyncio.ensure_future(call_async_hook(self.pm.hook.on_tick, now=host_now))
        for _ in range(self.rng.randint(1, 40)):
            if task.done():
                break
            await asyncio.sleep(0)
        if power:
            await self.power.lose(self, task, "on_tick")
            for inst in self.instances:
                inst.checker.forbidden, was_answered = known[inst.instance_name]
                inst.world.new_code_answered &= was_answered
        else:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for inst in self.instances:
            inst.world.code_answered_at = answered[inst.instance_name]

    async def _cancel_collect(self) -> None:
        """A host that gives the whole collect_deltas call a few event-loop steps only:
        the cancellation lands inside the pxls source's database call, or in the other
        plugin's slow call after the pxls source has handed its batch out. (``run``'s
        host never cancels its delivery: in that mode, a delivery.)"""
        if self.out is not None:
            if self.power.at_cut():
                await self.power.in_delivery(self)
            else:
                await self.deliver()
            return
        task = asyncio.ensure_future(call_async_hook(self.pm.hook.collect_deltas))
        steps = self.rng.randint(1, 6) + self.plugins_rng.choice((0, 0, 10, 20, 40))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        batches = None
        with contextlib.suppress(asyncio.CancelledError):
            batches = await task
        await self._stored(batches)
        await self._collect()  # the next call hands out what the cancelled one took

    # -- the run -------------------------------------------------------------------

    async def run(self) -> None:
        logger = logging.getLogger("neuro_chat_elo_pxls")
        logger.addHandler(self.handler)
        previous_level = logger.level
        logger.setLevel(logging.INFO)
        logger.propagate = False
        try:
            with recording_fsync():
                await self._loop()
            await self._finish()
            for inst in self.instances:
                await FinalChecks(self, inst).run()
            self._check_delivery()
        finally:
            await call_async_hook(self.pm.hook.on_shutdown)
            logger.removeHandler(self.handler)
            logger.setLevel(previous_level)
            logger.propagate = True

    async def _finish(self) -> None:
        """Collect what is left (the end checks then run per instance)."""
        await self._collect()

    async def _loop(self) -> None:
        rng = self.rng
        cadence_until = self.true
        step = timedelta(seconds=30)
        next_event = self.true + timedelta(minutes=rng.randint(10, 90))
        deadline = time.monotonic() + self.real_limit
        while self.true < self.end:
            if time.monotonic() > deadline:  # (real time: a guard, never a simulated input)
                self.checker.fail(
                    "a seed finishes",
                    f"still running after {self.real_limit:g} real seconds, at simulated "
                    f"{self.true:%m-%d %H:%M:%S} of {self.end:%m-%d %H:%M} ({self.ticks} ticks)",
                )
                return
            if self.true >= next_event:
                await self._event()
                next_event = self.true + timedelta(minutes=rng.randint(10, 180))
            await self.tick()
            if rng.random() < 0.02:
                await self._cancel_collect()
            else:
                await self._collect()
            host_now = self.true + self.skew
            if self.skew:  # one tick from a wrong clock, then back
                self.skew = timedelta(0)
            due = min(self.pm.hook.next_due_at(now=host_now), default=None)
            if self.true < cadence_until:
                self.true += step  # a host with its own cadence
                continue
            if due is None:
                wait = timedelta(minutes=15)
            elif due <= host_now:
                self.idle_due_streak = 0 if self.sent else self.idle_due_streak + 1
                if self.idle_due_streak > 20:
                    self.checker.fail(
                        "no spin",
                        f"next_due_at said 'now' {self.idle_due_streak} times in a row at "
                        f"{host_now:%m-%d %H:%M:%S} and the ticks sent nothing",
                    )
                wait = timedelta(milliseconds=1)
            else:
                wait = min(due - host_now, timedelta(minutes=15))
            if wait > timedelta(milliseconds=1):
                self.idle_due_streak = 0
            if self.cadence is not None:  # from now on, a host with its own cadence
                cadence_until, step = self.true + self.cadence[0], self.cadence[1]
                self.cadence = None
            self.true += wait

    async def _event(self) -> None:
        """Something the host or its operator does. A crash or a restart is the host
        process's: every source goes (a crash abandons them all, a restart shuts each
        down), and every source starts again; a renewed token, a ``follow()`` call
        or a hostile follow file is about one instance (drawn); a clock jump or a
        cadence is the host's, for every source."""
        rng = self.rng
        calm = self.true >= self.instances[0].world.calm_from
        kind = rng.choice(("crash", "restart", "follow", "file", "jump", "cadence", "nothing"))
        if calm and kind in ("jump", "file"):
            kind = "nothing"
        if kind == "jump" and any(abs(self.true - c) < timedelta(hours=3) for c in DST_CHANGES):
            kind = "nothing"  # a wrong clock in the repeated hour: no reading can be right
        if kind in ("crash", "restart"):
            self.restart_times.append(self.true)
            self.restarts += 1
            for inst in self.instances:
                inst.checker.setback(self.true)
        if kind == "crash" and self.power.at_crash():
            await self.power.lose(self, None, "no call")  # (a power loss: the disk too)
        elif kind == "crash":
            await self.kill_sources()
        if kind == "crash":
            # (no source holds a database now: forget works alone)
            await self.opt_outs.maybe_forget(self, self.instances[0])
            for inst in self.instances:
                self._new_source(inst)
        elif kind == "restart":
            for inst in self.instances:
                assert inst.source is not None
                await self._hook("on_shutdown", inst.source.on_shutdown)
            for inst in self.instances:
                if inst.rng.random() < 0.5 and inst.world.faults.auth_outage(self.true):
                    inst.renew_token(self.true)  # the operator renewed its PXLS_TOKEN
                self._new_source(inst)
        elif kind == "follow":
            inst = self._drawn_instance()
            world, draw = inst.world, inst.rng
            renamed = [new for _, _, _, new in world.renames]
            names = draw.sample(renamed, min(len(renamed), 2)) + [
                p.name for p in draw.sample(world.people, 2)
            ]
            if draw.random() < 0.2:
                names += ["<b>bad</b>", "x" * 40]
            source = inst.source
            assert source is not None
            await self._hook("follow", lambda: source.follow(names, self.true + self.skew))
        elif kind == "file":
            inst = self._drawn_instance()
            if inst.use_file:
                await self._hostile_file(inst)
        elif kind == "cadence":
            self.cadence = (
                timedelta(minutes=rng.randint(5, 30)),
                timedelta(seconds=rng.choice((5, 20, 60))),
            )
        elif kind == "jump":
            # one tick from a clock far ahead, then back (DESIGN 3); a clock behind sets
            # every wait in the past, which no source can tell from a long sleep
            self.skew = rng.choice((timedelta(days=365), timedelta(hours=5)))
        await self.opt_outs.maybe_act(self, self.instances[0])  # the operator (un)lists someone
        if self.out is not None:
            await self.signals.act(self)

    async def _hostile_file(self, inst: Instance) -> None:
        rng = inst.rng
        path = inst.follow_path
        if inst.fifo or not inst.file_good:
            self._restore_file(inst)
            return
        choice = rng.choice(("fifo", "utf8", "directory", "big", "edit"))
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        if choice == "fifo":
            os.mkfifo(path)
            inst.fifo = True
        elif choice == "utf8":
            text = "\n".join(inst.followed_file) + "\n\xff\xfe bad\n"
            await asyncio.to_thread(_write_bytes, path, text.encode("latin-1"))
        elif choice == "directory":
            os.mkdir(path)
        elif choice == "big":
            await asyncio.to_thread(_write_bytes, path, b"", 64 * 1024 * 1024)
        else:
            inst.write_follow_file([*inst.followed_file, "# edited"])
            return
        inst.file_good = False

    def _restore_file(self, inst: Instance) -> None:
        path = inst.follow_path
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        inst.fifo = False
        inst.file_good = True
        inst.write_follow_file(inst.followed_file)
