"""Fault injection and call recording shared by the Python demo services.

Every demo service serves a control plane beside its business service
(``shop.control.v1.Control`` over gRPC, ``/_control/...`` as JSON over HTTP). This module is the
stack-neutral logic behind it; the grpcio, grpclib and aiohttp adapters translate
:class:`DemoError` into their own errors at their boundary, and ``demo/node/control.js`` mirrors
it line for line for the Node.js service.

Semantics, identical in all five services:

- Rules are matched in the order they were added, by method name (an empty name matches every
  method); the first rule with uses left applies. ``times`` 0 means every call, otherwise the rule
  applies to that many calls and is then spent.
- A matching rule's ``delay_ms`` is waited first, then, when it has a ``code``, the call fails
  with that code, its ``message`` and, when ``retry_after_ms`` > 0, a retry hint.
- Every business call is recorded when it arrives (method, request as proto3 JSON text with the
  proto field names, selected metadata) and finished with its outcome: ``OK``, the code it failed
  with, or ``CANCELLED`` when the caller went away (including during an injected delay). A call
  still in flight has an empty outcome and ``ended_unix_ms`` 0. A service on Maestro.go's
  envelope records the method named in the request, and the RPC that carried it (``rpc``).

The plane is thread-safe: the envelope demo service (``demo.loyalty``) runs its handlers on a
thread pool, with :meth:`ControlPlane.handle_blocking`.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

CODE_NAMES: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)
"""gRPC status code names, indexed by their number."""

TRACE_HEADERS: frozenset[str] = frozenset(
    {"traceparent", "tracestate", "baggage", "x-request-id", "b3"}
)
RECORDED_PREFIXES: tuple[str, ...] = ("x-b3-", "x-demo-")


class DemoError(Exception):
    """A call failure with a gRPC code name, raised by business logic and by injected faults.

    Attributes:
        code: The gRPC code name (``"UNAVAILABLE"``).
        message: Human-readable text sent to the caller.
        retry_after_ms: When > 0, the failure carries a retry hint (google.rpc.RetryInfo or
            ``Retry-After``).
        http_status: For the HTTP service only: the exact status an injected fault asked for.
    """

    def __init__(
        self, code: str, message: str, *, retry_after_ms: int = 0, http_status: int | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms
        self.http_status = http_status


@dataclass(slots=True)
class FaultRule:
    """One fault rule, as in ``shop.control.v1.Fault``, plus how many uses it has left.

    ``code`` is a gRPC code name, or (HTTP service only) a status number as text; ``http_status``
    holds that number once validated.
    """

    method: str = ""
    code: str = ""
    message: str = ""
    times: int = 0
    delay_ms: int = 0
    retry_after_ms: int = 0
    http_status: int | None = None
    remaining: int = field(default=0, repr=False)

    def error(self) -> DemoError:
        """Return the error this rule fails a call with (only meaningful when ``code`` is set)."""
        message = self.message or f"injected fault: {self.code}"
        return DemoError(
            self.code,
            message,
            retry_after_ms=self.retry_after_ms,
            http_status=self.http_status,
        )


@dataclass(slots=True)
class CallRecord:
    """One call received by a service, as in ``shop.control.v1.Call``."""

    method: str
    request_json: str
    metadata: dict[str, str]
    outcome: str = ""
    started_unix_ms: int = 0
    ended_unix_ms: int = 0
    rpc: str = ""


def make_rule(
    method: str = "",
    code: str = "",
    message: str = "",
    times: int = 0,
    delay_ms: int = 0,
    retry_after_ms: int = 0,
    *,
    code_of_http_status: Callable[[int], str] | None = None,
) -> FaultRule:
    """Validate the fields of a Fault and build its rule.

    Args:
        method: Method name to match; empty matches every method.
        code: gRPC code name (case-insensitive), empty for a delay-only rule; with
            ``code_of_http_status`` also an HTTP status number as text (``"503"``).
        message: Error message; a default naming the code is used when empty.
        times: How many calls the rule applies to; 0 means every call.
        delay_ms: Delay before answering or failing.
        retry_after_ms: Retry hint carried by the failure when > 0.
        code_of_http_status: When given (the HTTP service), ``code`` may be a status number;
            this maps it to the gRPC code name recorded as the outcome.

    Raises:
        DemoError: INVALID_ARGUMENT when a field is out of range or the code is unknown.
    """
    for name, value in (
        ("times", times),
        ("delay_ms", delay_ms),
        ("retry_after_ms", retry_after_ms),
    ):
        if value < 0:
            raise DemoError("INVALID_ARGUMENT", f"fault {name} must be >= 0, got {value}")
    http_status: int | None = None
    code = code.strip()
    if code.isdigit() and code_of_http_status is not None:
        http_status = int(code)
        if not 400 <= http_status <= 599:
            raise DemoError("INVALID_ARGUMENT", f"fault HTTP status must be 4xx or 5xx, got {code}")
        code = code_of_http_status(http_status)
    elif code:
        code = code.upper()
        if code not in CODE_NAMES or code == "OK":
            raise DemoError(
                "INVALID_ARGUMENT",
                f"unknown fault code {code!r}: use a gRPC code name other than OK"
                + (" or an HTTP status" if code_of_http_status else ""),
            )
    return FaultRule(
        method=method.strip(),
        code=code,
        message=message,
        times=times,
        delay_ms=delay_ms,
        retry_after_ms=retry_after_ms,
        http_status=http_status,
        remaining=times,
    )


def select_metadata(
    pairs: Iterable[tuple[str, str | bytes]], also: frozenset[str] = frozenset()
) -> dict[str, str]:
    """Keep the trace and demo headers of a call's metadata (and the keys in ``also``).

    Keys are lower-cased; binary (``-bin``) values are skipped; repeated keys are joined with
    ``", "`` as HTTP does.
    """
    selected: dict[str, str] = {}
    for raw_key, value in pairs:
        key = raw_key.lower()
        if key.endswith("-bin") or isinstance(value, bytes):
            continue
        if key in TRACE_HEADERS or key in also or key.startswith(RECORDED_PREFIXES):
            selected[key] = f"{selected[key]}, {value}" if key in selected else value
    return selected


def now_ms() -> int:
    """Wall-clock time in Unix milliseconds (recorded timestamps are for people, not logic)."""
    return math.floor(time.time() * 1000)


class ControlPlane:
    """The fault rules and call log of one service process."""

    def __init__(self) -> None:
        """Start with no rules and no calls."""
        self._rules: list[FaultRule] = []
        self._calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def add_fault(self, rule: FaultRule) -> None:
        """Append a rule; it is matched after every rule added before it."""
        with self._lock:
            self._rules.append(rule)

    def reset(self) -> None:
        """Forget every rule and every recorded call."""
        with self._lock:
            self._rules.clear()
            self._calls.clear()

    def calls(self) -> list[CallRecord]:
        """The calls received so far, oldest first."""
        with self._lock:
            return list(self._calls)

    def take_fault(self, method: str) -> FaultRule | None:
        """Return the first rule matching ``method`` with uses left, using one of them."""
        with self._lock:
            for rule in self._rules:
                if rule.method and rule.method != method:
                    continue
                if rule.times == 0:
                    return rule
                if rule.remaining > 0:
                    rule.remaining -= 1
                    return rule
            return None

    def _record(
        self, method: str, request_json: str, metadata: Mapping[str, str], rpc: str
    ) -> CallRecord:
        record = CallRecord(method, request_json, dict(metadata), started_unix_ms=now_ms(), rpc=rpc)
        with self._lock:
            self._calls.append(record)
        return record

    async def handle(
        self,
        method: str,
        request_json: str,
        metadata: Mapping[str, str],
        call: Callable[[], Awaitable[T]],
        *,
        rpc: str = "",
    ) -> T:
        """Record a business call, apply the matching fault, then run ``call``.

        Args:
            method: The method name as in the .proto (or the HTTP route's name).
            request_json: The request as proto3 JSON text.
            metadata: The selected metadata (see :func:`select_metadata`).
            call: The business logic; it raises :class:`DemoError` to fail the call.
            rpc: The RPC that carried the call, when it is not ``method`` itself.

        Returns:
            What ``call`` returns.

        Raises:
            DemoError: From an injected fault or from ``call``.
            asyncio.CancelledError: When the caller went away; recorded as ``CANCELLED``.
        """
        record = self._record(method, request_json, metadata, rpc)
        outcome = "UNKNOWN"
        try:
            rule = self.take_fault(method)
            if rule is not None and rule.delay_ms:
                await asyncio.sleep(rule.delay_ms / 1000)
            if rule is not None and rule.code:
                raise rule.error()
            result = await call()
            outcome = "OK"
            return result
        except DemoError as exc:
            outcome = exc.code
            raise
        except asyncio.CancelledError:
            outcome = "CANCELLED"
            raise
        finally:
            record.outcome = outcome
            record.ended_unix_ms = now_ms()

    def handle_blocking(
        self,
        method: str,
        request_json: str,
        metadata: Mapping[str, str],
        call: Callable[[], T],
        *,
        rpc: str = "",
        cancelled: threading.Event | None = None,
    ) -> T:
        """:meth:`handle` for a handler running on a thread (a synchronous gRPC server).

        Args:
            method: The method name the call is recorded and matched under.
            request_json: The request as proto3 JSON text.
            metadata: The selected metadata (see :func:`select_metadata`).
            call: The business logic; it raises :class:`DemoError` to fail the call.
            rpc: The RPC that carried the call, when it is not ``method`` itself.
            cancelled: Set when the caller goes away; an injected delay then ends at once
                and the call is recorded as ``CANCELLED``.

        Raises:
            DemoError: From an injected fault or from ``call`` (``CANCELLED`` when the caller
                went away during a delay).
        """
        record = self._record(method, request_json, metadata, rpc)
        outcome = "UNKNOWN"
        try:
            rule = self.take_fault(method)
            if rule is not None and rule.delay_ms:
                if cancelled is None:
                    time.sleep(rule.delay_ms / 1000)
                elif cancelled.wait(rule.delay_ms / 1000):
                    raise DemoError("CANCELLED", "the caller went away")
            if rule is not None and rule.code:
                raise rule.error()
            result = call()
            outcome = "OK"
            return result
        except DemoError as exc:
            outcome = exc.code
            raise
        finally:
            record.outcome = outcome
            record.ended_unix_ms = now_ms()
