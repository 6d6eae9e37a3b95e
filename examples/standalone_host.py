"""A standalone neuro_chat_elo host running the pxls source.

    python examples/standalone_host.py --demo          # local stand-in, accelerated
    python examples/standalone_host.py --config host.toml   # real pxls.space

The host itself is ``neuro_chat_elo_pxls/host.py`` (pluggy PluginManager,
entry-point discovery, a scheduler that sleeps until the next due time,
JSON-lines deltas on stdout, a running table, clean Ctrl-C/SIGTERM shutdown); this
file is the same as the installed ``neuro-chat-elo-pxls run|demo`` command.
"""

from __future__ import annotations

import sys

from neuro_chat_elo_pxls.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--demo" in argv:
        argv = ["demo", *[a for a in argv if a != "--demo"]]
    elif not {"run", "demo", "status", "export"} & set(argv):
        argv = ["run", *argv]
    sys.exit(main(argv))
