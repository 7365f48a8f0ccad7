"""OpenTelemetry behind the engine's tracing port (DESIGN §14; ``maestro_gateway.engine.tracing``).

One :class:`ExecutionSpan` per execution run in this process, made by :class:`Tracing`:

- ``Execute``, ``Run`` and ``Start``: a SERVER span named ``maestro.v1.Gateway/<rpc>``, child of
  the caller's ``traceparent`` (W3C trace context, read from the forwarded caller headers that
  the execution's record keeps). It covers the execution, not the RPC: it ends when the
  execution does, so the span of a ``Start`` (whose RPC returns at once) lasts as long as its
  detached execution;
- a resumed execution (a restart, another replica's): an INTERNAL span ``resume <workflow>``,
  child of the same caller ``traceparent`` (journaled with the record), so the trace goes on;
- an execution a signal's trigger started: an INTERNAL span ``trigger <workflow>`` that begins
  a trace of its own.

Below it, the engine opens the step, compensation and attempt spans through the port. Spans are
exported by a ``BatchSpanProcessor``: ending a span only queues it (a full queue drops it), and
a background thread exports, so an exporter that is slow or unreachable never delays or fails
an execution. ``shutdown`` flushes what is queued (``maestro serve`` calls it when it stops).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from maestro_gateway.engine.events import ErrorInfo, ExecutionResult, ExecutionStatus
from maestro_gateway.errors import ExecutionError
from maestro_gateway.journal.base import ExecutionRecord
from maestro_gateway.model.types import Service
from maestro_gateway.server import logfmt
from maestro_gateway.server.tracing import otlp_protocol

DEFAULT_SERVICE_NAME = "maestro-gateway"
GATEWAY_SERVICE = "maestro.v1.Gateway"
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
"""The caller headers an attempt's own context replaces when tracing is on."""

_PROPAGATOR = TraceContextTextMapPropagator()


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        # stdout carries the ready lines of ``maestro serve``: spans go to stderr.
        return ConsoleSpanExporter(out=sys.stderr)
    if otlp_protocol(environ) == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def current_ids() -> tuple[str, str] | None:
    """The trace and span ids (hex) of the current span, or None when there is none."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")


class Tracing:
    """Makes the spans of the executions of one gateway process.

    Args:
        provider: where spans go (its processors and exporters); shut down by :meth:`shutdown`.
    """

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("maestro_gateway")

    @classmethod
    def from_env(cls, exporters: Sequence[str], environ: Mapping[str, str]) -> Tracing:
        """A provider with one batch processor per exporter named, configured by ``OTEL_*``."""
        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        for name in exporters:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
        return cls(provider)

    def execution(
        self, record: ExecutionRecord, *, rpc: str | None = None, resumed: bool = False
    ) -> ExecutionSpan:
        """Open the span of the execution of ``record`` (see the module docstring).

        Args:
            record: the execution's record (its metadata holds the caller's trace headers).
            rpc: the method that started it (``Execute``, ``Run``, ``Start``), or None.
            resumed: it resumes from the journal.
        """
        attributes: dict[str, Any] = {
            "maestro.workflow": record.workflow,
            "maestro.execution_id": record.execution_id,
        }
        carrier = {key: value for key, value in record.metadata if key in TRACE_HEADERS}
        # Never the current context: an emit step's trigger runs inside another execution's.
        parent = _PROPAGATOR.extract(carrier, otel_context.Context()) if carrier else None
        if resumed:
            name, kind = f"resume {record.workflow}", SpanKind.INTERNAL
            attributes["maestro.recovered"] = True
        elif rpc is not None:
            name, kind = f"{GATEWAY_SERVICE}/{rpc}", SpanKind.SERVER
            attributes.update(
                {"rpc.system": "grpc", "rpc.service": GATEWAY_SERVICE, "rpc.method": rpc}
            )
        else:
            name, kind = f"trigger {record.workflow}", SpanKind.INTERNAL
            parent = None
        if record.triggered_by:
            attributes["maestro.triggered_by"] = record.triggered_by
        root = self._tracer.start_span(
            name, context=parent or otel_context.Context(), kind=kind, attributes=attributes
        )
        return ExecutionSpan(self._tracer, root)

    def shutdown(self) -> None:
        """Export what is queued (bounded by the exporters' timeouts) and stop exporting."""
        self.provider.shutdown()


class _StepSpan:
    """A step's or a compensation's span (``maestro_gateway.engine.tracing.Span``)."""

    __slots__ = ("owner", "span")

    def __init__(self, owner: ExecutionSpan, span: trace.Span) -> None:
        self.owner = owner
        self.span = span

    def end(self, error: ErrorInfo | None = None) -> None:
        span = self.span
        if error is not None:
            span.set_attribute("error.type", error.code.name)
            span.set_status(Status(StatusCode.ERROR, error.code.name))
        span.end()
        self.owner.open.discard(self)


class _AttemptSpan:
    """An attempt's client span (``maestro_gateway.engine.tracing.AttemptSpan``)."""

    __slots__ = ("grpc", "owner", "span")

    def __init__(self, owner: ExecutionSpan, span: trace.Span, grpc: bool) -> None:
        self.owner = owner
        self.span = span
        self.grpc = grpc

    def headers(self, metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        out = [(key, value) for key, value in metadata if key.lower() not in TRACE_HEADERS]
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self.span))
        out.extend(carrier.items())
        return out

    def grpc_method(self, service: str, method: str) -> None:
        span = self.span
        span.update_name(f"{service}/{method}")
        span.set_attribute("rpc.service", service)
        span.set_attribute("rpc.method", method)

    def http_request(self, url: str) -> None:
        self.span.set_attribute("url.full", url)

    def http_status(self, status: int) -> None:
        self.span.set_attribute("http.response.status_code", status)

    def end(self, error: ExecutionError | None = None) -> None:
        span = self.span
        if self.grpc:
            span.set_attribute("rpc.grpc.status_code", 0 if error is None else int(error.code))
        if error is not None:
            span.set_attribute("error.type", error.code.name)
            span.set_status(Status(StatusCode.ERROR, error.code.name))
        span.end()
        self.owner.open.discard(self)


class ExecutionSpan:
    """The spans of one execution (``maestro_gateway.engine.tracing.ExecutionTrace``).

    Error statuses carry the gRPC code name, never a message (messages may quote payloads).
    """

    __slots__ = ("_context", "_tracer", "open", "root")

    def __init__(self, tracer: trace.Tracer, root: trace.Span) -> None:
        self._tracer = tracer
        self.root = root
        self._context = trace.set_span_in_context(root)
        self.open: set[_StepSpan | _AttemptSpan] = set()
        """Spans not ended yet; ended by :meth:`finish` (an execution handed over mid-step)."""

    def _parent(self, parent: object) -> otel_context.Context:
        if isinstance(parent, _StepSpan):
            return trace.set_span_in_context(parent.span)
        return self._context

    def step(self, parent: object, path: str) -> _StepSpan:
        span = self._tracer.start_span(
            path, context=self._parent(parent), attributes={"maestro.step": path}
        )
        opened = _StepSpan(self, span)
        self.open.add(opened)
        return opened

    def compensation(self, parent: object, path: str) -> _StepSpan:
        span = self._tracer.start_span(
            f"compensate {path}",
            context=self._parent(parent),
            attributes={"maestro.step": path, "maestro.compensation": True},
        )
        opened = _StepSpan(self, span)
        self.open.add(opened)
        return opened

    def attempt(
        self, parent: object, service: Service, method: str, attempt: int, compensation: bool
    ) -> _AttemptSpan:
        attributes: dict[str, Any] = {"maestro.attempt": attempt}
        if compensation:
            attributes["maestro.compensation"] = True
        grpc = service.type == "grpc"
        if grpc:
            name = method
            attributes["rpc.system"] = "grpc"
            attributes["rpc.method"] = method
        else:
            name = method.split(None, 1)[0].upper() if " " in method.strip() else "POST"
            attributes["http.request.method"] = name
        span = self._tracer.start_span(
            name, context=self._parent(parent), kind=SpanKind.CLIENT, attributes=attributes
        )
        opened = _AttemptSpan(self, span, grpc)
        self.open.add(opened)
        return opened

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Make the execution's span the current one (log lines carry its trace id)."""
        token = otel_context.attach(self._context)
        try:
            yield
        finally:
            otel_context.detach(token)

    def finish(self, result: ExecutionResult | None, status: str | None = None) -> None:
        """End the execution's span (and any left open) with its result or ``status``.

        ``status`` names an end without a result (``HANDED_OVER``, ``LEASE_LOST``,
        ``CANCELLED``, ``CRASHED``).
        """
        for left in list(self.open):
            left.span.set_attribute("maestro.interrupted", True)
            left.span.end()
        self.open.clear()
        root = self.root
        if result is not None:
            root.set_attribute("maestro.status", result.status.value)
            if result.status is not ExecutionStatus.SUCCEEDED:
                code = result.error.code.name if result.error is not None else result.status.value
                root.set_attribute("error.type", code)
                root.set_status(Status(StatusCode.ERROR, code))
        elif status is not None:
            root.set_attribute("maestro.status", status)
            if status in ("CANCELLED", "CRASHED"):
                root.set_attribute("error.type", status)
                root.set_status(Status(StatusCode.ERROR, status))
        root.end()


def log_trace_ids(on: bool) -> None:
    """Have ``--log-format json`` lines carry ``trace_id``/``span_id`` (or stop)."""
    logfmt.set_trace_ids(current_ids if on else None)
