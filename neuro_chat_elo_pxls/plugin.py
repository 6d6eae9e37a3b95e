"""The module the ``neuro_chat_elo`` entry point names: creates the pxls source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .hookspecs import Source, hookimpl
from .settings import PxlsSettings
from .source import PxlsSource


@hookimpl
def register_sources(register: Callable[[Source], None], config: Mapping[str, Any]) -> None:
    """Create one :class:`PxlsSource` from ``config["pxls"]`` and register it.

    A host config without a ``pxls`` section gets the defaults. A bad section raises
    :class:`~neuro_chat_elo_pxls.errors.ConfigError` naming the key (at start-up, on
    purpose: a misconfigured source should not start silently).
    """
    section = config.get("pxls", {}) if isinstance(config, Mapping) else {}
    register(PxlsSource(PxlsSettings.from_mapping(section)))
