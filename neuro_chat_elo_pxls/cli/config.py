"""What the commands share: the host config (TOML file and flags), the deltas'
output file (``run``, ``demo``) and the database opened read-only (``status``,
``export``)."""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from ..engine.state import SchedulerState
from ..errors import ConfigError
from ..settings import PxlsSettings
from ..store.reader import StoreReader


def load_config(args: argparse.Namespace) -> dict[str, Any]:
    """The host config: the TOML file (``--config``) with flags applied to ``[pxls]``.

    Nothing starts by accident: a config file must have a ``[pxls]`` section and no
    other top-level section (a typo such as ``[pxl]`` would otherwise mean the
    defaults, i.e. pxls.space); ``run`` without a config file needs ``--base-url``.
    """
    config: dict[str, Any] = {}
    path = getattr(args, "config", None)
    if path:
        try:
            config = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
        unknown = sorted(set(config) - {"pxls"})
        if unknown:
            raise ConfigError(
                f"{path}: unknown top-level section(s) {', '.join(map(repr, unknown))}; "
                "the settings go in [pxls]"
            )
        if "pxls" not in config:
            raise ConfigError(f"{path}: no [pxls] section (the settings go in [pxls])")
        if not isinstance(config["pxls"], dict):
            raise ConfigError(f"{path}: pxls must be a [pxls] table, got {config['pxls']!r:.40}")
    elif args.command == "run" and getattr(args, "base_url", None) is None:
        raise ConfigError(
            "run needs --config FILE with a [pxls] section (or --base-url): nothing "
            "contacts pxls.space unless you say so"
        )
    section = dict(config.get("pxls", {}))
    for flag, key in (("base_url", "base_url"), ("db", "db_path")):
        value = getattr(args, flag, None)
        if value is not None:
            section[key] = value
    config["pxls"] = section
    PxlsSettings.from_mapping(section)  # fail fast, naming a bad key
    return config


def open_output(path: str | None) -> TextIO:
    """stdout, or ``path`` opened for appending on a fresh line.

    A host killed in the middle of a write may leave a partial last line; its
    deltas were not acknowledged (``delivery = "ack"``) and come again, so the
    partial line is just closed off here and readers skip it as malformed.
    """
    if path in (None, "-"):
        return sys.stdout
    with open(path, "ab+") as raw:
        if raw.seek(0, os.SEEK_END) > 0:
            raw.seek(-1, os.SEEK_END)
            if raw.read(1) != b"\n":
                raw.write(b"\n")
    return open(path, "a", encoding="utf-8")


async def open_database(
    args: argparse.Namespace,
) -> tuple[StoreReader, SchedulerState, PxlsSettings]:
    """The configured database, opened read-only, with its persisted state (closed
    again if loading the state fails)."""
    config = load_config(args)
    settings = PxlsSettings.from_mapping(config["pxls"])
    reader = await StoreReader.open(settings.db_path)
    try:
        return reader, SchedulerState.from_rows(await reader.load_state_rows()), settings
    except BaseException:
        await reader.close()
        raise
