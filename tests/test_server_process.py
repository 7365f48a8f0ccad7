"""``maestro serve`` as a subprocess, called with grpcurl and the generated Python stubs.

The downstream is a real grpc.aio ``shop.v1.Inventory`` server with reflection, in the test
process; the gateway reaches it through its real transports. ``Reserve`` of the SKU ``hang``
blocks until cancelled, so a test can hold an execution in flight.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_testkit import serve_inventory
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from shop.v1 import inventory_pb2, inventory_pb2_grpc

VENV_BIN = Path(sys.executable).parent
GRPCURL = str(VENV_BIN / "grpcurl")
READY = re.compile(r"maestro-gateway listening on 127\.0\.0\.1:(\d+) \((\d+) workflows\)")

WORKFLOW = """\
name: {name}
services:
  inventory: {{type: grpc, endpoint: "127.0.0.1:{port}", timeout: 30s}}
steps:
  - id: reserve
    service: inventory
    method: Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: "{{{{ input.sku }}}}", qty: 1}}
    compensate:
      method: Release
      input: {{reservation_id: "{{{{ reserve.id }}}}"}}
  - id: hold
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: "{{{{ input.then }}}}", qty: 1}}
"""


@dataclass
class Inventory(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """A downstream that records what it saw."""

    released: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    hanging: asyncio.Event = field(default_factory=asyncio.Event)

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        if request.sku == "hang":
            self.hanging.set()
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.append(request.order_id)
                raise
        return inventory_pb2.Reservation(
            id=f"r-{request.order_id}", sku=request.sku, qty=request.qty
        )

    async def Release(
        self, request: inventory_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReleaseResponse:
        self.released.append(request.reservation_id)
        return inventory_pb2.ReleaseResponse()


@pytest.fixture
async def inventory() -> AsyncIterator[tuple[Inventory, int]]:
    """A shop.v1.Inventory server with reflection on 127.0.0.1:0."""
    servicer = Inventory()
    server, port = await serve_inventory(servicer)
    yield servicer, port
    await server.stop(0)


@dataclass
class Gateway:
    process: asyncio.subprocess.Process
    port: int
    directory: Path
    stderr: list[str]
    channel: grpc.aio.Channel

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def stub(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self.channel)

    async def wait_log(self, text: str, limit: float = 15.0) -> None:
        async with asyncio.timeout(limit):
            while not any(text in line for line in self.stderr):  # noqa: ASYNC110  (a pipe reader fills it)
                await asyncio.sleep(0.02)


Serve = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Serve]:
    """Start ``maestro serve --port 0`` on a directory; kill whatever is still running after."""
    running: list[Gateway] = []
    readers: list[asyncio.Task[None]] = []

    async def start(files: dict[str, str], *extra: str) -> Gateway:
        directory = tmp_path / f"workflows{len(running)}"
        directory.mkdir()
        for name, text in files.items():
            (directory / name).write_text(text)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maestro_gateway",
            "serve",
            "--workflows",
            str(directory),
            "--port",
            "0",
            *extra,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=directory,  # the default journal file lands here, not in the checkout
        )
        stderr: list[str] = []

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for line in process.stderr:
                stderr.append(line.decode(errors="replace"))  # noqa: PERF401  (read live)

        readers.append(asyncio.ensure_future(read_stderr()))
        assert process.stdout is not None
        try:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
        except TimeoutError:
            process.kill()
            raise
        match = READY.fullmatch(line.decode().strip())
        assert match, f"no ready line: {line!r}; stderr: {''.join(stderr)}"
        port = int(match.group(1))
        gateway = Gateway(
            process, port, directory, stderr, grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        )
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        await gateway.channel.close()
        if gateway.process.returncode is None:
            gateway.process.kill()
            await gateway.process.wait()
    for reader in readers:
        reader.cancel()


async def grpcurl(*args: str, data: dict[str, object] | None = None) -> tuple[int, str, str]:
    """Run the real grpcurl binary; return its exit code, stdout and stderr."""
    argv = [GRPCURL, "-plaintext"]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    process = await asyncio.create_subprocess_exec(
        *argv,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def execute_request(name: str, then: str = "SKU-2") -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update({"order_id": "o-1", "sku": "SKU-1", "then": then})
    return pb.ExecuteRequest(workflow=name, input=data)


async def test_grpcurl_lists_describes_and_streams(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """grpcurl lists and describes via reflection, streams Execute, and renders ErrorInfo."""
    _, port = inventory
    gw = await serve({"order.yaml": WORKFLOW.format(name="order", port=port)})
    code, out, err = await grpcurl(gw.address, "list")
    assert code == 0, err
    assert set(out.split()) >= {
        "maestro.v1.Gateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    code, out, err = await grpcurl(gw.address, "describe", "maestro.v1.Gateway.Execute")
    assert code == 0, err
    assert (
        "rpc Execute ( .maestro.v1.ExecuteRequest ) returns ( stream .maestro.v1.ExecutionEvent )"
        in out
    )
    code, out, err = await grpcurl(
        gw.address,
        "maestro.v1.Gateway/Execute",
        data={"workflow": "order", "input": {"order_id": "o-9", "sku": "A", "then": "B"}},
    )
    assert code == 0, err
    events = [json.loads(chunk) for chunk in re.split(r"(?<=\n})\n(?={)", out.strip())]
    assert [
        next(k for k in e if k not in ("execution_id", "sequence", "time")) for e in events
    ] == [
        "started",
        "step_started",
        "step_succeeded",
        "step_started",
        "step_succeeded",
        "finished",
    ]
    assert events[-1]["finished"]["result"]["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert events[2]["step_succeeded"]["output"]["id"] == "r-o-9"
    code, out, err = await grpcurl(gw.address, "maestro.v1.Gateway/Run", data={"workflow": "nope"})
    assert code == 64 + grpc.StatusCode.NOT_FOUND.value[0]
    assert "WORKFLOW_NOT_FOUND" in err
    assert "google.rpc.ErrorInfo" in err


async def test_sigterm_drains_then_cancels_compensates_and_exits_0(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """--journal none, SIGTERM: health goes NOT_SERVING; after --grace the call is cancelled, undone."""
    downstream, port = inventory
    gw = await serve(
        {"order.yaml": WORKFLOW.format(name="order", port=port)},
        "--grace",
        "1s",
        "--journal",
        "none",
    )
    health = health_pb2_grpc.HealthStub(gw.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service="maestro.v1.Gateway"))
    first = await asyncio.wait_for(watch.read(), 10)
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    call = gw.stub.Execute(execute_request("order", then="hang"), timeout=60)
    events: list[pb.ExecutionEvent] = []

    async def read_events() -> None:
        async for event in call:
            events.append(event)  # noqa: PERF401  (keep the events received before an error)

    reader = asyncio.ensure_future(read_events())
    await asyncio.wait_for(downstream.hanging.wait(), 20)
    gw.process.send_signal(signal.SIGTERM)
    second = await asyncio.wait_for(watch.read(), 10)
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(reader, 30)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    result = events[-1].finished.result
    assert result.status == pb.EXECUTION_STATUS_COMPENSATED
    assert (result.error.step_id, result.error.code) == ("hold", "CANCELLED")
    assert await asyncio.wait_for(gw.process.wait(), 30) == 0
    assert downstream.cancelled == ["o-1"]
    assert downstream.released == ["r-o-1"]
    await gw.wait_log("status=COMPENSATED")


async def test_sighup_reload_keeps_old_set_when_a_file_is_broken(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """SIGHUP with a broken file keeps serving the old set; a clean directory is swapped in."""
    _, port = inventory
    gw = await serve({"order.yaml": WORKFLOW.format(name="order", port=port)})
    (gw.directory / "broken.yaml").write_text("name: broken\nsteps: [{id: x}]\n")
    (gw.directory / "more.yml").write_text(WORKFLOW.format(name="more", port=port))
    gw.process.send_signal(signal.SIGHUP)
    await gw.wait_log("reload_rejected")
    assert any("broken.yaml" in line for line in gw.stderr)
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest(), timeout=10)
    assert [w.name for w in listed.workflows] == ["order"]
    (gw.directory / "broken.yaml").unlink()
    gw.process.send_signal(signal.SIGHUP)
    await gw.wait_log("reloaded workflows=2")
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest(), timeout=10)
    assert [w.name for w in listed.workflows] == ["more", "order"]


async def test_invalid_file_is_logged_and_not_served(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """At start-up an invalid file is logged with its diagnostics and the others are served."""
    _, port = inventory
    gw = await serve(
        {
            "order.yaml": WORKFLOW.format(name="order", port=port),
            "bad.yaml": "name: bad\n",
            "dup.yaml": WORKFLOW.format(name="order", port=port),
        }
    )
    listed = await gw.stub.ListWorkflows(pb.ListWorkflowsRequest(), timeout=10)
    assert [w.name for w in listed.workflows] == ["order"]
    await gw.wait_log("bad.yaml")
    await gw.wait_log("already used by")
    result = await gw.stub.Run(execute_request("order"), timeout=30)
    assert result.status == pb.EXECUTION_STATUS_SUCCEEDED
