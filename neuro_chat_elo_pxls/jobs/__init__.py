"""The jobs (internal): one module per kind of work (pull and confirm, sweep,
enrichment, follow, profile reads, pending observations), each the only writer of its
own state (the key states are the queue's: profile reads ask it to pace the key).
:func:`build_jobs` makes them for one source, in priority order, and wires who hears
of profile reads."""

from __future__ import annotations

import attrs

from ..engine.job import Job
from ..engine.queue import CommandQueue
from ..engine.state import StateKeeper
from ..settings import PxlsSettings
from .enrichment import EnrichmentWindow
from .follow import FollowList
from .observations import PendingObservations
from .profiles import ProfileVisits
from .pull import Pull
from .sweep import Sweep


@attrs.frozen
class Jobs:
    """One source's jobs; :meth:`ordered` is the priority order the engine runs."""

    pull: Pull
    enrich: EnrichmentWindow
    follow: FollowList
    sweep: Sweep
    observations: PendingObservations
    profiles: ProfileVisits

    def ordered(self) -> list[Job]:
        return [self.pull, self.enrich, self.follow, self.sweep, self.observations, self.profiles]


def build_jobs(settings: PxlsSettings, state: StateKeeper, queue: CommandQueue) -> Jobs:
    """The jobs of one source, on the engine's ``state`` and ``queue``."""
    observations = PendingObservations()
    pull = Pull(
        state, settings.leaderboard_interval, observations, hold_new=settings.profiles_enabled
    )
    enrich = EnrichmentWindow(settings.enrichment_hold, state, settings.secret_envs[0])
    follow = FollowList(settings, state)
    sweep = Sweep(state, settings.sweep_interval, settings.profile_cooldown)
    # the listeners that do not await first: a read cancelled at enrichment's await
    # has its count observed and its visit counted already
    listeners = (observations, follow, sweep, enrich)
    profiles = ProfileVisits(settings, queue, state, listeners)
    return Jobs(pull, enrich, follow, sweep, observations, profiles)
