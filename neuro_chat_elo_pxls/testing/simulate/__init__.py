"""A deterministic simulator: the real source against a model pxls and a model host.

Every promise of the README and DESIGN is checked as an invariant over whole runs,
one seed at a time: the real :class:`~neuro_chat_elo_pxls.PxlsSource`, with its real
SQLite file, driven in simulated time by

* a model pxls (:class:`World`): people painting at varied rates, a toplist of the top
  N regenerated every 15 minutes (``generatedAt`` in Europe/Berlin wall time, DST
  nights included), followed people outside it, canvas resets with a stale
  stats.json and a flapping ``/info``, renames, bans, rollbacks, ``-snip-`` rows, and
  faults drawn per request (429 with and without a wait, 5xx, timeouts, 403 and
  challenges in outages, bad bodies, absurd counts). Bodies go through the package's
  real parsers (JSON and HTML profiles);
* a model host (:class:`Host`): a real pluggy ``PluginManager`` that finds the pxls
  plugin through its entry point and holds another plugin's source beside the pxls one
  (its deltas are not EloDeltas; its ``collect_deltas`` is slow), every hook called
  through ``pm.hook`` and ``call_async_hook`` (``acknowledge`` with every plugin's
  deltas; a ``collect_deltas`` cancelled while the other plugin runs); it ticks at
  the earliest ``next_due_at`` or at its own cadence, overlapping hook calls,
  cancellation inside a request, crashes (the source
  abandoned without ``on_shutdown``, its connection and lock gone as at a process's
  death) and clean restarts (sometimes with new credentials), host clock jumps, both
  delivery modes, ``source.follow()`` calls, and a follow file that changes and turns
  hostile (a FIFO, bad UTF-8, a directory, too big).

Invariants (:class:`Checker`), while it runs and at the end: per name and canvas the
deltas add up to the last score and every delta's score is the model's count at its
``observed_at``; no zero delta; no ``seq`` handed out twice with other content; one request in
flight; profile requests at least ``profile_cooldown`` apart; nothing sent to a key
within 15 minutes of its 403 or before a server-given wait ends, across restarts
(new credentials may try at once); ``/info`` and stats.json requests per hour
bounded; every sweep finishes when the budget allows it; followed people refreshed;
``next_due_at`` never makes a host spin; ``status --check`` never cries wolf (no
problem at the end of the calm hours); no exception reaches the host; a seed
finishes within its real-time limit (else a violation, not a hang); no ERROR
without an injected cause; what pxls answered is applied by the end (the last three
simulated hours are calm). The simulated world and the host's choices depend on the
seed only, and so does the whole run: SQLite statements run on the event loop's
thread (:func:`inline_sqlite`), each still an await point, so no worker thread's
wake-up decides where a cancellation lands (``--sqlite thread`` runs aiosqlite's own
worker thread instead: real interleavings, not reproducible).

    python -m neuro_chat_elo_pxls.testing.simulate --seeds 200 --hours 48
    python -m neuro_chat_elo_pxls.testing.simulate --seed 17 --hours 48 -v
    python -m neuro_chat_elo_pxls.testing.simulate --seeds 20 --sqlite thread

prints one line per violation (with the command that replays its seed) and last
``N seeds, H simulated hours each: M violations``; exit status 1 on any.
"""

from .checker import Checker, Violation
from .host import Host
from .run import inline_sqlite, main, run_seed, run_seed_with_stats
from .world import FaultPlan, Generation, Person, Request, World

__all__ = [
    "Checker",
    "FaultPlan",
    "Generation",
    "Host",
    "Person",
    "Request",
    "Violation",
    "World",
    "inline_sqlite",
    "main",
    "run_seed",
    "run_seed_with_stats",
]
