"""A deterministic simulator: the real source against a model pxls and a model host.

Every promise of the README and DESIGN is checked as an invariant over whole runs,
one seed at a time: the real :class:`~neuro_chat_elo_pxls.PxlsSource`, with its real
SQLite file and its real :class:`~neuro_chat_elo_pxls.pxls.client.PxlsClient`,
driven in simulated time by

* a model pxls (:class:`World`): people painting at varied rates, a toplist of the top
  N regenerated every 15 minutes (``generatedAt`` in Europe/Berlin wall time, DST
  nights included), followed people outside it, canvas resets with a stale
  stats.json and a flapping ``/info``, renames, bans, rollbacks, ``-snip-`` rows, and
  faults drawn per request (429 with and without a wait, 5xx, timeouts, 403 and
  challenges in outages, bad bodies, absurd counts). It answers at the HTTP level
  (:class:`Answer`: status, headers, body), in the shapes pxls.space, pxls-web, its
  backend and Cloudflare give (rendered by :mod:`..pages`): a 429's wait in
  ``Retry-After``, in a "Try again in N seconds" body or both, or none (pxls-web's
  page); pxls-web's HTML error pages, a challenge's ``cf-mitigated`` header, a 200
  HTML page where JSON was expected, the backend's JSON 404; Content-Types with and
  without parameters or none, with and without Content-Length; a file cut short, a
  connection closed before its Content-Length, a body that stalls until the read
  timeout, no answer at all, a body over the size cap (declared or not);
* an in-memory transport (:class:`WireTransport`, :mod:`.wire`) under the real
  client: every request of a run goes through the client's own code (status codes,
  headers, caps, Content-Type, the parsers, the mapping to the package's errors);
  no socket, thread or timer, a request one event-loop step, where the host may
  cancel it;
* a model deployment: per seed one to three pxls instances (:class:`Instance`, drawn
  apart from the seed's other draws, so a seed with one runs as it always ran), each
  its own model site (a :class:`World` with its people, faults and base URL
  ``http://event{n}.simulated.invalid``), its own source (settings with an explicit
  ``instance`` name, its own database and follow file) and its own :class:`Checker`
  (every invariant below, per instance: the deltas are routed to it by
  ``delta.instance``; the end checks run per instance);
* a model host (:class:`Host`): a real pluggy ``PluginManager`` that finds the pxls
  plugin through its entry point and holds every instance's source and another
  plugin's source (its deltas are not EloDeltas; its ``collect_deltas`` is slow), so
  every hook call goes across all sources and a cancelled ``collect_deltas`` may land
  in any of them; every hook called
  through ``pm.hook`` and ``call_async_hook`` (``acknowledge`` with every plugin's
  deltas; a ``collect_deltas`` cancelled while the other plugin runs); it ticks at
  the earliest ``next_due_at`` or at its own cadence, overlapping hook calls,
  cancellation inside a request, crashes (every source
  abandoned without ``on_shutdown``, its connection and lock gone as at a process's
  death) and clean restarts of the host process (every source; an instance in an
  auth outage sometimes with new credentials), host clock jumps (every source), both
  delivery modes (per instance; ``acknowledge`` is called with every plugin's deltas
  but an instance's whose batch the host keeps unacknowledged, so each source must
  take exactly its own), ``source.follow()`` calls and a follow file that changes and
  turns hostile (a FIFO, bad UTF-8, a directory, too big), each on one drawn
  instance;
* on a share of the seeds with several instances, ``run``'s delivery
  (:mod:`.delivery`): the real ``deliver`` (collect, write, flush and fsync, then
  ``acknowledge``) into the real ``OutputFile`` on a disk that fails (ENOSPC on a
  write, EIO on a flush; the unsynced lines then lost, kept or cut inside a line); an
  I/O failure is what ``run`` exits 75 on, and is followed by a restart (no other
  plugin then: ``run``'s host has pxls sources only). The file's whole lines are the
  host's ledger, read like ``tail -F``. Signals to ``run`` at any moment: logrotate
  moves the file away and sends SIGHUP (handled at once, between two event-loop steps
  inside a later delivery, or recorded while a restarted ``run`` starts up, before its
  handler: :func:`~neuro_chat_elo_pxls.cli.run.take_early_hangups`), and SIGTERM
  (``run``'s real shutdown: a last delivery, ``on_shutdown``; started again):
  :mod:`.signals`;
* power losses (:mod:`.power`, :mod:`.disk`, their own generator): half the host's crashes, a share
  of its cancelled ticks (cut at that event-loop step instead) and of ``run``'s
  deliveries (at a step, or inside a flush: written, not fsynced). Every process dies
  at once and each file keeps what was durable: a database its committed state under
  ``synchronous=FULL`` (read from the source's own connection), only what the last
  checkpoint moved into the file under ``NORMAL``; the out file what an ``os.fsync``
  covered and a drawn prefix of the rest. The host starts again on that.

Invariants (:class:`Checker`), while it runs and at the end: per name and canvas the
deltas add up to the last score and every delta's score is the model's count at its
``observed_at``; no zero delta; no ``seq`` handed out twice with other content, and in
drain mode not at all (across crashes and power losses too); one
request in flight and profile requests at least ``profile_cooldown`` apart, per
model site (what the site saw, whichever source sent it); no two instances share an
instance name (or a database or follow file), and every delta names one; requests go
to pxls's URLs; a body over the size cap is
never read whole; nothing sent to a key
within 15 minutes of its 403 or before a server-given wait ends, across restarts
(new credentials may try at once); ``/info`` and stats.json requests per rolling
hour within the schedule the instance's settings give plus one per setback
(:meth:`Checker.per_hour_bound`); with ``run``'s delivery, an out-file failure
surfaces as ``OutputError`` (exit 75), a line is written again only after a failure
or a power loss, a malformed line only where a failure or the power cut one, no line
goes into a file logrotate moved away once its SIGHUP came, SIGTERM exits 0 (75 when
its last delivery could not be written), and every outbox is empty at the end;
every sweep finishes when the budget allows it;
followed people refreshed;
``next_due_at`` never makes a host spin; ``status --check`` never cries wolf (no
problem at the end of the calm hours); opt-outs, forgets and opt-ins drawn at random
times (:mod:`.optouts`): no profile request for a listed person, their deltas withdrawn
to 0 on every canvas, none in an export; no exception reaches the host; a seed
finishes within its real-time limit (else a violation, not a hang); no ERROR
without an injected cause; what pxls answered is applied by the end (the last three
simulated hours are calm). The simulated world and the host's choices depend on the
seed only, and so does the whole run: SQLite statements run on the event loop's
thread (:func:`inline_sqlite`), each still an await point, so no worker thread's
wake-up decides where a cancellation lands (``--sqlite thread`` runs aiosqlite's own
worker thread instead: real interleavings, not reproducible); the client's
off-loop parse of stats.json runs inline the same way. The shapes of pxls's answers
are drawn from a generator of their own, so the model's draws stay the seed's.

    python -m neuro_chat_elo_pxls.testing.simulate --seeds 200 --hours 48
    python -m neuro_chat_elo_pxls.testing.simulate --seed 17 --hours 48 -v
    python -m neuro_chat_elo_pxls.testing.simulate --seeds 20 --sqlite thread

What a power loss cuts off is lost to the model too: a wait pxls gave, or a new canvas
code it answered, in a tick the power ended before the source stored it does not bind
the next process (it cannot know; at most one request is repeated). Tests of other
things run their seed with ``power=False`` (:func:`run_seed`) to keep its story.

prints one line per violation (with the command that replays its seed) and last
``N seeds, H simulated hours each: M violations``; exit status 1 on any.
"""

from .checker import Checker, Violation
from .host import Host
from .instance import Instance
from .run import inline_sqlite, main, run_seed, run_seed_with_stats
from .wire import WireTransport
from .world import Answer, FaultPlan, Generation, Person, Request, World

__all__ = [
    "Answer",
    "Checker",
    "FaultPlan",
    "Generation",
    "Host",
    "Instance",
    "Person",
    "Request",
    "Violation",
    "WireTransport",
    "World",
    "inline_sqlite",
    "main",
    "run_seed",
    "run_seed_with_stats",
]
