"""``run`` and ``demo``: the standalone host (:mod:`..host`), against pxls.space (or
``--base-url``), or against the local stand-in on an accelerated clock."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
import urllib.parse
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TextIO

from ..errors import ConfigError
from ..host import Clock, OutputError, Totals, install_signal_handlers, run_host
from ..settings import TOKEN_ENV, instance_env
from ..util.clock import JumpClock, SimClock
from ..util.logs import event
from . import hangup
from .config import OutputFile, configured_instances, load_config, open_output

if TYPE_CHECKING:
    from ..testing.standin import PxlsStandIn

log = logging.getLogger("neuro_chat_elo_pxls")

#: where the demo's simulated time starts (without --speed): a fixed instant, so a seed's
#: run is the same every time
DEMO_START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _trial_clock_on_this_machine_only(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """``--speed``/``--sim-*`` (a trial's shared clock) only against instances on this
    machine: an accelerated clock would send pxls.space more than its admins allowed.
    Raises :class:`ConfigError`."""
    if args.speed == 1.0 and args.sim_start is None and args.sim_epoch is None:
        return
    for settings in configured_instances(config):
        host = (urllib.parse.urlsplit(settings.base_url).hostname or "").lower()
        if host not in ("localhost", "::1") and not host.startswith("127."):
            raise ConfigError(
                f"--speed, --sim-start and --sim-epoch are for a trial against the local "
                f"stand-in; {settings.base_url} is not on this machine"
            )


#: ``run``'s exit status when the deltas could not be written (EX_TEMPFAIL): a service
#: manager restarts it (2 means a configuration mistake, and is not restarted)
EXIT_OUTPUT_FAILED = 75


async def run_command(args: argparse.Namespace) -> int:
    """``run``: the standalone host on the configured instances until a signal; the
    exit status (:data:`EXIT_OUTPUT_FAILED` when the out-file failed)."""
    config = load_config(args)
    _trial_clock_on_this_machine_only(args, config)
    # (no warning here when PXLS_TOKEN is unset: the source's own start-up says it once)
    stop = asyncio.Event()
    try:
        out = open_output(args.out)
    except OSError as exc:  # e.g. the file cannot grow to close off a partial last line
        return _output_failed(
            args, f"cannot open it: {exc.strerror or exc}; every delta stays in the database"
        )
    install_signal_handlers(stop, out.reopen if isinstance(out, OutputFile) else None)
    take_early_hangups(out, args.out)
    status = 0
    try:
        clock = SimClock(
            start=datetime.fromisoformat(args.sim_start) if args.sim_start else None,
            speed=args.speed,
            epoch=args.sim_epoch,
        )
        every = None if args.table_every is None else timedelta(hours=args.table_every)
        await run_host(config, clock=clock, out=out, stop=stop, table_every=every)
    except OutputError as exc:
        status = _output_failed(args, str(exc))
    finally:
        closed = _close_output(out)
    if closed is not None and status == 0:
        # every delta handed out was flushed and fsynced before it was acknowledged
        status = _output_failed(
            args,
            f"closing it failed: {closed.strerror or closed} (each delta handed out was "
            "written and fsynced first)",
        )
    return status


def take_early_hangups(out: TextIO | OutputFile, path: str | None) -> None:
    """The SIGHUPs recorded before ``run``'s own handler was installed (while importing
    or opening: :mod:`.hangup`) do what the handler would have: the file is reopened
    once (logrotate may have moved it away after it was opened: the lines would go on
    into the rotated file)."""
    early = hangup.take()
    if not early:
        return
    log.info(
        "SIGHUP during start-up (%d): %s",
        early,
        f"reopening {path}" if isinstance(out, OutputFile) else "no --out file to reopen",
        extra=event("reopened", path=path, early=early),
    )
    if isinstance(out, OutputFile):
        out.reopen()


def _output_failed(args: argparse.Namespace, why: str) -> int:
    """Says why the deltas' output failed; the status a service manager restarts."""
    log.error(
        "run: %s (%s); exiting %d to be restarted",
        why,
        args.out or "stdout",
        EXIT_OUTPUT_FAILED,
    )
    return EXIT_OUTPUT_FAILED


def _close_output(out: TextIO | OutputFile) -> OSError | None:
    """Closes ``--out`` (not stdout); its error, if any (after a failed write, closing
    fails again on the same unwritten buffer: nothing of it was acknowledged)."""
    if out is sys.stdout:
        return None
    try:
        out.close()
    except OSError as exc:
        return exc
    return None


def _demo_config(url: str, db: str, swarm: list[str], timeout: float) -> dict[str, Any]:
    """The demo's host config: the stand-in, and the casual board's people followed;
    ``timeout`` real seconds per request."""
    return {
        "pxls": {
            "base_url": url,
            "db_path": db,
            "request_timeout": timeout,
            "backoff_initial": 30,
            "follow_factions": [3680],  # the casual board: the swarm, in or out of the toplist
            "follow": swarm,
        }
    }


def _demo_paths(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """The demo's database, where its deltas go (None or "-": stdout) and the
    temporary folder it made ("": none). On a terminal without ``--out``, the deltas
    go to a file in a new temporary folder (the terminal is kept for the story), and
    so does a database not given; a folder holding only the database is removed at the
    end unless ``--keep``."""
    to_file = args.out is None and sys.stdout.isatty()  # keep the terminal for the story
    workdir = tempfile.mkdtemp(prefix="pxls-demo-") if to_file or not args.db else ""
    db = args.db or os.path.join(workdir, "demo.sqlite3")
    out_path = os.path.join(workdir, "deltas.jsonl") if to_file else args.out
    return db, out_path, workdir


#: the demo's factions: plain tags and names (``--hostile-names`` adds the
#: adversarial ones the tests use: ``<b>``, emoji, ``]`` in a tag)
PLAIN_FACTIONS = [
    (4242, "EX", "Example Painters' Guild", 8339391),
    (17, "GK", "Grid Keepers", 0x33AA33),
    (5120, "PP", "Purple Pact", 0xA630D2),
]


class _SimHour(logging.Filter):
    """Prefixes the demo's log lines with the simulated hour (``[h 5.2]``)."""

    def __init__(self, clock: Clock, start: datetime) -> None:
        super().__init__()
        self._clock, self._start = clock, start

    def filter(self, record: logging.LogRecord) -> bool:
        hours = (self._clock.now() - self._start).total_seconds() / 3600
        record.msg = f"[h {hours:4.1f}] {record.msg}"
        return True


def _log_demo_start(args: argparse.Namespace, url: str, victim: str, db: str) -> None:
    log.info(
        "demo: stand-in %s with %d users, seed %d; %s; "
        "canvas reset at hour %.0f; %s (in the toplist) is renamed at hour 5; db %s",
        url,
        args.users,
        args.seed,
        f"{args.speed:g}x time (1 simulated hour = {3600 / args.speed:.1f} s)"
        if args.speed
        else "simulated time (the same seed, the same run)",
        args.hours * 0.7,
        victim,
        db,
    )


def _profile_requests(standin: PxlsStandIn) -> int:
    """Profile requests a stand-in answered (JSON or HTML page)."""
    return sum(1 for r in standin.requests if "profile" in r.path)


def _story(
    standin: PxlsStandIn, totals: Totals, story: tuple[str, str, str, float]
) -> list[tuple[float, str]]:
    """(hour, line) of what the run reached: the start, the rename, the reset."""
    victim, renamed, first_canvas, reset_hour = story
    events = [
        (
            0.0,
            f"hour 0: canvas {first_canvas} first seen, the first pull's users held for "
            "their profiles (Discord name, faction)",
        )
    ]
    if renamed in standin.users:
        events.append(
            (
                5.0,
                f"hour 5: {victim} renamed to {renamed}: the score moved with the name "
                f"(the old name's deltas now sum to {totals.by_user.get(victim, 0):+d}, the "
                f"new name's to {totals.by_user.get(renamed, 0):+d}: counted once)",
            )
        )
    if standin.canvas != first_canvas:
        events.append(
            (
                reset_hour,
                f"hour {reset_hour:.0f}: canvas reset {first_canvas} -> {standin.canvas}: "
                "scores restart from 0, no negative delta from the reset",
            )
        )
    return events


def _log_demo_done(
    standin: PxlsStandIn,
    totals: Totals,
    out_path: str | None,
    db: str,
    story: tuple[str, str, str, float],
    event: PxlsStandIn | None = None,
    *,
    removed: bool = False,
) -> None:
    """The closing recap, in the order things happened: only what the run reached (a
    short run ends before the rename or the reset), then the event instance's figures
    (``--instances 2``), the deltas and requests; the recap's last line starts with
    ``demo done:`` (only the removal of a temporary folder may follow)."""
    events = _story(standin, totals, story)
    for _, line in sorted(events):
        log.info("demo recap: %s", line)
    if event is not None:
        _log_event_recap(event, totals)
    profiles = _profile_requests(standin)
    log.info(
        "demo recap: %d deltas%s (%d via toplist, %d via profile) for %d users; %d requests "
        "to the %s (%d profiles), at most %d in flight",
        totals.deltas,
        " in all, both instances" if event is not None else "",
        totals.via["toplist"],
        totals.via["profile"],
        len(totals.by_user),
        len(standin.requests),
        "pxls.space stand-in" if event is not None else "stand-in",
        profiles,
        standin.max_in_flight,
    )
    where = "stdout" if out_path in (None, "-") else out_path
    log.info(
        "demo done: %d JSON-lines deltas went to %s; the database %s",
        totals.deltas,
        where,
        f"{db} is removed now (--keep keeps it)" if removed else f"is {db}",
    )


def _demo_standin(
    args: argparse.Namespace, clock: Clock, start: datetime, reset_hour: float
) -> tuple[PxlsStandIn, str, str]:
    """The demo's stand-in, its reset at ``reset_hour``, and someone the viewer sees
    (the toplist's best) renamed five simulated hours in: (stand-in, old, new name)."""
    from ..testing.standin import FACTIONS, HOSTILE_FACTIONS, PxlsStandIn, Scenario

    scenario = Scenario(
        users=args.users,
        seed=args.seed,
        resets=[start + timedelta(hours=reset_hour)],
        toplist_size=max(1, args.users * 2 // 3),  # a third of the users outside it
        swarm_share=0.2,
        factions=[*FACTIONS, *HOSTILE_FACTIONS] if args.hostile_names else PLAIN_FACTIONS,
    )
    standin = PxlsStandIn(scenario, clock.now)
    visible = standin.visible()
    victim = visible[0].name if visible else sorted(standin.users)[0]
    renamed = f"{victim[:24]}_renamed"
    standin.schedule_rename(start + timedelta(hours=5), victim, renamed)
    return standin, victim, renamed


#: the demo's second instance (``--instances 2``): an event canvas on another pxls
#: site, the older profile-page template, profiles read from the HTML page
EVENT_SITE, EVENT_TOKEN = "Ironmouse Canvas", "event-token"


def _event_standin(args: argparse.Namespace, clock: Clock) -> PxlsStandIn:
    """The event canvas's stand-in: fewer users, another seed, site and page template."""
    from ..testing.standin import PxlsStandIn, Scenario

    users = max(10, args.users // 3)
    scenario = Scenario(
        users=users,
        seed=args.seed + 1000,
        site=EVENT_SITE,
        page_template="older",
        token=EVENT_TOKEN,
        toplist_size=max(1, users * 2 // 3),
        factions=PLAIN_FACTIONS,
    )
    return PxlsStandIn(scenario, clock.now)


def _two_instances(config: dict[str, Any], event_url: str, event_db: str) -> dict[str, Any]:
    """The demo's config as two ``[pxls.instances]`` tables, each with its own token
    variable set to its stand-in's session: ``space`` (the pxls.space stand-in, the
    swarm followed) and ``event`` (the event canvas, profiles from the HTML page)."""
    space = dict(config["pxls"])
    defaults = {key: space.pop(key) for key in ("request_timeout", "backoff_initial")}
    event = {"base_url": event_url, "db_path": event_db, "profile_endpoint": "html"}
    return {"pxls": {**defaults, "instances": {"space": space, "event": event}}}


async def _with_event(config: dict[str, Any], event: PxlsStandIn, token: str) -> dict[str, Any]:
    """Starts the event canvas's stand-in; the demo's config as two instances."""
    db = config["pxls"]["db_path"]
    root, ext = os.path.splitext(db)
    config = _two_instances(config, await event.start(), f"{root}-event{ext}")
    os.environ[instance_env("space")[0]] = token  # the stand-ins' sessions, not secrets
    os.environ[instance_env("event")[0]] = EVENT_TOKEN
    return config


def _log_event_recap(event: PxlsStandIn, totals: Totals) -> None:
    profiles = _profile_requests(event)
    log.info(
        "demo recap: instance event (%s, the older page template): %d deltas, %d requests "
        "to its stand-in (%d profile pages), at most %d in flight; instance space: %d deltas",
        EVENT_SITE,
        totals.per_instance.get("event", 0),
        len(event.requests),
        profiles,
        event.max_in_flight,
        totals.per_instance.get("space", 0),
    )


def _used_database(args: argparse.Namespace) -> bool:
    """In simulated time, a ``--db`` that exists is refused (said in a log line): its
    times lie after the fixed start, so the run would look like a clock jumping back."""
    if args.speed is not None or not args.db or not os.path.exists(args.db):
        return False
    log.error(
        "demo: %s exists: simulated time starts at %s, before what that database holds; "
        "give a new --db (or --speed to run on the real clock)",
        args.db,
        DEMO_START.isoformat(),
    )
    return True


async def demo_command(args: argparse.Namespace) -> int:
    """``demo``: the host against the local stand-in in simulated time; the exit
    status."""
    # simulated time from a fixed start: the same seed gives the same deltas, byte for
    # byte (--speed: an accelerated real clock instead, to watch it happen)
    clock: Clock = SimClock(speed=args.speed) if args.speed else JumpClock(DEMO_START)
    if _used_database(args):
        return 2
    start = clock.now()
    reset_hour = args.hours * 0.7
    standin, victim, renamed = _demo_standin(args, clock, start, reset_hour)
    url = await standin.start()
    os.environ[TOKEN_ENV] = standin.scenario.token  # the stand-in's session, not a real secret
    db, out_path, workdir = _demo_paths(args)
    # the folder goes at the end unless kept, or unless it holds the deltas (a terminal's)
    remove = bool(workdir) and not args.keep and not (out_path or "").startswith(workdir)
    swarm = sorted(n for n, u in standin.users.items() if u.faction and u.faction[0] == 3680)
    # in simulated time no answer may time out on a busy machine (the run would differ)
    config = _demo_config(url, db, swarm, 5 if args.speed else 120)
    event = _event_standin(args, clock) if args.instances == 2 else None
    if event is not None:
        config = await _with_event(config, event, standin.scenario.token)
    hour = _SimHour(clock, start)
    loggers = [log, logging.getLogger("neuro_chat_elo_pxls.host")]
    for each in loggers:
        each.addFilter(hour)
    first_canvas = standin.canvas
    try:
        _log_demo_start(args, url, victim, db)
        stop = asyncio.Event()
        install_signal_handlers(stop)
        out = open_output(out_path)
        until, every = start + timedelta(hours=args.hours), timedelta(hours=6)
        try:
            totals = await run_host(
                config, clock=clock, out=out, stop=stop, until=until, table_every=every
            )
        finally:
            await standin.stop()
            if event is not None:
                await event.stop()
            closed = _close_output(out)
        if closed is not None:
            raise OutputError(f"closing {out_path} failed: {closed.strerror or closed}")
        story = (victim, renamed, first_canvas, reset_hour)
        _log_demo_done(standin, totals, out_path, db, story, event, removed=remove)
    finally:
        for each in loggers:
            each.removeFilter(hour)
    if remove:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
