"""The package's exceptions: one small tree, so callers catch what they can act on.

Messages never contain secrets (``PXLS_TOKEN``, ``PXLS_CF_AUTH``) or request headers.
"""

from __future__ import annotations


class PxlsError(Exception):
    """Base class of every error this package raises."""


# -- talking to pxls.space ------------------------------------------------------


class PxlsRequestError(PxlsError):
    """A request to pxls.space did not give usable data."""


class RateLimitedError(PxlsRequestError):
    """HTTP 429. ``retry_after`` is the server's wait in seconds, or None if it gave none."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AuthError(PxlsRequestError):
    """HTTP 403 or a Cloudflare challenge: a configuration problem, not a transient one.

    ``challenge`` is True when Cloudflare answered (``cf-mitigated: challenge``).
    """

    def __init__(self, message: str, *, challenge: bool) -> None:
        super().__init__(message)
        self.challenge = challenge


class NotFoundError(PxlsRequestError):
    """HTTP 404: for a profile, the name does not exist (unknown, wrong case or renamed)."""


class TransientError(PxlsRequestError):
    """5xx, timeout, connection error, truncated body: worth retrying later."""


# -- data --------------------------------------------------------------------------


class MalformedDataError(PxlsError):
    """Data is not what it should be: a response whose content is not what
    pxls.space serves (wrong types, missing fields, absurd values, non-JSON bodies, an
    HTML page where JSON was expected, a body over the size cap), an invalid
    username, or a malformed JSON line. Retried like a transient failure when it
    came from a request."""


# -- configuration and storage ----------------------------------------------------


class ConfigError(PxlsError, ValueError):
    """A setting is missing, unknown or out of range. The message names it."""


class StoreError(PxlsError):
    """The SQLite store cannot be used."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer version of this package."""


class StoreLockedError(StoreError):
    """Another source (this process or another) already has the database open."""
