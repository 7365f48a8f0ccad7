"""The ``wait`` and ``emit`` step kinds in the gateway (DESIGN §13), with lineage.

Real gateways on 127.0.0.1:0 over the scripted fakes of ``test_server.py``; the restart test
stops one gateway (a hand-over, as a deploy does) and starts another on the same SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import FakeTransports, Harness, ok

from maestro_gateway.journal import MemoryJournal, SqliteJournal
from maestro_gateway.journal.base import Journal
from maestro_gateway.server.app import create_gateway

APPROVE = """\
name: approve
input:
  type: object
  required: [order_id]
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - {id: hold, service: shop, method: Hold, input: {order: "{{ input.order_id }}"}}
  - id: approval
    wait:
      signal: order.approved
      when: "{{ signal.params.order_id == input.order_id }}"
      timeout: 20s
  - id: announce
    emit:
      signal: order.shipped
      params: {order_id: "{{ input.order_id }}", by: "{{ approval.params.by }}"}
  - {id: pack, service: shop, method: Pack, input: {by: "{{ approval.params.by }}", note: "{{ announce.signal_id }}"}}
"""
TWICE = """\
name: twice
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: first
    wait: {signal: tick, timeout: 20s}
  - id: second
    wait: {signal: tick, timeout: 20s}
  - {id: done, service: shop, method: Pack, input: {a: "{{ first.signal_id }}", b: "{{ second.signal_id }}"}}
"""
BRIEF = """\
name: brief
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: never
    wait: {signal: never.sent, timeout: 200ms}
"""
SHIPPED = """\
name: notify-shipped
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
triggers:
  - signal: order.shipped
    input: {order_id: "{{ signal.params.order_id }}"}
steps:
  - {id: mail, service: shop, method: Mail, input: "{{ input }}"}
"""
WORKFLOWS = {
    "approve.yaml": APPROVE,
    "twice.yaml": TWICE,
    "brief.yaml": BRIEF,
    "shipped.yaml": SHIPPED,
}

Launch = Callable[..., Awaitable[Harness]]


class Gate:
    """A method that answers once opened."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()

    async def __call__(self, request: Any) -> Any:
        self.entered.set()
        await self.opened.wait()
        return {"ok": True}


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    started: list[Harness] = []

    async def start(journal: Journal, handlers: dict[str, Any] | None = None) -> Harness:
        directory = tmp_path / f"workflows{len(started)}"
        directory.mkdir()
        for name, text in WORKFLOWS.items():
            (directory / name).write_text(text)
        fakes = FakeTransports({"Hold": ok, "Pack": ok, "Mail": ok, **(handlers or {})})
        server, problems = create_gateway(directory, transports=fakes, journal=journal)
        assert problems == []
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        harness = Harness(server, fakes, gateway_pb2_grpc.GatewayStub(channel), channel)
        started.append(harness)
        return harness

    yield start
    for harness in started:
        await harness.channel.close()
        await harness.server.shutdown(0)


@pytest.fixture(params=["memory", "sqlite"])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    store: Journal = (
        MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "j.db")
    )
    await store.open()
    yield store
    await store.close()


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def start(workflow: str, execution_id: str, **input: Any) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(workflow=workflow, input=struct(input), execution_id=execution_id)


def output(execution: pb.Execution, step: str) -> Any:
    """The output of ``step`` in a finished execution's result, as plain values."""
    found = next(s for s in execution.result.steps if s.step_id == step)
    return json_format.MessageToDict(found.output)


def signal(name: str, signal_id: str, **params: Any) -> pb.SendSignalRequest:
    return pb.SendSignalRequest(name=name, params=struct(params), signal_id=signal_id)


async def finished(gw: Harness, execution_id: str) -> pb.Execution:
    async with asyncio.timeout(15):
        while True:
            execution = await gw.stub.GetExecution(
                pb.GetExecutionRequest(execution_id=execution_id)
            )
            if execution.HasField("end_time"):
                return execution
            await asyncio.sleep(0.02)


async def step_status(gw: Harness, execution_id: str, step: str) -> str:
    events = gw.stub.WatchExecution(pb.WatchExecutionRequest(execution_id=execution_id))
    last = ""
    async with asyncio.timeout(5):
        async for event in events:
            kind = event.WhichOneof("event")
            if getattr(getattr(event, kind), "step_id", None) == step:
                last = kind
            if kind in ("step_started",) and event.step_started.step_id == step:
                events.cancel()
                break
    return last


async def test_a_wait_takes_the_matching_signal_and_an_emit_records_its_producer(
    journal: Journal, launch: Launch
) -> None:
    gw = await launch(journal)
    await gw.stub.Start(start("approve", "A-1", order_id="A-1"))
    assert await step_status(gw, "A-1", "approval") == "step_started"
    other = await gw.stub.SendSignal(signal("order.approved", "ap-other", order_id="B-9", by="x"))
    assert list(other.signal.woke) == []
    sent = await gw.stub.SendSignal(signal("order.approved", "ap-1", order_id="A-1", by="ada"))
    execution = await finished(gw, "A-1")
    assert execution.status == pb.EXECUTION_STATUS_SUCCEEDED
    approval = output(execution, "approval")
    assert approval["signal_id"] == "ap-1"
    assert approval["params"]["by"] == "ada"
    assert sent.signal.signal_id == "ap-1"
    got = await gw.stub.GetSignal(pb.GetSignalRequest(signal_id="ap-1"))
    assert list(got.woke) == ["A-1"]
    emitted = await gw.stub.GetSignal(pb.GetSignalRequest(signal_id="A-1.announce"))
    assert emitted.name == "order.shipped"
    assert (emitted.producer.execution_id, emitted.producer.step_id) == ("A-1", "announce")
    assert emitted.params["by"] == "ada"
    assert list(emitted.triggered) == ["notify-shipped:A-1.announce"]
    by_producer = await gw.stub.ListSignals(pb.ListSignalsRequest(producer_execution_id="A-1"))
    assert [s.signal_id for s in by_producer.signals] == ["A-1.announce"]
    mail = await finished(gw, "notify-shipped:A-1.announce")
    assert mail.triggered_by == "A-1.announce"
    packs = [s.request for s in gw.fakes.seen if s.method == "Pack"]
    assert packs == [{"by": "ada", "note": "A-1.announce"}]


async def test_a_signal_sent_before_the_wait_is_reached_is_not_lost(
    journal: Journal, launch: Launch
) -> None:
    """Sent while the execution is still in its first call: the wait finds it once there."""
    gate = Gate()
    gw = await launch(journal, {"Hold": gate})
    await gw.stub.Start(start("approve", "A-2", order_id="A-2"))
    async with asyncio.timeout(5):
        await gate.entered.wait()
    await gw.stub.SendSignal(signal("order.approved", "ap-2", order_id="A-2", by="bo"))
    gate.opened.set()
    execution = await finished(gw, "A-2")
    assert execution.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert output(execution, "approval")["signal_id"] == "ap-2"


async def test_within_one_execution_a_signal_satisfies_one_wait(
    journal: Journal, launch: Launch
) -> None:
    gw = await launch(journal)
    await gw.stub.Start(start("twice", "T-1"))
    await gw.stub.SendSignal(signal("tick", "t-1"))
    await asyncio.sleep(0.2)
    running = await gw.stub.GetExecution(pb.GetExecutionRequest(execution_id="T-1"))
    assert running.status == pb.EXECUTION_STATUS_RUNNING
    await gw.stub.SendSignal(signal("tick", "t-2"))
    execution = await finished(gw, "T-1")
    assert execution.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert [s.request for s in gw.fakes.seen if s.method == "Pack"] == [{"a": "t-1", "b": "t-2"}]


async def test_a_wait_that_sees_no_signal_fails_with_deadline_exceeded(
    journal: Journal, launch: Launch
) -> None:
    gw = await launch(journal)
    await gw.stub.Start(start("brief", "W-1"))
    execution = await finished(gw, "W-1")
    assert execution.status == pb.EXECUTION_STATUS_FAILED
    assert execution.result.error.code == "DEADLINE_EXCEEDED"
    assert execution.result.error.step_id == "never"
    assert "no signal 'never.sent' within 0.2s" in execution.result.error.message


async def test_a_wait_survives_a_restart_of_the_gateway(tmp_path: Path, launch: Launch) -> None:
    """Stopped while waiting; the next gateway on the journal resumes the wait, which takes the
    signal sent to it then; the emit after it is not sent twice."""
    path = tmp_path / "shared.db"
    first_journal = SqliteJournal(path)
    await first_journal.open()
    first = await launch(first_journal)
    await first.stub.Start(start("approve", "A-3", order_id="A-3"))
    assert await step_status(first, "A-3", "approval") == "step_started"
    await first.channel.close()
    await first.server.shutdown(0)
    second_journal = SqliteJournal(path)
    await second_journal.open()
    second = await launch(second_journal)
    await second.stub.SendSignal(signal("order.approved", "ap-3", order_id="A-3", by="cy"))
    execution = await finished(second, "A-3")
    assert execution.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert [s.method for s in second.fakes.seen if s.method == "Hold"] == []
    emitted = await second.stub.ListSignals(pb.ListSignalsRequest(producer_execution_id="A-3"))
    assert [s.signal_id for s in emitted.signals] == ["A-3.announce"]


async def test_send_signal_answers_with_the_execution_it_woke(
    journal: Journal, launch: Launch
) -> None:
    """The signal SendSignal returns lists under ``woke`` the waiting execution it satisfied."""
    gw = await launch(journal)
    for k in range(5):
        execution_id = f"A-woke-{k}"
        await gw.stub.Start(start("approve", execution_id, order_id=execution_id))
        assert await step_status(gw, execution_id, "approval") == "step_started"
        sent = await gw.stub.SendSignal(
            signal("order.approved", f"ap-woke-{k}", order_id=execution_id, by="di")
        )
        assert list(sent.signal.woke) == [execution_id]
        await finished(gw, execution_id)
