"""A standalone neuro_chat_elo host running the pxls source.

    python examples/standalone_host.py --demo          # local stand-in, in simulated time
    python examples/standalone_host.py --config host.toml   # real pxls.space

The host itself is ``neuro_chat_elo_pxls/host.py`` (pluggy PluginManager,
entry-point discovery, a scheduler that sleeps until the next due time,
JSON-lines deltas on stdout, a running table, clean Ctrl-C/SIGTERM shutdown); this
file is the installed ``neuro-chat-elo-pxls run|demo`` command, except that a local
``run`` logs the running table every hour (``--table-every 1``) unless told otherwise;
the installed ``run``, meant for services, logs no table by default.
"""

from __future__ import annotations

import sys

from neuro_chat_elo_pxls.cli import main


def host_argv(argv: list[str]) -> list[str]:
    """This script's arguments as the console script's: ``--demo`` is ``demo``, no
    subcommand is ``run``, and a local ``run`` shows the running table hourly."""
    if "--demo" in argv:
        return ["demo", *[a for a in argv if a != "--demo"]]
    if not {"run", "demo", "status", "export"} & set(argv):
        argv = ["run", *argv]
    if "run" in argv and not any(a.startswith("--table-every") for a in argv):
        argv = [*argv, "--table-every=1"]
    return argv


if __name__ == "__main__":
    sys.exit(main(host_argv(sys.argv[1:])))
