"""Signals through real ``maestro serve`` processes on a SQLite journal (DESIGN §13).

Three workflows of three teams, over the demo services, chained only by signals: ``pay``
charges and emits ``order.paid``; ``fulfil`` is triggered by it (dedup on the order id),
reserves, waits for ``parcel.packed``, emits ``order.ready`` and ships; ``notify`` is triggered
by ``order.ready`` (one execution per signal) and mails the customer. What is checked is what a
client and the services see: the answers of SendSignal, GetSignal and ListSignals, the
executions, the calls each demo service received, and what ``maestro signals show`` prints.
Gateways are killed with SIGKILL (no shutdown of any kind) and started again on the journal.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.gateway import GatewayProcess, retarget, start_gateway
from demo.harness import DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAY = """\
name: pay
services:
  payments: {type: grpc, endpoint: "127.0.0.1:50052", timeout: 5s}
steps:
  - id: charge
    service: payments
    method: shop.v1.Payments/Charge
    input: {order_id: "{{ input.order_id }}", amount: "{{ input.amount }}", currency: EUR}
  - id: paid
    emit:
      signal: order.paid
      params: {order_id: "{{ input.order_id }}", amount: "{{ input.amount }}"}
"""
FULFIL = """\
name: fulfil
triggers:
  - signal: order.paid
    when: "{{ signal.params.amount > 0 }}"
    input: {order_id: "{{ signal.params.order_id }}"}
    dedup: "{{ signal.params.order_id }}"
services:
  inventory: {type: grpc, endpoint: "127.0.0.1:50051", timeout: 5s}
  shipping: {type: grpc, endpoint: "127.0.0.1:50053", timeout: 10s, retry: {attempts: 3}}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {order_id: "{{ input.order_id }}", sku: sku-1, qty: 1}
  - id: packed
    wait:
      signal: parcel.packed
      when: "{{ signal.params.order_id == input.order_id }}"
      timeout: 50s
  - id: ready
    emit:
      signal: order.ready
      params: {order_id: "{{ input.order_id }}", station: "{{ packed.params.station }}"}
  - id: ship
    service: shipping
    method: shop.v1.Shipping/CreateShipment
    input: {order_id: "{{ input.order_id }}", reservation_id: "{{ reserve.id }}", address: here}
"""
NOTIFY = """\
name: notify
triggers:
  - signal: order.ready
services:
  mailer: {type: http, endpoint: "http://127.0.0.1:8081", timeout: 5s}
steps:
  - id: mail
    service: mailer
    method: "POST /orders/{{ input.order_id }}/mail"
    input: {to: customer@example.com, template: ready}
"""
FINISH_WITHIN = 30.0
EXIT_WITHIN = 10.0
STATUS = pb.ExecutionStatus


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def send(name: str, signal_id: str = "", **params: Any) -> pb.SendSignalRequest:
    return pb.SendSignalRequest(name=name, params=struct(params), signal_id=signal_id)


class Gateways:
    """``maestro serve`` processes started one after the other on one journal file."""

    def __init__(self, demo: DemoServices, tmp: Path) -> None:
        self.demo = demo
        self.workflows = tmp / "workflows"
        self.workflows.mkdir()
        addresses = {endpoint.name: endpoint.address for endpoint in demo.all()}
        for name, text in {"pay": PAY, "fulfil": FULFIL, "notify": NOTIFY}.items():
            (self.workflows / f"{name}.yaml").write_text(retarget(text, addresses))
        self.journal = tmp / "journal.db"
        self.gateway: GatewayProcess | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self, env: dict[str, str] | None = None) -> GatewayProcess:
        self.gateway = await start_gateway(
            self.workflows, extra=["--journal", str(self.journal)], env=env or {}
        )
        if self._channel is not None:
            await self._channel.close()
        self._channel = grpc.aio.insecure_channel(self.gateway.address)
        return self.gateway

    @property
    def stub(self) -> Any:
        assert self._channel is not None
        return gateway_pb2_grpc.GatewayStub(self._channel)

    async def kill(self) -> None:
        """SIGKILL the gateway and wait until it is gone."""
        assert self.gateway is not None
        self.gateway.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(EXIT_WITHIN):
            await self.gateway.process.wait()
        await self.gateway.stop()

    async def finished(self, execution_id: str) -> pb.Execution:
        """Poll GetExecution until the execution has finished (bounded)."""
        async with asyncio.timeout(FINISH_WITHIN):
            while True:
                execution = await self.stub.GetExecution(
                    pb.GetExecutionRequest(execution_id=execution_id), timeout=5
                )
                if execution.HasField("end_time"):
                    return execution
                await asyncio.sleep(0.05)

    async def reached(self, execution_id: str, step_id: str) -> None:
        """Wait (bounded) until ``step_id`` of the execution has started."""
        call = self.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=FINISH_WITHIN
        )
        async for event in call:
            if event.HasField("step_started") and event.step_started.step_id == step_id:
                call.cancel()
                return
        raise AssertionError(f"{execution_id} finished without starting {step_id}")

    async def kinds(self, execution_id: str, step_id: str | None = None) -> list[str]:
        """The kinds of the execution's events (of one step's when ``step_id`` is given)."""
        call = self.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=10
        )
        return [
            kind
            async for event in call
            if (kind := str(event.WhichOneof("event")))
            and (step_id is None or getattr(getattr(event, kind), "step_id", None) == step_id)
        ]

    async def executions(self, workflow: str) -> list[str]:
        page = await self.stub.ListExecutions(
            pb.ListExecutionsRequest(workflow=workflow, page_size=1000), timeout=10
        )
        return sorted(e.execution_id for e in page.executions)

    async def emitted(self, execution_id: str) -> list[pb.Signal]:
        page = await self.stub.ListSignals(
            pb.ListSignalsRequest(producer_execution_id=execution_id), timeout=10
        )
        return list(page.signals)

    async def received(self, method: str, order_id: str) -> int:
        """How many ``method`` calls for ``order_id`` the demo services received."""
        count = 0
        for endpoint in self.demo.all():
            for call in await endpoint.control.calls():
                request = call.request if isinstance(call.request, dict) else {}
                count += call.method == method and request.get("order_id", order_id) == order_id
        return count

    async def maestro(self, *args: str) -> tuple[int, str]:
        """Run ``maestro ARGS --target <this gateway>``; its exit status and output."""
        assert self.gateway is not None
        done = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "maestro_gateway", *args, "--target", self.gateway.address),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out = (await asyncio.wait_for(done.communicate(), 60))[0].decode()
        return done.returncode or 0, out

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self.gateway is not None:
            await self.gateway.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def gateways(demo: DemoServices, tmp_path: Path) -> AsyncIterator[Gateways]:
    for endpoint in demo.all():
        await endpoint.control.reset()
    subject = Gateways(demo, tmp_path)
    yield subject
    await subject.close()


async def test_fifty_concurrent_sends_of_one_signal_start_one_execution(
    gateways: Gateways,
) -> None:
    """50 SendSignals of one id at once: one is processed, 49 are duplicates answered with the
    stored signal; one execution, one call. 50 signals of one order under 50 ids: all processed,
    each lists the one execution their dedup key derives."""
    await gateways.start()
    stub = gateways.stub
    answers = await asyncio.gather(
        *(
            stub.SendSignal(send("order.ready", "burst-1", order_id="R-1"), timeout=30)
            for _ in range(50)
        )
    )
    assert sum(not a.duplicate for a in answers) == 1
    assert {a.signal.signal_id for a in answers} == {"burst-1"}
    (first,) = [a for a in answers if not a.duplicate]
    assert list(first.signal.triggered) == ["notify:burst-1"]
    assert (await gateways.finished("notify:burst-1")).status == STATUS.EXECUTION_STATUS_SUCCEEDED
    got = await stub.GetSignal(pb.GetSignalRequest(signal_id="burst-1"), timeout=10)
    assert list(got.triggered) == ["notify:burst-1"]

    answers = await asyncio.gather(
        *(
            stub.SendSignal(send("order.paid", f"paid-{k}", order_id="R-2", amount=5), timeout=30)
            for k in range(50)
        )
    )
    assert not any(a.duplicate for a in answers)
    assert all(list(a.signal.triggered) == ["fulfil:R-2"] for a in answers)
    execution = await stub.GetExecution(pb.GetExecutionRequest(execution_id="fulfil:R-2"))
    assert execution.triggered_by in {f"paid-{k}" for k in range(50)}
    await gateways.reached("fulfil:R-2", "packed")
    await stub.SendSignal(send("parcel.packed", "packed-R-2", order_id="R-2", station="s1"))
    assert (await gateways.finished("fulfil:R-2")).status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert await gateways.executions("notify") == ["notify:burst-1", "notify:fulfil:R-2.ready"]
    await gateways.finished("notify:fulfil:R-2.ready")
    assert await gateways.executions("fulfil") == ["fulfil:R-2"]
    assert await gateways.received("SendMail", "R-1") == 1
    assert await gateways.received("Reserve", "R-2") == 1
    assert await gateways.received("SendMail", "R-2") == 1


async def test_a_waiting_execution_killed_and_restarted_wakes_on_a_later_signal(
    gateways: Gateways,
) -> None:
    """SIGKILLed while waiting: the next gateway resumes the wait without redoing the reserve,
    takes the signal sent to it, emits once and ships once."""
    await gateways.start()
    sent = await gateways.stub.SendSignal(send("order.paid", "k-paid", order_id="K-1", amount=9))
    assert list(sent.signal.triggered) == ["fulfil:K-1"]
    await gateways.reached("fulfil:K-1", "packed")
    await gateways.kill()

    await gateways.start()
    running = await gateways.stub.GetExecution(pb.GetExecutionRequest(execution_id="fulfil:K-1"))
    assert running.status == STATUS.EXECUTION_STATUS_RUNNING
    await gateways.stub.SendSignal(send("parcel.packed", "k-packed", order_id="K-1", station="s2"))
    execution = await gateways.finished("fulfil:K-1")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    kinds = await gateways.kinds("fulfil:K-1")
    assert kinds.count("recovered") == 1
    packed = await gateways.stub.GetSignal(pb.GetSignalRequest(signal_id="k-packed"))
    assert list(packed.woke) == ["fulfil:K-1"]
    assert [s.signal_id for s in await gateways.emitted("fulfil:K-1")] == ["fulfil:K-1.ready"]
    await gateways.finished("notify:fulfil:K-1.ready")
    assert await gateways.executions("notify") == ["notify:fulfil:K-1.ready"]
    assert await gateways.received("Reserve", "K-1") == 1
    assert await gateways.received("CreateShipment", "K-1") == 1
    assert await gateways.received("SendMail", "K-1") == 1


async def test_killed_after_its_emit_a_resumed_execution_does_not_emit_again(
    gateways: Gateways,
) -> None:
    """SIGKILLed while shipping holds the call that follows the emit: after the restart the
    call is retried, the emit is not repeated and its signal started one notification."""
    await gateways.start()
    await gateways.demo.shipping.control.add_fault(method="CreateShipment", delay_ms=5000, times=1)
    await gateways.stub.SendSignal(send("order.paid", "e-paid", order_id="E-1", amount=9))
    await gateways.reached("fulfil:E-1", "packed")
    await gateways.stub.SendSignal(send("parcel.packed", "e-packed", order_id="E-1", station="s3"))
    await gateways.demo.shipping.control.wait_for(
        lambda calls: any(c.method == "CreateShipment" and not c.outcome for c in calls),
        within=FINISH_WITHIN,
    )
    await gateways.demo.mailer.control.wait_for(
        lambda calls: any(c.method == "SendMail" and c.outcome for c in calls),
        within=FINISH_WITHIN,
    )
    await gateways.kill()

    await gateways.start()
    execution = await gateways.finished("fulfil:E-1")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["ship"].attempts == 2
    assert await gateways.kinds("fulfil:E-1", "ready") == ["step_started", "step_succeeded"]
    assert (await gateways.kinds("fulfil:E-1")).count("recovered") == 1
    assert [s.signal_id for s in await gateways.emitted("fulfil:E-1")] == ["fulfil:E-1.ready"]
    assert await gateways.executions("notify") == ["notify:fulfil:E-1.ready"]
    assert await gateways.received("SendMail", "E-1") == 1
    assert await gateways.received("CreateShipment", "E-1") == 2


async def test_killed_between_a_signal_and_the_end_of_its_dispatch(gateways: Gateways) -> None:
    """SIGKILLed by the journal right after the triggered execution's record is committed (the
    signal committed before it, its dispatch not finished): the next gateway resumes that
    execution and dispatches the signal again, which starts nothing twice and records it."""
    await gateways.start(env={"MAESTRO_FAULT_KILL_AFTER_EVENT": "0"})
    with pytest.raises(grpc.aio.AioRpcError):
        await gateways.stub.SendSignal(send("order.ready", "d-ready", order_id="D-1"), timeout=10)
    assert gateways.gateway is not None
    async with asyncio.timeout(EXIT_WITHIN):
        assert await gateways.gateway.process.wait() == -signal.SIGKILL
    await gateways.gateway.stop()

    await gateways.start()
    execution = await gateways.finished("notify:d-ready")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert execution.triggered_by == "d-ready"
    got = await gateways.stub.GetSignal(pb.GetSignalRequest(signal_id="d-ready"))
    assert list(got.triggered) == ["notify:d-ready"]
    assert await gateways.executions("notify") == ["notify:d-ready"]
    assert await gateways.received("SendMail", "D-1") == 1
    again = await gateways.stub.SendSignal(send("order.ready", "d-ready", order_id="D-1"))
    assert again.duplicate


async def test_an_emit_trigger_chain_and_its_lineage(gateways: Gateways) -> None:
    """pay → order.paid → fulfil (woken by parcel.packed) → order.ready → notify: each signal
    names its producer and what it triggered or woke, by GetSignal, ListSignals and the CLI."""
    await gateways.start()
    stub = gateways.stub
    paid = await stub.Execute(
        pb.ExecuteRequest(
            workflow="pay", input=struct({"order_id": "L-1", "amount": 7}), execution_id="pay-L-1"
        ),
        timeout=30,
    ).read()
    assert paid is not None
    await gateways.finished("pay-L-1")
    await gateways.reached("fulfil:L-1", "packed")
    await stub.SendSignal(send("parcel.packed", "l-packed", order_id="L-1", station="s4"))
    await gateways.finished("fulfil:L-1")
    assert (await gateways.finished("notify:fulfil:L-1.ready")).triggered_by == "fulfil:L-1.ready"

    order_paid = await stub.GetSignal(pb.GetSignalRequest(signal_id="pay-L-1.paid"))
    assert order_paid.name == "order.paid"
    assert (order_paid.producer.execution_id, order_paid.producer.step_id) == ("pay-L-1", "paid")
    assert list(order_paid.triggered) == ["fulfil:L-1"]
    assert list(order_paid.woke) == []
    packed = await stub.GetSignal(pb.GetSignalRequest(signal_id="l-packed"))
    assert not packed.HasField("producer")
    assert (list(packed.triggered), list(packed.woke)) == ([], ["fulfil:L-1"])
    (ready,) = await gateways.emitted("fulfil:L-1")
    assert (ready.signal_id, ready.producer.step_id) == ("fulfil:L-1.ready", "ready")
    assert dict(ready.params) == {"order_id": "L-1", "station": "s4"}
    assert list(ready.triggered) == ["notify:fulfil:L-1.ready"]
    assert [s.signal_id for s in await gateways.emitted("pay-L-1")] == ["pay-L-1.paid"]
    by_name = await stub.ListSignals(pb.ListSignalsRequest(name="order.ready"))
    assert [s.signal_id for s in by_name.signals] == ["fulfil:L-1.ready"]
    newest = await stub.ListSignals(pb.ListSignalsRequest(page_size=3))
    assert [s.signal_id for s in newest.signals] == ["fulfil:L-1.ready", "l-packed", "pay-L-1.paid"]

    code, out = await gateways.maestro("signals", "show", "pay-L-1.paid")
    assert code == 0, out
    assert out.splitlines() == [
        "execution pay-L-1 (step paid)",
        '└─ signal order.paid pay-L-1.paid {"amount": 7, "order_id": "L-1"}',
        "   └─ triggered execution fulfil:L-1",
        '      └─ signal order.ready fulfil:L-1.ready {"order_id": "L-1", "station": "s4"}',
        "         └─ triggered execution notify:fulfil:L-1.ready",
    ]
    code, out = await gateways.maestro("signals", "show", "l-packed")
    assert code == 0, out
    assert out.splitlines() == [
        "external producer",
        '└─ signal parcel.packed l-packed {"order_id": "L-1", "station": "s4"}',
        "   └─ woke execution fulfil:L-1",
        '      └─ signal order.ready fulfil:L-1.ready {"order_id": "L-1", "station": "s4"}',
        "         └─ triggered execution notify:fulfil:L-1.ready",
    ]
    code, out = await gateways.maestro("signals", "list", "--producer", "fulfil:L-1")
    assert code == 0, out
    assert out.splitlines()[1].split()[-3:] == ["1", "0", "fulfil:L-1.ready"]
