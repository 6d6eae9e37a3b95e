"""Log records: structured fields for JSON logs, one line per record in text logs.

Engine code logs through ``logging`` as usual and adds ``extra=event(name, **fields)``
to the records an operator or a log shipper acts on (a pull, a skipped pull, a
backoff, a canvas reset, sweep progress, ...). :class:`JsonLogFormatter` writes
``event`` and those fields as top-level keys beside ``time``, ``level``, ``logger``
and ``message``; :class:`TextLogFormatter` shows only the message, escaped to one
line. Field names in use: ``canvas``, ``previous``, counts (``seen``, ``new``,
``deltas``, ``held``, ``unchanged``, ``done``, ``total``), ``wait_s``, ``eta_s``,
``reason``, ``key``, ``attempt``.

A source with an explicit ``instance`` (every ``[pxls.instances.NAME]`` table has one)
runs its hooks under :func:`tagged`: each record its work logs on the package logger
starts with ``[NAME]`` and carries ``instance`` (a JSON key), so two instances in one
host can be told apart. Without an explicit ``instance`` nothing changes.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from .text import json_safe, shown

#: LogRecord attributes that carry the structured part (set through ``extra=``)
EVENT_ATTR = "pxls_event"
FIELDS_ATTR = "pxls_fields"
#: the instance a record was logged for (set by :class:`_InstanceTag`)
INSTANCE_ATTR = "pxls_instance"

_instance: ContextVar[str | None] = ContextVar("pxls_instance", default=None)
P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="_HasInstance")


class _HasInstance(Protocol):
    @property
    def log_instance(self) -> str | None: ...


@contextlib.contextmanager
def tagged(instance: str | None) -> Iterator[None]:
    """Records logged inside (tasks started inside too) are tagged with ``instance``
    (None: untagged). Sync; restores the previous tag on exit."""
    token = _instance.set(instance)
    try:
        yield
    finally:
        _instance.reset(token)


def tagged_hook(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """An async method of an object with ``log_instance``, run under :func:`tagged`."""

    @functools.wraps(method)
    async def run(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with tagged(self.log_instance):
            return await method(self, *args, **kwargs)

    return run


class _InstanceTag(logging.Filter):
    """Prefixes ``[instance] `` to the package logger's records made under
    :func:`tagged` (instance names are ``[A-Za-z0-9._-]``: safe in a %-format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = _instance.get()
        if name is not None and getattr(record, INSTANCE_ATTR, None) is None:
            setattr(record, INSTANCE_ATTR, name)
            record.msg = f"[{name}] {record.msg}"
        return True


logging.getLogger("neuro_chat_elo_pxls").addFilter(_InstanceTag())


def event(name: str, **fields: Any) -> dict[str, Any]:
    """``extra=`` for a log call: the event name and its fields (JSON-serialisable)."""
    return {EVENT_ATTR: name, FIELDS_ATTR: fields}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log record (for log shippers), with the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (text made safe for one line)."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        instance = getattr(record, INSTANCE_ATTR, None)
        if instance is not None:
            entry["instance"] = instance
        name = getattr(record, EVENT_ATTR, None)
        if name is not None:
            entry["event"] = name
            for key, value in getattr(record, FIELDS_ATTR, {}).items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json_safe(json.dumps(entry, ensure_ascii=False, default=str))


class TextLogFormatter(logging.Formatter):
    """``time LEVEL logger: message``, one line per record: control characters
    (newlines included) and bidi overrides in the message are escaped, so no text
    can forge a log line or drive the terminal. A traceback follows on its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The message with control characters escaped."""
        record.message = shown(record.message)
        return super().formatMessage(record)


def setup_logging(level: str, fmt: str) -> None:
    """Log to stderr at ``level`` as ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(TextLogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.getLogger("aiosqlite").setLevel(logging.WARNING)
