"""One-line structured log records: ``event key=value key="value with spaces"``."""

from __future__ import annotations

import re

_PLAIN = re.compile(r"[A-Za-z0-9._:/+@-]+")


def _quote(value: object) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def logfmt(event: str, **fields: object) -> str:
    """Return ``event`` followed by ``key=value`` pairs, values quoted when they need it."""
    parts = [event]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    return " ".join(parts)
