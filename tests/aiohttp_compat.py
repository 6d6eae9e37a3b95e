"""aioresponses 0.7.9 (the latest release) with aiohttp 3.14: a small shim.

aiohttp 3.14 added a required keyword-only ``stream_writer`` to
``ClientResponse.__init__``; aioresponses builds its fake responses without it
(pnuckowski/aioresponses#289, open). A mocked request is complete when its
response is built (aioresponses passes ``writer=None``), and aiohttp then only
reads ``stream_writer.output_size``: a stand-in with ``output_size = 0`` is all
it needs. On aiohttp before 3.14 nothing is patched.
"""

from __future__ import annotations

import inspect
from typing import Any

import aiohttp
import aioresponses.core
import pytest


class SentRequestWriter:
    """What aiohttp 3.14 reads of a finished request's writer: bytes sent."""

    output_size = 0


def needs_shim() -> bool:
    """True when this aiohttp's ``ClientResponse`` requires ``stream_writer``."""
    params = inspect.signature(aiohttp.ClientResponse.__init__).parameters
    stream_writer = params.get("stream_writer")
    return stream_writer is not None and stream_writer.default is inspect.Parameter.empty


class CompatClientResponse(aiohttp.ClientResponse):
    """``ClientResponse`` that supplies ``stream_writer`` when aioresponses leaves it out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SentRequestWriter())
        super().__init__(*args, **kwargs)


def install(monkeypatch: pytest.MonkeyPatch) -> bool:
    """Patch aioresponses for this test if this aiohttp needs it; True if patched."""
    if not needs_shim():
        return False
    monkeypatch.setattr(aioresponses.core, "ClientResponse", CompatClientResponse)
    return True
