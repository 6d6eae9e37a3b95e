"""Console script ``neuro-chat-elo-pxls`` (placeholder until the CLI lands)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("neuro-chat-elo-pxls: the command line is not implemented yet", file=sys.stderr)
    return 2
