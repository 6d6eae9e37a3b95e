"""The package version, read once from the installed distribution's metadata."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "neuro-chat-elo-pxls"

try:
    VERSION = version(DISTRIBUTION)
except PackageNotFoundError:  # imported from a source tree that was never installed
    VERSION = "0+unknown"
