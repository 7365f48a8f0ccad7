"""An async gRPC server reflection client over a ``grpc.aio`` channel.

grpcio-reflection's own client only works on a synchronous channel (and would block the event
loop), so this module speaks the protocol directly: one bidirectional ``ServerReflectionInfo``
stream, one request written and one response read at a time. ``grpc.reflection.v1`` is tried
first and ``grpc.reflection.v1alpha`` second; both use the same messages on the wire. An aio
client probing an unimplemented streaming method sometimes sees INTERNAL "Internal error from
Core" instead of UNIMPLEMENTED (grpc/grpc#36066), so both count as "this version is not served".
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

V1_METHOD = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
V1ALPHA_METHOD = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

INFRASTRUCTURE_SERVICE_PREFIXES = ("grpc.reflection.", "grpc.health.")
"""Services every server may expose beside its own: callable by full name only, and described
when the server can (some list reflection services they cannot describe)."""


class ReflectionError(Exception):
    """The server answered, but reflection could not describe what was asked.

    Attributes:
        not_served: true when the server implements neither reflection version.
    """

    def __init__(self, message: str, *, not_served: bool = False) -> None:
        super().__init__(message)
        self.not_served = not_served


def _not_implemented(err: grpc.aio.AioRpcError) -> bool:
    code = err.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return True
    return code == grpc.StatusCode.INTERNAL and "Internal error from Core" in (err.details() or "")


class _Session:
    """One reflection stream: strictly one request, then its response."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call

    async def ask(
        self, request: reflection_pb2.ServerReflectionRequest
    ) -> reflection_pb2.ServerReflectionResponse:
        await self._call.write(request)
        response = await self._call.read()
        if response is grpc.aio.EOF:
            raise ReflectionError("the reflection stream ended before answering")
        assert isinstance(response, reflection_pb2.ServerReflectionResponse)
        if response.HasField("error_response"):
            err = response.error_response
            raise ReflectionError(
                f"reflection error {err.error_code}: {err.error_message or 'no message'}"
            )
        return response

    async def list_services(self) -> list[str]:
        response = await self.ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return [s.name for s in response.list_services_response.service]

    async def files(self, **what: str) -> list[descriptor_pb2.FileDescriptorProto]:
        try:
            response = await self.ask(reflection_pb2.ServerReflectionRequest(**what))
        except ReflectionError as exc:
            ((kind, name),) = what.items()
            raise ReflectionError(f"{kind.replace('_', ' ')} {name!r}: {exc}") from exc
        return [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]

    def cancel(self) -> None:
        self._call.cancel()


async def _open(
    channel: grpc.aio.Channel,
    rpc_timeout: float | None,
    metadata: Sequence[tuple[str, str | bytes]],
) -> tuple[_Session, list[str]]:
    last: grpc.aio.AioRpcError | None = None
    for path in (V1_METHOD, V1ALPHA_METHOD):
        multi = channel.stream_stream(
            path,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        session = _Session(multi(timeout=rpc_timeout, metadata=tuple(metadata) or None))
        try:
            return session, await session.list_services()
        except grpc.aio.AioRpcError as err:
            session.cancel()
            if not _not_implemented(err):
                raise
            last = err
        except BaseException:
            session.cancel()
            raise
    assert last is not None
    raise ReflectionError(
        f"the server does not serve gRPC reflection (v1 or v1alpha): {last.details()}",
        not_served=True,
    )


async def fetch_descriptors(
    channel: grpc.aio.Channel,
    *,
    rpc_timeout: float | None = None,
    metadata: Sequence[tuple[str, str | bytes]] = (),
) -> tuple[list[str], list[descriptor_pb2.FileDescriptorProto]]:
    """Ask a server for its services and every file needed to describe them.

    Args:
        channel: a channel to the server.
        rpc_timeout: deadline of the whole reflection stream, in seconds.
        metadata: sent with the reflection call (servers may guard it like any method).

    Returns:
        Every service listed (health and reflection included) and the file descriptors
        defining them, dependencies included (in no particular order). An infrastructure
        service the server cannot describe is left out of both.

    Raises:
        grpc.aio.AioRpcError: the call failed (unreachable server, deadline …).
        ReflectionError: reflection is not served, or could not resolve an application
            service or a file.
    """
    session, listed = await _open(channel, rpc_timeout, metadata)
    try:
        services: list[str] = []
        files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        for service in listed:
            if not any(_defines_service(f, service) for f in files.values()):
                try:
                    found = await session.files(file_containing_symbol=service)
                except ReflectionError:
                    if service.startswith(INFRASTRUCTURE_SERVICE_PREFIXES):
                        continue
                    raise
                for proto in found:
                    files.setdefault(proto.name, proto)
            services.append(service)
        missing = _missing_dependencies(files)
        while missing:
            for name in missing:
                for proto in await session.files(file_by_filename=name):
                    files.setdefault(proto.name, proto)
                if name not in files:
                    raise ReflectionError(f"the server did not send the file {name!r}")
            missing = _missing_dependencies(files)
        return services, list(files.values())
    finally:
        session.cancel()


def _defines_service(proto: descriptor_pb2.FileDescriptorProto, service: str) -> bool:
    prefix = f"{proto.package}." if proto.package else ""
    return any(f"{prefix}{s.name}" == service for s in proto.service)


def _missing_dependencies(files: dict[str, descriptor_pb2.FileDescriptorProto]) -> list[str]:
    return sorted({d for f in files.values() for d in f.dependency if d not in files})
