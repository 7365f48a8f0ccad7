"""One-line structured log records: ``event key=value key="value with spaces"``."""

from __future__ import annotations

_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:/-+@")


def _quote(value: object) -> str:
    text = str(value)
    if text and all(c in _PLAIN for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def logfmt(event: str, **fields: object) -> str:
    """Return ``event`` followed by ``key=value`` pairs, values quoted when they need it."""
    parts = [event]
    parts.extend(f"{key}={_quote(value)}" for key, value in fields.items())
    return " ".join(parts)
