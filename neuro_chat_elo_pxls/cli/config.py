"""What the commands share: the host config (TOML file and flags), the deltas'
output file (``run``, ``demo``) and the database opened read-only (``status``,
``export``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any, TextIO

from ..engine.state import EngineState
from ..errors import ConfigError
from ..settings import PxlsSettings, check_database_instance, instances_from_config
from ..store.reader import StoreReader
from ..util.logs import event

log = logging.getLogger("neuro_chat_elo_pxls")


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
    chosen = getattr(args, "instance", None)
    tables = section.get("instances")
    overrides = {
        key: getattr(args, flag)
        for flag, key in (("base_url", "base_url"), ("db", "db_path"))
        if getattr(args, flag, None) is not None
    }
    _apply_flags(section, chosen, overrides)
    config["pxls"] = section
    instances = instances_from_config(section)  # fail fast, naming a bad key
    if chosen is not None and not isinstance(tables, dict) and instances[0].instance_name != chosen:
        raise ConfigError(
            f"no pxls instance {chosen!r} in the config (there is: {instances[0].instance_name})"
        )
    return config


def _apply_flags(section: dict[str, Any], chosen: str | None, overrides: dict[str, Any]) -> None:
    """``--instance`` keeps that table only (chosen by its name or the instance name it
    sets); ``--base-url``/``--db`` go into it, or into ``[pxls]`` without tables."""
    tables = section.get("instances")
    if isinstance(tables, dict) and chosen is not None:
        keys = [
            key
            for key, table in tables.items()
            if chosen in (key, table.get("instance") if isinstance(table, dict) else None)
        ]
        if not keys:
            raise ConfigError(
                f"no pxls instance {chosen!r} in the config (there are: {', '.join(tables)})"
            )
        section["instances"] = {keys[0]: {**tables[keys[0]], **overrides}}
    elif isinstance(tables, dict) and overrides:
        raise ConfigError(
            f"--{'db' if 'db_path' in overrides else 'base-url'} with several pxls instances "
            "needs --instance NAME"
        )
    else:
        section.update(overrides)


def configured_instances(config: dict[str, Any]) -> list[PxlsSettings]:
    """The settings of every pxls instance of a config :func:`load_config` returned."""
    return instances_from_config(config["pxls"])


def _sync_directory(path: str) -> None:
    """fsync the directory holding ``path``: a file just created there survives a power
    loss only once its directory entry is on disk (fsyncing the file is not enough on
    every file system), and the deltas fsynced into it are acknowledged."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _append(path: str) -> TextIO:
    """``path`` opened for appending on a fresh line; a file it creates has its
    directory fsynced before any delta is written to it (DESIGN 3).

    A host killed in the middle of a write may leave a partial last line; its
    deltas were not acknowledged (``delivery = "ack"``) and come again, so the
    partial line is just closed off here and readers skip it as malformed.
    """
    try:  # created here (exclusively: never through a name that appeared meanwhile)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
    except FileExistsError:
        pass
    else:
        _sync_directory(path)
    with open(path, "ab+") as raw:
        if raw.seek(0, os.SEEK_END) > 0:
            raw.seek(-1, os.SEEK_END)
            if raw.read(1) != b"\n":
                raw.write(b"\n")
    return open(path, "a", encoding="utf-8")


class OutputFile:
    """``run --out FILE``: appended to, and reopened by :meth:`reopen` (on SIGHUP,
    after logrotate moved the file away: lines go to the new file from then on; no
    ``copytruncate``, whose lines written between the copy and the truncation are
    lost). Synchronous; the host writes a batch without yielding, so a reopen never
    falls inside one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = _append(path)

    def write(self, text: str, /) -> int:
        """Append ``text`` to the current file; the characters written."""
        return self._file.write(text)

    def flush(self) -> None:
        """Flush the current file."""
        self._file.flush()

    def fileno(self) -> int:
        """The current file's descriptor (for fsync)."""
        return self._file.fileno()

    def reopen(self) -> None:
        """Open ``path`` again (a new file if it was moved); on failure keep writing
        to the old one, and say so."""
        try:
            new = _append(self.path)
        except OSError as exc:
            log.error(
                "SIGHUP: cannot reopen %s (%s); still writing to the old file",
                self.path,
                exc.strerror or exc,
                extra=event("reopen_failed", path=self.path, reason=str(exc.strerror or exc)),
            )
            return
        old, self._file = self._file, new
        try:
            old.close()
        except OSError as exc:  # its last lines were flushed and fsynced already
            log.warning("SIGHUP: closing the old %s: %s", self.path, exc.strerror or exc)
        log.info(
            "SIGHUP: %s reopened; deltas are appended to it from now on",
            self.path,
            extra=event("reopened", path=self.path),
        )

    def close(self) -> None:
        """Close the current file."""
        self._file.close()


def open_output(path: str | None) -> TextIO | OutputFile:
    """stdout, or ``path`` opened for appending on a fresh line (:class:`OutputFile`)."""
    if path in (None, "-"):
        return sys.stdout
    return OutputFile(path)


async def open_database(
    args: argparse.Namespace,
) -> tuple[StoreReader, EngineState, PxlsSettings]:
    """The configured database, opened read-only, with its persisted state (closed
    again if loading the state fails). A database of another instance than the config
    (or ``--instance``) names is refused (:class:`StoreError`); ``--db`` alone names
    no instance, so it reads any."""
    config = load_config(args)
    instances = configured_instances(config)
    if len(instances) > 1:
        names = ", ".join(s.instance_name for s in instances)
        raise ConfigError(f"several pxls instances ({names}): choose one with --instance NAME")
    settings = instances[0]
    reader = await StoreReader.open(settings.db_path)
    try:
        state = EngineState.from_rows(await reader.load_state_rows())
        if getattr(args, "config", None) or getattr(args, "instance", None):
            check_database_instance(state.instance, settings)  # (--db alone claims none)
        return reader, state, settings
    except BaseException:
        await reader.close()
        raise
