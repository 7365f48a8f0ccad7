"""Retry decisions and backoff delays (DESIGN §4), as pure functions.

Sleeping is the caller's business: these functions only compute, so they are tested without a
clock. ``attempt`` is 1-based and counts every call, the first included; ``retry_number`` n is the
n-th retry (the delay before call n + 1).
"""

from __future__ import annotations

import random

from maestro_gateway.errors import ExecutionError
from maestro_gateway.model.types import RetryPolicy


def backoff_delay(
    policy: RetryPolicy, retry_number: int, rng: random.Random | None = None
) -> float:
    """Return the delay in seconds before retry ``retry_number`` (1 for the first retry).

    The base delay is ``min(max, initial × multiplier^(n−1))`` for exponential backoff and
    ``min(max, initial)`` for constant backoff. With ``jitter`` (the default) the result is a
    uniform draw in ``[0, base]`` ("full jitter"); without, it is the base itself.

    Args:
        policy: the retry policy.
        retry_number: 1-based number of the retry about to happen.
        rng: randomness for the jitter; a fresh ``random.Random()`` when None.

    Raises:
        ValueError: ``retry_number`` is below 1.
    """
    if retry_number < 1:
        raise ValueError(f"retry_number must be >= 1, got {retry_number}")
    if policy.backoff == "constant":
        base = policy.initial
    else:
        # Exponents grow without bound while the cap stays put: stop multiplying once past it.
        base = policy.initial
        for _ in range(retry_number - 1):
            base *= policy.multiplier
            if base >= policy.max:
                break
    base = max(0.0, min(policy.max, base))
    if not policy.jitter or base == 0.0:
        return base
    return (rng or random.Random()).uniform(0.0, base)


def should_retry(policy: RetryPolicy, error: ExecutionError, attempt: int) -> bool:
    """Return whether a call that failed with ``error`` on call number ``attempt`` is retried.

    True only when attempts remain (``attempt < policy.attempts``), the error is not marked
    permanent, and its code is one of the policy's retryable codes.
    """
    return attempt < policy.attempts and not error.permanent and error.code in policy.codes


def retry_delay(
    policy: RetryPolicy,
    error: ExecutionError,
    retry_number: int,
    rng: random.Random | None = None,
) -> float:
    """Return the delay before retry ``retry_number`` after ``error``.

    A delay the service asked for (``error.retry_after``, from google.rpc.RetryInfo or an HTTP
    Retry-After header) replaces the computed backoff and is not capped by ``policy.max``: the
    service knows when it will be ready. Only the deadline bounds it (the caller's business).
    """
    if error.retry_after is not None:
        return max(0.0, error.retry_after)
    return backoff_delay(policy, retry_number, rng)
