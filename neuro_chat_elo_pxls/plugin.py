"""The module the ``neuro_chat_elo`` entry point names: creates the pxls source."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .hookspecs import Source, hookimpl
from .settings import instances_from_config
from .source import PxlsSource

log = logging.getLogger("neuro_chat_elo_pxls")


@hookimpl
def register_sources(register: Callable[[Source], None], config: Mapping[str, Any]) -> None:
    """Create a :class:`PxlsSource` per pxls instance of ``config["pxls"]`` (one,
    or one per ``[pxls.instances.NAME]`` table) and register each.

    Opt-in: a host config without a ``pxls`` section registers nothing (installing
    the package never contacts pxls.space, which the admins allow only with
    approval). A bad section raises :class:`~neuro_chat_elo_pxls.errors.ConfigError`
    naming the key (at start-up, on purpose: a misconfigured source should not start
    silently).
    """
    if not isinstance(config, Mapping) or "pxls" not in config:
        log.info("pxls: no [pxls] section in the host config: no pxls source registered")
        return
    for settings in instances_from_config(config["pxls"]):  # one source per instance
        register(PxlsSource(settings))
