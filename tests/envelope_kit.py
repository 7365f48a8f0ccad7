"""In-process services written for Maestro.go's envelope, for the envelope and --connect tests.

The schema comes from ``tests/protos/legacy`` compiled at run time into a private pool (the
process-wide default pool, which holds the gateway's own ``maestro.v1`` files, stays untouched).
A server answers ``Execute``/``Compensate`` with a handler of the test, records every request
as it arrived, and serves reflection over the private pool unless told not to.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
)
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

LEGACY = Path(__file__).parent / "protos" / "legacy"


class Legacy:
    """One compiled legacy file: a private pool and its message classes."""

    def __init__(self, proto: str, out: Path) -> None:
        well_known = Path(grpc_tools.__file__).parent / "_proto"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{LEGACY}",
                f"-I{well_known}",
                "--include_imports",
                f"--descriptor_set_out={out}",
                proto,
            ],
            check=True,
            cwd=LEGACY,
            timeout=60,
        )
        self.protoset = out
        self.pool = descriptor_pool.DescriptorPool()
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
        for f in files:
            self.pool.Add(f)
        self.services = [f"{f.package}.{s.name}" for f in files for s in f.service]

    def cls(self, name: str) -> Any:
        """The message class of ``maestro.v1.<name>``."""
        return message_factory.GetMessageClass(
            self.pool.FindMessageTypeByName(f"maestro.v1.{name}")
        )


@dataclass
class Received:
    """One envelope call as it arrived."""

    rpc: str
    request: Any
    metadata: dict[str, str]


@dataclass
class EnvelopeServer:
    """A started envelope server."""

    server: grpc.aio.Server
    port: int
    received: list[Received] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"


def struct_data(value: dict[str, Any]) -> Any:
    """``value`` as a Struct packed in an Any."""
    packed = any_pb2.Any()
    message = struct_pb2.Struct()
    message.update(value)
    packed.Pack(message)
    return packed


async def start_envelope(
    legacy: Legacy, answer: Callable[[Received], Any], *, reflection: bool = True
) -> EnvelopeServer:
    """Start a server of ``legacy``'s MaestroService on 127.0.0.1:0.

    Args:
        legacy: the compiled schema.
        answer: builds the response from the call received: a dict of ServiceResponse
            fields (``data`` an Any, or absent), or ``{"abort": (code, message)}`` to fail the
            call with a gRPC status.
        reflection: serve v1alpha reflection over the private pool.
    """
    request_class = legacy.cls("ServiceRequest")
    response_class = legacy.cls("ServiceResponse")
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    running = EnvelopeServer(server, 0)

    def handler(rpc: str) -> grpc.RpcMethodHandler:
        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            received = Received(rpc, request, dict(context.invocation_metadata() or ()))
            running.received.append(received)
            fields = dict(answer(received))
            if "abort" in fields:
                code, message = fields["abort"]
                await context.abort(code, message)
            data = fields.pop("data", None)
            response = response_class(**fields)
            if data is not None:  # an Any of the default pool, into the private pool's Any
                response.data.type_url = data.type_url
                response.data.value = data.value
            return response

        return grpc.unary_unary_rpc_method_handler(
            call,
            request_deserializer=request_class.FromString,
            response_serializer=response_class.SerializeToString,
        )

    handlers: list[grpc.GenericRpcHandler] = [
        grpc.method_handlers_generic_handler(
            "maestro.v1.MaestroService",
            {"Execute": handler("Execute"), "Compensate": handler("Compensate")},
        )
    ]
    if reflection:
        servicer = ReflectionServicer(
            (*legacy.services, "grpc.reflection.v1alpha.ServerReflection"), pool=legacy.pool
        )

        async def info(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in servicer.ServerReflectionInfo(requests, context):
                yield response

        handlers.append(
            grpc.method_handlers_generic_handler(
                "grpc.reflection.v1alpha.ServerReflection",
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        info,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            )
        )
    server.add_generic_rpc_handlers(tuple(handlers))
    running.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return running
