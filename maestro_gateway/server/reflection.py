"""gRPC server reflection, v1 and v1alpha, with method symbols resolvable.

grpcio-reflection ships only the v1alpha service, and its servicer cannot resolve a method
symbol (grpc/grpc#34743): ``grpcurl describe maestro.v1.Gateway.Execute`` fails with "Symbol not
found". :class:`ReflectionServicer` falls back from a method name to its service's file, and is
registered under both ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1`` (the two protocols
have identical messages on the wire; newer grpcurl tries v1 first). The v1 file descriptor is
derived from the v1alpha one so that the v1 service itself can be described too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import _async as alpha_async
from grpc_reflection.v1alpha import reflection_pb2 as alpha_pb2
from grpc_reflection.v1alpha._base import _file_descriptor_response, _not_found_error

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


class ReflectionServicer(alpha_async.ReflectionServicer):  # type: ignore[misc]
    """The grpcio reflection servicer, able to answer ``file_containing_symbol`` for methods."""

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        pool = self._pool
        try:
            descriptor = pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            service_name, _, method = fully_qualified_name.rpartition(".")
            try:
                service = pool.FindServiceByName(service_name)
            except KeyError:
                return _not_found_error(request)
            if method not in service.methods_by_name:
                return _not_found_error(request)
            descriptor = service.file
        return _file_descriptor_response(descriptor, request)


def _ensure_v1_descriptor(pool: descriptor_pool.DescriptorPool) -> None:
    """Add ``grpc/reflection/v1/reflection.proto`` to ``pool`` (built from the v1alpha file)."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    alpha_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    proto.name = _V1_FILE
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    pool.Add(proto)


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.aio.Server,
    pool: descriptor_pool.DescriptorPool | None = None,
) -> None:
    """Serve reflection v1 and v1alpha on ``server`` for ``service_names`` (plus themselves).

    Args:
        service_names: fully-qualified names of the application services to list.
        server: the server to add the reflection services to (before it starts).
        pool: where descriptors come from (default: the process's default pool).
    """
    pool = pool or descriptor_pool.Default()
    _ensure_v1_descriptor(pool)
    names = [*service_names, V1_SERVICE, V1ALPHA_SERVICE]
    servicer = ReflectionServicer(names, pool=pool)
    for service in (V1ALPHA_SERVICE, V1_SERVICE):
        handler = grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=alpha_pb2.ServerReflectionRequest.FromString,
            response_serializer=alpha_pb2.ServerReflectionResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": handler}),)
        )
