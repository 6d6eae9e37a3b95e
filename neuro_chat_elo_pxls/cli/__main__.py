"""``python -m neuro_chat_elo_pxls.cli``: the console script."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
