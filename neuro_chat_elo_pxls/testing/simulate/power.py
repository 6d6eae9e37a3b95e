"""Power losses in a run (:class:`PowerCuts`), drawn from a generator of their own:
half the host's crashes, a share of its cancelled ticks (cut at that event-loop step
instead) and of ``run``'s deliveries (at an event-loop step, or inside a flush: written,
not fsynced). Every process dies at once; the disk keeps what :mod:`.disk` says; the
host starts again on that.

What the power cut off is lost to the model too: a wait pxls gave, or a new canvas code
it answered, in a tick the power ended before the source stored it does not bind the
next process (:meth:`~.host.Host._cancelled_tick`).
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import TYPE_CHECKING, Any

import attrs

from ... import hookspecs
from ...host import deliver
from .disk import PowerLoss, synchronous_level

if TYPE_CHECKING:
    from .host import Host

#: The share of the host's crashes that are power losses, and of its cancelled ticks and
#: ``run`` deliveries cut by one.
POWER_SHARE, POWER_CUT_SHARE = 0.5, 0.3

_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_TESTING = os.path.join(_PACKAGE, "testing") + os.sep


def _package_task(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` runs the package's own code (a hook call, a source's shielded
    unit or visit), not the model's."""
    code = getattr(task.get_coro(), "cr_code", None)
    where = code.co_filename if code is not None else ""
    return where.startswith(_PACKAGE + os.sep) and not where.startswith(_TESTING)


@attrs.define
class PowerCuts:
    """See the module docstring. ``enabled=False``: none (a test of something else keeps
    its seed's story). ``losses``: when and what each kept, for the run's figures."""

    rng: random.Random
    enabled: bool = True
    losses: list[str] = attrs.field(factory=list)

    def at_crash(self) -> bool:
        """Whether the host's crash is a power loss."""
        return self.enabled and self.rng.random() < POWER_SHARE

    def at_cut(self) -> bool:
        """Whether a cancelled tick or a delivery is cut by a power loss instead."""
        return self.enabled and self.rng.random() < POWER_CUT_SHARE

    async def in_delivery(self, host: Host) -> None:
        """``run``'s delivery with the power going at one of its event-loop steps (in
        ``collect_deltas``, between the fsync and the acknowledgement, in it...) or in
        a flush."""
        from .delivery import PowerCut

        out = host.out
        assert out is not None
        out.cut_at_flush = self.rng.random() < 0.5  # (else at an await)
        task = asyncio.ensure_future(deliver(host.pm, out, host.totals))
        for _ in range(self.rng.randint(1, 30)):
            if task.done():
                break
            await asyncio.sleep(0)
        if task.done() and not isinstance(task.exception(), PowerCut):
            await host.deliver(task)  # (done before the cut: a power loss right after)
        out.cut_at_flush = False
        await self.lose(host, task, "deliver")

    async def lose(self, host: Host, task: asyncio.Future[Any] | None, during: str) -> None:
        """The machine loses power now, inside ``task`` (a hook call at some event-loop
        step) or between two calls (``task`` None: the caller restarts the host)."""
        loss = PowerLoss(self.rng)
        levels = []
        for inst in host.instances:  # (inline SQLite: no event-loop step)
            assert inst.source is not None
            levels.append(await synchronous_level(inst.source))
        for inst, level in zip(host.instances, levels, strict=True):  # the cut
            loss.database(inst.settings.db_path, level)
        out = host.out
        target = out.writing_to(host.signals.rotated) if out is not None else None
        cut = loss.file(target) if target is not None else None
        # everything after the cut is thrown away: the processes are gone, with every
        # task running the package's code (the call, and the units and visits it had
        # shielded from cancellation, which would run on) and what call_async_hook kept
        # for the next call (in the host's memory)
        doomed = [t for t in asyncio.all_tasks() if _package_task(t)]
        for dead in doomed:
            dead.cancel()
        await asyncio.gather(*doomed, return_exceptions=True)
        hookspecs._carried.clear()
        await host.kill_sources()
        if out is not None:
            out.lose_power()
        loss.restore()
        self.losses.append(f"{host.true:%m-%d %H:%M} in {during}: {'; '.join(loss.what)}")
        if out is not None and host.reader is not None and target and cut is not None:
            host.reader.truncated(os.stat(target).st_ino, cut)
            if out.reopen(target, cut):
                out.injected.append("kept cut")  # (the power cut a line)
            host.read_out()  # (what the disk kept counts as before the power loss)
            host.out_breaks += 1
        if task is not None:
            host.restarted()
