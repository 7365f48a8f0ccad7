"""Real grpc.aio test servers for the gRPC transport tests, built from ``tests/protos``.

The protos are compiled at run time into a FileDescriptorSet and loaded into a private pool,
so no generated code is committed and the process-wide default pool stays untouched. Services
are served through generic handlers; reflection (v1alpha, optionally v1 too) serves the same
private pool.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer
from grpc_status import rpc_status

PROTO_DIR = Path(__file__).parent / "protos"
KITCHEN_PROTO = PROTO_DIR / "testing" / "v1" / "kitchen.proto"
SERVICES = ("testing.v1.Kitchen", "testing.v1.Mirror")


def compile_protoset(out: Path) -> Path:
    """Compile the test protos (with imports) into a FileDescriptorSet at ``out``."""
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "testing/v1/kitchen.proto",
        ],
        check=True,
        cwd=PROTO_DIR,
        timeout=60,
    )
    return out


class Schema:
    """The compiled test protos: a private pool and message classes by full name."""

    def __init__(self, protoset: Path) -> None:
        self.protoset = protoset
        fds = descriptor_pb2.FileDescriptorSet.FromString(protoset.read_bytes())
        self.pool = descriptor_pool.DescriptorPool()
        for f in fds.file:
            self.pool.Add(f)

    def cls(self, name: str) -> Any:
        """The message class of ``testing.v1.<name>`` (or a full name)."""
        full = name if "." in name else f"testing.v1.{name}"
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full))


@dataclass
class Record:
    """What the test server observed."""

    peers: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    reflection_paths: list[str] = field(default_factory=list)
    sleep_started: asyncio.Event = field(default_factory=asyncio.Event)
    sleep_cancelled: asyncio.Event = field(default_factory=asyncio.Event)


def _handlers(schema: Schema, record: Record) -> list[grpc.GenericRpcHandler]:
    everything = schema.cls("Everything")

    def h(kind: str, fn: Any, request: str = "Everything") -> grpc.RpcMethodHandler:
        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        return factory(
            fn,
            request_deserializer=schema.cls(request).FromString,
            response_serializer=everything.SerializeToString,
        )

    async def echo(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record.peers.append(context.peer())
        record.metadata.append(dict(context.invocation_metadata() or ()))
        return request

    async def fail(request: Any, context: grpc.aio.ServicerContext) -> Any:
        status = status_pb2.Status(code=request.code, message=request.message)
        if request.retry_after_ms:
            detail = any_pb2.Any()
            delay = duration_pb2.Duration()
            delay.FromMilliseconds(request.retry_after_ms)
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
            status.details.append(detail)
        await context.abort_with_status(rpc_status.to_status(status))

    async def count(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        for i in range(request.n):
            yield everything(i64=i, s=f"item {i}")

    async def total(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        out = everything()
        async for r in requests:
            out.i64 += r.i64
            out.longs.append(r.i64)
        return out

    async def chat(
        requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        async for r in requests:
            yield everything(s=r.s.upper())

    async def sleep(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record.sleep_started.set()
        try:
            await asyncio.sleep(request.seconds)
        except asyncio.CancelledError:
            record.sleep_cancelled.set()
            raise
        return everything(s="slept")

    async def who(request: Any, context: grpc.aio.ServicerContext) -> Any:
        record.peers.append(context.peer())
        return everything(s=context.peer())

    kitchen = grpc.method_handlers_generic_handler(
        "testing.v1.Kitchen",
        {
            "Echo": h("unary_unary", echo),
            "Fail": h("unary_unary", fail, "FailRequest"),
            "Count": h("unary_stream", count, "CountRequest"),
            "Sum": h("stream_unary", total),
            "Chat": h("stream_stream", chat),
            "Sleep": h("unary_unary", sleep, "SleepRequest"),
            "Who": h("unary_unary", who),
        },
    )
    mirror = grpc.method_handlers_generic_handler(
        "testing.v1.Mirror", {"Echo": h("unary_unary", echo), "Reflect": h("unary_unary", echo)}
    )
    return [kitchen, mirror]


class _NoDependencies(ReflectionServicer):  # type: ignore[misc]
    """Answers a symbol with its file only, so the client must fetch imports by file name."""

    def _file_containing_symbol(self, request: Any, name: str) -> Any:
        response = super()._file_containing_symbol(request, name)
        files = response.file_descriptor_response.file_descriptor_proto
        if files:
            del files[1:]
        return response


def _reflection_handler(
    schema: Schema, record: Record, version: str, *, send_dependencies: bool = True
) -> grpc.GenericRpcHandler:
    kind = ReflectionServicer if send_dependencies else _NoDependencies
    servicer = kind((*SERVICES, reflection.SERVICE_NAME), pool=schema.pool)
    path = f"grpc.reflection.{version}.ServerReflection"

    async def info(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        record.reflection_paths.append(version)
        async for response in servicer.ServerReflectionInfo(requests, context):
            yield response

    return grpc.method_handlers_generic_handler(
        path,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                info,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )


@dataclass
class RunningServer:
    """A started test server."""

    server: grpc.aio.Server
    port: int
    record: Record

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:port``."""
        return f"127.0.0.1:{self.port}"


async def start_server(
    schema: Schema,
    *,
    reflection_versions: tuple[str, ...] = ("v1alpha",),
    credentials: grpc.ServerCredentials | None = None,
    send_dependencies: bool = True,
) -> RunningServer:
    """Start a test server on 127.0.0.1:0 serving Kitchen and Mirror.

    Args:
        schema: the compiled test protos.
        reflection_versions: which reflection services to serve (``v1alpha``, ``v1``), or none.
        credentials: serve TLS with these credentials instead of plaintext.
        send_dependencies: when false, reflection answers a symbol without its imports.
    """
    record = Record()
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    handlers = _handlers(schema, record)
    handlers += [
        _reflection_handler(schema, record, v, send_dependencies=send_dependencies)
        for v in reflection_versions
    ]
    server.add_generic_rpc_handlers(tuple(handlers))
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return RunningServer(server, port, record)


async def serve_inventory(
    servicer: Any, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start a ``shop.v1.Inventory`` server with reflection on 127.0.0.1:0 (TLS with
    ``credentials``); return it and its port. The caller stops it."""
    from shop.v1 import inventory_pb2, inventory_pb2_grpc

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    inventory_pb2_grpc.add_InventoryServicer_to_server(servicer, server)
    reflection.enable_server_reflection(
        [inventory_pb2.DESCRIPTOR.services_by_name["Inventory"].full_name], server
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, port
