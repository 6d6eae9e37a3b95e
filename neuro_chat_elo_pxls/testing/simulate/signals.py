"""Signals to ``run``, modelled (:class:`RunSignals`): on the seeds whose host delivers
like ``run --out`` (:mod:`.delivery`), at the host's events, drawn from a generator of
their own:

* logrotate (no ``copytruncate``) moves the file to ``FILE.N`` and sends SIGHUP, which
  ``run``'s handler (a loop callback) takes at once, between two event-loop steps of a
  later delivery, or, while a restarted ``run`` starts up, before that handler exists:
  a new process, whose CLI import must record it (:mod:`~neuro_chat_elo_pxls.cli.hangup`,
  its module code run again; a real SIGHUP is then sent to this process) and whose
  start must act on it (:func:`~neuro_chat_elo_pxls.cli.run.take_early_hangups`). Once
  a SIGHUP came, no line may go into a moved file (a service writing on into it loses
  the lines to logrotate's compression); the reader follows like ``tail -F``.
* SIGTERM: ``run``'s real shutdown (a last delivery, ``on_shutdown``), exit 0 (75 when
  that delivery could not be written); the operator starts it again.

How early the CLI's import comes in a real process is ``tests/test_cli_signals.py``'s
part (subprocesses); no process is spawned here.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import random
import signal
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from .host import Host


@attrs.frozen
class _HostClock:
    """The host's clock for ``run``'s shutdown (its log lines and status reads)."""

    host: Host

    def now(self) -> datetime:
        return self.host.true + self.host.skew

    def real_seconds(self, delta: timedelta) -> float:
        return 0.0


@attrs.define
class RunSignals:
    """See the module docstring. ``log``: what was sent, for the run's figures."""

    rng: random.Random
    log: list[str] = attrs.field(factory=list)
    #: exit statuses of the runs SIGTERM ended
    stop_statuses: list[int] = attrs.field(factory=list)
    #: the names logrotate moved the file to, in order
    rotated: list[str] = attrs.field(factory=list)
    #: a SIGHUP due inside the next delivery, after this many event-loop steps
    hup_in_delivery: int | None = None
    #: moved files whose SIGHUP came → their size then (they must not grow)
    let_go: dict[str, int] = attrs.field(factory=dict)

    async def act(self, host: Host) -> None:
        """At one of the host's events: sometimes rotate (SIGHUP at once, in a later
        delivery or at start-up), sometimes SIGTERM."""
        roll = self.rng.random()
        if roll < 0.25 and self._rotate(host):
            how = self.rng.choice(("at once", "in a delivery", "at start-up"))
            self.log.append(f"{host.true:%m-%d %H:%M} rotated, SIGHUP {how}")
            if how == "at once":
                self._hang_up(host)
            elif how == "in a delivery":
                self.hup_in_delivery = self.rng.randint(1, 30)
            else:
                await self._terminated(host, hup_at_start=True)
        elif roll < 0.35:
            self.log.append(f"{host.true:%m-%d %H:%M} SIGTERM")
            await self._terminated(host, hup_at_start=False)

    def delivery(self, host: Host, work: Awaitable[None]) -> Awaitable[None]:
        """``work`` (a delivery), with the SIGHUP due in it if one is."""
        if self.hup_in_delivery is None:
            return work
        steps, self.hup_in_delivery = self.hup_in_delivery, None
        return self._hung_up_in(host, work, steps)

    def check_moved_files(self, host: Host) -> None:
        """No moved file grew after its SIGHUP."""
        for name, size in self.let_go.items():
            if os.path.getsize(name) != size:
                host.checker.fail(
                    "after SIGHUP no line goes to the rotated file",
                    f"{name} grew from {size} to {os.path.getsize(name)} bytes",
                )

    def check_statuses(self, host: Host) -> None:
        if any(status not in (0, 75) for status in self.stop_statuses):
            host.checker.fail("SIGTERM exits 0 (75: last lines unwritten)", f"{self.stop_statuses}")

    def _rotate(self, host: Host) -> bool:
        """The file moved to ``FILE.N``; False when there is none to move (the last
        move's SIGHUP still to come)."""
        assert host.out is not None
        if not os.path.exists(host.out.path):
            return False
        name = f"{host.out.path}.{len(self.rotated) + 1}"
        os.rename(host.out.path, name)
        self.rotated.append(name)
        return True

    def _hang_up(self, host: Host) -> None:
        """``run``'s SIGHUP handler (a loop callback: between two event-loop steps)."""
        assert host.out is not None
        host.out.file.reopen()
        self._let_go()

    def _let_go(self) -> None:
        for name in self.rotated:
            self.let_go.setdefault(name, os.path.getsize(name))

    async def _hung_up_in(self, host: Host, work: Awaitable[None], steps: int) -> None:
        task = asyncio.ensure_future(work)
        for _ in range(steps):
            if task.done():
                break
            await asyncio.sleep(0)
        self._hang_up(host)
        await task

    async def _terminated(self, host: Host, *, hup_at_start: bool) -> None:
        """SIGTERM: ``run``'s real shutdown, its exit status, and a new ``run``; with
        ``hup_at_start`` the file moved away and a real SIGHUP sent between its opening
        and ``run``'s handler (the new ``run`` must live, and reopen it)."""
        from ...cli.run import EXIT_OUTPUT_FAILED, take_early_hangups
        from ...host import _shut_down

        out = host.out
        assert out is not None
        sources: list[Any] = [inst.source for inst in host.instances]
        failed = await _shut_down(
            host.pm, sources, out, host.totals, _HostClock(host), final_table=False
        )
        self.stop_statuses.append(EXIT_OUTPUT_FAILED if failed else 0)
        survives = self._new_process(host) if hup_at_start else True
        host.reopen_out(failed=failed is not None)
        if hup_at_start and survives and self._rotate(host):
            signal.raise_signal(signal.SIGHUP)  # (this process: recorded, as in run's)
            take_early_hangups(out.file, out.path)
            self._let_go()
        host.read_out()
        host.restarted()

    def _new_process(self, host: Host) -> bool:
        """A new ``run`` process: SIGHUP has its default disposition (death, status 129,
        which systemd does not restart) until the CLI's first import records it
        instead (hangup's module code, run again here). False, and a violation, if
        SIGHUP would end it."""
        from ...cli import hangup

        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        importlib.reload(hangup)
        if signal.getsignal(signal.SIGHUP) is signal.SIG_DFL:
            host.checker.fail(
                "SIGHUP at start-up never ends run",
                "after the CLI's import SIGHUP still ends the process (status 129)",
            )
            return False
        return True
