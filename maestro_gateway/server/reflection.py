"""gRPC server reflection, v1 and v1alpha, with method symbols resolvable.

grpcio-reflection ships only the v1alpha service, and its servicer cannot resolve a method
symbol (grpc/grpc#34743): ``grpcurl describe maestro.v1.Gateway.Execute`` fails with "Symbol not
found". :class:`ReflectionServicer` falls back from a method name to its service's file, and is
registered under both ``grpc.reflection.v1alpha`` and ``grpc.reflection.v1`` (the two protocols
have identical messages on the wire; newer grpcurl tries v1 first). The v1 file descriptor is
derived from the v1alpha one so that the v1 service itself can be described too.

The servicer describes only what the server serves: a file that declares services, none of them
served (``maestro/v1/maestro_go.proto``, Maestro.go's envelope, which shares the ``maestro.v1``
package with the Gateway and is compiled into the same process to call downstreams), is not
found, nor is any file that depends on one. Files without services (``google.rpc`` error
details, which grpcurl resolves to print a failure's details) stay describable.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from grpc_reflection.v1alpha import _async as alpha_async
from grpc_reflection.v1alpha import reflection_pb2 as alpha_pb2
from grpc_reflection.v1alpha._base import _file_descriptor_response, _not_found_error

V1ALPHA_SERVICE = "grpc.reflection.v1alpha.ServerReflection"
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


class ReflectionServicer(alpha_async.ReflectionServicer):  # type: ignore[misc]
    """The grpcio reflection servicer, able to answer ``file_containing_symbol`` for methods,
    and describing no service the server does not serve."""

    def __init__(self, service_names: Iterable[str], pool: descriptor_pool.DescriptorPool) -> None:
        super().__init__(service_names, pool=pool)
        self._served = frozenset(self._service_names)
        self._verdicts: dict[str, bool] = {}

    def _describable(self, file: FileDescriptor) -> bool:
        verdict = self._verdicts.get(file.name)
        if verdict is None:
            services = [s.full_name for s in file.services_by_name.values()]
            verdict = (not services or any(s in self._served for s in services)) and all(
                self._describable(d) for d in file.dependencies
            )
            self._verdicts[file.name] = verdict
        return verdict

    def _answer(self, request: Any, file: FileDescriptor) -> Any:
        if not self._describable(file):
            return _not_found_error(request)
        return _file_descriptor_response(file, request)

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            file = self._pool.FindFileByName(filename)
        except KeyError:
            return _not_found_error(request)
        return self._answer(request, file)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        pool = self._pool
        try:
            file = pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            service_name, _, method = fully_qualified_name.rpartition(".")
            try:
                service = pool.FindServiceByName(service_name)
            except KeyError:
                return _not_found_error(request)
            if method not in service.methods_by_name:
                return _not_found_error(request)
            file = service.file
        return self._answer(request, file)

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        try:
            message = self._pool.FindMessageTypeByName(containing_type)
            extension = self._pool.FindExtensionByNumber(message, extension_number)
            file = self._pool.FindFileContainingSymbol(extension.full_name)
        except KeyError:
            return _not_found_error(request)
        return self._answer(request, file)


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
