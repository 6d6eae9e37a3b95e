"""``PxlsSource``: the pxls.space source the host registers as a pluggy plugin.

The host drives it with :meth:`PxlsSource.on_tick` (host time ``now``, aware UTC)
and drains contributions with :meth:`PxlsSource.collect_deltas`. ``PxlsSource`` is
a facade: one hook call at a time, the host's ``now`` checked, the database opened;
then a tick is :meth:`~.jobs.tick.Tick.run` (clamp, plan, run one command: the whole
flow is written there) and a collect is the outbox's (:mod:`.store.outbox`).

Hook calls are serialised (a host may overlap them); every failure is caught and
logged: a tick never raises into the host's loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import StoreError
from .hookspecs import hookimpl
from .jobs.tick import Tick
from .models import EloDelta
from .ops.status import build_status
from .pxls.client import PxlsApi, PxlsClient
from .settings import PxlsSettings
from .store import Store, StoreHandle
from .util.logs import tagged_hook
from .util.times import check_now

log = logging.getLogger("neuro_chat_elo_pxls")


class PxlsSource:
    """Turns the pxls.space canvas leaderboard into :class:`EloDelta` contributions.

    Construct directly (``PxlsSource(PxlsSettings(...))``) or through the plugin's
    ``register_sources``. The database is opened on the first hook call (or by
    :meth:`open`, which raises on a bad database instead of logging).
    """

    def __init__(
        self,
        settings: PxlsSettings,
        *,
        client: PxlsApi | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._client: PxlsApi = client or PxlsClient(settings)
        self._tick = Tick(settings, rng)
        self._last_now: datetime | None = None
        self._db = StoreHandle(settings.db_path, self._restore)
        self._hooks = asyncio.Lock()  # one hook call at a time (hosts overlap calls)
        self._bad_now_said = False  # a host's wrong ``now`` is reported once

    @property
    def log_instance(self) -> str | None:
        """The tag of this source's log lines: its table's name (and the instance name
        when the table sets another), or an explicit ``instance``; None: no tag."""
        return self.settings.label

    def __repr__(self) -> str:
        return f"PxlsSource(base_url={self.settings.base_url!r}, db_path={self.settings.db_path!r})"

    # -- lifecycle -------------------------------------------------------------

    @tagged_hook
    async def open(self) -> None:
        """Open the database and restore the engine state. Raises :class:`StoreError`."""
        async with self._hooks:
            await self._db.open()

    async def _restore(self, store: Store) -> None:
        """The database just opened: the engine restores its state and pauses."""
        await self._tick.restore(store)
        log.info(
            "pxls source open: %s; db=%s canvas=%s",
            self.settings.summary(),
            self.settings.db_path,
            self._tick.canvas.code or "-",
        )

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    @tagged_hook
    async def on_tick(self, now: datetime) -> None:
        """Do the work due at host time ``now`` (aware UTC): at most one request command."""
        checked = self._host_now(now, "on_tick")
        if checked is None:
            return
        now = checked
        try:
            async with self._hooks:
                store = await self._db.ensure(now)
                if store is None:
                    return
                self._last_now = now
                await self._tick.run(store, self._client, now)
        except Exception:
            log.exception("pxls tick failed (nothing was lost; the next tick continues)")

    @hookimpl
    @tagged_hook
    async def collect_deltas(self) -> list[EloDelta]:
        """Return every contribution since the last call.

        ``delivery="drain"`` (default): removed in the same transaction (at-most-once
        if the host crashes before storing them). ``delivery="ack"``: kept until
        :meth:`ack_deltas`; after a restart the unacknowledged ones come again
        (at-least-once; de-duplicate on ``(instance, seq)``).
        """
        try:
            async with self._hooks:
                store = await self._db.ensure()
                if store is None:
                    return []
                return await store.outbox(self.settings.instance_name).collect(
                    self.settings.delivery
                )
        except Exception:
            log.exception("collect_deltas failed; the deltas stay in the outbox for next time")
            return []

    @tagged_hook
    async def ack_deltas(self, upto_seq: int) -> None:
        """``delivery="ack"``: the host has stored every delta up to ``upto_seq``.
        (With ``"drain"`` they are gone already; this is then a no-op.)"""
        async with self._hooks:
            store = await self._db.ensure()
            if store is not None and self.settings.delivery == "ack":
                await store.outbox(self.settings.instance_name).ack_upto(upto_seq)

    @hookimpl
    @tagged_hook
    async def acknowledge(self, deltas: Sequence[Any]) -> None:
        """The host has durably stored ``deltas`` (any sources', in the order it got
        them): this source acknowledges exactly those it handed out (equal to what it
        handed out under that ``seq``: another source's seq 1 is not this one's, even
        under one instance name), the hook form of :meth:`ack_deltas` for a host that
        keeps no reference to its sources. Deltas handed out before the acknowledged
        ones and never acknowledged (a host that cancelled ``collect_deltas`` while
        another source ran loses the batch it had) are offered again by the next call:
        at least once, never lost. Never raises (a failure is logged; the rows stay)."""
        if self.settings.delivery != "ack":
            return
        try:
            async with self._hooks:
                store = await self._db.ensure()
                if store is not None:
                    await store.outbox(self.settings.instance_name).acknowledge(deltas)
        except Exception as exc:  # a hook never raises into the host (a full disk)
            log.error(
                "acknowledging %d deltas failed (%s); they stay in the outbox: "
                "acknowledged with the next batch, or handed out again after a restart "
                "(same seq)",
                len(deltas),
                exc,
            )

    @hookimpl
    @tagged_hook
    async def on_shutdown(self) -> None:
        """Close the HTTP session and the database. Idempotent."""
        async with self._hooks:
            await self._client.close()
            await self._db.close()

    @hookimpl
    def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest host time at which a tick has work (``now`` if it has some now).

        A ``now`` that is not an aware datetime is refused as ``on_tick`` refuses it
        (one ERROR line, once; never raised): the answer is then None (nothing
        scheduled), so a host sleeps its own poll interval instead of spinning."""
        checked = self._host_now(now, "next_due_at")
        if checked is None:
            return None
        now = checked
        if self._db.store is None:
            return self._db.next_due(now)
        return self._tick.next_due(now)

    def _host_now(self, now: object, hook: str) -> datetime | None:
        """The host's ``now`` as aware UTC, or None after saying (once, for every hook
        together) that the host passes a wrong one. Never raises: the host's bug must
        not crash its loop, and a host that keeps passing it sees one line, not many."""
        try:
            return check_now(now)
        except TypeError as exc:
            if not self._bad_now_said:
                self._bad_now_said = True
                log.error(
                    "%s: %s; nothing runs until the host passes "
                    "datetime.now(timezone.utc) (said once)",
                    hook,
                    exc,
                )
            return None

    @tagged_hook
    async def follow(self, names: Iterable[str], now: datetime | None = None) -> int:
        """Follow ``names`` too (beyond the config's ``follow``/``follow_file``/
        ``follow_factions``): their profiles are read every ``follow_interval`` while
        they are outside the toplist. Invalid names are reported once and skipped.
        Returns how many valid names were given. ``now``: host time (default: the
        last tick's). Raises :class:`StoreError` if the database cannot be opened."""
        async with self._hooks:
            store = await self._db.ensure()
            if store is None:
                raise StoreError(self._db.disabled or "the source was shut down")
            when = check_now(now) if now is not None else self._last_now or datetime.now(UTC)
            return await self._tick.follow.add(store, names, when)

    # -- operators -------------------------------------------------------------

    @tagged_hook
    async def status(self, now: datetime | None = None) -> dict[str, Any]:
        """A snapshot of the source's state for operators (JSON-serialisable)."""
        async with self._hooks:
            store = await self._db.ensure()
            if store is None:
                return {"disabled": self._db.disabled or "shut down"}
            now = check_now(now) if now is not None else datetime.now(UTC)
            engine = self._tick.engine
            status = await build_status(store, engine.live_state(now), now, self.settings)
            status["queue"] = engine.queued()
            return status
