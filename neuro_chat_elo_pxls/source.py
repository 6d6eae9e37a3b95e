"""``PxlsSource``: the pxls.space source the host registers as a pluggy plugin.

The host drives it with :meth:`PxlsSource.on_tick` (host time ``now``, aware UTC)
and drains contributions with :meth:`PxlsSource.collect_deltas`. ``PxlsSource``
keeps the hooks and wires the engine's parts; each part has one job:

* :class:`~.pulls.Pull` (Timer 1): when the leaderboard pull is due, what it does;
* :class:`~.sweep.Sweep` (Timer 2): the daily profile re-check with its cursor;
* :class:`~.enrichment.EnrichmentWindow`: new users' held first deltas;
* :class:`~.profiles.ProfileVisits`: one profile read (pacing, 404, rename);
* :class:`~.follow.FollowList`: followed users beyond the top 1000, their refreshes;
* :class:`~.observations.PendingObservations`: profile counts awaiting /info;
* :class:`~.policy.FailurePolicy`: backoff, auth pause, giving up;
* :class:`~.processor.CommandQueue`: commands with per-key cooldowns;
* :class:`~.state.StateKeeper`: the scheduler state, one write path.

Each tick: timers enqueue what is due, then at most one command that sends
requests runs. Hook calls are serialised (a host may overlap them); every failure
is caught and logged: a tick never raises into the host's loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import attrs

from .engine.clockguard import ClockGuard
from .engine.policy import FailurePolicy
from .engine.queue import Command, CommandQueue, Key, Kind
from .engine.scheduler import Timers
from .engine.state import KeyState, SchedulerState, StateKeeper
from .errors import PxlsError, StoreError
from .hookspecs import hookimpl
from .jobs.enrichment import EnrichmentWindow
from .jobs.follow import FollowList
from .jobs.observations import PendingObservations
from .jobs.profiles import ProfileVisits
from .jobs.pull import Pull
from .jobs.sweep import Sweep
from .models import EloDelta
from .ops.status import build_status
from .pxls.client import PxlsApi, PxlsClient
from .settings import CF_AUTH_ENV, TOKEN_ENV, PxlsSettings, credentials_fingerprint
from .store.handle import StoreHandle
from .store.writer import Store
from .util.logs import event
from .util.text import shown
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
        self._queue = CommandQueue()
        self._policy = FailurePolicy(settings, rng or random.Random())
        self._state = StateKeeper()
        self._observations = PendingObservations()
        self._pull = Pull(self._state, settings.leaderboard_interval, self._observations)
        self._sweep = Sweep(self._state, settings.sweep_interval, settings.profile_cooldown)
        self._enrich = EnrichmentWindow(settings.enrichment_hold)
        self._clock = ClockGuard(settings, self._state)
        self._follow = FollowList(settings, self._state)
        self._last_now: datetime | None = None
        self._timers = Timers(
            settings,
            self._queue,
            self._clock,
            self._pull,
            self._observations,
            self._enrich,
            self._follow,
            self._sweep,
        )
        self._profiles = ProfileVisits(
            settings,
            self._queue,
            self._state,
            self._sweep,
            self._enrich,
            self._follow,
            self._observations,
        )
        self._db = StoreHandle(settings.db_path, self._restore)
        self._hooks = asyncio.Lock()  # one hook call at a time (hosts overlap calls)
        self._handed_out = 0  # ack delivery: highest seq returned since open
        self._empty_at = -1  # store commits when collect_deltas last found nothing

    def __repr__(self) -> str:
        return f"PxlsSource(base_url={self.settings.base_url!r}, db_path={self.settings.db_path!r})"

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Open the database and restore the scheduler state. Raises :class:`StoreError`."""
        async with self._hooks:
            await self._db.open()

    async def _restore(self, store: Store) -> None:
        """The database just opened: restore the scheduler state and the pacing."""
        self._state.adopt(await store.load_state())
        # pauses, backoffs and server waits survive a restart (DESIGN 4); a restart with
        # other credentials may try an auth-paused key at once
        keys, salt, fingerprints = self._restored_keys(self._state.current)
        self._queue.restore(keys)
        # what this source runs with, for ``status`` from another process
        await self._state.commit(
            store.save_state,
            profiles_enabled=self.settings.profiles_enabled,
            keys=keys,
            credentials=fingerprints[Key.PROFILE.value],
            leaderboard_credentials=fingerprints[Key.LEADERBOARD.value],
            credentials_salt=salt,
        )
        if not self.settings.profiles_enabled:
            log.warning(
                "%s is not set: no profile is requested (no Discord names or factions); "
                "new users' deltas are handed out at once. Set %s (and %s for pxls.space).",
                TOKEN_ENV,
                TOKEN_ENV,
                CF_AUTH_ENV,
            )
            await self._enrich.release_all(store, f"{TOKEN_ENV} is not set")
        else:
            await self._enrich.refresh_deadline(store)
        log.info(
            "pxls source open: db=%s canvas=%s",
            self.settings.db_path,
            self._state.current.canvas or "-",
        )

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    async def on_tick(self, now: datetime) -> None:
        """Do the work due at host time ``now`` (aware UTC): at most one request command."""
        try:
            now = check_now(now)
            async with self._hooks:
                store = await self._db.ensure(now)
                if store is None:
                    return
                self._last_now = now
                await self._timers.run(store, now)
                await self._run_one(store, now)
        except Exception:
            log.exception("pxls tick failed (nothing was lost; the next tick continues)")

    @hookimpl
    async def collect_deltas(self) -> list[EloDelta]:
        """Return every contribution since the last call.

        ``delivery="drain"`` (default): removed in the same transaction (at-most-once
        if the host crashes before storing them). ``delivery="ack"``: kept until
        :meth:`ack_deltas`; after a restart the unacknowledged ones come again
        (at-least-once; de-duplicate on ``seq``).
        """
        try:
            async with self._hooks:
                store = await self._db.ensure()
                if store is None or store.commits == self._empty_at:
                    return []  # (no write since the last empty call: no delta either)
                commits = store.commits
                if self.settings.delivery == "drain":
                    deltas = await store.drain_outbox()
                else:
                    deltas = await store.peek_outbox(self._handed_out)
                    if deltas:
                        self._handed_out = deltas[-1].seq
                if not deltas:
                    self._empty_at = commits
                return deltas
        except Exception:
            log.exception("collect_deltas failed; the deltas stay in the outbox for next time")
            return []

    async def ack_deltas(self, upto_seq: int) -> None:
        """``delivery="ack"``: the host has stored every delta up to ``upto_seq``.
        (With ``"drain"`` they are gone already; this is then a no-op.)"""
        async with self._hooks:
            store = await self._db.ensure()
            if store is not None and self.settings.delivery == "ack":
                await store.ack_outbox(upto_seq)

    @hookimpl
    async def on_shutdown(self) -> None:
        """Close the HTTP session and the database. Idempotent."""
        async with self._hooks:
            await self._client.close()
            await self._db.close()

    @hookimpl
    def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest host time at which a tick has work (``now`` if it has some now)."""
        if self._db.store is None:
            return self._db.next_due(now)
        return self._timers.next_due(now)

    # -- timers and commands ---------------------------------------------------

    async def _run_one(self, store: Store, now: datetime) -> None:
        """Run the first ready command that sends a request (skipping stale ones)."""
        while (entry := self._queue.pop_ready(now)) is not None:
            command = entry[1]
            try:
                sent = await self._execute(store, command, now)
            except asyncio.CancelledError:
                self._queue.put_back(entry)  # the host cancelled the tick: run it later
                raise
            except Exception as exc:  # a bug must not wedge the queue or kill the host
                if not isinstance(exc, PxlsError):
                    log.exception("unexpected error in %s", command.describe())
                await self._on_failure(store, entry, exc, now)
                return
            if self._policy.on_success(self._queue.state(command.key)):
                self._queue.set_counters(command.key, 0, 0)
                await self._persist_keys(store, now)
            if sent:
                return

    async def _execute(self, store: Store, command: Command, now: datetime) -> bool:
        """Run ``command``; False if it was stale and sent nothing."""
        if command.kind is Kind.CONFIRM:
            await self._pull.check_canvas(store, self._client, now)
            return True
        if command.kind is Kind.PULL:
            hold = self.settings.profiles_enabled
            if await self._pull.run(store, self._client, now, hold_new=hold) is not None:
                self._enrich.after_pull()
                await self._enrich.refresh_deadline(store)
                if hold:
                    await self._enrich.refill(store, self._queue)
            return True
        return await self._profiles.visit(store, self._client, command, now)

    async def _on_failure(
        self, store: Store, entry: tuple[int, Command], exc: Exception, now: datetime
    ) -> None:
        """Apply the failure policy's decision: retry after a pause, or give up."""
        order, command = entry
        if command.key is Key.PROFILE:
            self._enrich.profiles_failing(str(exc))
        decision = self._policy.on_failure(command, exc, self._queue.state(command.key), now)
        self._queue.set_counters(command.key, decision.failures, decision.auth_pauses)
        wait = None if decision.retry_at is None else (decision.retry_at - now).total_seconds()
        log.log(
            decision.level,
            "%s",
            decision.message,
            extra=event(
                "request_failed",
                key=command.key.value,
                command=command.kind.value,
                attempt=command.attempts + 1,
                wait_s=wait,
                reason=decision.reason,
            ),
        )
        if decision.retry_at is not None:
            self._queue.cool(command.key, decision.retry_at, decision.reason, now)
            self._queue.put_back((order, decision.command))
        elif command.kind is Kind.PULL:
            await self._pull.gave_up(store, now)
        elif command.kind is Kind.CONFIRM:  # the counts wait; ask again in 15 minutes
            self._observations.checked(now)
        elif command.kind is Kind.SWEEP and command.user_id is not None:
            await self._sweep.skip(store, command.user_id)
        elif command.kind is Kind.FOLLOW and command.user_id is not None:
            self._follow.give_up(command.user_id)  # tried again in the next round
        elif command.kind is Kind.ENRICH and command.user_id is not None:
            # stays held until the hold runs out
            self._enrich.give_up(command.user_id)
        await self._persist_keys(store, now, last_error=decision.message, last_error_at=now)

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
            return await self._follow.add(store, names, when)

    # -- operators -------------------------------------------------------------

    def _restored_keys(
        self, state: SchedulerState
    ) -> tuple[dict[str, KeyState], str, dict[str, str]]:
        """The persisted key states to restore, the salt and this source's credentials
        fingerprint per key. Auth pauses earned with other credentials than that key
        sends now are lifted (logged): a new PXLS_TOKEN lifts the profile key's only."""
        salt = state.credentials_salt or secrets.token_hex(16)
        fingerprints = {
            Key.PROFILE.value: credentials_fingerprint(self.settings, salt),
            Key.LEADERBOARD.value: credentials_fingerprint(self.settings, salt, profiles=False),
        }
        earned = {
            Key.PROFILE.value: state.credentials,
            Key.LEADERBOARD.value: state.leaderboard_credentials,
        }
        keys = dict(state.keys)
        if not state.credentials:  # never recorded: nothing to compare with
            return keys, salt, fingerprints
        for name, key in keys.items():
            if earned.get(name, "") == fingerprints.get(name, ""):
                continue
            if key.auth_pauses and not key.reason.startswith("auth"):
                # a server-given wait (a 429 after the 403) stays: only the auth
                # pause belongs to the old credentials
                keys[name] = attrs.evolve(key, auth_pauses=0)
            elif key.auth_pauses:
                keys[name] = KeyState(failures=key.failures)
                log.warning(
                    "%s requests were paused for auth (%s); the credentials changed "
                    "since: trying at once",
                    name,
                    shown(key.reason),
                )
        return keys, salt, fingerprints

    async def _persist_keys(self, store: Store, now: datetime, **changes: Any) -> None:
        """Keep the key states (and ``changes``) in the database: a restarted source
        restores them, ``status`` shows them from outside."""
        await self._state.commit(store.save_state, keys=self._queue.key_states(now), **changes)

    async def status(self, now: datetime | None = None) -> dict[str, Any]:
        """A snapshot of the source's state for operators (JSON-serialisable)."""
        async with self._hooks:
            store = await self._db.ensure()
            if store is None:
                return {"disabled": self._db.disabled or "shut down"}
            now = check_now(now) if now is not None else datetime.now(UTC)
            # the live key states, so that the keys shown and the health agree
            live = attrs.evolve(self._state.current, keys=self._queue.key_states(now))
            status = await build_status(store, live, now, self.settings)
            status["queue"] = {kind.value: self._queue.count(kind) for kind in Kind}
            return status
