"""The engine's tracing port: what it asks of a tracer, without knowing OpenTelemetry (DESIGN §14).

An execution carries an :class:`ExecutionTrace` when tracing is on (``Execution.trace``), None
otherwise, and that one attribute is all the engine looks at: with tracing off no span object
is made and no context is touched. The implementation (``maestro_gateway.server.tracing``)
owns the execution's own span, opened before the engine runs and ended after it; the engine
opens the spans below it, explicitly parented (never through a "current span"):

- one span per step that runs (not for a skipped step), named by its path (``lines[2].reserve``),
  child of the span of the foreach, loop or workflow step whose body holds it, or of the
  execution's span; a parallel group has no state, hence no span: its children hang from its
  parent's;
- one span per compensation, child of the enclosing step's span (a sub-workflow undoing its
  own steps) or of the execution's;
- one client span per attempt, child of its step's (or compensation's) span; the transport
  adds what only it knows (:class:`~maestro_gateway.transports.base.CallTrace`), and the
  downstream's ``traceparent`` is this span.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from maestro_gateway.engine.events import ErrorInfo
from maestro_gateway.errors import ExecutionError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.base import CallTrace


class Span(Protocol):
    """A step's or a compensation's span, ended once."""

    def end(self, error: ErrorInfo | None = None) -> None:
        """End the span, with an error status when ``error`` is given."""
        ...


class AttemptSpan(CallTrace, Protocol):
    """The client span of one attempt of a call."""

    def headers(self, metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """``metadata`` with ``traceparent`` and ``tracestate`` replaced by this span's."""
        ...

    def end(self, error: ExecutionError | None = None) -> None:
        """End the span: OK when ``error`` is None, else an error status with its code."""
        ...


class ExecutionTrace(Protocol):
    """The spans of one execution; ``parent`` None means the execution's own span."""

    def step(self, parent: Span | None, path: str) -> Span:
        """Open the span of the step at ``path``, which starts running now."""
        ...

    def compensation(self, parent: Span | None, path: str) -> Span:
        """Open the span of the compensation of the step at ``path``."""
        ...

    def attempt(
        self,
        parent: Span | None,
        service: Service,
        method: str,
        attempt: int,
        compensation: bool,
    ) -> AttemptSpan:
        """Open the client span of attempt ``attempt`` of ``method`` (as rendered) on ``service``."""
        ...
