"""A small, real neuro_chat_elo host: what ``examples/standalone_host.py`` and
``neuro-chat-elo-pxls run`` use. Read it as sample code for host authors.

* a pluggy ``PluginManager("neuro_chat_elo")`` with the hookspecs of this package;
* plugins found through the ``neuro_chat_elo`` entry-point group;
* ``register_sources(register, config)`` creates the sources;
* an asyncio scheduler: tick every source, collect deltas, then sleep until the
  earliest ``next_due_at`` (no busy polling);
* deltas go out as JSON lines (see :mod:`.jsonlines`); with ``table_every``, a
  running table of totals per user and per Discord name is logged now and then
  (one record per line; the demo does this, ``run`` only with ``--table-every``);
* SIGINT/SIGTERM stop it cleanly: a last ``collect_deltas``, then ``on_shutdown``.

Time comes from a clock callable (``SimClock`` for accelerated demos), never from
the sources.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import attrs
import pluggy

from . import hookspecs, jsonlines
from .hookspecs import PROJECT, Source, call_async_hook
from .models import EloDelta
from .util.logs import event
from .util.text import shown

log = logging.getLogger("neuro_chat_elo_pxls.host")


class Clock(Protocol):
    """Host time (aware UTC) and how many real seconds a wait of host time takes."""

    def now(self) -> datetime:
        """Host time now (aware UTC)."""
        ...

    def real_seconds(self, delta: timedelta) -> float:
        """Real seconds a wait of ``delta`` host time takes (>= 0)."""
        ...


class LineSink(Protocol):
    """Where JSON lines go: a text file, stdout, or anything with these methods."""

    def write(self, text: str, /) -> int:
        """Write ``text``; the characters written."""
        ...

    def flush(self) -> None:
        """Flush what was written (the host fsyncs ``fileno`` after)."""
        ...

    def fileno(self) -> int:
        """The OS file descriptor (for fsync)."""
        ...


#: The host never sleeps longer than this many real seconds at once (stays responsive).
MAX_SLEEP = 30.0


@attrs.define
class Totals:
    """The host's running view: total per user and per Discord name (current canvas)."""

    by_user: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))
    discord: dict[str, str] = attrs.field(factory=dict)
    faction: dict[str, str] = attrs.field(factory=dict)
    deltas: int = 0
    via: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))  # deltas per source
    #: per instance, the highest seq counted (seqs are per source's database)
    last_seq: dict[str, int] = attrs.field(factory=dict)
    per_instance: dict[str, int] = attrs.field(factory=lambda: defaultdict(int))  # deltas

    def add(self, delta: EloDelta) -> None:
        """Count ``delta`` once (a repeated ``(instance, seq)`` is ignored)."""
        if delta.seq <= self.last_seq.get(delta.instance, 0):  # de-duplicate on
            return  # (instance, seq), as a host should
        self.last_seq[delta.instance] = delta.seq
        self.deltas += 1
        self.per_instance[delta.instance] += 1
        self.via[delta.via] += 1
        self.by_user[delta.user] += delta.delta
        if delta.discord:
            self.discord[delta.user] = delta.discord
        if delta.faction:
            self.faction[delta.user] = delta.faction.tag

    def table(self, top: int = 10) -> str:
        """The ``top`` users and the totals per Discord name, as text lines."""
        rows = sorted(self.by_user.items(), key=lambda kv: -kv[1])[:top]
        by_discord: dict[str, int] = defaultdict(int)
        for user, total in self.by_user.items():
            by_discord[self.discord.get(user, "(no discord)")] += total
        lines = [f"{'user':<24} {'discord':<26} {'faction':<8} {'pixels':>8}"]
        lines += [
            f"{shown(user):<24} {shown(self.discord.get(user, '-')):<26} "
            f"{shown(self.faction.get(user, '-')):<8} {total:>8}"
            for user, total in rows
        ]
        linked = sum(1 for d in by_discord if d != "(no discord)")
        lines.append(
            f"{self.deltas} deltas ({self.via['toplist']} via toplist, {self.via['profile']} via "
            f"profile), {len(self.by_user)} users, {linked} Discord names"
        )
        return "\n".join(lines)


def make_plugin_manager() -> pluggy.PluginManager:
    """A PluginManager with this package's hookspecs and every installed plugin."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    if pm.load_setuptools_entrypoints(PROJECT) == 0:
        raise RuntimeError(
            f"no '{PROJECT}' entry point found: install the package (pip install -e .)"
        )
    return pm


async def start_sources(pm: pluggy.PluginManager, config: Mapping[str, Any]) -> list[Source]:
    """``register_sources`` with a register that also keeps the list; then ``open`` each
    (fail fast on a bad database instead of logging every tick)."""
    sources: list[Source] = []

    def register(source: Source) -> None:
        pm.register(source)
        sources.append(source)

    pm.hook.register_sources(register=register, config=config)
    for source in sources:
        await source.open()
    log.info("host: %d source(s) registered: %s", len(sources), ", ".join(map(repr, sources)))
    return sources


class OutputError(Exception):
    """Writing the deltas failed (disk full, I/O error): none of that batch was
    acknowledged, so they stay in the source's database for the next run."""


def _durable(out: LineSink) -> None:
    """Flush, and fsync a regular file (a pipe or a terminal cannot be)."""
    out.flush()
    try:
        fd = out.fileno()
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's buffer)
        return
    if regular:
        os.fsync(fd)


async def deliver(pm: pluggy.PluginManager, out: LineSink, totals: Totals) -> None:
    """Collect every source's deltas, write them as JSON lines, make them durable
    (flush + fsync), then acknowledge them to their source. Raises
    :class:`OutputError` (nothing of the failed batch acknowledged) if writing fails."""
    batches = await call_async_hook(pm.hook.collect_deltas)
    for batch in batches:
        if not batch:
            continue
        try:
            for delta in batch:
                out.write(jsonlines.dumps(delta) + "\n")
            _durable(out)
        except OSError as exc:
            raise OutputError(
                f"cannot write {len(batch)} deltas: {exc.strerror or exc}; they stay in the "
                "database and are written by the next run"
            ) from exc
        for delta in batch:
            totals.add(delta)
        # stored durably: now acknowledged, through the hook (each source takes its own
        # instance's; no source reference needed)
        await call_async_hook(pm.hook.acknowledge, deltas=batch)


def _log_table(title: str, totals: Totals) -> None:
    """The table as one log record per line (log shippers and JSON logs stay sane)."""
    log.info("%s", title)
    for line in totals.table().splitlines():
        log.info("  %s", line)


async def _sleep(clock: Clock, wake: datetime, now: datetime, stop: asyncio.Event) -> None:
    """Until host time ``wake`` (at most MAX_SLEEP real seconds) or ``stop``."""
    delay = min(MAX_SLEEP, clock.real_seconds(wake - now))
    if delay > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    else:
        await asyncio.sleep(0)  # let other tasks (and signals) run


async def run_host(
    config: Mapping[str, Any],
    *,
    clock: Clock,
    out: LineSink,
    stop: asyncio.Event,
    until: datetime | None = None,
    table_every: timedelta | None = None,
    on_started: Callable[[list[Source]], None] | None = None,
) -> Totals:
    """Run the host loop until ``stop`` is set or host time reaches ``until``.

    ``table_every``: log the running table at this host-time interval (None: never).
    Every source runs with ``delivery = "ack"`` whatever the config says: a delta
    leaves its database only once written to ``out`` and fsynced (DESIGN 4).
    Raises :class:`OutputError` when ``out`` cannot be written, in the loop or in the
    last delivery at shutdown (the rows stay in the source's outbox either way).
    """
    config = _with_ack_delivery(config)
    pm = make_plugin_manager()
    sources = await start_sources(pm, config)
    if on_started is not None:
        on_started(sources)
    totals = Totals()
    far = datetime.max.replace(tzinfo=UTC)
    next_table = clock.now() + table_every if table_every else far
    out_failed = False  # a failed sink is not written to again (the last delivery)
    try:
        while not stop.is_set():
            now = clock.now()
            if until is not None and now >= until:
                break
            await call_async_hook(pm.hook.on_tick, now=now)
            try:
                await deliver(pm, out, totals)
            except OutputError:
                out_failed = True
                raise
            now = clock.now()
            if table_every is not None and now >= next_table:
                _log_table(f"running table at {now.isoformat(timespec='seconds')}", totals)
                next_table = now + table_every
            dues = [d for d in pm.hook.next_due_at(now=now) if d is not None]
            await _sleep(clock, min([*dues, next_table] + ([until] if until else [])), now, stop)
    finally:
        failed = await _shut_down(
            pm,
            sources,
            None if out_failed else out,
            totals,
            clock,
            final_table=table_every is not None,
        )
    if failed is not None:  # the last delivery could not be written: rows kept, say so
        raise failed
    return totals


def _with_ack_delivery(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with ``delivery = "ack"`` in its ``[pxls]`` section and in every
    ``[pxls.instances.NAME]`` table (a table's own ``delivery`` would win over the
    section's: a review's finding); said once in the log when the config asked for
    something else."""
    section = config.get("pxls")
    if not isinstance(section, Mapping):
        return config
    tables = section.get("instances")
    asked = [section.get("delivery", "drain")]
    if isinstance(tables, Mapping):
        asked += [t.get("delivery") for t in tables.values() if isinstance(t, Mapping)]
        tables = {
            name: {**t, "delivery": "ack"} if isinstance(t, Mapping) else t
            for name, t in tables.items()
        }
    if any(a not in (None, "ack") for a in asked):
        log.info("host: deltas are acknowledged once written and fsynced (delivery = ack)")
    fixed: dict[str, Any] = {**section, "delivery": "ack"}
    if tables is not None:
        fixed["instances"] = tables
    return {**config, "pxls": fixed}


async def _shut_down(
    pm: pluggy.PluginManager,
    sources: list[Source],
    out: LineSink | None,
    totals: Totals,
    clock: Clock,
    *,
    final_table: bool,
) -> OutputError | None:
    """The end of a run, however it ended: a last delivery (none when ``out`` already
    failed), what each database holds, ``on_shutdown``, the final table, the shutdown
    line. Returns the last delivery's :class:`OutputError` (its rows stay in the
    outbox; the caller raises it), any other failure of it is swallowed."""
    failed = None
    if out is not None:
        try:
            await deliver(pm, out, totals)
        except OutputError as exc:
            failed = exc
        except Exception:  # noqa: S110 (a source's failure: the shutdown goes on)
            pass
    holdings = [await _holding(source, clock.now()) for source in sources]
    await call_async_hook(pm.hook.on_shutdown)
    if final_table:
        _log_table("final table", totals)
    log.info(
        "host stopped: this run handed out %d deltas for %d users; %s",
        totals.deltas,
        len(totals.by_user),
        "; ".join(holdings) or "no source",
        extra=event("host_stopped", deltas=totals.deltas, users=len(totals.by_user)),
    )
    return failed


async def _holding(source: Source, now: datetime) -> str:
    """What ``source``'s database holds, for the shutdown line (never raises)."""
    try:
        st = await source.status(now)
    except Exception as exc:  # the shutdown line must not hide the real shutdown
        return f"{source!r}: status unavailable ({exc})"
    if "users" not in st:
        return f"{source!r}: {st.get('disabled', 'no database')}"
    name = getattr(source, "log_instance", None) or st.get("instance") or repr(source)
    return (
        f"instance {shown(str(name))} ({st.get('db_path', '-')}) holds {st['users']} users "
        f"(canvas {shown(st['canvas'] or '-')}), {st['outbox']} deltas not yet collected, "
        f"last pull {st['last_pull_at'] or 'never'}"
    )


def install_signal_handlers(stop: asyncio.Event, reopen: Callable[[], None] | None = None) -> None:
    """SIGINT/SIGTERM set ``stop``: the loop finishes its tick and shuts down cleanly.
    SIGHUP (logrotate's ``postrotate``, ``systemctl reload``, a closed terminal) calls
    ``reopen`` (the ``--out`` file) and never ends the run (it used to: exit 129)."""
    loop = asyncio.get_running_loop()

    def hangup() -> None:
        if reopen is None:
            log.info("SIGHUP: no --out file to reopen here; ignored")
        else:
            reopen()

    handlers = {"SIGINT": stop.set, "SIGTERM": stop.set, "SIGHUP": hangup}
    for name, handler in handlers.items():
        sig = getattr(signal, name, None)  # (no SIGHUP on Windows)
        if sig is not None:
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, handler)
