"""The engine: the one engine state, the command queue, and the machinery on them.

:class:`Engine` owns the :class:`~.state.StateKeeper` (the persisted engine state),
the :class:`~.queue.CommandQueue` (with every key's state), the
:class:`~.processor.Processor` (with the failure policy) and the
:class:`~.clockguard.ClockGuard`. It knows no job: the tick (:mod:`..jobs.tick`)
plans and runs the commands on it. At open it restores the state and the key states,
so that no restart lowers a pause (DESIGN 4); other credentials than a pause was
earned with may try that key at once. Times are the host's ``now`` (aware UTC).
"""

from __future__ import annotations

import logging
import random
import secrets
from datetime import datetime

import attrs

from ..settings import PxlsSettings, check_database_instance, credentials_fingerprint
from ..store.writer import Store
from ..util.text import shown
from .clockguard import ClockGuard
from .policy import FailurePolicy, pacing_gap
from .processor import Processor
from .queue import CommandQueue, Key, Kind
from .state import EngineState, KeyState, StateKeeper

log = logging.getLogger("neuro_chat_elo_pxls")


#: the leaderboard fingerprint recorded when no PXLS_CF_AUTH is set
NO_CREDENTIALS = "none"


class Engine:
    """See the module docstring. ``rng``: the failure policy's jitter (tests and the
    simulator pass a seeded one)."""

    def __init__(self, settings: PxlsSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.state = StateKeeper()
        self.queue = CommandQueue()
        self.state.track_keys(self.queue.key_states)
        policy = FailurePolicy(settings, rng or random.Random())
        self.processor = Processor(self.queue, self.state, policy)
        self.clock = ClockGuard(settings)

    async def restore(self, store: Store) -> None:
        """The database just opened: restore the engine state and the key states, and
        record what this source runs with. Raises :class:`~..errors.StoreError` (the
        database belongs to another instance) and what the store raises."""
        loaded = EngineState.from_rows(await store.load_state_rows())
        self.state.adopt(loaded)  # (without the key states: they go to the queue)
        check_database_instance(loaded.instance, self.settings)
        instance = self.settings.instance_name
        keys, salt, fingerprints = self._restored_keys(loaded)
        self.queue.restore(keys)
        # what this source runs with, for ``status`` from another process
        await self.state.commit(
            store.save_state,
            profiles_enabled=self.settings.profiles_enabled,
            keys=keys,
            credentials=fingerprints[Key.PROFILE.value],
            leaderboard_credentials=fingerprints[Key.LEADERBOARD.value],
            credentials_salt=salt,
            instance=instance,
        )
        if not self.settings.profiles_enabled:
            log.warning(
                "%s is not set: no profile is requested (no Discord names or factions); "
                "new users' deltas are handed out at once. Set %s (and %s for pxls.space).",
                self.settings.secret_envs[0],
                self.settings.secret_envs[0],
                self.settings.secret_envs[1],
            )

    def live_state(self, now: datetime) -> EngineState:
        """The engine state with the live key states (what ``status`` shows, so that
        the keys shown and the health agree)."""
        return attrs.evolve(self.state.current, keys=self.queue.key_states(now))

    def queued(self) -> dict[str, int]:
        """Queued commands per kind (for ``status``)."""
        return {kind.value: self.queue.count(kind) for kind in Kind}

    def _restored_keys(self, state: EngineState) -> tuple[dict[str, KeyState], str, dict[str, str]]:
        """The persisted key states to restore, the salt and this source's credentials
        fingerprint per key. Auth pauses earned with other credentials than that key
        sends now are lifted (logged): a new PXLS_TOKEN lifts the profile key's only."""
        salt = state.credentials_salt or secrets.token_hex(16)
        fingerprints = {
            Key.PROFILE.value: credentials_fingerprint(self.settings, salt),
            # recorded as "none" without PXLS_CF_AUTH: "" is a database from before the
            # per-key fingerprints, whose leaderboard pause is kept (nothing to compare)
            Key.LEADERBOARD.value: credentials_fingerprint(self.settings, salt, profiles=False)
            or NO_CREDENTIALS,
        }
        earned = {
            Key.PROFILE.value: state.credentials,
            Key.LEADERBOARD.value: state.leaderboard_credentials
            or fingerprints[Key.LEADERBOARD.value],
        }
        keys = dict(state.keys)
        if not state.credentials and not state.leaderboard_credentials:
            # never recorded (a database from before the fingerprints): nothing to
            # compare with. (A recorded profile "" is "no secrets": a token set since
            # is new credentials, as a PXLS_CF_AUTH set since is for every key.)
            return keys, salt, fingerprints
        for name, key in keys.items():
            if earned.get(name, "") == fingerprints.get(name, ""):
                continue
            if key.auth_pauses and not key.reason.startswith("auth"):
                # a server-given wait (a 429 after the 403) stays: only the auth
                # pause belongs to the old credentials
                keys[name] = attrs.evolve(key, auth_pauses=0)
            elif key.auth_pauses:
                keys[name] = self._lifted(name, key)
                log.warning(
                    "%s requests were paused for auth (%s); the credentials changed "
                    "since: trying again now (profiles once their cooldown allows)",
                    name,
                    shown(key.reason),
                )
        return keys, salt, fingerprints

    def _lifted(self, name: str, key: KeyState) -> KeyState:
        """``key`` with its auth pause lifted: the pause goes, the pacing after the
        request that earned it stays (``paused_at`` is that request's tick). A key keeps
        one pause, so the 403's had replaced the pacing, and lifting it whole let a
        renewed token send a profile request 148 s after the 403 at a 300 s cooldown
        (simulator seed 9305)."""
        gap = pacing_gap(self.settings.profile_cooldown) if name == Key.PROFILE.value else None
        if gap is None or key.paused_at is None or key.ready_at is None:
            return KeyState(failures=key.failures)
        ready = min(key.ready_at, key.paused_at + gap)
        return KeyState(ready, f"{name} pacing", key.failures, 0, key.paused_at)
