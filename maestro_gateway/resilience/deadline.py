"""Deadlines as values on an injected monotonic clock (in the manner of grpclib's ``Deadline``).

An attempt's timeout is the smallest of its own timeout and what is left of every deadline that
bounds it (the workflow's, the caller's, the compensation budget): see ``attempt_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

from maestro_gateway.resilience.clock import Clock


@dataclass(frozen=True, slots=True)
class Deadline:
    """A point in time on ``clock``'s monotonic scale after which work must stop.

    Attributes:
        at: the monotonic time of the deadline.
        clock: the clock it is measured on.
    """

    at: float
    clock: Clock

    @classmethod
    def from_timeout(cls, clock: Clock, seconds: float) -> Deadline:
        """Return the deadline ``seconds`` from now on ``clock``."""
        return cls(clock.monotonic() + seconds, clock)

    def remaining(self) -> float:
        """Return the seconds left, never negative."""
        return max(0.0, self.at - self.clock.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline has been reached."""
        return self.clock.monotonic() >= self.at

    def allows(self, delay: float) -> bool:
        """Return whether waiting ``delay`` seconds from now still ends strictly before the deadline."""
        return self.clock.monotonic() + delay < self.at

    @staticmethod
    def min(*deadlines: Deadline | None) -> Deadline | None:
        """Return the earliest of ``deadlines``, ignoring None; None when all are None."""
        best: Deadline | None = None
        for d in deadlines:
            if d is not None and (best is None or d.at < best.at):
                best = d
        return best


def attempt_timeout(timeout: float | None, deadline: Deadline | None) -> float | None:
    """Return the timeout of one attempt: ``min(timeout, deadline.remaining())``, None if unbounded.

    Args:
        timeout: the step's (or service's) own per-attempt timeout in seconds, or None.
        deadline: the earliest deadline bounding the attempt, or None.
    """
    if deadline is None:
        return timeout
    left = deadline.remaining()
    return left if timeout is None or left < timeout else timeout
