"""Circuit breakers: one per downstream endpoint, shared by every workflow and execution.

::

    CLOSED ──(``failures`` consecutive infrastructure failures)──▶ OPEN
    OPEN ──(``reset`` seconds later, next call)──▶ HALF_OPEN: exactly one probe goes through
    HALF_OPEN ──probe succeeds──▶ CLOSED        HALF_OPEN ──probe fails──▶ OPEN (timer restarts)

Only codes in ``BREAKER_CODES`` (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL,
UNKNOWN) count as failures. Any other outcome — success or a business error such as NOT_FOUND —
proves the service answered, so it resets the count (and a business error on a probe closes the
circuit). A call abandoned without an outcome (cancelled) changes nothing but frees the probe
slot. The state is pure data plus an injected clock: no task, no timer, no I/O.

The thresholds are those of the service definition making the call, so every method takes the
caller's ``CircuitBreakerPolicy``; two workflows naming the same endpoint share one state.
"""

from __future__ import annotations

import enum

from maestro_gateway.codes import BREAKER_CODES, Code
from maestro_gateway.errors import CircuitOpenError
from maestro_gateway.model.types import CircuitBreakerPolicy
from maestro_gateway.resilience.clock import Clock


class BreakerState(enum.Enum):
    """The state of a circuit breaker."""

    CLOSED = "CLOSED"
    OPEN = "OPEN"
    HALF_OPEN = "HALF_OPEN"


class CircuitBreaker:
    """The breaker of one endpoint.

    Use: ``acquire()`` before a call (raises ``CircuitOpenError`` when refused), then exactly one
    of ``record_success()``, ``record_failure(code)`` or ``release()`` when the call ends.

    Args:
        policy: the default thresholds (each method can be given the calling service's).
        clock: the monotonic clock measuring the ``reset`` period.
        endpoint: named in the error of a refused call.
    """

    __slots__ = ("_clock", "_failures", "_opened_at", "_policy", "_probing", "_state", "endpoint")

    def __init__(self, policy: CircuitBreakerPolicy, clock: Clock, endpoint: str = "") -> None:
        self._policy = policy
        self._clock = clock
        self.endpoint = endpoint
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """The current state (OPEN turns into HALF_OPEN only when a call is attempted)."""
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Infrastructure failures counted since the last answer from the service."""
        return self._failures

    def acquire(self, policy: CircuitBreakerPolicy | None = None) -> bool:
        """Let a call through or refuse it.

        Returns:
            True when the call is the half-open probe, False for an ordinary call.

        Raises:
            CircuitOpenError: the circuit is open, or half-open with its probe already in flight.
        """
        p = policy or self._policy
        if self._state is BreakerState.CLOSED:
            return False
        if self._state is BreakerState.OPEN:
            wait = self._opened_at + p.reset - self._clock.monotonic()
            if wait > 0:
                raise CircuitOpenError(self.endpoint, wait)
            self._state = BreakerState.HALF_OPEN
            self._probing = False
        if self._probing:
            raise CircuitOpenError(self.endpoint, 0.0)
        self._probing = True
        return True

    def record_success(self) -> None:
        """Record a call that got an answer: close the circuit and reset the count."""
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._probing = False

    def record_failure(self, code: Code, policy: CircuitBreakerPolicy | None = None) -> None:
        """Record a failed call; only infrastructure codes count (others are answers)."""
        if code not in BREAKER_CODES:
            self.record_success()
            return
        p = policy or self._policy
        if self._state is BreakerState.HALF_OPEN:
            self._open()
            return
        if self._state is BreakerState.OPEN:
            # A straggler started before the circuit opened: the circuit is already open.
            return
        self._failures += 1
        if self._failures >= p.failures:
            self._open()

    def release(self) -> None:
        """Record a call that ended without an outcome (cancelled): free the probe slot."""
        self._probing = False

    def _open(self) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock.monotonic()
        self._probing = False


class BreakerRegistry:
    """Circuit breakers by endpoint, shared by every workflow and execution of a process.

    Args:
        clock: the clock every breaker uses.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, endpoint: str, policy: CircuitBreakerPolicy) -> CircuitBreaker:
        """Return the breaker of ``endpoint``, creating it with ``policy`` on first use."""
        breaker = self._breakers.get(endpoint)
        if breaker is None:
            breaker = self._breakers[endpoint] = CircuitBreaker(policy, self._clock, endpoint)
        return breaker

    def __contains__(self, endpoint: object) -> bool:
        return endpoint in self._breakers

    def items(self) -> list[tuple[str, CircuitBreaker]]:
        """Every breaker made so far, with its endpoint (a snapshot: the metrics read it)."""
        return list(self._breakers.items())

    def __len__(self) -> int:
        return len(self._breakers)
