"""Durations as written in workflow files: ``250ms``, ``30s``, ``1m30s``, ``1h``, ``1.5s``.

A duration is one or more ``<number><unit>`` parts, largest unit first, with units ``h``, ``m``,
``s``, ``ms``, ``us`` (or ``µs``) and ``ns``: the syntax of Go's ``time.ParseDuration`` without
the sign, so Maestro.go files keep their meaning. A bare number is refused on purpose: ``30`` could
be seconds or milliseconds, and guessing wrong is a silent outage. So is a duration longer than
Go's (``MAX_SECONDS``, about 292 years), which Maestro.go refuses too: without the bound a long
enough number of hours is an infinite number of seconds.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")
MAX_SECONDS = (2**63 - 1) / 1e9
"""The longest duration, in seconds: Go's ``time.Duration`` (int64 nanoseconds), 2562047h47m16s."""


class DurationError(ValueError):
    """A duration could not be parsed; the message says what a valid one looks like."""


def parse_duration(text: str) -> float:
    """Parse ``text`` into seconds.

    Args:
        text: a duration such as ``250ms``, ``30s``, ``1m30s``, ``1h`` or ``1.5s``.

    Returns:
        The duration in seconds (zero is allowed here; callers decide whether it makes sense).

    Raises:
        DurationError: for a bare number, a negative value, an unknown unit or any other text.
    """
    value = text.strip()
    if not value:
        raise DurationError("duration is empty; write e.g. 30s")
    if value.startswith("-"):
        raise DurationError(f"duration '{text}' is negative")
    if _NUMBER.fullmatch(value):
        raise DurationError(f"duration '{text}' must have a unit, e.g. {value}s")
    pos = 0
    total = 0.0
    previous_scale = float("inf")
    for match in _PART.finditer(value):
        if match.start() != pos:
            break
        scale = _UNITS[match.group(2)]
        if scale >= previous_scale:
            raise DurationError(f"duration '{text}': units must go from largest to smallest")
        previous_scale = scale
        total += float(match.group(1)) * scale
        pos = match.end()
    if pos != len(value) or pos == 0:
        raise DurationError(
            f"invalid duration '{text}'; use a number with a unit (h, m, s, ms, us, ns), e.g. 1m30s"
        )
    if not total <= MAX_SECONDS:
        raise DurationError(f"duration '{text}' is longer than the maximum of 2562047h47m16s")
    return total


def format_duration(seconds: float) -> str:
    """Render ``seconds`` compactly in the syntax ``parse_duration`` reads (``1m30s``, ``250ms``)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}us"
    parts: list[str] = []
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        parts.append(f"{int(hours)}h")
    if minutes:
        parts.append(f"{int(minutes)}m")
    if secs or not parts:
        parts.append(f"{round(secs, 6):g}s")
    return "".join(parts)
