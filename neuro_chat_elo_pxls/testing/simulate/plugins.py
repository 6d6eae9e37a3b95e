"""The model host's plugin manager: a real pluggy ``PluginManager`` that finds the pxls
plugin through the ``neuro_chat_elo`` entry points, as ``docs/hosts.md`` says, and
another plugin's source beside the pxls one (:class:`ForeignSource`), so every hook is
called through ``pm.hook`` among several sources, as a host author calls it."""

from __future__ import annotations

import asyncio
import functools
import random
from datetime import datetime
from types import ModuleType
from typing import Any

import attrs
import pluggy

from ... import hookspecs
from ...hookspecs import PROJECT, hookimpl


@functools.cache
def _discovered() -> tuple[tuple[str, Any], ...]:
    """The plugins the entry points name (found once per process: the scan is slow)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(PROJECT)
    return tuple((name, plugin) for name, plugin in pm.list_name_plugin())


def plugin_manager() -> pluggy.PluginManager:
    """A host's PluginManager with every discovered plugin registered. Raises
    RuntimeError when the pxls plugin is not found (the package is not installed)."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, plugin in _discovered():
        pm.register(plugin, name=name)
    found = pm.get_plugin("pxls")
    if not isinstance(found, ModuleType) or not hasattr(found, "register_sources"):
        raise RuntimeError("the pxls plugin was not found through the entry points")
    return pm


@attrs.frozen
class ChatDelta:
    """Another plugin's contribution: not an EloDelta, no ``seq``."""

    user: str
    delta: int


@attrs.define(eq=False)  # (pluggy keeps plugins in sets: hashed by identity)
class ForeignSource:
    """A chat source of another plugin: it earns a delta now and then, and its
    ``collect_deltas`` takes a few event-loop steps (a slow site), so a host's
    ``wait_for`` around the whole hook call may run out while it runs, after the pxls
    source has already handed its batch out. Its own deltas are kept until its call
    returns (it loses nothing to a cancellation itself)."""

    rng: random.Random
    pending: list[ChatDelta] = attrs.field(factory=list)
    handed_out: int = 0

    @hookimpl
    async def on_tick(self, now: datetime) -> None:
        if self.rng.random() < 0.2:
            self.pending.append(ChatDelta(f"chatter_{self.rng.randint(1, 9)}", 1))

    @hookimpl
    async def collect_deltas(self) -> list[Any]:
        for _ in range(self.rng.choice((0, 2, 6, 30))):
            await asyncio.sleep(0)
        batch, self.pending = self.pending, []
        self.handed_out += len(batch)
        return list(batch)

    @hookimpl
    def next_due_at(self, now: datetime) -> datetime | None:
        return None  # (pluggy leaves it out: the host takes min(..., default=...))

    @hookimpl
    async def on_shutdown(self) -> None:
        return None
