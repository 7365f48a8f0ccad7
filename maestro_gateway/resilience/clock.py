"""Injected time: the engine, retry and breaker logic read time only through a ``Clock``."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for deadlines and delays, wall time for event timestamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (deadlines, durations, breaker resets)."""
        ...

    def wall(self) -> float:
        """Seconds since the Unix epoch (timestamps shown to users)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (backoff delays)."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock for tests: time moves only when slept on or advanced; ``sleeps`` records delays."""

    def __init__(self, start: float = 1000.0, wall_start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._wall_offset = wall_start - start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += max(0.0, seconds)
        await asyncio.sleep(0)
