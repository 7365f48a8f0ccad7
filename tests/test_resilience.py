"""Retry/backoff, circuit breaker and deadline logic, on a fake clock (no sleeping)."""

from __future__ import annotations

import random

import pytest

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError, CircuitOpenError, ExecutionError
from maestro_gateway.model.types import CircuitBreakerPolicy, RetryPolicy
from maestro_gateway.resilience import (
    BreakerRegistry,
    BreakerState,
    CircuitBreaker,
    Deadline,
    FakeClock,
    attempt_timeout,
    backoff_delay,
    retry_delay,
    should_retry,
)

EXP = RetryPolicy(attempts=10, initial=0.1, multiplier=2.0, max=1.0, jitter=False)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (6, 1.0), (60, 1.0), (5000, 1.0)],
)
def test_exponential_backoff_table(n: int, expected: float) -> None:
    """Delay before retry n is min(max, initial × multiplier^(n−1)) without jitter."""
    assert backoff_delay(EXP, n) == pytest.approx(expected)


def test_constant_backoff_keeps_initial() -> None:
    """Constant backoff waits `initial` before every retry, still capped by max."""
    policy = RetryPolicy(backoff="constant", initial=0.3, max=5.0, jitter=False)
    assert [backoff_delay(policy, n) for n in (1, 2, 7)] == [0.3, 0.3, 0.3]
    assert backoff_delay(RetryPolicy(backoff="constant", initial=9, max=2, jitter=False), 1) == 2


def test_full_jitter_is_uniform_within_bounds_and_seeded() -> None:
    """Full jitter draws in [0, base]; the same seed gives the same delays."""
    policy = RetryPolicy(initial=0.1, multiplier=2.0, max=1.0)
    draws = [backoff_delay(policy, 3, random.Random(7)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng = random.Random(1)
    values = [backoff_delay(policy, 3, rng) for _ in range(500)]
    assert all(0.0 <= v <= 0.4 for v in values)
    assert min(values) < 0.05
    assert max(values) > 0.35


def test_backoff_rejects_retry_zero() -> None:
    """Retry numbers are 1-based."""
    with pytest.raises(ValueError, match="retry_number"):
        backoff_delay(EXP, 0)


def test_should_retry_counts_attempts_codes_and_permanence() -> None:
    """Retry only while attempts remain, for a retryable code, and never a permanent error."""
    policy = RetryPolicy(attempts=3)
    unavailable = CallError(Code.UNAVAILABLE, "down")
    assert should_retry(policy, unavailable, 1)
    assert should_retry(policy, unavailable, 2)
    assert not should_retry(policy, unavailable, 3)
    assert not should_retry(policy, CallError(Code.NOT_FOUND, "no"), 1)
    assert not should_retry(policy, CallError(Code.UNAVAILABLE, "x", permanent=True), 1)
    assert should_retry(policy, CallError(Code.DEADLINE_EXCEEDED, "slow"), 1)


def test_retry_codes_override_replaces_default_set() -> None:
    """`retry.codes` replaces the default set: listed codes retry, defaults no longer do."""
    policy = RetryPolicy(attempts=3, codes=frozenset({Code.NOT_FOUND}))
    assert should_retry(policy, CallError(Code.NOT_FOUND, "later"), 1)
    assert not should_retry(policy, CallError(Code.UNAVAILABLE, "down"), 1)


def test_retry_after_replaces_computed_delay_uncapped_by_max() -> None:
    """A delay the service asked for replaces the backoff, even beyond `max`."""
    err = ExecutionError(Code.RESOURCE_EXHAUSTED, "slow down", retry_after=7.5)
    assert retry_delay(EXP, err, 1) == 7.5
    assert retry_delay(EXP, CallError(Code.UNAVAILABLE, "x"), 2) == pytest.approx(0.2)


def test_deadline_math_on_fake_clock() -> None:
    """Remaining time shrinks with the clock, never goes negative, and expires exactly at `at`."""
    clock = FakeClock()
    d = Deadline.from_timeout(clock, 2.0)
    assert d.remaining() == pytest.approx(2.0)
    assert not d.expired
    assert d.allows(1.9)
    assert not d.allows(2.0)
    clock.advance(1.5)
    assert d.remaining() == pytest.approx(0.5)
    clock.advance(0.5)
    assert d.expired
    assert d.remaining() == 0.0
    clock.advance(3)
    assert d.remaining() == 0.0


def test_deadline_min_and_attempt_timeout() -> None:
    """The earliest deadline wins; an attempt gets min(own timeout, what is left)."""
    clock = FakeClock()
    a, b = Deadline.from_timeout(clock, 5), Deadline.from_timeout(clock, 3)
    assert Deadline.min(a, None, b) is b
    assert Deadline.min(None, None) is None
    assert attempt_timeout(2.0, b) == 2.0
    assert attempt_timeout(None, b) == pytest.approx(3.0)
    clock.advance(2.5)
    assert attempt_timeout(2.0, b) == pytest.approx(0.5)
    assert attempt_timeout(4.0, None) == 4.0
    assert attempt_timeout(None, None) is None


def _breaker(failures: int = 3, reset: float = 10.0) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker(CircuitBreakerPolicy(failures, reset), clock, "svc:1"), clock


def test_breaker_opens_after_consecutive_infrastructure_failures() -> None:
    """`failures` consecutive UNAVAILABLE/DEADLINE_EXCEEDED… open it; then calls are refused at once."""
    br, _ = _breaker()
    for code in (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED):
        assert br.acquire() is False
        br.record_failure(code)
    assert br.state is BreakerState.CLOSED
    br.acquire()
    br.record_failure(Code.INTERNAL)
    assert br.state is BreakerState.OPEN
    with pytest.raises(CircuitOpenError) as info:
        br.acquire()
    assert info.value.code is Code.UNAVAILABLE
    assert info.value.permanent
    assert "svc:1" in info.value.message


def test_business_errors_and_successes_reset_the_count() -> None:
    """A business error or a success proves the service answered: the count restarts."""
    br, _ = _breaker(failures=2)
    br.record_failure(Code.UNAVAILABLE)
    br.record_failure(Code.NOT_FOUND)
    br.record_failure(Code.UNAVAILABLE)
    assert br.state is BreakerState.CLOSED
    assert br.consecutive_failures == 1
    br.record_success()
    br.record_failure(Code.UNAVAILABLE)
    assert br.state is BreakerState.CLOSED


def test_breaker_half_open_lets_one_probe_then_closes_on_success() -> None:
    """After `reset` exactly one probe goes through; its success closes the circuit."""
    br, clock = _breaker(failures=1, reset=10)
    br.record_failure(Code.UNAVAILABLE)
    clock.advance(9.9)
    with pytest.raises(CircuitOpenError):
        br.acquire()
    clock.advance(0.1)
    assert br.acquire() is True
    assert br.state is BreakerState.HALF_OPEN
    with pytest.raises(CircuitOpenError):
        br.acquire()
    br.record_success()
    assert br.state is BreakerState.CLOSED
    assert br.acquire() is False


def test_failed_probe_reopens_and_restarts_the_timer() -> None:
    """A failed probe re-opens the circuit for another full `reset`."""
    br, clock = _breaker(failures=1, reset=10)
    br.record_failure(Code.UNAVAILABLE)
    clock.advance(10)
    assert br.acquire()
    br.record_failure(Code.DEADLINE_EXCEEDED)
    assert br.state is BreakerState.OPEN
    clock.advance(9)
    with pytest.raises(CircuitOpenError):
        br.acquire()
    clock.advance(1)
    assert br.acquire()


def test_released_probe_frees_the_slot() -> None:
    """A cancelled probe has no verdict: the next call may probe instead."""
    br, clock = _breaker(failures=1, reset=1)
    br.record_failure(Code.UNAVAILABLE)
    clock.advance(1)
    assert br.acquire()
    br.release()
    assert br.acquire()


def test_thresholds_come_from_the_calling_policy() -> None:
    """The caller's policy decides the thresholds, whatever created the breaker."""
    br, clock = _breaker(failures=100, reset=100)
    strict = CircuitBreakerPolicy(failures=1, reset=2)
    br.record_failure(Code.UNAVAILABLE, strict)
    assert br.state is BreakerState.OPEN
    clock.advance(2)
    assert br.acquire(strict)


def test_registry_shares_one_breaker_per_endpoint() -> None:
    """Every caller of an endpoint shares its breaker; other endpoints are independent."""
    reg = BreakerRegistry(FakeClock())
    policy = CircuitBreakerPolicy(1, 5)
    a = reg.get("inv:1", policy)
    assert reg.get("inv:1", CircuitBreakerPolicy(9, 9)) is a
    assert reg.get("pay:1", policy) is not a
    assert "inv:1" in reg
    assert len(reg) == 2
