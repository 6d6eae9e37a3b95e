"""Hook specifications of the ``neuro_chat_elo`` host.

This module imports nothing but pluggy and the standard library, so a host can
copy (adopt) it as is. Project name, marker name and entry-point group are all
``neuro_chat_elo``.

Call order a host follows::

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT)
    pm.hook.register_sources(register=pm.register, config=config)   # sync, once
    loop:
        await call_async_hook(pm.hook.on_tick, now=now)           # now: aware UTC
        batches = await call_async_hook(pm.hook.collect_deltas)   # a list per source
        store them durably, then (at-least-once sources):
        await call_async_hook(pm.hook.acknowledge, deltas=every_delta_stored)
        dues = pm.hook.next_due_at(now=now)                       # pluggy drops None
        sleep until min(dues, default=now + your_poll_interval)
    await call_async_hook(pm.hook.on_shutdown)

Hooks are awaited one after the other (:func:`call_async_hook`); a host may call
them while an earlier call still runs (a source serialises them) and may cancel any
of them (nothing is lost). ``on_tick`` sends at most one request and never sleeps:
it takes milliseconds, up to the request timeout (20 s by default) when pxls is slow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pluggy

PROJECT = "neuro_chat_elo"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- the host contract of a source, as one type ------------------------------------


@runtime_checkable
class Source(Protocol):
    """What a host may call on a registered source, so it needs no ``getattr``.

    Required hooks: ``on_tick``, ``collect_deltas``, ``on_shutdown``. The others are
    optional in meaning, not in presence; a source without the feature implements
    them trivially:

    * ``next_due_at(now)`` (sync): earliest host time with work; ``None`` if nothing
      is scheduled (a source that cannot tell returns ``now``: poll me);
    * ``ack_deltas(upto_seq)``: the host has durably stored every delta up to
      ``upto_seq`` (at-least-once sources delete them now; others do nothing);
    * ``open()``: open resources early and raise on a bad configuration, so a host
      fails at start-up instead of logging every tick (idempotent);
    * ``status(now)``: a JSON-serialisable snapshot for operators (the host logs what
      the database holds at shutdown).
    """

    async def on_tick(self, now: datetime) -> None:
        """Do the work due at host time ``now`` (aware UTC); never raises."""
        ...

    async def collect_deltas(self) -> list[Any]:
        """Every contribution since the last call; never raises."""
        ...

    async def on_shutdown(self) -> None:
        """Release resources; idempotent."""
        ...

    def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest host time (aware UTC) a tick has work; None: nothing scheduled."""
        ...

    async def ack_deltas(self, upto_seq: int) -> None:
        """The host stored every delta up to ``upto_seq``."""
        ...

    async def open(self) -> None:
        """Open resources early; raises on a bad configuration; idempotent."""
        ...

    async def status(self, now: datetime | None = None) -> dict[str, Any]:
        """A JSON-serialisable snapshot for operators."""
        ...


# -- plugin level: implemented by the module the entry point names ---------------


@hookspec
def register_sources(register: Callable[[Source], None], config: Mapping[str, Any]) -> None:
    """Create the plugin's sources from the host's config and hand each to register().

    Synchronous. ``config`` is the host's whole config mapping; each plugin reads
    its own section (pxls: ``config["pxls"]``).
    """


# -- source level: implemented by each registered source object -------------------


@hookspec
async def on_tick(now: datetime) -> None:
    """Do the work that is due at host time ``now`` (aware, UTC). Bounded: never sleeps."""


@hookspec
async def collect_deltas() -> list[Any]:  # type: ignore[empty-body]
    """Return the contributions (EloDelta) made since the last call. An at-most-once
    source (pxls ``delivery = "drain"``) removes them as it returns them; an
    at-least-once one (``"ack"``) keeps them until :func:`acknowledge` and hands
    them out again after a restart (same ``seq``: de-duplicate on ``(instance, seq)``).
    ``delta`` is signed: a count that falls (a rollback) gives a negative one, and a
    person who asked not to be counted is withdrawn: one delta per canvas of minus what
    was credited, ``via="opt-out"``, ``score`` 0 (drop them from the board). After a
    canvas reset, one delta per person on the *old* canvas may follow, ``via="reset"``:
    the pixels placed there after the last observation (``score`` the final count;
    ``delta`` negative after a rollback)."""


@hookspec
async def acknowledge(deltas: Sequence[Any]) -> None:
    """Optional: the host has durably stored ``deltas`` (from any sources). Each source
    acknowledges exactly those it handed out and ignores the rest, so a host needs no
    reference to its sources; what it handed out before them and never saw
    acknowledged is offered again. An at-most-once source does nothing."""


@hookspec
async def on_shutdown() -> None:
    """Close HTTP sessions and databases. Called once; no hook is called after it."""


@hookspec
def next_due_at(now: datetime) -> datetime | None:
    """Optional, synchronous: the earliest host time (aware, UTC) at which the source
    has work, so a host can sleep until then instead of polling. ``None``: nothing
    scheduled. pluggy leaves ``None`` results out of the list, so it may be empty: a
    host takes ``min(results, default=...)``, never a bare ``min``."""


#: results of a call that was cancelled (or raised) after some sources had returned,
#: by ``id(hook)`` (with the hook, so the id stays its own): the next call returns them
_carried: dict[int, tuple[Any, list[Any]]] = {}


async def call_async_hook(hook: Any, **kwargs: Any) -> list[Any]:
    """Call an async hook and await each result in registration order.

    pluggy calls the implementations last-registered first and returns their
    coroutines (pluggy itself is synchronous; an async implementation's body does
    not run until awaited). This awaits them one after the other in registration
    order, so sources never run concurrently, and returns the awaited results in
    that order. A result that is not awaitable (a sync implementation) is passed
    through.

    Cancellation loses nothing: when the call is cancelled (``asyncio.wait_for``
    around it) or a source raises, the non-empty results of the sources that had
    already returned (a drain source's batch, removed from its outbox) are kept here
    and come first in the list of the next call of the same hook; the sources not yet
    reached are not called. So ``[d for batch in results for d in batch]`` gets every
    delta once, whichever call it was made by.
    """
    results = _carried.pop(id(hook), (hook, []))[1]  # a cancelled call's, first
    pending = list(reversed(hook(**kwargs)))
    try:
        while pending:
            result = pending.pop(0)
            results.append(await result if isinstance(result, Awaitable) else result)
    except BaseException:
        for never_started in pending:
            if hasattr(never_started, "close"):
                never_started.close()  # (no "coroutine was never awaited" warning)
        if kept := [r for r in results if r]:
            _carried[id(hook)] = (hook, kept)
        raise
    return results
