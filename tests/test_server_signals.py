"""Signals in the gateway (DESIGN §13): SendSignal once, triggers, lineage, the CLI.

The gateway is the real one on 127.0.0.1:0 (engine, loader, journal), over the scripted fakes of
``test_server.py``, on the in-memory journal and on a SQLite file.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import FakeTransports, Harness, ok, wait_for

from maestro_gateway.journal import MemoryJournal, SqliteJournal
from maestro_gateway.journal.base import Journal
from maestro_gateway.server.app import create_gateway

FULFIL = """\
name: fulfil
input:
  type: object
  required: [order_id]
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
triggers:
  - signal: order.paid
    when: "{{ signal.params.amount > 0 }}"
    input: {order_id: "{{ signal.params.order_id }}", by: "{{ signal.signal_id }}"}
steps:
  - {id: pack, service: shop, method: Pack, input: {order: "{{ input.order_id }}"}}
"""
AUDIT = """\
name: audit
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
triggers:
  - signal: order.paid
    dedup: "{{ signal.params.order_id }}"
  - signal: order.refunded
    when: "{{ signal.params.amount > 1000 }}"
steps:
  - {id: record, service: shop, method: Record, input: "{{ input }}"}
"""


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


@pytest.fixture(params=["memory", "sqlite"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    journal: Journal = (
        MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "j.db")
    )
    await journal.open()
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "fulfil.yaml").write_text(FULFIL)
    (directory / "audit.yaml").write_text(AUDIT)
    fakes = FakeTransports({"Pack": ok, "Record": ok})
    server, problems = create_gateway(directory, transports=fakes, journal=journal)
    assert problems == []
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield Harness(server, fakes, gateway_pb2_grpc.GatewayStub(channel), channel)
    await channel.close()
    await server.shutdown(0)


def send(name: str, signal_id: str = "", **params: Any) -> pb.SendSignalRequest:
    return pb.SendSignalRequest(name=name, params=struct(params), signal_id=signal_id)


async def finished(gw: Harness, execution_id: str) -> pb.Execution:
    async with asyncio.timeout(10):
        while True:
            execution = await gw.stub.GetExecution(
                pb.GetExecutionRequest(execution_id=execution_id)
            )
            if execution.HasField("end_time"):
                return execution
            await asyncio.sleep(0.02)


async def test_a_signal_starts_each_matching_trigger_once_with_derived_ids(gw: Harness) -> None:
    sent = await gw.stub.SendSignal(send("order.paid", "pay-1", order_id="A-1", amount=10))
    assert not sent.duplicate
    signal = sent.signal
    assert (signal.signal_id, signal.name) == ("pay-1", "order.paid")
    assert sorted(signal.triggered) == ["audit:A-1", "fulfil:pay-1"]
    assert list(signal.not_matched) == []
    fulfil = await finished(gw, "fulfil:pay-1")
    assert fulfil.status == pb.EXECUTION_STATUS_SUCCEEDED
    assert fulfil.triggered_by == "pay-1"
    assert dict(fulfil.input) == {"order_id": "A-1", "by": "pay-1"}
    audit = await finished(gw, "audit:A-1")
    assert audit.triggered_by == "pay-1"
    assert audit.input["amount"] == 10  # no input template: the params
    packs = [s for s in gw.fakes.seen if s.method == "Pack"]
    assert [p.request for p in packs] == [{"order": "A-1"}]


async def test_a_duplicate_is_answered_with_the_stored_signal_and_starts_nothing(
    gw: Harness,
) -> None:
    first = await gw.stub.SendSignal(send("order.paid", "pay-2", order_id="A-2", amount=5))
    again = await gw.stub.SendSignal(send("order.paid", "pay-2", order_id="other", amount=9))
    assert again.duplicate
    assert again.signal.params["order_id"] == "A-2"
    assert list(again.signal.triggered) == list(first.signal.triggered)
    await finished(gw, "fulfil:pay-2")
    assert [s.method for s in gw.fakes.seen].count("Pack") == 1


async def test_concurrent_duplicates_start_one_execution(gw: Harness) -> None:
    """Ten deliveries of one signal at once: one is processed, nine are duplicates."""
    answers = await asyncio.gather(
        *(gw.stub.SendSignal(send("order.paid", "", order_id="A-3", amount=1)) for _ in range(10))
    )
    assert sum(not a.duplicate for a in answers) == 1
    ids = {a.signal.signal_id for a in answers}
    assert len(ids) == 1  # derived from the name and params
    signal_id = ids.pop()
    await finished(gw, f"fulfil:{signal_id}")
    await wait_for(
        lambda: [s.method for s in gw.fakes.seen].count("Record") == 1, "the audit record"
    )
    assert [s.method for s in gw.fakes.seen].count("Pack") == 1


async def test_dedup_puts_two_signals_onto_one_execution_and_lists_it_for_both(
    gw: Harness,
) -> None:
    await gw.stub.SendSignal(send("order.paid", "p-a", order_id="A-4", amount=1))
    second = await gw.stub.SendSignal(send("order.paid", "p-b", order_id="A-4", amount=1))
    assert "audit:A-4" in second.signal.triggered
    await finished(gw, "audit:A-4")
    audit = await gw.stub.GetExecution(pb.GetExecutionRequest(execution_id="audit:A-4"))
    assert audit.triggered_by == "p-a"


async def test_a_false_when_records_the_workflow_as_not_matched(gw: Harness) -> None:
    sent = await gw.stub.SendSignal(send("order.refunded", "r-1", amount=5))
    assert list(sent.signal.not_matched) == ["audit"]
    assert list(sent.signal.triggered) == []
    got = await gw.stub.GetSignal(pb.GetSignalRequest(signal_id="r-1"))
    assert list(got.not_matched) == ["audit"]
    # The trigger of fulfil on order.paid matches on params, not only the name.
    zero = await gw.stub.SendSignal(send("order.paid", "p-0", order_id="A-5", amount=0))
    assert list(zero.signal.not_matched) == ["fulfil"]
    assert list(zero.signal.triggered) == ["audit:A-5"]


async def test_list_signals_newest_first_by_name_with_pages(gw: Harness) -> None:
    for k in range(5):
        await gw.stub.SendSignal(send("order.refunded", f"r-{k}", amount=1))
    await gw.stub.SendSignal(send("order.paid", "p-x", order_id="A-6", amount=0))
    page = await gw.stub.ListSignals(pb.ListSignalsRequest(name="order.refunded", page_size=3))
    assert [s.signal_id for s in page.signals] == ["r-4", "r-3", "r-2"]
    rest = await gw.stub.ListSignals(
        pb.ListSignalsRequest(name="order.refunded", page_size=3, page_token=page.next_page_token)
    )
    assert [s.signal_id for s in rest.signals] == ["r-1", "r-0"]
    assert rest.next_page_token == ""
    everything = await gw.stub.ListSignals(pb.ListSignalsRequest())
    assert everything.signals[0].signal_id == "p-x"


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.SendSignalRequest(name=""), "name"),
        (pb.SendSignalRequest(name="bad name"), "name"),
        (pb.SendSignalRequest(name="ok", signal_id="no spaces"), "signal_id"),
        (pb.SendSignalRequest(name="ok", signal_id="x" * 129), "signal_id"),
    ],
)
async def test_bad_signals_are_invalid_argument_naming_the_field(
    gw: Harness, request_: pb.SendSignalRequest, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.SendSignal(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (caught.value.details() or "")


async def test_an_unknown_signal_is_not_found(gw: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.GetSignal(pb.GetSignalRequest(signal_id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.ListSignals(pb.ListSignalsRequest(page_token="forged"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def maestro(*args: str, target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maestro_gateway", *args, "--target", target],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_sends_lists_and_shows_a_signal(gw: Harness) -> None:
    target = f"127.0.0.1:{gw.server.port}"
    sent = await asyncio.to_thread(
        maestro,
        "signals",
        "send",
        "order.paid",
        "--params",
        '{"order_id": "C-1", "amount": 3}',
        "--id",
        "cli-1",
        target=target,
    )
    assert sent.returncode == 0, sent.stderr
    assert "signal cli-1 order.paid" in sent.stdout
    assert "triggered fulfil:cli-1" in sent.stdout
    again = await asyncio.to_thread(
        maestro, "signals", "send", "order.paid", "--id", "cli-1", target=target
    )
    assert "duplicate" in again.stdout
    listed = await asyncio.to_thread(maestro, "signals", "list", target=target)
    assert "cli-1" in listed.stdout
    shown = await asyncio.to_thread(maestro, "signals", "show", "cli-1", target=target)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "external producer"
    assert lines[1].startswith("└─ signal order.paid cli-1")
    assert any("triggered execution fulfil:cli-1" in line for line in lines)
    bad = await asyncio.to_thread(maestro, "signals", "send", "x", "--params", "[1]", target=target)
    assert bad.returncode == 2
    missing = await asyncio.to_thread(maestro, "signals", "show", "nope", target=target)
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr
