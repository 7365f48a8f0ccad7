"""Resilience: retry/backoff policy, circuit breakers and deadlines; pure state, injected clock."""

from maestro_gateway.resilience.breaker import BreakerRegistry, BreakerState, CircuitBreaker
from maestro_gateway.resilience.clock import Clock, FakeClock, SystemClock
from maestro_gateway.resilience.deadline import Deadline, attempt_timeout
from maestro_gateway.resilience.retry import backoff_delay, retry_delay, should_retry

__all__ = [
    "BreakerRegistry",
    "BreakerState",
    "CircuitBreaker",
    "Clock",
    "Deadline",
    "FakeClock",
    "SystemClock",
    "attempt_timeout",
    "backoff_delay",
    "retry_delay",
    "should_retry",
]
