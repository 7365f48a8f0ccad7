"""Overload protection of ``maestro serve``: keepalive enforcement, streams per connection, health.

The tests run a real ``maestro serve`` subprocess over a grpc.aio ``shop.v1.Inventory`` with
reflection in the test process (the dead-peer test runs a grpc.aio server with the gateway's
server options, keepalive times scaled down, behind a TCP relay that can go silent). The
Inventory's ``Reserve`` can hold calls: until a number of them are in flight at once
(``gate``), or until the test releases them (``hold``), and it records the most calls it saw in
flight at once. Nothing here is timed: the waits are bounded, and the assertions are about
outcomes (which calls succeeded, what the server announced or refused).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from e2e_support import run_program
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from grpc_testkit import serve_inventory
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from demo.gateway import GatewayProcess, start_gateway
from maestro_gateway.server.app import KEEPALIVE_TIME_MS, KEEPALIVE_TIMEOUT_MS, SERVER_OPTIONS
from maestro_gateway.transports.grpc.channels import channel_options

NODE = shutil.which("node")
BURST = Path(__file__).resolve().parent / "node" / "burst.js"
WAIT = 20.0
"""Bound of every wait for something the gateway or a client should do."""

WORKFLOW = """\
name: hold
services:
  inventory: {{type: grpc, endpoint: "127.0.0.1:{port}", timeout: 60s}}
steps:
  - id: reserve
    service: inventory
    method: Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: "{{{{ input.sku }}}}", qty: 1}}
"""


class Inventory(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """Holds ``Reserve`` calls: ``gate`` until ``gate_at`` are in flight, ``hold`` until released."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0
        self.gate_at = 0
        self.gate = asyncio.Event()
        self.release = asyncio.Event()
        self.changed = asyncio.Condition()

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        self.active += 1
        self.peak = max(self.peak, self.active)
        async with self.changed:
            self.changed.notify_all()
        try:
            if request.sku == "gate":
                if self.active >= self.gate_at:
                    self.gate.set()
                await self.gate.wait()
            elif request.sku == "hold":
                await self.release.wait()
        finally:
            self.active -= 1
        return inventory_pb2.Reservation(id=f"r-{request.order_id}", sku=request.sku, qty=1)

    async def in_flight(self, n: int) -> None:
        """Return once ``n`` calls are in flight (TimeoutError after :data:`WAIT`)."""
        async with asyncio.timeout(WAIT), self.changed:
            await self.changed.wait_for(lambda: self.active >= n)


@pytest.fixture
async def inventory() -> AsyncIterator[tuple[Inventory, int]]:
    """The Inventory server on 127.0.0.1:0 with reflection; the servicer and its port."""
    servicer = Inventory()
    server, port = await serve_inventory(servicer)
    yield servicer, port
    servicer.gate.set()
    servicer.release.set()
    await server.stop(0)


Serve = Callable[..., Awaitable[GatewayProcess]]


@pytest.fixture
async def serve(tmp_path: Path, inventory: tuple[Inventory, int]) -> AsyncIterator[Serve]:
    """Start ``maestro serve --journal none EXTRA…`` over the ``hold`` workflow; stopped after."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "hold.yaml").write_text(WORKFLOW.format(port=inventory[1]))
    started: list[GatewayProcess] = []

    async def start(*extra: str) -> GatewayProcess:
        gateway = await start_gateway(directory, extra=["--journal", "none", *extra])
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


def request(sku: str, order_id: str = "o-1") -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update({"order_id": order_id, "sku": sku})
    return pb.ExecuteRequest(workflow="hold", input=data)


async def test_too_frequent_client_pings_are_cut_and_well_behaved_clients_are_not(
    serve: Serve, capfd: pytest.CaptureFixture[str]
) -> None:
    """A client pinging every 100 ms gets GOAWAY too_many_pings; one on 60 s pings stays READY."""
    gateway = await serve()
    aggressive = [
        ("grpc.keepalive_time_ms", 100),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    polite = [*channel_options(), ("grpc.use_local_subchannel_pool", 1)]
    async with (
        grpc.aio.insecure_channel(gateway.address, options=aggressive) as pinger,
        grpc.aio.insecure_channel(gateway.address, options=polite) as calm,
    ):
        for channel in (pinger, calm):
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=WAIT
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        calm_changed = asyncio.ensure_future(
            calm.wait_for_state_change(grpc.ChannelConnectivity.READY)
        )
        await asyncio.wait_for(pinger.wait_for_state_change(grpc.ChannelConnectivity.READY), WAIT)
        assert pinger.get_state() != grpc.ChannelConnectivity.READY
        assert not calm_changed.done(), "the well-behaved channel lost its connection"
        assert calm.get_state() == grpc.ChannelConnectivity.READY
        calm_changed.cancel()
        answer = await health_pb2_grpc.HealthStub(calm).Check(
            health_pb2.HealthCheckRequest(), timeout=WAIT
        )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # grpc core logs why the connection went (the client side of it, in this process).
    assert "too_many_pings" in capfd.readouterr().err


async def test_calls_beyond_the_stream_limit_queue_on_a_grpcio_channel(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """200 concurrent Runs on one grpcio channel with a limit of 50: all succeed, 50 at a time."""
    servicer, _ = inventory
    servicer.gate_at = 50
    gateway = await serve("--max-streams-per-connection", "50")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await channel.channel_ready()
        results = await asyncio.gather(
            *(stub.Run(request("gate", f"o-{i}"), timeout=WAIT * 2) for i in range(200)),
            return_exceptions=True,
        )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(r.status == pb.EXECUTION_STATUS_SUCCEEDED for r in results)  # type: ignore[union-attr]
    # The first 50 were held until all 50 were in: the limit was reached, and never passed.
    assert servicer.peak == 50


@pytest.mark.skipif(NODE is None, reason="node is not on PATH")
async def test_calls_beyond_the_stream_limit_queue_on_a_grpc_js_client(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """200 concurrent Runs on one @grpc/grpc-js client with a limit of 50: all succeed."""
    assert NODE is not None
    servicer, _ = inventory
    servicer.gate_at = 50
    gateway = await serve("--max-streams-per-connection", "50")
    done = await run_program(
        [
            NODE, str(BURST), "--address", gateway.address, "--workflow", "hold",
            "--count", "200", "--input", json.dumps({"order_id": "js", "sku": "gate"}),
        ]
    )  # fmt: skip
    assert done.code == 0, done.stdout + done.stderr
    assert json.loads(done.stdout) == {"OK": 200}
    assert servicer.peak == 50


async def test_health_answers_while_every_execution_slot_is_taken(
    serve: Serve, inventory: tuple[Inventory, int]
) -> None:
    """At --max-concurrent in flight health says SERVING and the next Execute is refused at once."""
    servicer, _ = inventory
    gateway = await serve("--max-concurrent", "4")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        held = [stub.Execute(request("hold", f"h-{i}"), timeout=WAIT * 2) for i in range(4)]
        await servicer.in_flight(4)
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "maestro.v1.Gateway"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=WAIT)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, name
        refused = stub.Execute(request("hold", "one-too-many"), timeout=WAIT)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await refused.read()  # no event: refused before an execution exists
        # Not queued behind the held ones: refused with RESOURCE_EXHAUSTED, before its deadline.
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(caught.value)
        assert status is not None
        info = error_details_pb2.ErrorInfo()
        assert status.details[0].Unpack(info)
        assert (info.reason, info.metadata["limit"]) == ("TOO_MANY_EXECUTIONS", "4")
        assert servicer.active == 4
        servicer.release.set()
        for call in held:
            events = [event async for event in call]
            assert events[-1].finished.result.status == pb.EXECUTION_STATUS_SUCCEEDED
        after = await stub.Run(request("free"), timeout=WAIT)
        assert after.status == pb.EXECUTION_STATUS_SUCCEEDED


class Freezer:
    """A TCP relay to a server that can go silent (a vanished peer: no FIN, no answer)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen = asyncio.Event()
        self.upstream_closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]

        async def pump(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, upstream: bool
        ) -> None:
            while data := await source.read(65536):
                if not self.frozen.is_set():
                    sink.write(data)
                    await sink.drain()
            if upstream:
                self.upstream_closed.set()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(pump(reader, up_writer, upstream=False))
            tasks.create_task(pump(up_reader, writer, upstream=True))

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_server_keepalive_finds_an_idle_connection_whose_peer_vanished() -> None:
    """With the gateway's keepalive options (times scaled down) a silent idle peer is dropped."""
    scale = {KEEPALIVE_TIME_MS: 100, KEEPALIVE_TIMEOUT_MS: 300}
    scaled = [
        (key, scale.get(value, value) if "keepalive" in key or "ping" in key else value)
        for key, value in SERVER_OPTIONS
    ]
    assert ("grpc.keepalive_time_ms", 100) in scaled
    server = grpc.aio.server(options=scaled)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    relay = Freezer(port)
    try:
        target = f"127.0.0.1:{await relay.start()}"
        async with grpc.aio.insecure_channel(target) as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=WAIT
            )
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            assert not relay.upstream_closed.is_set()
            relay.frozen.set()  # idle, and the peer goes silent: only a ping can tell
            await asyncio.wait_for(relay.upstream_closed.wait(), WAIT)
    finally:
        await relay.close()
        await server.stop(0)
