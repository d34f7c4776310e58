"""Logging of the server processes: ``--log-format text`` (the default) or ``json``, on stderr.

``json`` writes one object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, the process's ``role``, the ``component`` (``extra={"component": ...}`` or the
last part of the logger's name), ``device_id`` and ``command_id`` when the call passes them
as ``extra``, and ``exc`` with the traceback of an exception. Every logger propagates to the
root logger's one handler: uvicorn's (``UVICORN_LOG_CONFIG``) and the libraries' (redis,
gmqtt, amqtt, and librdkafka through ``iotstream.bus.kafka``) come out the same way.

The start banner and a first admin password are printed on stdout, not logged.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = ("device_id", "command_id")
"""What a log call may pass as ``extra`` to be a field of its JSON line."""

UVICORN_LOG_CONFIG: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    # No handler of their own: their records go to the root logger's.
    "loggers": {
        name: {"handlers": [], "propagate": True}
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    },
}
"""uvicorn's ``log_config``."""


def _component(record: logging.LogRecord) -> str:
    explicit = getattr(record, "component", None)
    return str(explicit) if explicit else record.name.rsplit(".", 1)[-1]


class _Context(logging.Filter):
    """Puts the process's role and the component on every record the handler writes."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        record.component = _component(record)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback's line feeds are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        document: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "role": getattr(record, "role", ""),
            "component": _component(record),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                document[name] = str(value)
        if record.exc_info:
            document["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(document, default=str).decode()


def configure(level: str, log_format: str, role: str) -> None:
    """Send every record at ``level`` or above to stderr as ``log_format`` (``text`` or
    ``json``), each with ``role``, the role names of this process."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    handler.addFilter(_Context(role))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    if level != "debug":
        # gmqtt reports every connect and subscribe at INFO.
        logging.getLogger("gmqtt").setLevel(logging.WARNING)
