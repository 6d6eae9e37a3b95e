"""The invariants checked as a run goes (:class:`Checker`) and how a broken one is
reported (:class:`Violation`, with the command that replays its seed)."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from ...models import EloDelta
from ...settings import PxlsSettings
from .people import PROFILE, Generation, Person

#: stats.json is regenerated this often: a pull is due at most once per period, and
#: while profile counts wait for their canvas ``/info`` is asked once per period too.
REGENERATION = timedelta(minutes=15)
#: How far back a setback (a failed, cancelled or fruitless leaderboard request, or a
#: host disturbance) may cause a retry inside the rolling hour: the longest backoff
#: and the longest "look again" wait are 15 minutes (a longer server-given wait pauses
#: the key: its retry replaces a scheduled pull, it does not add one).
RETRY_REACH = timedelta(minutes=15)
#: Requests a rolling hour may see beyond the schedule and one per setback: a pull is
#: due 90 s after a generation that pxls stamps 5-60 s after its 15-minute boundary, so
#: two pulls one interval apart may fall within one rolling hour (interval 1 h) or a
#: rolling hour may hold one pull more than the grid (0 fails: seeds 56 and 74).
PER_HOUR_SLACK = {"info": 1, "stats": 1}


def _ceil_div(a: timedelta, b: timedelta) -> int:
    return -(-a // b)


class Served(Protocol):
    """What the checker reads of the model pxls when a request is sent or answered."""

    @property
    def now(self) -> datetime: ...
    @property
    def in_flight(self) -> int: ...
    @property
    def skewed(self) -> bool: ...


@attrs.define
class Violation:
    seed: int
    invariant: str
    detail: str

    def line(self, hours: float) -> str:
        return (
            f"seed {self.seed}: {self.invariant}: {self.detail} "
            f"(replay: python -m neuro_chat_elo_pxls.testing.simulate --seed {self.seed} "
            f"--hours {hours:g})"
        )


@attrs.define
class Checker:
    """Checks the invariants as the run goes (see the package docstring)."""

    seed: int
    cooldown: timedelta
    #: the instance's name in violations (empty: the host has one pxls source)
    label: str = ""
    #: the instance's settings (the per-hour bounds are derived from them)
    settings: PxlsSettings | None = None
    violations: list[Violation] = attrs.field(factory=list)
    _seen: set[str] = attrs.field(factory=set)
    forbidden: dict[str, tuple[datetime, str]] = attrs.field(factory=dict)
    last_profile_at: datetime | None = None
    per_hour: dict[str, deque[datetime]] = attrs.field(factory=lambda: defaultdict(deque))
    #: true times of setbacks of the leaderboard key (each may cause one retry pull)
    setbacks: deque[datetime] = attrs.field(factory=deque)
    #: per endpoint, the most requests a rolling hour saw over its bound (negative:
    #: under it; a figure of the run, for tuning the bound)
    per_hour_peak: dict[str, int] = attrs.field(factory=dict)
    per_hour_peak_at: dict[str, datetime] = attrs.field(factory=dict)
    seqs: dict[int, EloDelta] = attrs.field(factory=dict)
    ledger: list[EloDelta] = attrs.field(factory=list)
    #: name → true times its profile was answered (successfully, not cancelled)
    profile_answers: dict[str, list[datetime]] = attrs.field(factory=lambda: defaultdict(list))
    generations_served: list[Generation] = attrs.field(factory=list)

    def fail(self, invariant: str, detail: str, *, once: bool = True) -> None:
        if once and invariant in self._seen:
            return
        self._seen.add(invariant)
        if self.label:
            detail = f"[{self.label}] {detail}"
        self.violations.append(Violation(self.seed, invariant, detail))

    def request(self, world: Served, key: str, endpoint: str) -> None:
        now = world.now
        if world.in_flight:
            self.fail("one request in flight", f"{endpoint} sent at {now} with another pending")
        forbidden = self.forbidden.get(key)
        wrong_clock = world.skewed  # a clock far ahead makes every wait look over: the
        # source cannot know; such a tick's requests are not held against it
        if wrong_clock:
            # (and it ends the wait: the pacing that tick sets replaces it, and is pulled
            # back to its own length on the next sane tick. A known limit, documented.)
            self.forbidden.pop(key, None)
        elif forbidden is not None and now < forbidden[0]:
            self.fail(
                f"{key} waits honoured",
                f"{endpoint} sent at {now:%m-%d %H:%M:%S}, "
                f"{(forbidden[0] - now).total_seconds():.0f} s before the wait after "
                f"{forbidden[1]} ended",
            )
        if key == PROFILE:
            early = self.last_profile_at is not None and now - self.last_profile_at < self.cooldown
            if early and not wrong_clock and self.last_profile_at is not None:
                self.fail(
                    "profile cooldown",
                    f"profile requests {(now - self.last_profile_at).total_seconds():.3f} s "
                    f"apart at {now:%m-%d %H:%M:%S} (cooldown "
                    f"{self.cooldown.total_seconds():g} s)",
                )
            self.last_profile_at = now
        else:
            times = self.per_hour[endpoint]
            times.append(now)
            while times and times[0] <= now - timedelta(hours=1):
                times.popleft()
            bound = self.per_hour_bound(endpoint, now)
            over = len(times) - bound
            if over > self.per_hour_peak.get(endpoint, over - 1):
                self.per_hour_peak[endpoint] = over
                self.per_hour_peak_at[endpoint] = now
            if over > 0:
                self.fail(
                    f"{endpoint} requests per hour bounded",
                    f"{len(times)} {endpoint} requests in the hour before {now:%m-%d %H:%M}, "
                    f"bound {bound}",
                )

    def setback(self, at: datetime) -> None:
        """A leaderboard request that brought nothing (a fault, a cancellation, a
        stale file or canvas code) or a host disturbance (a cancelled or wrong-clock
        tick, a crash, a restart) at true time ``at``: the source may retry once."""
        self.setbacks.append(at)

    def per_hour_bound(self, endpoint: str, now: datetime) -> int:
        """The most ``/info`` (``endpoint="info"``) or stats.json requests the rolling
        hour before ``now`` may see, derived from the instance's settings.

        ``info <= P + C + 1 + S`` and ``stats <= P + 1 + S``. A pull (``/info`` then
        stats.json) is due once per ``leaderboard_interval``
        rounded up to whole 15-minute regenerations (pull.py's ``_next``): ``P =
        60 min / (15 min * ceil(interval / 15 min))`` pulls an hour (4, 2 or 1). While
        profile counts wait for their canvas, ``/info`` is also asked 15 minutes after
        the last ``/info`` (observations.py's ``CONFIRM_EVERY``): ``C = 4`` an hour
        (0 without profiles). The confirm grid is not the pull grid (a confirm may run
        a minute before a pull), so the two add up: 8, 6 or 5 ``/info`` an hour. The
        ``1`` is :data:`PER_HOUR_SLACK` (a pull's time jitters by up to a minute).
        ``S`` counts the setbacks in the hour and the :data:`RETRY_REACH` before it;
        each allows one more of each (a failed or fruitless pull is retried whole,
        ``/info`` then stats.json): a faulty, cancelled or flapping answer, a stale
        file (not newer than the last, or from before a reset: seed 217), a
        cancelled tick, a crash or restart, and a wrong-clock tick twice (its pull and
        the pull after the clock is back). Pulls or confirms twice as often break it
        (tests/test_simulate.py plants both); 300 seeds hold it with nothing to spare
        (no slack fails)."""
        assert self.settings is not None, "the checker's settings are set by the host"
        settings = self.settings
        periods = _ceil_div(settings.leaderboard_interval, REGENERATION)
        pulls = _ceil_div(timedelta(hours=1), REGENERATION * periods)
        confirms = _ceil_div(timedelta(hours=1), REGENERATION) if settings.profiles_enabled else 0
        normal = pulls + confirms if endpoint == "info" else pulls
        since = now - timedelta(hours=1) - RETRY_REACH
        setbacks = self.setbacks  # (in time order, as the run goes)
        while setbacks and setbacks[0] < since:
            setbacks.popleft()
        return normal + PER_HOUR_SLACK[endpoint] + len(setbacks)

    def server_wait(self, key: str, until: datetime, why: str) -> None:
        current = self.forbidden.get(key)
        if current is None or until > current[0]:
            self.forbidden[key] = (until, why)

    def new_credentials(self) -> None:
        """A restart with other credentials may try profiles at once (DESIGN 4)."""
        key_wait = self.forbidden.get(PROFILE)
        if key_wait is not None and key_wait[1] in ("forbidden", "challenge"):
            del self.forbidden[PROFILE]

    def served_generation(self, generation: Generation) -> None:
        self.generations_served.append(generation)

    def served_profile(self, world: Served, name: str, person: Person) -> None:
        self.profile_answers[name].append(world.now)

    def collected(self, deltas: Iterable[EloDelta]) -> None:
        for delta in deltas:
            if delta.delta == 0:  # DESIGN 1: a zero delta is not emitted
                self.fail("no zero delta", f"seq {delta.seq}: {delta}")
            seen = self.seqs.get(delta.seq)
            if seen is not None and self.settings is not None and self.settings.delivery == "drain":
                # DESIGN 3: no delta handed out twice (drain removes what it hands out)
                self.fail("a drained delta is handed out once", f"seq {delta.seq} again: {delta}")
            if seen is not None:
                # the same delta again (ack: at least once), or with its Discord name and
                # faction erased in between (the person opted out: DESIGN 10)
                scrubbed = attrs.evolve(seen, discord=None, faction=None)
                if seen != delta and delta != scrubbed:
                    self.fail("no seq reused", f"seq {delta.seq}: {seen} then {delta}")
                continue
            if self.ledger and delta.seq < self.ledger[-1].seq:
                self.fail("seq increases", f"seq {delta.seq} after {self.ledger[-1].seq}")
            self.seqs[delta.seq] = delta
            self.ledger.append(delta)
