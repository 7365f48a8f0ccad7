"""The gRPC server's metrics under the names of go-grpc-prometheus (DESIGN §14).

A ``grpc.aio`` server interceptor wraps each method handler once (cached by method) and counts,
per ``grpc_type`` (``unary``, ``client_stream``, ``server_stream``, ``bidi_stream``),
``grpc_service`` and ``grpc_method``:

- ``grpc_server_started_total``: RPCs whose handler started;
- ``grpc_server_handled_total{…, grpc_code}``: RPCs that ended, by status code spelt as Go spells
  it (``OK``, ``Canceled``, ``InvalidArgument``, ``DeadlineExceeded`` …), which is what
  dashboards made for go-grpc-prometheus filter on;
- ``grpc_server_handling_seconds``: a histogram of the time from the handler's start to its end;
- ``grpc_server_msg_received_total`` and ``grpc_server_msg_sent_total``: messages read from and
  written to the stream (a unary response counts once it is returned).

The code of an RPC is the one its handler set (``context.abort``, ``set_code``); a handler that
was cancelled ended with DeadlineExceeded when its deadline had passed, Canceled otherwise; any
other exception is Unknown, as grpcio reports it. Methods nobody registered never get a handler
(UNIMPLEMENTED is answered by grpcio itself), so they add no series: the labels are bounded by
the services served.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
"""grpc_code values: the names of Go's ``codes.Code.String()``."""

HANDLING_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""go-grpc-prometheus's default buckets (Prometheus's ``DefBuckets``)."""

_METHOD_LABELS = ("grpc_type", "grpc_service", "grpc_method")


class GrpcServerMetrics:
    """The go-grpc-prometheus server metrics, in ``registry``.

    Args:
        registry: the gateway's own registry (never the process-wide default one).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            _METHOD_LABELS,
            registry=registry,
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            (*_METHOD_LABELS, "grpc_code"),
            registry=registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Histogram of response latency (seconds) of gRPC that had been application-level "
            "handled by the server.",
            _METHOD_LABELS,
            buckets=HANDLING_BUCKETS,
            registry=registry,
        )
        self.received = Counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            _METHOD_LABELS,
            registry=registry,
        )
        self.sent = Counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            _METHOD_LABELS,
            registry=registry,
        )

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """A server interceptor that feeds these metrics."""
        return MetricsInterceptor(self)


class _Series:
    """The label children of one method, bound once."""

    __slots__ = ("_handled", "_labels", "_metrics", "handling", "received", "sent", "started")

    def __init__(self, metrics: GrpcServerMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self.started = metrics.started.labels(*labels)
        self.handling = metrics.handling.labels(*labels)
        self.received = metrics.received.labels(*labels)
        self.sent = metrics.sent.labels(*labels)
        self._handled: dict[str, Counter] = {}

    def end(self, code: str, started: float) -> None:
        """Count one RPC ended with ``code`` after starting at ``started`` (perf_counter)."""
        self.handling.observe(time.perf_counter() - started)
        handled = self._handled.get(code)
        if handled is None:
            handled = self._handled[code] = self._metrics.handled.labels(*self._labels, code)
        handled.inc()


def _code(context: grpc.aio.ServicerContext, error: BaseException | None) -> str:
    """How the RPC ended: the code its handler set, else what ``error`` means."""
    code = context.code()
    if code is not None:
        return (
            GO_CODE_NAMES.get(code, "Unknown") if isinstance(code, grpc.StatusCode) else "Unknown"
        )
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        return "DeadlineExceeded" if remaining is not None and remaining <= 0 else "Canceled"
    return "Unknown"


class _CountingContext:
    """A servicer context that counts the messages its handler writes and reads."""

    __slots__ = ("_context", "_series")

    def __init__(self, context: grpc.aio.ServicerContext, series: _Series) -> None:
        self._context = context
        self._series = series

    async def write(self, message: Any) -> None:
        await self._context.write(message)
        self._series.sent.inc()

    async def read(self) -> Any:
        message = await self._context.read()
        if message is not grpc.aio.EOF:
            self._series.received.inc()
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


async def _counted(requests: AsyncIterator[Any], series: _Series) -> AsyncIterator[Any]:
    async for request in requests:
        series.received.inc()
        yield request


Behavior = Callable[..., Any]


def _wrap(
    behavior: Behavior, series: _Series, request_streaming: bool, response_streaming: bool
) -> Behavior | None:
    """``behavior`` counted, in the same shape (coroutine or async generator); None when the
    handler is synchronous (none of the gateway's are)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            series.started.inc()
            if request_streaming:
                request = _counted(request, series)
            else:
                series.received.inc()
            started = time.perf_counter()
            try:
                async for response in behavior(request, context):
                    yield response
                    series.sent.inc()
            except BaseException as exc:
                series.end(_code(context, exc), started)
                raise
            series.end(_code(context, None), started)

        return stream
    if not inspect.iscoroutinefunction(behavior):
        return None
    coroutine: Callable[..., Awaitable[Any]] = behavior

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        series.started.inc()
        if request_streaming:
            request = _counted(request, series)
        else:
            series.received.inc()
        started = time.perf_counter()
        try:
            if response_streaming or request_streaming:
                response = await coroutine(request, _CountingContext(context, series))
            else:
                response = await coroutine(request, context)
        except BaseException as exc:
            series.end(_code(context, exc), started)
            raise
        if not response_streaming:
            series.sent.inc()
        series.end(_code(context, None), started)
        return response

    return unary


_KINDS = {
    (False, False): ("unary", "unary_unary", grpc.unary_unary_rpc_method_handler),
    (True, False): ("client_stream", "stream_unary", grpc.stream_unary_rpc_method_handler),
    (False, True): ("server_stream", "unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, True): ("bidi_stream", "stream_stream", grpc.stream_stream_rpc_method_handler),
}


class MetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Counts every RPC of the server it is given to (see the module docstring)."""

    def __init__(self, metrics: GrpcServerMetrics) -> None:
        self._metrics = metrics
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """The method's handler, wrapped to be counted."""
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrapped(method, handler)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrapped(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        grpc_type, attribute, make = _KINDS[
            (bool(handler.request_streaming), bool(handler.response_streaming))
        ]
        service, _, name = method.lstrip("/").rpartition("/")
        series = _Series(self._metrics, (grpc_type, service, name))
        behavior = _wrap(
            getattr(handler, attribute),
            series,
            bool(handler.request_streaming),
            bool(handler.response_streaming),
        )
        if behavior is None:
            return handler
        return make(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
