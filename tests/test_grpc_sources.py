"""Descriptor sources of the gRPC transport: reflection versions, protoset, proto files, TLS."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import pytest
from grpc_testkit import (
    KITCHEN_PROTO,
    PROTO_DIR,
    RunningServer,
    Schema,
    compile_protoset,
    start_server,
)

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import (
    ProtoFilesSource,
    ProtosetSource,
    ReflectionSource,
    Service,
    TLSConfig,
)
from maestro_gateway.transports.grpc import GrpcTransport


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Schema:
    """The test protos, compiled once per session."""
    return Schema(compile_protoset(tmp_path_factory.mktemp("protos") / "kitchen.pb"))


@pytest.fixture
async def servers(schema: Schema) -> AsyncIterator[Callable[..., object]]:
    """Start test servers with chosen options; every one is stopped afterwards."""
    started: list[RunningServer] = []

    async def start(**options: object) -> RunningServer:
        running = await start_server(schema, **options)  # type: ignore[arg-type]
        started.append(running)
        return running

    yield start
    for running in started:
        await running.server.stop(None)


@pytest.fixture
async def transports() -> AsyncIterator[Callable[..., GrpcTransport]]:
    """Build transports; every one is closed afterwards."""
    made: list[GrpcTransport] = []

    def make(endpoint: str, **fields: object) -> GrpcTransport:
        service = Service(name="kitchen", type="grpc", endpoint=endpoint, **fields)  # type: ignore[arg-type]
        made.append(GrpcTransport(service))
        return made[-1]

    yield make
    for transport in made:
        await transport.close()


async def test_v1_reflection_preferred(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """A server serving v1 and v1alpha is asked over v1 only."""
    running: RunningServer = await servers(reflection_versions=("v1", "v1alpha"))  # type: ignore[misc]
    out = await transports(running.endpoint).call("Reflect", {"s": "x"}, timeout=5, metadata=())
    assert out["s"] == "x"
    assert running.record.reflection_paths == ["v1"]


async def test_v1alpha_only_fallback(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """A server serving only v1alpha (grpcio's default) is resolved through the fallback."""
    running: RunningServer = await servers(reflection_versions=("v1alpha",))  # type: ignore[misc]
    method = await transports(running.endpoint).describe("testing.v1.Kitchen.Count")
    assert method.server_streaming
    assert running.record.reflection_paths == ["v1alpha"]


async def test_dependencies_fetched_by_file_name(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """Imports the server did not send with a symbol are fetched with file_by_filename."""
    running: RunningServer = await servers(send_dependencies=False)  # type: ignore[misc]
    out = await transports(running.endpoint).call(
        "testing.v1.Kitchen/Echo",
        {"color": "COLOR_RED", "at": "2024-01-01T00:00:00Z"},
        timeout=5,
        metadata=(),
    )
    assert out["color"] == "COLOR_RED"
    assert out["at"] == "2024-01-01T00:00:00Z"


async def test_no_reflection_is_failed_precondition_under_protocol_grpc(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """protocol: grpc against a server without reflection: FAILED_PRECONDITION, permanent."""
    running: RunningServer = await servers(reflection_versions=())  # type: ignore[misc]
    with pytest.raises(CallError) as info:
        await transports(running.endpoint, descriptors=ReflectionSource(), protocol="grpc").call(
            "Who", {}, timeout=5, metadata=()
        )
    assert info.value.code == Code.FAILED_PRECONDITION
    assert info.value.permanent
    assert "reflection" in info.value.message


async def test_no_reflection_nor_envelope_is_unimplemented_under_auto(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """protocol: auto, no reflection and no Maestro.go envelope: UNIMPLEMENTED naming both."""
    running: RunningServer = await servers(reflection_versions=())  # type: ignore[misc]
    with pytest.raises(CallError) as info:
        await transports(running.endpoint).call("Who", {}, timeout=5, metadata=())
    assert info.value.code == Code.UNIMPLEMENTED
    assert info.value.permanent
    assert running.endpoint in info.value.message
    assert "reflection" in info.value.message
    assert "maestro.v1.MaestroService/Execute" in info.value.message


async def test_protoset_without_reflection(
    schema: Schema, servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """A protoset describes a server that has no reflection."""
    running: RunningServer = await servers(reflection_versions=())  # type: ignore[misc]
    transport = transports(running.endpoint, descriptors=ProtosetSource(str(schema.protoset)))
    out = await transport.call("Count", {"n": 2}, timeout=5, metadata=())
    assert [m["i64"] for m in out] == [0, 1]


async def test_proto_files_without_reflection(
    servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """.proto files compiled at run time describe a server that has no reflection."""
    running: RunningServer = await servers(reflection_versions=())  # type: ignore[misc]
    source = ProtoFilesSource(files=(str(KITCHEN_PROTO),), import_paths=(str(PROTO_DIR),))
    transport = transports(running.endpoint, descriptors=source)
    out = await transport.call("Sum", [{"i64": 1}, {"i64": 2}], timeout=5, metadata=())
    assert out["i64"] == 3


async def test_bad_proto_reports_protoc_error(
    tmp_path: Path, transports: Callable[..., GrpcTransport]
) -> None:
    """A .proto that does not compile is FAILED_PRECONDITION carrying protoc's message."""
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto3";\nmessage M { strin x = 1; }\n')
    transport = transports("127.0.0.1:1", descriptors=ProtoFilesSource(files=(str(bad),)))
    with pytest.raises(CallError) as info:
        await transport.describe("M")
    assert info.value.code == Code.FAILED_PRECONDITION
    assert info.value.permanent
    assert "bad.proto:2" in info.value.message


async def test_missing_protoset(tmp_path: Path, transports: Callable[..., GrpcTransport]) -> None:
    """A protoset path that does not exist is FAILED_PRECONDITION naming the file."""
    path = tmp_path / "missing.pb"
    transport = transports("127.0.0.1:1", descriptors=ProtosetSource(str(path)))
    with pytest.raises(CallError) as info:
        await transport.describe("Echo")
    assert info.value.code == Code.FAILED_PRECONDITION
    assert str(path) in info.value.message


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return key, cert


async def test_tls_with_server_name(
    tmp_path: Path, servers: Callable[..., object], transports: Callable[..., GrpcTransport]
) -> None:
    """TLS with a CA file and server_name works; without trusting the CA the call fails."""
    key, cert = _self_signed(tmp_path)
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    running: RunningServer = await servers(credentials=credentials)  # type: ignore[misc]
    tls = TLSConfig(ca=str(cert), server_name="localhost")
    out = await transports(running.endpoint, tls=tls).call(
        "Who", {"s": "x"}, timeout=5, metadata=()
    )
    assert out["s"].startswith("ipv4:127.0.0.1")
    untrusted = transports(running.endpoint, tls=TLSConfig(server_name="localhost"))
    with pytest.raises(CallError) as info:
        await untrusted.call("Who", {}, timeout=5, metadata=())
    assert info.value.code == Code.UNAVAILABLE


async def test_tls_unreadable_ca(tmp_path: Path, transports: Callable[..., GrpcTransport]) -> None:
    """An unreadable CA file is FAILED_PRECONDITION naming it."""
    tls = TLSConfig(ca=str(tmp_path / "nope.pem"))
    with pytest.raises(CallError) as info:
        await transports("127.0.0.1:1", tls=tls).call("Who", {}, timeout=5, metadata=())
    assert info.value.code == Code.FAILED_PRECONDITION
    assert "nope.pem" in info.value.message
