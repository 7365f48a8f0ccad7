"""Keeping environment values out of what the gateway reports (DESIGN §9).

A workflow reads the gateway's environment through ``{{ env.NAME }}`` (secrets in headers, mostly).
The loader hands every value it reads to :data:`SECRETS`; two boundaries then replace each
occurrence of a registered value with ``***``:

- :class:`~maestro_gateway.engine.events.ErrorInfo`, the one form in which a failure is reported
  (events, results, the journal, RPC statuses, the command line, and the expressions that read
  ``error.message``), redacts its message when it is built;
- :class:`RedactingFormatter` redacts every log line the gateway writes, whatever its level or
  logger (httpx's request lines carry URLs, for instance).

Values shorter than :data:`MIN_LENGTH` characters are not redacted: masking every ``1`` or
``on`` would garble messages while hiding nothing worth hiding. Besides the value itself, its
JSON-escaped and percent-encoded forms are masked (an error body quoting a header, a secret in
a URL path). Step outputs are the services' data and are never altered, even when a service
echoes a secret back.

The registry is process-wide and only grows: a value read by one workflow is masked in the
reports of every workflow.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"
"""What a redacted value is replaced with."""

MIN_LENGTH = 4
"""Values shorter than this are not redacted."""


class Redactor:
    """A set of secret values and the replacement of their occurrences in text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: frozenset[str] = frozenset()
        self._pattern: re.Pattern[str] | None = None

    def add(self, values: Iterable[str]) -> None:
        """Register ``values`` (and their encoded forms); short ones are ignored."""
        forms = {form for value in values if len(value) >= MIN_LENGTH for form in _forms(value)}
        with self._lock:
            if forms <= self._values:
                return
            self._values = self._values | forms
            # Longest first, so a value that contains another is masked whole.
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def redact(self, text: str) -> str:
        """``text`` with every registered value replaced by ``***``."""
        pattern = self._pattern
        if pattern is None or not text:
            return text
        return pattern.sub(MASK, text)

    def clear(self) -> None:
        """Forget every value (tests)."""
        with self._lock:
            self._values = frozenset()
            self._pattern = None


def _forms(value: str) -> set[str]:
    """The value as it may appear in a report: itself, JSON-escaped, percent-encoded."""
    forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms.add(quote(value, safe="/"))
    forms.add(quote(value, safe=""))
    return {f for f in forms if len(f) >= MIN_LENGTH}


SECRETS = Redactor()
"""The values this process read from its environment for workflows."""


def redact(text: str) -> str:
    """``text`` with every environment value read by a workflow replaced by ``***``."""
    return SECRETS.redact(text)


class RedactingFormatter(logging.Formatter):
    """A log formatter that redacts the whole formatted record, traceback included."""

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as ``logging.Formatter`` does, then redact it."""
        return redact(super().format(record))
