"""Every method a downstream serves is callable: the health and reflection services included.

A real grpc.aio server on 127.0.0.1:0 serves an application service with a method named
``Check``, the standard health service (grpcio-health-checking) and reflection
(grpcio-reflection) describing all three. Health and reflection stay out of bare-name
resolution, so ``Check`` is the application's, and are reachable by their full names.
(grpcio-channelz is not a dependency here; the health service plays the third-party part.)
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc_tools
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha._async import ReflectionServicer

from maestro_gateway.cli.connect import check_workflows
from maestro_gateway.codes import Code
from maestro_gateway.engine import Engine, ExecutionStatus
from maestro_gateway.errors import ResolutionError
from maestro_gateway.model.loader import load_file, load_string
from maestro_gateway.model.types import Service
from maestro_gateway.transports import Transports
from maestro_gateway.transports.grpc import GrpcTransport

PROTOS = Path(__file__).parent / "protos"
PROBE = "testing.v1.Probe"
REFLECTION = "grpc.reflection.v1alpha.ServerReflection"


def _pool(tmp: Path) -> descriptor_pool.DescriptorPool:
    """probe.proto compiled, with the health and reflection files, in a private pool."""
    out = tmp / "probe.pb"
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "testing/v1/probe.proto",
        ],
        check=True,
        timeout=60,
    )
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file:
        pool.Add(f)
    for module in (health_pb2, reflection_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        pool.Add(proto)
    return pool


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[str]:
    """The server: Probe/Check, grpc.health.v1.Health (Probe SERVING) and reflection."""
    pool = _pool(tmp_path)
    request = message_factory.GetMessageClass(pool.FindMessageTypeByName("testing.v1.ProbeRequest"))
    result = message_factory.GetMessageClass(pool.FindMessageTypeByName("testing.v1.ProbeResult"))

    async def check(req: Any, context: grpc.aio.ServicerContext) -> Any:
        return result(target=req.target, ok=True)

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                PROBE,
                {
                    "Check": grpc.unary_unary_rpc_method_handler(
                        check,
                        request_deserializer=request.FromString,
                        response_serializer=result.SerializeToString,
                    )
                },
            ),
        )
    )
    servicer = health.aio.HealthServicer()
    await servicer.set(PROBE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    reflector = ReflectionServicer((PROBE, health.SERVICE_NAME, REFLECTION), pool=pool)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                REFLECTION,
                {
                    "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                        reflector.ServerReflectionInfo,
                        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


@pytest.fixture
async def transport(endpoint: str) -> AsyncIterator[GrpcTransport]:
    """A transport to the server (protocol auto)."""
    made = GrpcTransport(Service(name="probe", type="grpc", endpoint=endpoint))
    yield made
    await made.close()


async def test_a_bare_name_is_the_applications_even_when_health_has_it(
    transport: GrpcTransport,
) -> None:
    """``Check`` resolves to testing.v1.Probe/Check, not ambiguously with Health/Check."""
    out = await transport.call("Check", {"target": "db"}, timeout=5, metadata=())
    assert out == {"target": "db", "ok": True}


@pytest.mark.parametrize("name", ["grpc.health.v1.Health/Check", "grpc.health.v1.Health.Check"])
async def test_the_health_service_is_callable_by_its_full_name(
    transport: GrpcTransport, name: str
) -> None:
    """A dependency's health is a legitimate step: Health/Check answers by its full name."""
    assert await transport.call(name, {"service": PROBE}, timeout=5, metadata=()) == {
        "status": "SERVING"
    }
    assert await transport.call(name, {}, timeout=5, metadata=()) == {"status": "SERVING"}


async def test_a_bare_name_only_health_has_points_at_its_full_name(
    transport: GrpcTransport,
) -> None:
    """``Watch`` alone is UNIMPLEMENTED, naming the application's methods and the full name."""
    with pytest.raises(ResolutionError) as info:
        await transport.call("Watch", {}, timeout=5, metadata=())
    assert info.value.code is Code.UNIMPLEMENTED
    assert info.value.message == (
        "no service of the target has a method 'Watch'; methods: testing.v1.Probe/Check "
        "(call grpc.health.v1.Health/Watch by its full name)"
    )


async def test_reflection_lists_infrastructure_services_as_reachable(
    transport: GrpcTransport,
) -> None:
    """The descriptors hold every listed service; bare names see the application's only."""
    descriptors = await transport.descriptors(wait=5)
    assert set(descriptors.services) == {PROBE, health.SERVICE_NAME, REFLECTION}
    assert set(descriptors.application) == {PROBE}


WORKFLOW = """
name: probe
services:
  probe: {endpoint: "EP"}
steps:
  - {id: probe, service: probe, method: Check, input: {target: db}}
  - id: healthy
    service: probe
    method: grpc.health.v1.Health/Check
    input: {INPUT}
output: "{{ healthy.status }}"
"""


async def test_a_workflow_checks_a_dependency_health(endpoint: str) -> None:
    """A step calling grpc.health.v1.Health/Check runs; validate --connect checks its fields."""
    text = WORKFLOW.replace("EP", endpoint)
    async with Transports() as transports:
        flow = load_string(text.replace("INPUT", f"service: {PROBE}"))
        result = await Engine(transports).execute(flow, {})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.output == "SERVING"
    notes: list[str] = []
    assert await check_workflows([flow], report=notes.append) == []
    assert notes == [
        "<string>:4:3: note: services.probe: protocol grpc "
        "(reflection lists no maestro.v1.MaestroService)"
    ]


async def test_validate_connect_checks_health_request_fields(endpoint: str, tmp_path: Path) -> None:
    """A wrong field of grpc.health.v1.HealthCheckRequest is reported like any other."""
    path = tmp_path / "probe.yaml"
    path.write_text(WORKFLOW.replace("EP", endpoint).replace("INPUT", "servce: x"))
    (problem,) = await check_workflows([load_file(str(path))], report=None)
    assert "steps.healthy.input.servce" in problem.message
    assert "grpc.health.v1.HealthCheckRequest" in problem.message
