"""Bounds on what a client can send the gateway, and the registration that enforces the first one.

A request grpcio cannot decode (protobuf refuses messages nested deeper than 100 levels, and any
malformed bytes) would otherwise reach grpcio's generic handler and be answered UNKNOWN with the
text of a Python exception and a traceback in the log. :func:`add_gateway_servicer` registers
the Gateway's handlers with a request deserializer that catches the failure and hands the
handler an :class:`Undecodable` marker instead; the handler answers it with INVALID_ARGUMENT
(``reason`` ``INVALID_REQUEST``) and one warning line, no traceback.

The other limits (:class:`RequestLimits`) are checked by the servicer once the request is
decoded: the size and nesting depth of an execution's input, the number of request headers, and
for ``ValidateWorkflow`` a time budget and a bound on validations running at once. Two are
enforced by grpc core before the servicer sees anything: the total size of a call's headers and
the streams one connection may have open at once (HTTP/2 ``SETTINGS_MAX_CONCURRENT_STREAMS``).

The stream bound is announced to clients, which queue the calls beyond it until one of theirs
ends (measured with grpcio and grpc-js; grpc-go does the same). grpc core's server would by
default also count the streams that have ended but whose memory is not freed yet ("overload
protection") and answer the calls that overlap those with REFUSED_STREAM, which grpcio clients
do not retry: measured, 53 of 200 concurrent calls on one grpcio channel failed UNAVAILABLE with
a limit of 100. So :meth:`RequestLimits.server_options` turns that accounting off: the limit
counts open streams only, exactly what clients count. What a connection can cost beyond its
open streams stays bounded by the gateway's own limits (executions in flight, compensating ones
included, and validations in progress), which a reset stream does not leave early.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.codes import Code
from maestro_gateway.server import status as rpc
from maestro_gateway.server.logfmt import logfmt

log = logging.getLogger("maestro_gateway.server")

DEFAULT_MAX_INPUT_BYTES = 1024 * 1024
"""Largest execution input (``ExecuteRequest.input``, encoded), ``--max-input-bytes``."""
DEFAULT_MAX_INPUT_DEPTH = 32
"""Deepest nesting of objects and lists in an execution input, ``--max-input-depth``."""
DEFAULT_MAX_HEADERS = 64
"""Most request headers (metadata entries) on one call, ``--max-headers``."""
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
"""Largest total size of a call's headers, enforced by grpc core, ``--max-header-bytes``."""
DEFAULT_VALIDATE_TIMEOUT = 2.0
"""Seconds one ``ValidateWorkflow`` may take before DEADLINE_EXCEEDED, ``--validate-timeout``."""
DEFAULT_MAX_VALIDATIONS = 4
"""``ValidateWorkflow`` calls running at once; beyond it RESOURCE_EXHAUSTED, ``--max-validations``."""
DEFAULT_MAX_STREAMS_PER_CONNECTION = 1000
"""Streams (calls) one client connection may have open at once; clients queue the rest,
``--max-streams-per-connection``. As many as ``--max-concurrent``'s default, so one channel can
use every execution slot; it also bounds the long-lived ``Watch`` streams of one connection."""


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What the gateway accepts from a client; every bound must be positive.

    Attributes:
        max_input_bytes: the encoded size of an execution's input (Execute, Run, Start) and of
            a signal's params (SendSignal).
        max_input_depth: the nesting depth of either (a scalar is depth 0, ``{}``
            and ``[]`` depth 1).
        max_headers: request metadata entries on any Gateway call.
        max_header_bytes: total header size on the server (grpc ``max_metadata_size``: beyond
            it grpc core ends the call with RESOURCE_EXHAUSTED before the gateway sees it).
        validate_timeout: seconds a ``ValidateWorkflow`` may take (then DEADLINE_EXCEEDED; the
            validation itself still holds its slot until it ends).
        max_validations: ``ValidateWorkflow`` calls in progress at once.
        max_streams_per_connection: calls one client connection may have open at once (HTTP/2
            ``SETTINGS_MAX_CONCURRENT_STREAMS``); clients queue the calls beyond it.
    """

    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_input_depth: int = DEFAULT_MAX_INPUT_DEPTH
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    validate_timeout: float = DEFAULT_VALIDATE_TIMEOUT
    max_validations: int = DEFAULT_MAX_VALIDATIONS
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION

    def __post_init__(self) -> None:
        for name in (
            "max_input_bytes",
            "max_input_depth",
            "max_headers",
            "max_header_bytes",
            "validate_timeout",
            "max_validations",
            "max_streams_per_connection",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")

    def server_options(self) -> list[tuple[str, Any]]:
        """The grpc server options enforcing the header size and the streams per connection."""
        return [
            ("grpc.max_metadata_size", self.max_header_bytes),
            ("grpc.absolute_max_metadata_size", self.max_header_bytes),
            ("grpc.max_concurrent_streams", self.max_streams_per_connection),
            # Count open streams only, as clients do (see the module docstring): with grpc's
            # default, calls a client queued correctly are refused with UNAVAILABLE.
            ("grpc.http.overload_protection", 0),
        ]


class Undecodable:
    """Handed to a handler in place of a request whose bytes could not be decoded."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def value_depth(value: Any, limit: int) -> int:
    """The nesting depth of a JSON-like ``value``, counting no further than ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _safe(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, RecursionError) as exc:
            return Undecodable(str(exc) or type(exc).__name__)

    return deserialize


def _undecodable_status(method: str) -> grpc.Status:
    return rpc.rich_status(
        Code.INVALID_ARGUMENT,
        f"{method}: the request could not be decoded (malformed, or nested deeper than "
        "protobuf's limit of 100 levels)",
        rpc.REASON_INVALID_REQUEST,
        {"method": method},
    )


def _refuse(
    method: str, request: Any, context: grpc.aio.ServicerContext, limits: RequestLimits
) -> grpc.Status | None:
    if isinstance(request, Undecodable):
        log.warning(logfmt("request_refused", method=method, reason="undecodable"))
        return _undecodable_status(method)
    headers = len(context.invocation_metadata() or ())
    if headers > limits.max_headers:
        log.warning(logfmt("request_refused", method=method, reason="too_many_headers"))
        return rpc.rich_status(
            Code.INVALID_ARGUMENT,
            f"{method}: {headers} request headers, over the limit of {limits.max_headers} "
            "(max_headers)",
            rpc.REASON_INVALID_REQUEST,
            {"method": method, "limit": str(limits.max_headers)},
        )
    return None


def _guard(method: str, behavior: Callable[..., Any], limits: RequestLimits) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            refusal = _refuse(method, request, context, limits)
            if refusal is not None:
                await rpc.abort(context, refusal)
            async for item in behavior(request, context):
                yield item

        return stream

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        refusal = _refuse(method, request, context, limits)
        if refusal is not None:
            await rpc.abort(context, refusal)
        return await behavior(request, context)

    return unary


class _Capture:
    """Stands in for a server to collect the generated code's method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        """Ignored: the registered handlers carry the same methods."""

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        """Keep the handlers."""
        self.service = service
        self.handlers = dict(handlers)


def add_gateway_servicer(
    servicer: Any, server: grpc.aio.Server, limits: RequestLimits | None = None
) -> None:
    """Register ``servicer`` as ``maestro.v1.Gateway`` on ``server``, undecodable requests caught.

    The same as the generated ``add_GatewayServicer_to_server``, except that every handler's
    request deserializer returns :class:`Undecodable` instead of raising, and the handler turns
    that, and more than ``limits.max_headers`` request headers, into INVALID_ARGUMENT.
    """
    limits = limits or RequestLimits()
    capture = _Capture()
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, capture)
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for name, handler in capture.handlers.items():
        kind = "unary_stream" if handler.response_streaming else "unary_unary"
        behavior = getattr(handler, kind)
        # The handlers are namedtuples; only unary-request methods exist on the Gateway.
        handlers[name] = handler._replace(
            request_deserializer=_safe(handler.request_deserializer),
            **{kind: _guard(name, behavior, limits)},
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(capture.service, handlers),)
    )
    server.add_registered_method_handlers(capture.service, handlers)


__all__ = [
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_INPUT_BYTES",
    "DEFAULT_MAX_INPUT_DEPTH",
    "DEFAULT_MAX_VALIDATIONS",
    "DEFAULT_VALIDATE_TIMEOUT",
    "RequestLimits",
    "Undecodable",
    "add_gateway_servicer",
    "value_depth",
]
