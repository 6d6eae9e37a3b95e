"""One pxls instance of the model deployment (:class:`Instance`): a model site (its
own :class:`~.world.World`, people, base URL and faults), the source that follows it
(its settings, database, follow file and transport), and the :class:`~.checker.Checker`
of that site's invariants. The model host holds one to three of them, every source
registered in one PluginManager."""

from __future__ import annotations

import os
import random
from datetime import datetime, timedelta

import attrs

from ...pxls.client import PxlsClient
from ...settings import PxlsSettings, Secret
from ...source import PxlsSource
from .checker import Checker
from .wire import WireTransport
from .world import World

#: How many pxls instances a seed's host runs (drawn apart from the seed's other draws).
INSTANCE_COUNTS = (1, 1, 2, 3)


def instance_count(seed: int) -> int:
    """How many pxls instances seed ``seed``'s host runs (1-3)."""
    return random.Random(f"instances-{seed}").choice(INSTANCE_COUNTS)


def draw_cooldown(rng: random.Random) -> timedelta:
    return rng.choice(
        (timedelta(seconds=1), timedelta(seconds=30), timedelta(minutes=2), timedelta(minutes=5))
    )


@attrs.define(eq=False)
class Instance:
    """A model site and the source that follows it.

    ``rng`` draws everything about this instance (its world, settings and the host's
    choices about it); for the first instance it is the host's own generator, so a
    seed with one instance runs exactly as before instances existed. ``name`` is the
    explicit ``instance`` setting (None for the first: its deltas carry the host name
    of its ``base_url``, ``simulated.invalid``)."""

    number: int
    rng: random.Random
    name: str | None
    world: World
    checker: Checker
    workdir: str
    follow_path: str
    token: int = 1
    settings: PxlsSettings = attrs.field(init=False)
    wire: WireTransport = attrs.field(init=False)
    source: PxlsSource | None = None
    followed_config: list[str] = attrs.field(factory=list)
    followed_file: list[str] = attrs.field(factory=list)
    use_file: bool = False
    file_good: bool = True
    fifo: bool = False
    #: when a batch of this instance's deltas was stored and not acknowledged
    unacked: list[datetime] = attrs.field(factory=list)
    final_status: dict[str, object] = attrs.field(factory=dict)

    @classmethod
    def drawn(
        cls,
        number: int,
        rng: random.Random,
        wire_rng: random.Random,
        start: datetime,
        end: datetime,
        workdir: str,
        seed: int,
        cooldown: timedelta | None = None,
    ) -> Instance:
        """An instance drawn from ``rng`` in the order the one-instance host drew
        (cooldown, world, followed people, settings). The first instance (number 1)
        keeps the paths and URL of a one-instance run; instance ``n`` > 1 is
        ``event{n}`` at ``http://event{n}.simulated.invalid``."""
        if cooldown is None:
            cooldown = draw_cooldown(rng)
        name = None if number == 1 else f"event{number}"
        checker = Checker(seed, cooldown)
        world = World(rng, start, end, checker, wire_rng)
        suffix = "" if name is None else f"-{name}"
        inst = cls(
            number,
            rng,
            name,
            world,
            checker,
            workdir,
            os.path.join(workdir, f"follow{suffix}.txt"),
        )
        inst._add_followed_people(start)
        inst.settings = inst._drawn_settings(cooldown)
        checker.settings = inst.settings
        inst.wire = WireTransport(world, inst.settings)
        return inst

    @property
    def instance_name(self) -> str:
        """What this instance's deltas carry as ``instance``."""
        return self.settings.instance_name

    @property
    def base_url(self) -> str:
        return (
            "http://simulated.invalid"
            if self.name is None
            else f"http://{self.name}.simulated.invalid"
        )

    def _add_followed_people(self, start: datetime) -> None:
        """People outside the toplist (few pixels), followed half by the config and
        half by the follow file (written now, with a comment and a bad line)."""
        rng, world = self.rng, self.world
        outside = [
            world._add_person(f"swarm_{i}", start, rate=rng.choice((0.2, 1.0, 3.0)))
            for i in range(rng.choice((0, 3, 6, 12)))
        ]
        for p in outside:
            p.count = min(p.count, 30)
            p.history[world.canvas] = [(start - timedelta(days=1), p.count)]
        self.followed_config = [p.name for p in outside[: len(outside) // 2]]
        self.followed_file = [p.name for p in outside[len(outside) // 2 :]]
        self.file_good = True
        self.use_file = bool(self.followed_file) or rng.random() < 0.3
        if self.use_file:
            self.write_follow_file([*self.followed_file, "# comment", "not a name!"])

    def _drawn_settings(self, cooldown: timedelta) -> PxlsSettings:
        """The source's settings, drawn (the draws' order is the run's)."""
        rng = self.rng
        suffix = "" if self.name is None else f"-{self.name}"
        return PxlsSettings(
            base_url=self.base_url,
            db_path=os.path.join(self.workdir, f"pxls{suffix}.sqlite3"),
            token=Secret(f"sim-token-{self.token}"),
            cf_auth=None,
            profile_endpoint=self.world.endpoint,
            delivery=rng.choice(("drain", "ack")),
            leaderboard_interval=rng.choice(
                (timedelta(minutes=5), timedelta(minutes=20), timedelta(hours=1))
            ),
            sweep_interval=rng.choice(
                (timedelta(hours=3), timedelta(hours=8), timedelta(hours=24))
            ),
            profile_cooldown=cooldown,
            enrichment_hold=rng.choice((timedelta(minutes=20), timedelta(hours=1))),
            follow=tuple(self.followed_config),
            follow_file=self.follow_path if self.use_file else None,
            follow_factions=(3680,) if rng.random() < 0.3 else (),
            follow_interval=rng.choice((timedelta(minutes=30), timedelta(hours=1))),
            instance=self.name,
        )

    def new_source(self) -> PxlsSource:
        """A new source for this instance (the real client, its requests answered by
        this instance's model site through its transport)."""
        client = PxlsClient(self.settings, transport=self.wire)
        self.source = PxlsSource(self.settings, client=client, rng=random.Random(self.rng.random()))
        return self.source

    def renew_token(self, at: datetime) -> None:
        """The operator renewed this instance's token at ``at`` (the site's outage
        in progress ends)."""
        self.token += 1
        self.settings = attrs.evolve(self.settings, token=Secret(f"sim-token-{self.token}"))
        self.checker.settings = self.settings
        self.world.faults.end_outages(at)
        self.checker.new_credentials()

    def write_follow_file(self, lines: list[str]) -> None:
        tmp = self.follow_path + ".new"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(tmp, self.follow_path)
