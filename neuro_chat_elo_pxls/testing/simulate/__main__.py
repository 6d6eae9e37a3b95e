"""``python -m neuro_chat_elo_pxls.testing.simulate``: the simulator's command line
(see the package docstring)."""

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())
