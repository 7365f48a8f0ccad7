"""gRPC status codes as plain data, so inner layers never import grpc."""

from __future__ import annotations

import enum


class Code(enum.IntEnum):
    """The canonical gRPC status codes (numbers as on the wire, names as in the spec)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def from_name(cls, name: str) -> Code:
        """Return the code called ``name`` (case-insensitive); raise KeyError if none is."""
        return cls[name.strip().upper()]


DEFAULT_RETRY_CODES: frozenset[Code] = frozenset(
    {Code.UNAVAILABLE, Code.RESOURCE_EXHAUSTED, Code.ABORTED, Code.DEADLINE_EXCEEDED}
)
"""Codes retried when a retry policy names none (DESIGN §4)."""

BREAKER_CODES: frozenset[Code] = frozenset(
    {Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED, Code.INTERNAL, Code.UNKNOWN}
)
"""Failures of the infrastructure kind: only these count towards opening a circuit breaker."""
