"""Structured log records: ``event key=value key="value with spaces"``, or one JSON object.

:func:`logfmt` builds the text of a record and keeps its parts, so that ``--log-format json``
(:class:`JsonFormatter`) writes the same keys and values as JSON fields::

    time=2025-05-01 12:00:00,123 level=INFO execution id=e-1 workflow=checkout duration_ms=12
    {"time": "2025-05-01T12:00:00.123Z", "level": "INFO", "logger": "maestro_gateway.server",
     "message": "execution", "id": "e-1", "workflow": "checkout", "duration_ms": 12}

(the JSON object is one line). Records of other loggers (httpx, asyncio, the journal's
messages) carry their formatted message as ``message``; a traceback goes in ``exception``. A field
whose key is one of those the formatter writes itself gets a leading underscore (``_message``).
Both formats are redacted (``maestro_gateway.redaction``): every string that goes into a JSON
line, the traceback included, has the environment values workflows read replaced by ``***``.
When tracing is on (:func:`set_trace_ids`) and a span is current, a JSON line also carries
``trace_id`` (32 hex digits) and ``span_id`` (16); text lines are unchanged.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from maestro_gateway.redaction import redact

_PLAIN = re.compile(r"[A-Za-z0-9._:/+@-]+")


def _quote(value: object) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class LogLine(str):
    """The text of a :func:`logfmt` record, with its event and fields kept apart."""

    event: str
    fields: dict[str, object]


def logfmt(event: str, **fields: object) -> str:
    """Return ``event`` followed by ``key=value`` pairs, values quoted when they need it."""
    parts = [event]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    line = LogLine(" ".join(parts))
    line.event = event
    line.fields = fields
    return line


RESERVED = frozenset(
    {"time", "level", "logger", "message", "exception", "stack", "trace_id", "span_id"}
)
"""The keys :class:`JsonFormatter` writes itself."""


TraceIds = Callable[[], tuple[str, str] | None]
"""Returns the (trace id, span id) of the current span in hex, or None when there is none."""

_trace_ids: TraceIds | None = None


def set_trace_ids(source: TraceIds | None) -> None:
    """Where JSON lines take ``trace_id`` and ``span_id`` from (None: they carry none)."""
    global _trace_ids
    _trace_ids = source


def _json_value(value: object) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return redact(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (RFC 3339, UTC), ``level``,
    ``logger``, ``message``, then the record's fields (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON, redacted."""
        moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        out: dict[str, Any] = {
            "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        message = record.msg
        if isinstance(message, LogLine) and not record.args:
            out["message"] = redact(message.event)
            for key, value in message.fields.items():
                out[f"_{key}" if key in RESERVED else key] = _json_value(value)
        else:
            out["message"] = redact(record.getMessage())
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        if _trace_ids is not None:
            ids = _trace_ids()
            if ids is not None:
                out["trace_id"], out["span_id"] = ids
        return json.dumps(out)
