"""The grpclib side of a demo service: control plane, errors, metadata, reflection, health.

betterproto's generated ``*Base`` servicers hand a method only its request message; the call's
metadata lives on the grpclib ``Stream``. :class:`StreamAware` wraps a servicer's handlers so the
current stream is available to the method through a context variable.

betterproto messages carry no protobuf descriptors: reflection serves the descriptors of the
grpcio-generated modules of the same ``.proto`` files (``shop.v1.payments_pb2``, ...), which must
be imported so they are in the default descriptor pool.
"""

from __future__ import annotations

import contextvars
import json
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import betterproto
import grpclib
from google.protobuf import descriptor_pool, duration_pb2
from google.rpc import error_details_pb2
from grpclib.const import Handler, Status
from grpclib.health.service import Health
from grpclib.reflection._deprecated import ServerReflection as ServerReflectionV1Alpha
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server, Stream
from grpclib.utils import _service_name
from shop_betterproto.shop.control import v1 as control  # type: ignore[import-untyped]

from demo.control import ControlPlane, DemoError, make_rule, select_metadata

T = TypeVar("T")

_current_stream: contextvars.ContextVar[Stream[Any, Any]] = contextvars.ContextVar("demo_stream")


def message_json(message: betterproto.Message) -> str:
    """Proto3 JSON text of ``message`` with proto field names, compact, zero values omitted."""
    # betterproto types Casing members as plain functions, which its own signature rejects.
    value = message.to_dict(casing=betterproto.Casing.SNAKE)  # type: ignore[arg-type]
    return json.dumps(value, separators=(",", ":"))


def to_grpc_error(error: DemoError) -> grpclib.GRPCError:
    """The grpclib error for ``error``; a retry hint travels as a google.rpc.RetryInfo detail."""
    details = None
    if error.retry_after_ms > 0:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(error.retry_after_ms)
        details = [error_details_pb2.RetryInfo(retry_delay=delay)]
    return grpclib.GRPCError(Status[error.code], error.message, details)


def current_metadata() -> dict[str, str]:
    """The recorded subset of the metadata of the call being handled."""
    stream = _current_stream.get(None)
    if stream is None or stream.metadata is None:
        return {}
    return select_metadata(stream.metadata.items())


async def run_call(
    control: ControlPlane, method: str, request_json: str, call: Callable[[], Awaitable[T]]
) -> T:
    """Run one business call through the control plane, mapping :class:`DemoError` to grpclib."""
    try:
        return await control.handle(method, request_json, current_metadata(), call)
    except DemoError as exc:
        raise to_grpc_error(exc) from None


class StreamAware:
    """Mixin for betterproto servicers: expose the grpclib stream of the current call."""

    def __mapping__(self) -> dict[str, Handler]:
        """The parent's handlers, each setting the current stream before it runs."""
        mapping: dict[str, Handler] = super().__mapping__()  # type: ignore[misc]
        return {
            path: handler._replace(func=_with_stream(handler.func))
            for path, handler in mapping.items()
        }


def _with_stream(
    func: Callable[[Stream[Any, Any]], Awaitable[None]],
) -> Callable[[Stream[Any, Any]], Awaitable[None]]:
    async def handler(stream: Stream[Any, Any]) -> None:
        token = _current_stream.set(stream)
        try:
            await func(stream)
        finally:
            _current_stream.reset(token)

    return handler


class ControlServicer(control.ControlBase):  # type: ignore[misc]
    """``shop.control.v1.Control`` over a :class:`ControlPlane`, on grpclib."""

    def __init__(self, plane: ControlPlane, on_reset: Callable[[], None] | None = None) -> None:
        """Serve ``plane``; ``on_reset`` also restores the service's own demo data."""
        self._plane = plane
        self._on_reset = on_reset

    async def add_fault(self, fault: control.Fault) -> control.Empty:
        """Append a fault rule; an invalid one is INVALID_ARGUMENT."""
        try:
            rule = make_rule(
                fault.method,
                fault.code,
                fault.message,
                fault.times,
                fault.delay_ms,
                fault.retry_after_ms,
            )
        except DemoError as exc:
            raise to_grpc_error(exc) from None
        self._plane.add_fault(rule)
        return control.Empty()

    async def reset(self, empty: control.Empty) -> control.Empty:
        """Forget every rule and every call, and restore the demo data."""
        self._plane.reset()
        if self._on_reset is not None:
            self._on_reset()
        return control.Empty()

    async def list_calls(self, empty: control.Empty) -> control.CallList:
        """The calls received so far, oldest first."""
        return control.CallList(
            calls=[
                control.Call(
                    method=c.method,
                    request_json=c.request_json,
                    metadata=dict(c.metadata),
                    outcome=c.outcome,
                    started_unix_ms=c.started_unix_ms,
                    ended_unix_ms=c.ended_unix_ms,
                )
                for c in self._plane.calls()
            ]
        )


def method_symbol_to_service(symbol: str) -> str:
    """Map ``pkg.Service.Method`` to ``pkg.Service``, which the descriptor pool can find.

    The pool's ``FindFileContainingSymbol`` does not know method names, so without this
    ``grpcurl describe pkg.Service.Method`` fails with "Symbol not found".
    """
    pool = descriptor_pool.Default()
    try:
        pool.FindFileContainingSymbol(symbol)
    except KeyError:
        parent, _, name = symbol.rpartition(".")
        try:
            if name in pool.FindServiceByName(parent).methods_by_name:
                return parent
        except KeyError:
            pass
    return symbol


class _Reflection(ServerReflection):
    def _file_containing_symbol_response(self, symbol: str) -> Any:
        return super()._file_containing_symbol_response(method_symbol_to_service(symbol))


class _ReflectionV1Alpha(ServerReflectionV1Alpha):
    def _file_containing_symbol_response(self, symbol: str) -> Any:
        return super()._file_containing_symbol_response(method_symbol_to_service(symbol))


def build_server(services: Iterable[Any]) -> tuple[Server, Health]:
    """A grpclib server for ``services`` plus reflection (v1 and v1alpha) and health."""
    services = list(services)
    health = Health({service: [] for service in services})
    services.append(health)
    names = [_service_name(service) for service in services]
    names += ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
    reflection: list[Any] = [
        _Reflection(_service_names=names),
        _ReflectionV1Alpha(_service_names=names),
    ]
    server = Server([*services, *reflection])
    return server, health


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 picks a free port), for ``Server.start``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
