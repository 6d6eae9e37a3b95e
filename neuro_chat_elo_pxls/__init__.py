"""pxls.space canvas activity as a score source for neuro-chat-elo.

The host registers :class:`PxlsSource` (directly, or through the ``neuro_chat_elo``
entry point ``pxls``) and drives it with the hooks in :mod:`.hookspecs`.
"""

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
from .version import VERSION

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
__version__ = VERSION
