"""pxls.space canvas activity as a score source for neuro-chat-elo.

The host registers :class:`PxlsSource` (directly, or through the ``neuro_chat_elo``
entry point ``pxls``) and drives it with the hooks in :mod:`.hookspecs`.

The names below are imported when first used (PEP 562): importing the package alone
is light, so the console program (:mod:`.cli`) can make SIGHUP harmless before the
heavy imports (aiohttp, the source) begin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AuthError,
        ConfigError,
        MalformedDataError,
        NotFoundError,
        PxlsError,
        RateLimitedError,
        SchemaTooNewError,
        StoreError,
        StoreLockedError,
        TransientError,
    )
    from .models import EloDelta, Faction
    from .settings import PxlsSettings, Secret
    from .source import PxlsSource

    __version__: str

#: each public name and the module that defines it
_HOMES = {
    "AuthError": ".errors",
    "ConfigError": ".errors",
    "EloDelta": ".models",
    "Faction": ".models",
    "MalformedDataError": ".errors",
    "NotFoundError": ".errors",
    "PxlsError": ".errors",
    "PxlsSettings": ".settings",
    "PxlsSource": ".source",
    "RateLimitedError": ".errors",
    "SchemaTooNewError": ".errors",
    "Secret": ".settings",
    "StoreError": ".errors",
    "StoreLockedError": ".errors",
    "TransientError": ".errors",
    "__version__": ".version",  # VERSION, read from the distribution's metadata
}

__all__ = [
    "AuthError",
    "ConfigError",
    "EloDelta",
    "Faction",
    "MalformedDataError",
    "NotFoundError",
    "PxlsError",
    "PxlsSettings",
    "PxlsSource",
    "RateLimitedError",
    "SchemaTooNewError",
    "Secret",
    "StoreError",
    "StoreLockedError",
    "TransientError",
]


def __getattr__(name: str) -> Any:
    """A public name, imported from its module on first use (then a plain attribute)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    attribute = "VERSION" if name == "__version__" else name
    value = getattr(importlib.import_module(home, __name__), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
