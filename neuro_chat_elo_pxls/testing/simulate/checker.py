"""The invariants checked as a run goes (:class:`Checker`) and how a broken one is
reported (:class:`Violation`, with the command that replays its seed)."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol

import attrs

from ...models import EloDelta
from .people import PROFILE, Generation, Person

#: Requests per rolling hour an endpoint may see (a normal hour: 4-8 of each).
MAX_PER_HOUR = {"info": 40, "stats": 30}


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
    violations: list[Violation] = attrs.field(factory=list)
    _seen: set[str] = attrs.field(factory=set)
    forbidden: dict[str, tuple[datetime, str]] = attrs.field(factory=dict)
    last_profile_at: datetime | None = None
    per_hour: dict[str, deque[datetime]] = attrs.field(factory=lambda: defaultdict(deque))
    seqs: dict[int, EloDelta] = attrs.field(factory=dict)
    ledger: list[EloDelta] = attrs.field(factory=list)
    #: name → true times its profile was answered (successfully, not cancelled)
    profile_answers: dict[str, list[datetime]] = attrs.field(factory=lambda: defaultdict(list))
    generations_served: list[Generation] = attrs.field(factory=list)

    def fail(self, invariant: str, detail: str, *, once: bool = True) -> None:
        if once and invariant in self._seen:
            return
        self._seen.add(invariant)
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
            if len(times) > MAX_PER_HOUR[endpoint]:
                self.fail(
                    f"{endpoint} requests per hour bounded",
                    f"{len(times)} {endpoint} requests in the hour before {now:%m-%d %H:%M}",
                )

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
