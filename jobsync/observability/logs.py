"""Log formatters: readable text for people, one JSON object per line for log shippers.

Both run every message through :func:`jobsync.observability.redact.redact` before it is written.
Nothing in jobsync logs the API key on purpose (it is a
:class:`~jobsync.observability.redact.Secret`); this is the second line of defence, for a server
that echoes a token back or a library that logs a header.

Structured fields travel in ``extra={"fields": {...}}``: the JSON formatter merges them into the
object (``source``, ``status``, ``counts``, ``duration``, ...); the text formatter leaves them
out, because the message already says the same thing in words.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from jobsync.observability.redact import redact
from jobsync.observability.text import escape_control

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "fields"]

LOG_FORMATS = ("text", "json")

# Keys the JSON formatter writes itself; a structured field must not overwrite them.
_RESERVED = frozenset({"time", "level", "logger", "message", "exception"})


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra=`` that carries structured fields: ``log.info(msg, extra=fields(a=1))``."""
    return {"fields": values}


class TextFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO jobsync.service.daemon: message``, with secrets removed.

    Control characters in the message are shown escaped: an error text from the API could
    otherwise start a forged log line with a newline, or recolour a terminal. Tracebacks keep
    their lines.
    """

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        original = record.message
        record.message = escape_control(redact(original))
        try:
            return super().formatMessage(record)
        finally:
            record.message = original

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, then fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                if key not in _RESERVED:
                    entry[key] = _scrub(value)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = redact(record.exc_text)
        # Redacting values before encoding, not the encoded line: a key containing a quote or
        # a backslash would be escaped in the JSON text and slip past a plain replace.
        return json.dumps(entry, ensure_ascii=False, default=lambda v: redact(str(v)))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
