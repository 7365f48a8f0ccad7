"""The grpcio (``grpc.aio``) side of a demo service: control plane, errors, reflection, health.

:func:`serve` builds a ``grpc.aio`` server for one business servicer with everything a demo
service serves beside it: ``shop.control.v1.Control``, gRPC server reflection under both
``grpc.reflection.v1`` and ``grpc.reflection.v1alpha`` (with method symbols resolvable, which
grpcio-reflection alone cannot do, grpc/grpc#34743) and ``grpc.health.v1``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import descriptor_pool, json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_status import rpc_status
from shop.control.v1 import control_pb2, control_pb2_grpc

from demo.control import ControlPlane, DemoError, make_rule, select_metadata

T = TypeVar("T")

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
CONTROL_SERVICE = "shop.control.v1.Control"


def message_json(message: Message) -> str:
    """Proto3 JSON text of ``message`` with proto field names, compact, zero values omitted."""
    value = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(value, separators=(",", ":"))


def messages_json(messages: Iterable[Message]) -> str:
    """A JSON array of the proto3 JSON of each message (the request of a client stream)."""
    values = [json_format.MessageToDict(m, preserving_proto_field_name=True) for m in messages]
    return json.dumps(values, separators=(",", ":"))


def call_metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The recorded subset of a call's metadata."""
    return select_metadata((m.key, m.value) for m in context.invocation_metadata() or ())


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: DemoError) -> NoReturn:
    """End the call with ``error``; a retry hint travels as a google.rpc.RetryInfo detail."""
    code = grpc.StatusCode[error.code]
    if error.retry_after_ms <= 0:
        await context.abort(code, error.message)
    retry_info = error_details_pb2.RetryInfo()
    retry_info.retry_delay.FromMilliseconds(error.retry_after_ms)
    status = status_pb2.Status(code=code_pb2.Code.Value(error.code), message=error.message)
    status.details.add().Pack(retry_info)
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort_with_status raises")


async def run_call(
    control: ControlPlane,
    method: str,
    request_json: str,
    context: grpc.aio.ServicerContext[Any, Any],
    call: Callable[[], Awaitable[T]],
) -> T:
    """Run one business call through the control plane, mapping :class:`DemoError` to a status."""
    try:
        return await control.handle(method, request_json, call_metadata(context), call)
    except DemoError as exc:
        await abort(context, exc)


class ControlServicer(control_pb2_grpc.ControlServicer):  # type: ignore[misc]
    """``shop.control.v1.Control`` over a :class:`ControlPlane`."""

    def __init__(self, control: ControlPlane, on_reset: Callable[[], None] | None = None) -> None:
        """Serve ``control``; ``on_reset`` also restores the service's own demo data."""
        self._control = control
        self._on_reset = on_reset

    async def AddFault(
        self, request: control_pb2.Fault, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.Empty:
        """Append a fault rule; an invalid one is INVALID_ARGUMENT."""
        try:
            rule = make_rule(
                request.method,
                request.code,
                request.message,
                request.times,
                request.delay_ms,
                request.retry_after_ms,
            )
        except DemoError as exc:
            await abort(context, exc)
        self._control.add_fault(rule)
        return control_pb2.Empty()

    async def Reset(
        self, request: control_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.Empty:
        """Forget every rule and every call, and restore the demo data."""
        self._control.reset()
        if self._on_reset is not None:
            self._on_reset()
        return control_pb2.Empty()

    async def ListCalls(
        self, request: control_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> control_pb2.CallList:
        """The calls received so far, oldest first."""
        return control_pb2.CallList(
            calls=[
                control_pb2.Call(
                    method=c.method,
                    request_json=c.request_json,
                    metadata=c.metadata,
                    outcome=c.outcome,
                    started_unix_ms=c.started_unix_ms,
                    ended_unix_ms=c.ended_unix_ms,
                    rpc=c.rpc,
                )
                for c in self._control.calls()
            ]
        )


class SymbolLookup:
    """Reflection servicer mixin resolving ``pkg.Service.Method`` to its service's file
    (grpcio-reflection alone answers "not found", grpc/grpc#34743); for the async and the
    synchronous servicer alike."""

    _pool: descriptor_pool.DescriptorPool

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        pool = self._pool
        try:
            pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            parent = fully_qualified_name.rpartition(".")[0]
            try:
                service = pool.FindServiceByName(parent)
            except KeyError:
                pass
            else:
                if fully_qualified_name.rpartition(".")[2] in service.methods_by_name:
                    fully_qualified_name = parent
        return super()._file_containing_symbol(request, fully_qualified_name)  # type: ignore[misc]


class _SymbolReflectionServicer(SymbolLookup, ReflectionServicer):  # type: ignore[misc]
    """Reflection that also resolves ``pkg.Service.Method`` to its service's file."""


def add_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection for ``service_names`` under both v1 and v1alpha."""
    names = [*service_names, REFLECTION_V1, REFLECTION_V1ALPHA]
    servicer = _SymbolReflectionServicer(names, pool=descriptor_pool.Default())
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (REFLECTION_V1, REFLECTION_V1ALPHA):
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler}),)
        )


def build_server(
    host: str,
    port: int,
    business_service: str,
    add_business: Callable[[grpc.aio.Server], None],
    control: ControlPlane,
    on_reset: Callable[[], None] | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build (not start) a server with the business service, Control, reflection and health.

    Args:
        host: Address to bind.
        port: Port to bind; 0 picks a free one.
        business_service: Full name of the business service (``shop.v1.Inventory``).
        add_business: Registers the business servicer on the server.
        control: The service's control plane.
        on_reset: Restores the service's demo data on ``Control.Reset``.

    Returns:
        The server, the port it is bound to, and its health servicer.
    """
    # No SO_REUSEPORT: a second demo on the same port must fail, not steal half the calls.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    add_business(server)
    control_pb2_grpc.add_ControlServicer_to_server(ControlServicer(control, on_reset), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    add_reflection(server, [business_service, CONTROL_SERVICE, health.SERVICE_NAME])
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind {host}:{port}")
    return server, bound, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, *names: str) -> None:
    """Report ``""`` and every name in ``names`` as SERVING."""
    for name in ("", *names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
