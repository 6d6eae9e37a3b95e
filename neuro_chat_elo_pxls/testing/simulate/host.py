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
from typing import Any

import attrs

from ...hookspecs import call_async_hook
from ...models import EloDelta
from ...pxls.client import PxlsClient
from ...settings import PxlsSettings, Secret
from ...source import PxlsSource
from .checker import Checker
from .final import ErrorRecords, FinalChecks
from .optouts import OptOuts
from .plugins import ForeignSource, plugin_manager
from .wire import WireTransport
from .world import World

#: Where a run can start: ordinary days and the nights the clocks change in Berlin.
STARTS = (
    datetime(2026, 1, 5, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 28, 12, 0, tzinfo=UTC),  # spring forward 2026-03-29 01:00 UTC
    datetime(2026, 10, 24, 12, 0, tzinfo=UTC),  # fall back 2026-10-25 01:00 UTC
    datetime(2026, 6, 14, 21, 30, tzinfo=UTC),
)
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


class Host(FinalChecks):
    """Drives sources like a real host would, and sometimes like a hostile one."""

    def __init__(self, seed: int, hours: float, workdir: str, *, real_limit: float = 600.0) -> None:
        self.seed = seed
        #: real seconds a seed may run: past them the run stops with a violation (a
        #: seed that spins forever is reported with its replay command, not hung)
        self.real_limit = real_limit
        rng = self.rng = random.Random(seed)
        start = rng.choice(STARTS) + timedelta(minutes=rng.randint(0, 120), seconds=rng.random())
        self.true = start
        self.end = start + timedelta(hours=hours)
        cooldown = rng.choice(
            (
                timedelta(seconds=1),
                timedelta(seconds=30),
                timedelta(minutes=2),
                timedelta(minutes=5),
            )
        )
        self.checker = Checker(seed, cooldown)
        # the shapes of pxls's answers are drawn apart, so the model's own draws stay
        self.world = World(rng, start, self.end, self.checker, random.Random(f"wire-{seed}"))
        self.workdir = workdir
        self.follow_path = os.path.join(workdir, "follow.txt")
        self._add_followed_people(rng, start)
        self.token = 1
        self.settings = self._drawn_settings(rng, cooldown)
        self.wire = WireTransport(self.world, self.settings)
        self._plugins(seed)
        #: the operator's opt-outs (their own generator: the run's draws keep their order)
        self.opt_outs = OptOuts(random.Random(f"optout-{seed}"))
        self.source = self._new_source()
        self.skew = timedelta(0)
        self.host_times: dict[datetime, datetime] = {}  # host now → true time (every tick)
        self.unacked: list[datetime] = []  # when a batch was stored and not acknowledged
        self.handler = ErrorRecords()
        self.ticks = 0
        self.idle_due_streak = 0
        self.restarts = 0
        self.restart_times: list[datetime] = []
        self.final_status: dict[str, Any] = {}  # the source's status at the end
        self.sent = False
        self.cadence: tuple[timedelta, timedelta] | None = None
        self._fifo = False
        self.fifo_blocked = False

    def _add_followed_people(self, rng: random.Random, start: datetime) -> None:
        """People outside the toplist (few pixels), followed half by the config and
        half by the follow file (written now, with a comment and a bad line)."""
        world = self.world
        outside = [
            world._add_person(f"swarm_{i}", start, rate=rng.choice((0.2, 1.0, 3.0)))
            for i in range(rng.choice((0, 3, 6, 12)))
        ]
        for p in outside:
            p.count = min(p.count, 30)
            p.history[world.canvas] = [(start - timedelta(days=1), p.count)]
        self.followed_config = [p.name for p in outside[: len(outside) // 2]]
        self.followed_file = [p.name for p in outside[len(outside) // 2 :]]
        self.file_good = True
        self.use_file = bool(self.followed_file) or rng.random() < 0.3
        if self.use_file:
            self._write_follow_file([*self.followed_file, "# comment", "not a name!"])

    def _drawn_settings(self, rng: random.Random, cooldown: timedelta) -> PxlsSettings:
        """The source's settings, drawn from the seed (the draws' order is the run's)."""
        return PxlsSettings(
            base_url="http://simulated.invalid",
            db_path=os.path.join(self.workdir, "pxls.sqlite3"),
            token=Secret(f"sim-token-{self.token}"),
            cf_auth=None,
            profile_endpoint=self.world.endpoint,
            delivery=rng.choice(("drain", "ack")),
            leaderboard_interval=rng.choice(
                (timedelta(minutes=5), timedelta(minutes=20), timedelta(hours=1))
            ),
            sweep_interval=rng.choice(
                (timedelta(hours=3), timedelta(hours=8), timedelta(hours=24))
            ),
            profile_cooldown=cooldown,
            enrichment_hold=rng.choice((timedelta(minutes=20), timedelta(hours=1))),
            follow=tuple(self.followed_config),
            follow_file=self.follow_path if self.use_file else None,
            follow_factions=(3680,) if rng.random() < 0.3 else (),
            follow_interval=rng.choice((timedelta(minutes=30), timedelta(hours=1))),
        )

    def _plugins(self, seed: int) -> None:
        """The host's PluginManager (the pxls plugin found through its entry point) and
        another plugin's source, registered before or after the pxls one. Drawn from a
        generator of their own, so the run's other draws stay what they were."""
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
        if self.foreign_first:
            self.pm.register(self.foreign)

    def _new_source(self) -> PxlsSource:
        """A new source, registered with the host's PluginManager (the one it replaces,
        if any, unregistered: its hooks are never called again)."""
        old = getattr(self, "source", None)
        if old is not None:
            self.pm.unregister(old)
        # the real client, its requests answered by the model pxls through the transport
        client = PxlsClient(self.settings, transport=self.wire)
        source = PxlsSource(self.settings, client=client, rng=random.Random(self.rng.random()))
        self.pm.register(source)
        if old is None and not self.foreign_first:
            self.pm.register(self.foreign)
        return source

    def _write_follow_file(self, lines: list[str]) -> None:
        tmp = self.follow_path + ".new"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, self.follow_path)

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
        self.world.advance(self.true)
        self.world.skewed = bool(self.skew)
        if self.skew:
            # a clock far ahead makes every wait look over, whether or not this tick
            # sends (a cancelled one still paces the key from the wrong time, and the
            # pull-back restarts that pace, not the wait before it): a documented limit
            self.checker.forbidden.clear()
        rng = self.rng
        if self.true < self.world.calm_from and rng.random() < 0.01:
            self.world.cancel_next_request = True
        calls: list[Awaitable[Any]] = [
            self._cancelled_tick(host_now)  # a host that waits a few loop steps only
            if rng.random() < 0.03
            else self._hook("on_tick", lambda: call_async_hook(self.pm.hook.on_tick, now=host_now))
        ]
        if rng.random() < 0.05:  # an overlapping call
            calls.append(
                self._collect()
                if rng.random() < 0.5
                else self._hook(
                    "on_tick", lambda: call_async_hook(self.pm.hook.on_tick, now=host_now)
                )
            )
        before = len(self.world.requests)
        await self._guarded(asyncio.gather(*calls), "on_tick")
        self.world.cancel_next_request = False
        self.ticks += 1
        self.sent = len(self.world.requests) > before

    async def _guarded(self, call: Awaitable[Any], what: str) -> None:
        """A hook that does not return within 20 real seconds is stuck (a FIFO read on
        the event loop would block even this: the watchdog thread unblocks it)."""
        fifo = self.follow_path if self._fifo else None
        done = threading.Event()

        def watchdog() -> None:
            if not done.wait(20) and fifo is not None:
                self.checker.fail("hooks return", f"{what} blocked on the follow file (a FIFO)")
                self.fifo_blocked = True
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
            self.fifo_blocked = False
            self._restore_file()

    async def _collect(self) -> None:
        batches = await self._hook(
            "collect_deltas", lambda: call_async_hook(self.pm.hook.collect_deltas)
        )
        await self._stored(batches)

    async def _stored(self, batches: list[list[Any]] | None) -> None:
        """What a host does with the batches of one ``collect_deltas`` call: store them
        (the checker's ledger), then acknowledge (ack delivery) with the hook, every
        plugin's deltas together, or with the source's ``ack_deltas``."""
        stored = [d for batch in batches or [] for d in batch]
        deltas = [d for d in stored if isinstance(d, EloDelta)]
        if not deltas:
            return
        self.checker.collected(deltas)
        if self.settings.delivery != "ack":
            return
        if self.rng.random() >= 0.9:
            # stored, not yet acknowledged (a restart brings them again)
            self.unacked.append(self.true)
        elif self.ack_by_hook:
            await self._hook(
                "acknowledge", lambda: call_async_hook(self.pm.hook.acknowledge, deltas=stored)
            )
        else:
            await self._hook("ack", lambda: self.source.ack_deltas(deltas[-1].seq))

    async def _cancelled_tick(self, host_now: datetime) -> None:
        """``wait_for(on_tick, tiny)``: the tick is cancelled after 1-40 event-loop
        steps, at whatever await it has reached (a database statement, a request, a
        thread): nothing may be lost, no pause shortened."""
        task = asyncio.ensure_future(call_async_hook(self.pm.hook.on_tick, now=host_now))
        for _ in range(self.rng.randint(1, 40)):
            if task.done():
                break
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _cancel_collect(self) -> None:
        """A host that gives the whole collect_deltas call a few event-loop steps only:
        the cancellation lands inside the pxls source's database call, or in the other
        plugin's slow call after the pxls source has handed its batch out."""
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
            await self._loop()
            await self._finish()
        finally:
            await call_async_hook(self.pm.hook.on_shutdown)
            logger.removeHandler(self.handler)
            logger.setLevel(previous_level)
            logger.propagate = True

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
        """Something the host or its operator does."""
        rng, world = self.rng, self.world
        calm = self.true >= world.calm_from
        kind = rng.choice(("crash", "restart", "follow", "file", "jump", "cadence", "nothing"))
        if calm and kind in ("jump", "file"):
            kind = "nothing"
        if kind == "jump" and any(abs(self.true - c) < timedelta(hours=3) for c in DST_CHANGES):
            kind = "nothing"  # a wrong clock in the repeated hour: no reading can be right
        if kind in ("crash", "restart"):
            self.restart_times.append(self.true)
        if kind == "crash":
            await _kill(self.source)
            self.restarts += 1
            await self.opt_outs.maybe_forget(self)  # (no source holds the database now)
            self.source = self._new_source()
        elif kind == "restart":
            await self._hook("on_shutdown", self.source.on_shutdown)
            self.restarts += 1
            if rng.random() < 0.5 and world.faults.auth_outage(self.true):
                self.token += 1  # the operator renewed PXLS_TOKEN
                self.settings = attrs.evolve(self.settings, token=Secret(f"sim-token-{self.token}"))
                world.faults.end_outages(self.true)
                self.checker.new_credentials()
            self.source = self._new_source()
        elif kind == "follow":
            renamed = [new for _, _, _, new in world.renames]
            names = rng.sample(renamed, min(len(renamed), 2)) + [
                p.name for p in rng.sample(world.people, 2)
            ]
            if rng.random() < 0.2:
                names += ["<b>bad</b>", "x" * 40]
            await self._hook("follow", lambda: self.source.follow(names, self.true + self.skew))
        elif kind == "file" and self.use_file:
            await self._hostile_file()
        elif kind == "cadence":
            self.cadence = (
                timedelta(minutes=rng.randint(5, 30)),
                timedelta(seconds=rng.choice((5, 20, 60))),
            )
        elif kind == "jump":
            # one tick from a clock far ahead, then back (DESIGN 3); a clock behind sets
            # every wait in the past, which no source can tell from a long sleep
            self.skew = rng.choice((timedelta(days=365), timedelta(hours=5)))
        await self.opt_outs.maybe_act(self)  # the operator lists or unlists someone

    async def _hostile_file(self) -> None:
        rng = self.rng
        path = self.follow_path
        if self._fifo or not self.file_good:
            self._restore_file()
            return
        choice = rng.choice(("fifo", "utf8", "directory", "big", "edit"))
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
        if choice == "fifo":
            os.mkfifo(path)
            self._fifo = True
        elif choice == "utf8":
            text = "\n".join(self.followed_file) + "\n\xff\xfe bad\n"
            await asyncio.to_thread(_write_bytes, path, text.encode("latin-1"))
        elif choice == "directory":
            os.mkdir(path)
        elif choice == "big":
            await asyncio.to_thread(_write_bytes, path, b"", 64 * 1024 * 1024)
        else:
            self._write_follow_file([*self.followed_file, "# edited"])
            return
        self.file_good = False

    def _restore_file(self) -> None:
        path = self.follow_path
        if os.path.isdir(path):
            os.rmdir(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        self._fifo = False
        self.file_good = True
        self._write_follow_file(self.followed_file)
