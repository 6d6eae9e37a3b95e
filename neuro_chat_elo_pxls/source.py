"""``PxlsSource``: the pxls.space source the host registers as a pluggy plugin.

The host drives it with :meth:`PxlsSource.on_tick` (host time ``now``, aware UTC)
and drains contributions with :meth:`PxlsSource.collect_deltas`. Each tick:

1. timers: enqueue the leaderboard pull when due (Timer 1); start or feed the
   profile sweep (Timer 2); release held first deltas older than ``enrichment_hold``;
2. run at most one command that sends requests (one request in flight at a time).

Every failure is caught and logged: a tick never raises into the host's loop.
"""

from __future__ import annotations

import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from .client import PxlsApi, PxlsClient
from .errors import (
    AuthError,
    NotFoundError,
    PxlsError,
    RateLimitedError,
    StoreError,
)
from .hookspecs import hookimpl
from .models import EloDelta, Snapshot
from .processor import Backoff, Command, CommandQueue, Key, Kind
from .settings import CF_AUTH_ENV, TOKEN_ENV, PxlsSettings
from .store import Store, from_ts, ts

log = logging.getLogger("neuro_chat_elo_pxls")

#: How many sweep / enrichment commands wait in the queue at once (the rest stay in
#: the database, so the queue stays small and a restart loses nothing).
SWEEP_WINDOW = 8
ENRICH_WINDOW = 16
#: Profile requests are spaced by ``profile_cooldown`` times this, so that event-loop
#: and network jitter never make pxls.space see two requests closer than promised.
PACING_MARGIN = 1.02
#: After a stale or unchanged stats.json, look again this much sooner than the interval.
STALE_RETRY = timedelta(minutes=15)


def _check_now(now: object) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise TypeError(f"now must be an aware datetime (UTC), got {now!r}")
    return now.astimezone(UTC)


def _fmt_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


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
        self._backoff = Backoff(
            settings.backoff_initial, settings.backoff_max, rng or random.Random()
        )
        self._store: Store | None = None
        self._state: dict[str, str] = {}
        self._disabled: str | None = None
        self._closed = False
        self._next_hold_release: datetime | None = None
        self._profile_problem = ""
        self._sweep_logged = 0
        self._sweep_remaining: int | None = None  # progress estimate, from the db on resume
        self._sweep_cursor = (0, 0)  # last id queued in the dirty and the clean phase
        self._enrich_given_up: set[int] = set()  # retried after the next pull
        self._enrich_backlog = False
        self._handed_out = 0  # ack delivery: highest seq returned since open

    def __repr__(self) -> str:
        return f"PxlsSource(base_url={self.settings.base_url!r}, db_path={self.settings.db_path!r})"

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Open the database and rebuild the queue from it. Raises :class:`StoreError`."""
        if self._store is not None:
            return
        if self._closed:
            raise StoreError("the source was shut down")
        store = await Store.open(self.settings.db_path)
        self._store = store
        self._state = await store.get_state()
        if not self.settings.profiles_enabled:
            self._profile_problem = f"{TOKEN_ENV} is not set"
            log.warning(
                "%s is not set: no profile is requested (no Discord names or factions); "
                "new users' deltas are handed out at once. Set %s (and %s for pxls.space).",
                TOKEN_ENV,
                TOKEN_ENV,
                CF_AUTH_ENV,
            )
            released = await store.release_held(None)
            if released:
                log.warning("released %d held deltas without Discord/faction", released)
        ready = from_ts(self._state.get("profile_ready_at"))
        if ready is not None:
            self._queue.cool(Key.PROFILE, ready, "profile pacing (before the restart)")
        self._next_hold_release = await self._hold_deadline()
        log.info(
            "pxls source open: db=%s canvas=%s queued=%d",
            self.settings.db_path,
            self._state.get("canvas", "-"),
            len(self._queue),
        )

    async def _ensure_open(self) -> Store | None:
        if self._store is not None:
            return self._store
        if self._disabled is not None or self._closed:
            return None
        try:
            await self.open()
        except StoreError as exc:
            self._disabled = str(exc)
            log.error("pxls source disabled: %s", exc)
            return None
        return self._store

    # -- hooks -----------------------------------------------------------------

    @hookimpl
    async def on_tick(self, now: datetime) -> None:
        """Do the work due at host time ``now`` (aware UTC): at most one request command."""
        try:
            now = _check_now(now)
            store = await self._ensure_open()
            if store is None:
                return
            await self._run_timers(store, now)
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
            store = await self._ensure_open()
            if store is None:
                return []
            if self.settings.delivery == "drain":
                return await store.drain_outbox()
            deltas = await store.peek_outbox(self._handed_out)
            if deltas:
                self._handed_out = deltas[-1].seq
            return deltas
        except Exception:
            log.exception("collect_deltas failed; the deltas stay in the outbox for next time")
            return []

    async def ack_deltas(self, upto_seq: int) -> None:
        """``delivery="ack"``: the host has stored every delta up to ``upto_seq``."""
        store = await self._ensure_open()
        if store is not None:
            await store.ack_outbox(upto_seq)

    @hookimpl
    async def on_shutdown(self) -> None:
        """Close the HTTP session and the database. Idempotent."""
        self._closed = True
        await self._client.close()
        if self._store is not None:
            await self._store.close()
            self._store = None

    @hookimpl
    def next_due_at(self, now: datetime) -> datetime | None:
        """Earliest host time at which a tick has work (``now`` if it has some now)."""
        if self._store is None:
            return None if (self._disabled or self._closed) else now
        feed = None  # an active sweep or an enrichment backlog is fed by the next tick
        if self.settings.profiles_enabled and (self._sweep_active() or self._enrich_backlog):
            feed = max(now, self._queue.state(Key.PROFILE).ready_at or now)
        times = [
            t
            for t in (
                self._pull_due(now),
                self._sweep_due(),
                feed,
                self._next_hold_release,
                self._queue.next_ready_at(now),
            )
            if t is not None
        ]
        return max(now, min(times)) if times else None

    # -- timers ----------------------------------------------------------------

    def _pull_due(self, now: datetime) -> datetime | None:
        if self._queue.count(Kind.PULL):
            return None
        return from_ts(self._state.get("pull_due_at")) or now

    def _sweep_due(self) -> datetime | None:
        if not self.settings.profiles_enabled or self._sweep_active():
            return None
        started = from_ts(self._state.get("sweep_started_at"))
        return None if started is None else started + self.settings.sweep_interval

    def _sweep_active(self) -> bool:
        return "sweep_started_at" in self._state and not self._state.get("sweep_finished_at")

    @property
    def _sweep_number(self) -> int:
        return int(self._state.get("sweep_number", "0"))

    async def _set_state(self, store: Store, **values: str | None) -> None:
        await store.set_state(**values)
        for key, value in values.items():
            if value is None:
                self._state.pop(key, None)
            else:
                self._state[key] = value

    async def _hold_deadline(self) -> datetime | None:
        assert self._store is not None
        earliest = await self._store.earliest_hold()
        return None if earliest is None else earliest + self.settings.enrichment_hold

    async def _run_timers(self, store: Store, now: datetime) -> None:
        due = self._pull_due(now)
        if due is not None and now >= due:
            if "pull_due_at" not in self._state:  # anchor the hourly grid on the first pull
                await self._set_state(store, pull_due_at=ts(now))
            self._queue.push(Command(Kind.PULL))
        if self.settings.profiles_enabled:
            await self._enrich_timer(store)
            await self._sweep_timer(store, now)
        if self._next_hold_release is not None and now >= self._next_hold_release:
            released = await store.release_held(now - self.settings.enrichment_hold)
            if released:
                log.warning(
                    "released %d held first deltas without Discord/faction after %s: "
                    "profile not fetched (%s)",
                    released,
                    _fmt_duration(self.settings.enrichment_hold),
                    self._profile_problem or "profile queue behind",
                )
            self._next_hold_release = await self._hold_deadline()

    async def _enrich_timer(self, store: Store) -> None:
        """Keep up to ENRICH_WINDOW enrichment commands queued (the rest wait in the db)."""
        queued = self._queue.count(Kind.ENRICH)
        if queued > ENRICH_WINDOW // 2:
            return
        exclude = self._enrich_given_up | {
            c.user_id for c in self._queue.of_kind(Kind.ENRICH) if c.user_id is not None
        }
        want = ENRICH_WINDOW - queued
        ids = await store.held_user_ids(want, exclude)
        for user_id in ids:
            self._queue.push(Command(Kind.ENRICH, user_id))
        self._enrich_backlog = len(ids) == want  # maybe more waiting in the database

    async def _sweep_timer(self, store: Store, now: datetime) -> None:
        if not self._sweep_active():
            due = self._sweep_due()
            if due is not None and now < due:
                return
            number = self._sweep_number + 1
            total = await store.count_sweep_remaining(number)
            await self._set_state(
                store,
                sweep_number=str(number),
                sweep_started_at=ts(now),
                sweep_finished_at=None,
                sweep_total=str(total),
            )
            self._sweep_logged, self._sweep_remaining = 0, total
            self._sweep_cursor = (0, 0)
            log.info(
                "sweep %d started: %d users to re-check at <= 1 per %gs",
                number,
                total,
                self.settings.profile_cooldown.total_seconds(),
            )
        queued = self._queue.count(Kind.SWEEP)
        if queued > SWEEP_WINDOW // 2:
            return
        number = self._sweep_number
        if self._sweep_remaining is None:  # resumed after a restart
            self._sweep_remaining = await store.count_sweep_remaining(number)
        after_dirty, after_clean = self._sweep_cursor
        dirty_phase, ids = await store.sweep_ids(number, after_dirty, after_clean, SWEEP_WINDOW)
        if ids:
            self._sweep_cursor = (ids[-1], after_clean) if dirty_phase else (after_dirty, ids[-1])
            for user_id in ids[: SWEEP_WINDOW - queued]:
                self._queue.push(Command(Kind.SWEEP, user_id))  # refused if queued already
        elif self._sweep_cursor != (0, 0):
            self._sweep_cursor = (0, 0)  # one more pass from the start for stragglers
        elif not queued:
            await self._finish_sweep(store, now)

    async def _finish_sweep(self, store: Store, now: datetime) -> None:
        started = from_ts(self._state.get("sweep_started_at")) or now
        took = now - started
        await self._set_state(store, sweep_finished_at=ts(now))
        if took >= self.settings.sweep_interval:
            log.warning(
                "sweep %d finished after %s, longer than sweep_interval %s: the next sweep "
                "starts now (sweeps never overlap)",
                self._sweep_number,
                _fmt_duration(took),
                _fmt_duration(self.settings.sweep_interval),
            )
        else:
            log.info(
                "sweep %d finished after %s; next at %s",
                self._sweep_number,
                _fmt_duration(took),
                ts(started + self.settings.sweep_interval),
            )

    def _log_sweep_progress(self, now: datetime) -> None:
        """Count one visit of the sweep in progress; log every 5 % with an ETA."""
        total = int(self._state.get("sweep_total", "0"))
        if self._sweep_remaining is None or total <= 0:
            return
        self._sweep_remaining = max(0, self._sweep_remaining - 1)
        remaining = self._sweep_remaining
        done = total - remaining
        step = max(1, min(500, total // 20))
        if done - self._sweep_logged < step or remaining == 0:
            return
        self._sweep_logged = done
        started = from_ts(self._state.get("sweep_started_at")) or now
        elapsed = now - started
        eta = elapsed / done * remaining if done else self.settings.profile_cooldown * remaining
        log.info(
            "sweep %d: %d/%d users checked (%.0f%%), ETA %s",
            self._sweep_number,
            done,
            total,
            100 * done / total,
            _fmt_duration(eta),
        )

    # -- commands --------------------------------------------------------------

    async def _run_one(self, store: Store, now: datetime) -> None:
        """Run the first ready command that sends a request (skipping stale ones)."""
        while (entry := self._queue.pop_ready(now)) is not None:
            _, command = entry
            try:
                sent = await self._execute(store, command, now)
            except Exception as exc:  # a bug must not wedge the queue or kill the host
                if not isinstance(exc, PxlsError):
                    log.exception("unexpected error in %s", command.describe())
                await self._on_failure(store, entry, exc, now)
                await self._persist_keys(store, now)
                return
            key_state = self._queue.state(command.key)
            if key_state.failures or key_state.auth_pauses:
                key_state.failures = key_state.auth_pauses = 0
                await self._persist_keys(store, now)
            if sent:
                return

    async def _execute(self, store: Store, command: Command, now: datetime) -> bool:
        """Run ``command``; False if it was stale and sent nothing."""
        if command.kind is Kind.PULL:
            await self._pull(store, now)
            return True
        assert command.user_id is not None
        user = await store.get_user(command.user_id)
        if user is None or not self.settings.profiles_enabled:
            return False  # merged away by a rename, or profiles off
        if command.kind is Kind.SWEEP and user.swept_in >= self._sweep_number:
            return False  # already visited (e.g. by its enrichment)
        ready = now + self.settings.profile_cooldown * PACING_MARGIN
        self._queue.cool(Key.PROFILE, ready, "profile pacing")
        await self._set_state(store, profile_ready_at=ts(ready))  # pacing survives a restart
        sweep = self._sweep_number
        try:
            profile = await self._client.fetch_profile(user.name)
        except NotFoundError:
            released = await store.mark_missing(user.id, now, sweep)
            log.info(
                "profile of %s: 404, name marked missing%s",
                user.name,
                " (first delta released)" if released else "",
            )
        else:
            outcome = await store.apply_profile(user.id, profile, now, sweep)
            if outcome.renamed_from:
                log.info(
                    "rename: %s is now %s (pxls id %s); %d pixels moved from the old name",
                    outcome.renamed_from,
                    user.name,
                    profile.pxls_id,
                    outcome.corrected,
                )
        self._profile_problem = ""
        self._next_hold_release = await self._hold_deadline()
        if self._sweep_active() and user.swept_in < sweep:
            self._log_sweep_progress(now)  # enrichment counts as the visit too
        return True

    async def _pull(self, store: Store, now: datetime) -> None:
        info = await self._client.fetch_info()
        canvas = info.canvas_code
        previous = self._state.get("canvas")
        if canvas != previous:
            changed_at = ts(now) if previous is not None else None
            await self._set_state(
                store, canvas=canvas, canvas_first_seen=ts(now), canvas_changed_at=changed_at
            )
            if previous is None:
                log.info("canvas %s first seen", canvas)
            else:
                log.warning(
                    "canvas reset: %s -> %s; scores restart from 0 on the new canvas",
                    previous,
                    canvas,
                )
        snapshot = await self._client.fetch_stats()
        self._log_rejected(snapshot)
        changed_at_dt = from_ts(self._state.get("canvas_changed_at"))
        last = from_ts(self._state.get("last_generated_at"))
        skip = None
        if changed_at_dt is not None and snapshot.generated_at < changed_at_dt:
            skip = (
                f"stale: generated {ts(snapshot.generated_at)}, "
                f"before canvas {canvas} was first seen"
            )
        elif last is not None and snapshot.generated_at <= last:
            skip = f"generatedAt {ts(snapshot.generated_at)} already processed"
        if skip is not None:
            retry = now + min(STALE_RETRY, self.settings.leaderboard_interval)
            await self._set_state(store, pull_due_at=ts(retry))
            log.info("pull: stats.json skipped (%s); next look at %s", skip, ts(retry))
            return
        state: dict[str, str | None] = {
            "last_generated_at": ts(snapshot.generated_at),
            "last_pull_at": ts(now),
            "pull_due_at": ts(self._next_pull(now)),
        }
        result = await store.ingest(
            canvas, snapshot, now, hold_new=self.settings.profiles_enabled, state=state
        )
        self._state.update({k: v for k, v in state.items() if v is not None})
        log.info(
            "pull at %s: canvas %s, %d users seen, %d new, %d deltas, %d held for enrichment, "
            "%d unchanged, %d -snip- and %d invalid rows skipped",
            now.isoformat(timespec="seconds"),
            canvas,
            result.seen,
            result.new,
            result.deltas,
            result.held,
            result.unchanged,
            snapshot.snipped,
            len(snapshot.rejected),
        )
        self._enrich_given_up.clear()  # the next timer tries them again
        if self.settings.profiles_enabled:
            await self._enrich_timer(store)
        self._next_hold_release = await self._hold_deadline()

    def _next_pull(self, now: datetime) -> datetime:
        """Next due time on the interval grid of the previous due time (no drift)."""
        interval = self.settings.leaderboard_interval
        due = from_ts(self._state.get("pull_due_at")) or now
        due += interval
        if due <= now:
            due = now + interval
        return due

    @staticmethod
    def _log_rejected(snapshot: Snapshot) -> None:
        for reason in snapshot.rejected[:10]:
            log.warning("stats.json row dropped: %s", reason)
        if len(snapshot.rejected) > 10:
            log.warning("stats.json: %d more rows dropped", len(snapshot.rejected) - 10)

    async def _on_failure(
        self, store: Store, entry: tuple[int, Command], exc: Exception, now: datetime
    ) -> None:
        order, command = entry
        key = command.key
        state = self._queue.state(key)
        if key is Key.PROFILE:
            self._profile_problem = str(exc)
        if isinstance(exc, AuthError):
            pause = min(
                self.settings.auth_pause_max,
                self.settings.auth_pause * 2 ** min(state.auth_pauses, 16),
            )
            state.auth_pauses += 1
            level = logging.ERROR if state.auth_pauses == 1 else logging.WARNING
            log.log(
                level,
                "%s: %s; pausing %s requests for %s",
                command.describe(),
                exc,
                key.value,
                _fmt_duration(pause),
            )
            self._queue.cool(key, now + pause, f"auth: {exc}")
            self._queue.put_back(entry)
            return
        if isinstance(exc, RateLimitedError):
            state.failures += 1
            wait = self._backoff.delay(state.failures, exc.retry_after)
            log.warning(
                "%s: %s; backing off %s for %s",
                command.describe(),
                exc,
                key.value,
                _fmt_duration(wait),
            )
            self._queue.cool(key, now + wait, f"rate limited: {exc}")
            self._queue.put_back(entry)
            return
        attempts = command.attempts + 1
        if attempts >= self.settings.max_attempts:
            log.error(
                "giving up on %s after %d attempts: %s; the next timer tries again",
                command.describe(),
                attempts,
                exc,
            )
            state.failures = 0
            await self._give_up(store, command, now)
            return
        state.failures += 1
        wait = self._backoff.delay(state.failures)
        log.warning(
            "%s failed (attempt %d/%d): %s; backing off %s for %s",
            command.describe(),
            attempts,
            self.settings.max_attempts,
            exc,
            key.value,
            _fmt_duration(wait),
        )
        self._queue.cool(key, now + wait, f"backoff: {exc}")
        self._queue.put_back((order, Command(command.kind, command.user_id, attempts)))

    async def _give_up(self, store: Store, command: Command, now: datetime) -> None:
        if command.kind is Kind.PULL:
            await self._set_state(store, pull_due_at=ts(self._next_pull(now)))
        elif command.kind is Kind.SWEEP and command.user_id is not None:
            await store.mark_swept(command.user_id, self._sweep_number)
        elif command.kind is Kind.ENRICH and command.user_id is not None:
            # stays held: enrichment_hold releases it; the next pull retries it
            self._enrich_given_up.add(command.user_id)

    # -- operators -------------------------------------------------------------

    async def status(self, now: datetime | None = None) -> dict[str, Any]:
        """A snapshot of the source's state for operators (JSON-serialisable)."""
        store = await self._ensure_open()
        if store is None:
            return {"disabled": self._disabled or "shut down"}
        now = _check_now(now) if now is not None else datetime.now(UTC)
        status = await build_status(store, self._state, now, self.settings)
        status["queue"] = {kind.value: self._queue.count(kind) for kind in Kind}
        status["keys"] = self._key_states(now)
        return status

    def _key_states(self, now: datetime) -> dict[str, dict[str, Any]]:
        keys = {}
        for key in Key:
            st = self._queue.state(key)
            cooling = st.cooling(now) and st.ready_at is not None
            keys[key.value] = {
                "cooling_until": ts(st.ready_at) if cooling and st.ready_at else None,
                "reason": st.reason if cooling else "",
                "consecutive_failures": st.failures,
            }
        return keys

    async def _persist_keys(self, store: Store, now: datetime) -> None:
        """Keep the backoff state in the database, so ``status`` can show it from outside."""
        await self._set_state(store, keys=json.dumps(self._key_states(now)))


async def build_status(
    store: Store, state: dict[str, str], now: datetime, settings: PxlsSettings
) -> dict[str, Any]:
    """Operators' view of a database: canvas, counts, last pull, sweep with ETA, keys.

    Works on a read-only store too (the ``status`` command while a source runs);
    then the queue is derived from the database and key states are the persisted ones.
    """
    counts = await store.counts()
    sweep_active = "sweep_started_at" in state and not state.get("sweep_finished_at")
    number = int(state.get("sweep_number", "0"))
    sweep: dict[str, Any] = {
        "number": number,
        "active": sweep_active,
        "started_at": state.get("sweep_started_at"),
        "finished_at": state.get("sweep_finished_at"),
    }
    if sweep_active:
        total = int(state.get("sweep_total", "0"))
        remaining = await store.count_sweep_remaining(number)
        started = from_ts(state.get("sweep_started_at")) or now
        done = max(0, total - remaining)
        elapsed = (now - started).total_seconds()
        rate_eta = elapsed / done * remaining if done else None
        floor = settings.profile_cooldown.total_seconds() * remaining
        sweep.update(
            total=total,
            remaining=remaining,
            done=done,
            eta_seconds=round(max(floor, rate_eta or 0.0)),
        )
    keys: dict[str, Any] = json.loads(state.get("keys", "{}"))
    return {
        "db_path": settings.db_path,
        "canvas": state.get("canvas"),
        "canvas_first_seen": state.get("canvas_first_seen"),
        "last_pull_at": state.get("last_pull_at"),
        "last_generated_at": state.get("last_generated_at"),
        "next_pull_at": state.get("pull_due_at"),
        "profiles_enabled": settings.profiles_enabled,
        **counts,
        "queue": {
            "pull": 0,
            "enrich": counts["awaiting_enrichment"],
            "sweep": sweep.get("remaining", 0),
        },
        "sweep": sweep,
        "keys": keys,
    }
