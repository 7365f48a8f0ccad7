"""The execution RPCs of DESIGN §10 in-process: Start, attaching by id, Get/List/Watch/Cancel.

The gateway is the real one on 127.0.0.1:0 (real engine, loader and journal) built as in
``test_server.py``, whose fakes and helpers are reused: the downstream is a ``FakeTransports`` of
scripted async handlers, so a test decides when a call returns, fails or hangs and sees every call
it received. The key tests run on the in-memory journal and on a SQLite file in ``tmp_path``;
the outage tests fill the SQLite file for real (``PRAGMA max_page_count``: SQLITE_FULL). The last
tests start ``maestro serve`` processes to check how ``--journal`` is refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import (
    CHECKOUT,
    PING,
    FakeTransports,
    Harness,
    collect,
    declined,
    error_info,
    ok,
    request,
    reserve,
    wait_for,
)

from demo.gateway import start_gateway
from maestro_gateway.codes import Code
from maestro_gateway.engine.events import ExecutionResult, ExecutionStatus
from maestro_gateway.engine.journaling import result_data
from maestro_gateway.errors import CallError
from maestro_gateway.journal import MemoryJournal, SqliteJournal
from maestro_gateway.journal.base import ExecutionRecord, ExecutionState, Journal, StateEntry
from maestro_gateway.server import app
from maestro_gateway.server.app import DEFAULT_RETENTION, create_gateway

BULK = """\
name: bulk
input:
  type: object
  properties:
    blob: {type: string}
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: hold
    service: shop
    method: Hold
    input: {}
  - id: store
    service: shop
    method: Store
    input: {a: "{{ input.blob }}", b: "{{ input.blob }}", c: "{{ input.blob }}"}
"""

BOUNDED = """\
name: bounded
timeout: 300ms
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: hold
    service: shop
    method: Hold
    input: {}
"""

WORKFLOWS = {
    "checkout.yaml": CHECKOUT,
    "ping.yml": PING,
    "bulk.yaml": BULK,
    "bounded.yaml": BOUNDED,
}
GATEWAY = "maestro.v1.Gateway"
RUNNING = pb.EXECUTION_STATUS_RUNNING
SUCCEEDED = pb.EXECUTION_STATUS_SUCCEEDED
FAILED = pb.EXECUTION_STATUS_FAILED
COMPENSATING = pb.EXECUTION_STATUS_COMPENSATING
COMPENSATED = pb.EXECUTION_STATUS_COMPENSATED

WATCH_LIMIT = 0.9
"""Seconds: below the watcher's journal poll (1 s), so a watcher that polls would not pass."""

Launch = Callable[..., Awaitable[Harness]]


@dataclass
class Gate:
    """A downstream method that blocks until opened, then answers (or fails); sees cancels."""

    reply: Any = field(default_factory=lambda: {"ok": True})
    error: CallError | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, request: Any) -> Any:
        self.entered.set()
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.error is not None:
            raise self.error
        return self.reply

    async def wait_entered(self) -> None:
        async with asyncio.timeout(10):
            await self.entered.wait()


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Start gateways on 127.0.0.1:0 over fakes (memory journal unless given); stop them after."""
    started: list[Harness] = []

    async def start(
        journal: Journal | None = None, *, retention: float = DEFAULT_RETENTION
    ) -> Harness:
        directory = tmp_path / f"workflows{len(started)}"
        directory.mkdir()
        for name, text in WORKFLOWS.items():
            (directory / name).write_text(text)
        fakes = FakeTransports(
            {
                "Reserve": reserve,
                "Release": ok,
                "Charge": ok,
                "Ping": ok,
                "Hold": ok,
                "Store": ok,
            }
        )
        server, problems = create_gateway(
            directory, transports=fakes, journal=journal, retention=retention
        )
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
    """An opened journal of each kind; the gateway closes it (closing again is harmless)."""
    store: Journal = (
        MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "j.db")
    )
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def gw(journal: Journal, launch: Launch) -> Harness:
    """A gateway on each kind of journal."""
    return await launch(journal)


def execution_request(
    execution_id: str,
    workflow: str = "checkout",
    labels: dict[str, str] | None = None,
    **input: Any,
) -> pb.ExecuteRequest:
    """An ExecuteRequest with a caller-chosen id (the input defaults to test_server's)."""
    req = request(workflow, **input)
    req.execution_id = execution_id
    req.labels.update(labels or {})
    return req


def reordered(req: pb.ExecuteRequest) -> bytes:
    """``req`` on the wire with its input's entries in reverse key order (protobuf merges them)."""
    parts = [
        pb.ExecuteRequest(
            workflow=req.workflow, execution_id=req.execution_id, labels=req.labels
        ).SerializeToString()
    ]
    for key in sorted(req.input.fields, reverse=True):
        one = pb.ExecuteRequest()
        one.input.fields[key].CopyFrom(req.input.fields[key])
        parts.append(one.SerializeToString())
    return b"".join(parts)


def raw_execute(channel: grpc.aio.Channel) -> Any:
    """``Gateway/Execute`` taking an already serialised request."""
    return channel.unary_stream(
        f"/{GATEWAY}/Execute",
        request_serializer=lambda raw: raw,
        response_deserializer=pb.ExecutionEvent.FromString,
    )


async def read_events(
    call: Any, count: int | None = None
) -> tuple[list[pb.ExecutionEvent], grpc.aio.AioRpcError | None]:
    """Read ``count`` events (all when None) with ``read()``; also the error ending the stream."""
    events: list[pb.ExecutionEvent] = []
    try:
        async with asyncio.timeout(20):
            while count is None or len(events) < count:
                event = await call.read()
                if event is grpc.aio.EOF:
                    break
                events.append(event)
    except grpc.aio.AioRpcError as err:
        return events, err
    return events, None


async def watch(gw: Harness, execution_id: str, after: int = 0) -> list[pb.ExecutionEvent]:
    """Every event WatchExecution sends; it must end OK."""
    call = gw.stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after), timeout=20
    )
    events, err = await read_events(call)
    assert err is None, err
    return events


async def get(gw: Harness, execution_id: str) -> pb.Execution:
    """GetExecution."""
    return await gw.stub.GetExecution(pb.GetExecutionRequest(execution_id=execution_id), timeout=10)


async def refused(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    """The error a unary call fails with."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def kinds(events: list[pb.ExecutionEvent]) -> list[str]:
    """The oneof member set in each event."""
    return [str(e.WhichOneof("event")) for e in events]


def methods(gw: Harness) -> list[str]:
    """The downstream methods called so far, in order."""
    return [seen.method for seen in gw.fakes.seen]


async def health(gw: Harness) -> list[int]:
    """The health status of "" and maestro.v1.Gateway."""
    stub = health_pb2_grpc.HealthStub(gw.channel)
    return [
        (await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)).status
        for name in ("", GATEWAY)
    ]


async def health_becomes(gw: Harness, status: int, within: float) -> None:
    """Follow the health of maestro.v1.Gateway (Watch) until it is ``status``, then check ""."""
    stub = health_pb2_grpc.HealthStub(gw.channel)
    watching = stub.Watch(health_pb2.HealthCheckRequest(service=GATEWAY), timeout=10)
    async with asyncio.timeout(within):
        while (await watching.read()).status != status:
            pass
    watching.cancel()
    assert await health(gw) == [status, status]


async def gone(gw: Harness, execution_id: str) -> bool:
    """Whether GetExecution answers NOT_FOUND."""
    try:
        await get(gw, execution_id)
    except grpc.aio.AioRpcError as err:
        return bool(err.code() == grpc.StatusCode.NOT_FOUND)
    return False


# -- Start and GetExecution ----------------------------------------------------------------


async def test_start_returns_running_at_once_and_the_execution_runs_without_a_caller(
    gw: Harness,
) -> None:
    """Start answers RUNNING while a call hangs; the execution finishes on its own, Get shows it."""
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    req = execution_request("start-1", labels={"team": "shop", "env": "test"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.server.port}") as caller:
        started = await gateway_pb2_grpc.GatewayStub(caller).Start(req, timeout=0.3)
    assert started.execution_id == "start-1"
    assert started.workflow == "checkout"
    assert started.status == RUNNING
    assert json_format.MessageToDict(started.input) == {"sku": "A-1", "qty": 2}
    assert dict(started.labels) == {"team": "shop", "env": "test"}
    assert started.start_time.seconds > 0
    assert not started.HasField("end_time")
    assert not started.HasField("result")

    await charge.wait_entered()  # the caller has gone: the execution goes on
    await asyncio.sleep(0.3)  # past the deadline of the Start call: it does not bound the run
    assert not charge.cancelled.is_set()
    running = await get(gw, "start-1")
    assert running.status == RUNNING
    assert not running.HasField("end_time")
    assert not running.HasField("result")
    assert running.last_sequence == 4  # started, reserve started and succeeded, charge started
    assert running.start_time == started.start_time

    charge.opened.set()
    events = await watch(gw, "start-1")
    assert kinds(events)[-1] == "finished"
    done = await get(gw, "start-1")
    assert done.status == SUCCEEDED
    assert done.last_sequence == events[-1].sequence == 6
    assert done.result == events[-1].finished.result
    assert done.result.status == SUCCEEDED
    assert done.result.execution_id == "start-1"
    assert json_format.MessageToDict(done.result.output)["charge"] == {"ok": True}
    assert done.HasField("end_time")
    assert done.end_time.ToNanoseconds() >= done.start_time.ToNanoseconds()
    assert done.input == req.input
    assert dict(done.labels) == {"team": "shop", "env": "test"}
    assert done.triggered_by == ""
    assert methods(gw) == ["Reserve", "Charge"]


async def test_a_started_execution_is_bounded_by_its_workflow_timeout(gw: Harness) -> None:
    """Without a caller, the workflow timeout ends a Start-ed execution: the call is cancelled."""
    hold = Gate()
    gw.fakes.handlers["Hold"] = hold
    started = await gw.stub.Start(execution_request("bounded-1", "bounded"), timeout=10)
    assert started.status == RUNNING
    events = await watch(gw, "bounded-1")
    assert hold.cancelled.is_set()
    result = events[-1].finished.result
    assert result.status == FAILED
    assert (result.error.step_id, result.error.code) == ("hold", "DEADLINE_EXCEEDED")
    assert (await get(gw, "bounded-1")).result == result


async def test_start_with_invalid_input_or_an_unknown_workflow_is_refused(gw: Harness) -> None:
    """Start has the admission errors of Execute, and nothing is journaled or called."""
    err = await refused(gw.stub.Start(execution_request("bad-1", sku="A-1"), timeout=10))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qty" in (err.details() or "")
    err = await refused(gw.stub.Start(execution_request("bad-2", "nope"), timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert await gone(gw, "bad-1")
    assert await gone(gw, "bad-2")
    assert gw.fakes.seen == []


# -- attaching by execution_id -------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
async def test_execute_with_an_existing_id_attaches_from_the_first_event(
    gw: Harness, outcome: str
) -> None:
    """Execute with a known id (input keys in another order) replays from 1, follows, ends alike."""
    declines = outcome == "fails"
    charge = Gate(error=CallError(Code.FAILED_PRECONDITION, "card declined") if declines else None)
    gw.fakes.handlers["Charge"] = charge
    req = execution_request("attach-1", sku="A-1", qty=2, note="n", tags=["a", "b"])
    original = asyncio.ensure_future(collect(gw.stub.Execute(req, timeout=30)))
    await charge.wait_entered()

    raw = reordered(req)
    assert raw != req.SerializeToString()
    attached = raw_execute(gw.channel)(raw, timeout=30)
    so_far, err = await read_events(attached, 4)
    assert err is None
    assert [e.sequence for e in so_far] == [1, 2, 3, 4]
    assert kinds(so_far) == ["started", "step_started", "step_succeeded", "step_started"]
    charge.opened.set()
    rest, attached_err = await read_events(attached)
    async with asyncio.timeout(20):
        events, original_err = await original

    assert so_far + rest == events
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert kinds(events)[-1] == "finished"
    if outcome == "succeeds":
        assert original_err is None
        assert attached_err is None
        assert methods(gw) == ["Reserve", "Charge"]
    else:
        assert events[-1].finished.result.status == COMPENSATED
        assert original_err is not None
        assert attached_err is not None
        assert attached_err.code() == original_err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert attached_err.details() == original_err.details()
        assert error_info(attached_err) == error_info(original_err)
        assert methods(gw) == ["Reserve", "Charge", "Release"]


@pytest.mark.parametrize("outcome", ["succeeds", "fails"])
async def test_run_with_an_existing_id_waits_and_returns_the_same_result(
    gw: Harness, outcome: str
) -> None:
    """Run with a known id waits for the running execution and returns (or fails with) its result."""
    declines = outcome == "fails"
    charge = Gate(error=CallError(Code.FAILED_PRECONDITION, "card declined") if declines else None)
    gw.fakes.handlers["Charge"] = charge
    req = execution_request("attach-run")
    first = asyncio.ensure_future(gw.stub.Run(req, timeout=30))
    await charge.wait_entered()
    attached = asyncio.ensure_future(gw.stub.Run(req, timeout=30))
    await asyncio.sleep(0.2)
    assert not attached.done()  # it waits for the execution
    charge.opened.set()
    async with asyncio.timeout(20):
        outcomes = await asyncio.gather(first, attached, return_exceptions=True)
    later = await asyncio.gather(gw.stub.Run(req, timeout=10), return_exceptions=True)
    if outcome == "succeeds":
        results = [o for o in [*outcomes, *later] if isinstance(o, pb.ExecutionResult)]
        assert len(results) == 3
        assert results[0] == results[1] == results[2]
        assert results[0].status == SUCCEEDED
        assert methods(gw) == ["Reserve", "Charge"]
    else:
        errors = [o for o in [*outcomes, *later] if isinstance(o, grpc.aio.AioRpcError)]
        assert len(errors) == 3
        assert {e.code() for e in errors} == {grpc.StatusCode.FAILED_PRECONDITION}
        assert {e.details() for e in errors} == {"card declined"}
        assert error_info(errors[1]) == error_info(errors[0]) == error_info(errors[2])
        assert error_info(errors[0]).metadata["status"] == "COMPENSATED"
        assert methods(gw) == ["Reserve", "Charge", "Release"]


async def test_start_with_an_existing_id_attaches_and_runs_nothing(gw: Harness) -> None:
    """Start with the id of a finished execution returns that execution and calls nothing."""
    req = execution_request("again-1")
    result = await gw.stub.Run(req, timeout=30)
    again = await gw.stub.Start(req, timeout=10)
    assert again.status == SUCCEEDED
    assert again.result == result
    assert (await gw.stub.Run(req, timeout=10)) == result
    events, err = await collect(gw.stub.Execute(req, timeout=10))
    assert err is None
    assert events == await watch(gw, "again-1")
    assert methods(gw) == ["Reserve", "Charge"]


async def test_cancel_or_deadline_of_an_attached_call_does_not_cancel_the_execution(
    gw: Harness,
) -> None:
    """An attached Execute cancelled, or Run/Execute past their deadline, leave it running."""
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    req = execution_request("watched-1")
    await gw.stub.Start(req, timeout=10)
    await charge.wait_entered()

    cancelled = gw.stub.Execute(req, timeout=30)
    first, err = await read_events(cancelled, 1)
    assert err is None
    assert first[0].sequence == 1
    cancelled.cancel()
    late = await refused(gw.stub.Run(req, timeout=0.3))
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    streamed, late = await read_events(gw.stub.Execute(req, timeout=0.5))
    assert [e.sequence for e in streamed] == [1, 2, 3, 4]
    assert late is not None
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    await asyncio.sleep(0.2)  # a cancel would reach the downstream within milliseconds
    assert not charge.cancelled.is_set()
    assert (await get(gw, "watched-1")).status == RUNNING
    charge.opened.set()
    assert kinds(await watch(gw, "watched-1"))[-1] == "finished"
    assert (await get(gw, "watched-1")).status == SUCCEEDED
    assert methods(gw) == ["Reserve", "Charge"]


async def test_the_same_id_with_another_input_or_workflow_is_already_exists(
    gw: Harness,
) -> None:
    """The id of another request (other input, other workflow) is ALREADY_EXISTS naming it."""
    await gw.stub.Run(execution_request("taken-1"), timeout=30)
    other_input = execution_request("taken-1", sku="A-1", qty=3)
    other_workflow = execution_request("taken-1", "ping")
    for call in (
        gw.stub.Run(other_input, timeout=10),
        gw.stub.Start(other_input, timeout=10),
        gw.stub.Run(other_workflow, timeout=10),
        gw.stub.Start(other_workflow, timeout=10),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "taken-1" in (err.details() or "")
        info = error_info(err)
        assert info.reason == "EXECUTION_ALREADY_EXISTS"
        assert info.metadata["execution_id"] == "taken-1"
    events, err = await collect(gw.stub.Execute(other_input, timeout=10))
    assert events == []
    assert err is not None
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert methods(gw) == ["Reserve", "Charge"]
    assert (await get(gw, "taken-1")).input == execution_request("taken-1").input


async def test_twenty_concurrent_runs_with_one_id_run_it_once(gw: Harness) -> None:
    """20 Run calls at once with one id: one execution, each service called once, one result."""
    gate = Gate(reply={"id": "r-1"})
    gw.fakes.handlers["Reserve"] = gate
    req = execution_request("once-1")
    runs = [asyncio.ensure_future(gw.stub.Run(req, timeout=30)) for _ in range(20)]
    await gate.wait_entered()
    await asyncio.sleep(0.2)  # let every call reach the gateway while the first one is in flight
    gate.opened.set()
    async with asyncio.timeout(20):
        results = await asyncio.gather(*runs)
    assert all(r == results[0] for r in results)
    assert results[0].status == SUCCEEDED
    assert methods(gw) == ["Reserve", "Charge"]
    listed = await gw.stub.ListExecutions(pb.ListExecutionsRequest(), timeout=10)
    assert [e.execution_id for e in listed.executions] == ["once-1"]


# -- ids -----------------------------------------------------------------------------------


LOOKUPS = ["GetExecution", "WatchExecution", "CancelExecution"]


async def lookup(gw: Harness, rpc: str, execution_id: str) -> grpc.aio.AioRpcError | None:
    """Call one of the lookup RPCs; the error it ends with, or None."""
    if rpc == "GetExecution":
        call: Awaitable[Any] = gw.stub.GetExecution(
            pb.GetExecutionRequest(execution_id=execution_id), timeout=10
        )
    elif rpc == "CancelExecution":
        call = gw.stub.CancelExecution(
            pb.CancelExecutionRequest(execution_id=execution_id), timeout=10
        )
    else:
        stream = gw.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=10
        )
        events, err = await read_events(stream)
        assert events == []
        return err
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err
    return None


@pytest.mark.parametrize("rpc", LOOKUPS)
async def test_an_unknown_id_is_not_found(gw: Harness, rpc: str) -> None:
    """Get, Watch and Cancel of an id the journal does not hold are NOT_FOUND naming it."""
    err = await lookup(gw, rpc, "never-started")
    assert err is not None
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "never-started" in (err.details() or "")
    info = error_info(err)
    assert info.reason == "EXECUTION_NOT_FOUND"
    assert info.metadata["execution_id"] == "never-started"


@pytest.mark.parametrize("rpc", LOOKUPS)
@pytest.mark.parametrize("bad", ["", "a b", "a/b", "new\nline", "é", "x" * 1025])
async def test_an_empty_or_malformed_id_is_invalid_argument(
    launch: Launch, rpc: str, bad: str
) -> None:
    """Get, Watch and Cancel with an empty or malformed id: INVALID_ARGUMENT, field execution_id."""
    gw = await launch()
    err = await lookup(gw, rpc, bad)
    assert err is not None
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err)
    assert info.reason == "INVALID_REQUEST"
    assert info.metadata["field"] == "execution_id"


@pytest.mark.parametrize("bad", ["x" * 129, "a b", "a/b", "a\tb", "é", "a{b}", "a,b"])
async def test_a_caller_chosen_id_too_long_or_with_bad_characters_is_refused(
    launch: Launch, bad: str
) -> None:
    """Execute, Run and Start with a bad execution_id: INVALID_ARGUMENT naming the field, no events."""
    gw = await launch()
    req = execution_request(bad)
    events, err = await collect(gw.stub.Execute(req, timeout=10))
    assert events == []
    errors = [err, await refused(gw.stub.Run(req, timeout=10))]
    errors.append(await refused(gw.stub.Start(req, timeout=10)))
    for error in errors:
        assert error is not None
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "execution_id" in (error.details() or "")
        assert error_info(error).metadata["field"] == "execution_id"
    assert gw.fakes.seen == []


@pytest.mark.parametrize(
    "good", ["x" * 128, "lines[2].reserve", "order-1:retry_2.A[0][1]", "Z9._:-[]"]
)
async def test_ids_of_128_characters_and_with_brackets_are_accepted(
    launch: Launch, good: str
) -> None:
    """Up to 128 of A-Za-z0-9._:-[] is a valid id (§12: derived ids hold step paths)."""
    gw = await launch()
    result = await gw.stub.Run(execution_request(good), timeout=30)
    assert result.execution_id == good
    found = await get(gw, good)
    assert (found.execution_id, found.status) == (good, SUCCEEDED)
    assert kinds(await watch(gw, good))[-1] == "finished"


# -- ListExecutions ------------------------------------------------------------------------


def listing(response: pb.ListExecutionsResponse) -> list[str]:
    """The ids of one page, in order."""
    return [e.execution_id for e in response.executions]


async def every_page(gw: Harness, where: pb.ListExecutionsRequest) -> tuple[list[str], int]:
    """Follow next_page_token from the first page to the last: every id listed, and the pages."""
    ids: list[str] = []
    pages = 0
    while True:
        page = await gw.stub.ListExecutions(where, timeout=10)
        ids += listing(page)
        pages += 1
        if not page.next_page_token:
            return ids, pages
        where.page_token = page.next_page_token


async def test_list_is_newest_first_and_filters_by_workflow_and_any_of_the_statuses(
    gw: Harness,
) -> None:
    """ListExecutions: newest first; workflow; any of the statuses; workflow AND statuses."""
    gw.fakes.handlers["Charge"] = declined
    await gw.stub.Run(execution_request("l-1", "ping"), timeout=30)
    await refused(gw.stub.Run(execution_request("l-2"), timeout=30))  # compensated
    gw.fakes.handlers["Ping"] = declined
    await refused(gw.stub.Run(execution_request("l-3", "ping"), timeout=30))  # failed
    gw.fakes.handlers["Ping"] = ok
    gw.fakes.handlers["Charge"] = ok
    await gw.stub.Run(execution_request("l-4"), timeout=30)
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    await gw.stub.Start(execution_request("l-5"), timeout=10)
    await charge.wait_entered()
    await gw.stub.Run(execution_request("l-6", "ping"), timeout=30)

    async def ids(workflow: str = "", *statuses: int) -> list[str]:
        where = pb.ListExecutionsRequest(workflow=workflow, statuses=statuses)
        response = await gw.stub.ListExecutions(where, timeout=10)
        assert response.next_page_token == ""
        return listing(response)

    everything = await gw.stub.ListExecutions(pb.ListExecutionsRequest(), timeout=10)
    assert listing(everything) == ["l-6", "l-5", "l-4", "l-3", "l-2", "l-1"]
    assert [e.status for e in everything.executions] == [
        SUCCEEDED,
        RUNNING,
        SUCCEEDED,
        FAILED,
        COMPENSATED,
        SUCCEEDED,
    ]
    starts = [e.start_time.ToNanoseconds() for e in everything.executions]
    assert starts == sorted(starts, reverse=True)
    assert everything.executions[1] == await get(gw, "l-5")
    assert await ids("checkout") == ["l-5", "l-4", "l-2"]
    assert await ids("ping") == ["l-6", "l-3", "l-1"]
    assert await ids("", SUCCEEDED) == ["l-6", "l-4", "l-1"]
    assert await ids("", FAILED, COMPENSATED) == ["l-3", "l-2"]
    assert await ids("", RUNNING, COMPENSATING) == ["l-5"]
    assert await ids("checkout", SUCCEEDED, RUNNING) == ["l-5", "l-4"]
    assert await ids("ping", FAILED) == ["l-3"]
    assert await ids("ping", COMPENSATED) == []
    assert await ids("nope") == []
    charge.opened.set()
    await watch(gw, "l-5")
    assert await ids("", RUNNING) == []
    assert await ids("checkout", SUCCEEDED) == ["l-5", "l-4"]


async def test_list_pages_default_50_at_most_1000_without_duplicates_or_gaps(
    gw: Harness,
) -> None:
    """Page size 50 by default, clamped to 1000; pages chain with no duplicate and no gap."""
    total = 1003
    limit = asyncio.Semaphore(50)

    async def run(n: int) -> None:
        async with limit:
            await gw.stub.Run(execution_request(f"p-{n:04}", "ping"), timeout=30)

    async with asyncio.timeout(50):
        await asyncio.gather(*(run(n) for n in range(total)))

    first = await gw.stub.ListExecutions(pb.ListExecutionsRequest(), timeout=10)
    assert len(first.executions) == 50
    assert first.next_page_token
    biggest = await gw.stub.ListExecutions(pb.ListExecutionsRequest(page_size=5000), timeout=30)
    assert len(biggest.executions) == 1000
    assert listing(biggest)[:50] == listing(first)
    last = await gw.stub.ListExecutions(
        pb.ListExecutionsRequest(page_size=1000, page_token=biggest.next_page_token), timeout=30
    )
    assert len(last.executions) == 3
    assert last.next_page_token == ""
    newest_first = listing(biggest) + listing(last)
    assert sorted(newest_first) == [f"p-{n:04}" for n in range(total)]
    starts = [e.start_time.ToNanoseconds() for e in [*biggest.executions, *last.executions]]
    assert starts == sorted(starts, reverse=True)

    assert await every_page(gw, pb.ListExecutionsRequest(page_size=97)) == (newest_first, 11)
    where = pb.ListExecutionsRequest(workflow="ping", statuses=[SUCCEEDED], page_size=400)
    assert await every_page(gw, where) == (newest_first, 3)


async def test_list_refuses_a_garbage_page_token_and_an_unknown_status(gw: Harness) -> None:
    """A page token it did not issue, or a status number it does not know: INVALID_ARGUMENT."""
    for token in ("garbage", "bTE6WyJ4IiwxXQ", "%%%", 'm1:[1, "a"]'):
        err = await refused(
            gw.stub.ListExecutions(pb.ListExecutionsRequest(page_token=token), timeout=10)
        )
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, token
        assert error_info(err).metadata["field"] == "page_token"
    for status in (99, pb.EXECUTION_STATUS_UNSPECIFIED):
        where = pb.ListExecutionsRequest(statuses=[SUCCEEDED])
        where.statuses.append(status)
        err = await refused(gw.stub.ListExecutions(where, timeout=10))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(status) in (err.details() or "")
        assert error_info(err).metadata["field"] == "statuses"


# -- WatchExecution ------------------------------------------------------------------------


async def test_watch_from_a_sequence_then_live_until_finished(gw: Harness) -> None:
    """Watch sends the journaled events above after_sequence, then the live ones, then ends OK."""
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    await gw.stub.Start(execution_request("w-1"), timeout=10)
    await charge.wait_entered()
    whole = gw.stub.WatchExecution(pb.WatchExecutionRequest(execution_id="w-1"), timeout=20)
    tail = gw.stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id="w-1", after_sequence=2), timeout=20
    )
    head, err = await read_events(whole, 4)
    assert err is None
    assert [e.sequence for e in head] == [1, 2, 3, 4]
    above, err = await read_events(tail, 2)
    assert err is None
    assert above == head[2:]
    charge.opened.set()
    rest, err = await read_events(whole)
    assert err is None
    assert [e.sequence for e in rest] == [5, 6]
    assert kinds(rest) == ["step_succeeded", "finished"]
    more, err = await read_events(tail)
    assert err is None
    assert more == rest
    assert head + rest == await watch(gw, "w-1")


@pytest.mark.parametrize("outcome", ["compensated", "failed"])
async def test_watch_ends_ok_whatever_the_status_and_replays_a_finished_execution(
    gw: Harness, outcome: str
) -> None:
    """Watch of a compensated or failed execution ends OK after finished, live or replayed."""
    charge = Gate(error=CallError(Code.FAILED_PRECONDITION, "card declined"))
    gw.fakes.handlers["Charge"] = charge
    if outcome == "failed":
        gw.fakes.handlers["Reserve"] = charge
    await gw.stub.Start(execution_request("w-2"), timeout=10)
    await charge.wait_entered()
    live = asyncio.ensure_future(watch(gw, "w-2"))
    await asyncio.sleep(0.05)
    charge.opened.set()
    async with asyncio.timeout(20):
        events = await live
    result = events[-1].finished.result
    expected = COMPENSATED if outcome == "compensated" else FAILED
    assert result.status == expected
    assert (await get(gw, "w-2")).status == expected
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert await watch(gw, "w-2") == events
    assert await watch(gw, "w-2", after=3) == events[3:]
    assert await watch(gw, "w-2", after=len(events) - 1) == events[-1:]


async def test_watch_after_the_last_sequence_of_a_finished_execution_ends_at_once(
    gw: Harness,
) -> None:
    """A client reconnecting after it saw finished gets no event and an OK end, not a hang."""
    await gw.stub.Run(execution_request("w-3"), timeout=30)
    last = (await get(gw, "w-3")).last_sequence
    async with asyncio.timeout(WATCH_LIMIT):
        assert await watch(gw, "w-3", after=last) == []
        assert await watch(gw, "w-3", after=last + 10) == []


# -- CancelExecution -----------------------------------------------------------------------


async def test_cancel_execution_cancels_calls_in_flight_and_compensates(gw: Harness) -> None:
    """CancelExecution: the call in flight sees the cancel, compensations run, CANCELLED + reason."""
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    await gw.stub.Start(execution_request("c-1"), timeout=10)
    await charge.wait_entered()
    answer = await gw.stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id="c-1", reason="customer changed their mind"),
        timeout=10,
    )
    assert answer.execution_id == "c-1"
    assert answer.status in (COMPENSATING, COMPENSATED)
    assert charge.cancelled.is_set()
    events = await watch(gw, "c-1")
    assert kinds(events)[-3:] == ["compensation_started", "compensation_succeeded", "finished"]
    failed = events[kinds(events).index("step_failed")].step_failed
    assert (failed.step_id, failed.error.code) == ("charge", "CANCELLED")
    result = events[-1].finished.result
    assert result.status == COMPENSATED
    assert (result.error.step_id, result.error.code) == ("charge", "CANCELLED")
    assert "customer changed their mind" in result.error.message
    done = await get(gw, "c-1")
    assert done.status == COMPENSATED
    assert done.result == result
    if answer.status == COMPENSATED:
        assert answer == done
    assert methods(gw) == ["Reserve", "Charge", "Release"]

    err = await refused(
        gw.stub.CancelExecution(pb.CancelExecutionRequest(execution_id="c-1"), timeout=10)
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(err)
    assert info.reason == "EXECUTION_FINISHED"
    assert info.metadata["execution_id"] == "c-1"


async def test_cancel_of_a_finished_execution_is_failed_precondition(gw: Harness) -> None:
    """A succeeded or failed execution cannot be cancelled; it stays as it was."""
    await gw.stub.Run(execution_request("c-2", "ping"), timeout=30)
    gw.fakes.handlers["Ping"] = declined
    await refused(gw.stub.Run(execution_request("c-3", "ping"), timeout=30))
    for execution_id, status in (("c-2", SUCCEEDED), ("c-3", FAILED)):
        err = await refused(
            gw.stub.CancelExecution(
                pb.CancelExecutionRequest(execution_id=execution_id, reason="late"), timeout=10
            )
        )
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert execution_id in (err.details() or "")
        assert (await get(gw, execution_id)).status == status


@pytest.mark.parametrize("rpc", ["Run", "Execute"])
async def test_cancel_execution_of_a_call_in_progress_ends_it_with_the_cancel(
    gw: Harness, rpc: str
) -> None:
    """The Run or Execute that started a cancelled execution fails with CANCELLED and the reason."""
    charge = Gate()
    gw.fakes.handlers["Charge"] = charge
    req = execution_request("c-4")
    if rpc == "Run":
        call: asyncio.Future[Any] = asyncio.ensure_future(gw.stub.Run(req, timeout=30))
    else:
        call = asyncio.ensure_future(collect(gw.stub.Execute(req, timeout=30)))
    await charge.wait_entered()
    await gw.stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id="c-4", reason="stock recount"), timeout=10
    )
    async with asyncio.timeout(20):
        if rpc == "Run":
            err = await refused(call)
        else:
            events, stream_err = await call
            assert events[-1].finished.result.status == COMPENSATED
            assert stream_err is not None
            err = stream_err
    assert err.code() == grpc.StatusCode.CANCELLED
    assert "stock recount" in (err.details() or "")
    info = error_info(err)
    assert info.reason == "CANCELLED"
    assert dict(info.metadata) == {
        "execution_id": "c-4",
        "workflow": "checkout",
        "step_id": "charge",
        "status": "COMPENSATED",
    }
    assert methods(gw) == ["Reserve", "Charge", "Release"]


# -- the journal unavailable ---------------------------------------------------------------


async def test_a_full_disk_refuses_new_executions_and_holds_calls_until_it_is_lifted(
    launch: Launch, tmp_path: Path
) -> None:
    """SQLITE_FULL: UNAVAILABLE for new work, NOT_SERVING, no call sent; all continues once lifted."""
    journal = SqliteJournal(tmp_path / "full.db")
    await journal.open()
    gw = await launch(journal)
    hold = Gate()
    gw.fakes.handlers["Hold"] = hold
    # The next call's intent (three copies of the blob) needs more pages than the file has free.
    blob = "x" * 20_000
    await gw.stub.Start(execution_request("full-1", "bulk", blob=blob), timeout=10)
    await hold.wait_entered()
    assert await health(gw) == [health_pb2.HealthCheckResponse.SERVING] * 2

    await journal._writer_pragma("PRAGMA max_page_count = 1")  # = the pages it has now
    hold.opened.set()
    await wait_for(lambda: not journal.writable, "a commit failed")
    for call in (
        gw.stub.Run(execution_request("full-2", "ping"), timeout=10),
        gw.stub.Start(execution_request("full-3", "ping"), timeout=10),
    ):
        err = await refused(call)
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(err).reason == "JOURNAL_UNAVAILABLE"
    events, err = await collect(gw.stub.Execute(execution_request("full-4", "ping"), timeout=10))
    assert events == []
    assert err is not None
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(err).reason == "JOURNAL_UNAVAILABLE"
    await health_becomes(gw, health_pb2.HealthCheckResponse.NOT_SERVING, within=1.5)
    await asyncio.sleep(0.3)  # retries of the commit: still nothing may be sent
    assert methods(gw) == ["Hold"]
    held = await get(gw, "full-1")  # reads still work; nothing uncommitted is shown
    assert held.status == RUNNING
    assert held.last_sequence == 2  # started, hold started: not hold's success
    for execution_id in ("full-2", "full-3", "full-4"):
        assert await gone(gw, execution_id)

    await journal._writer_pragma("PRAGMA max_page_count = 1073741823")
    events = await watch(gw, "full-1")
    assert kinds(events) == [
        "started",
        "step_started",
        "step_succeeded",
        "step_started",
        "step_succeeded",
        "finished",
    ]
    assert events[-1].finished.result.status == SUCCEEDED
    assert methods(gw) == ["Hold", "Store"]
    assert gw.fakes.seen[1].request == {"a": blob, "b": blob, "c": blob}
    await health_becomes(gw, health_pb2.HealthCheckResponse.SERVING, within=1.5)
    assert (await gw.stub.Run(execution_request("full-5", "ping"), timeout=10)).status == SUCCEEDED


async def test_a_record_committed_after_its_caller_left_still_runs(
    launch: Launch, tmp_path: Path
) -> None:
    """Disk full unnoticed: the caller's deadline passes; once committed, the execution still ends."""
    journal = SqliteJournal(tmp_path / "full.db")
    await journal.open()
    gw = await launch(journal)
    await journal._writer_pragma("PRAGMA max_page_count = 1")
    req = execution_request("late-1", "bulk", blob="x" * 60_000)  # the record needs new pages
    err = await refused(gw.stub.Run(req, timeout=0.5))
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert not journal.writable
    await journal._writer_pragma("PRAGMA max_page_count = 1073741823")
    await wait_for(lambda: journal.writable, "the record committed")
    # Attaching must not wait for an execution that nothing runs: it ended at its deadline.
    again = await refused(gw.stub.Run(req, timeout=10))
    assert again.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert again.details() == "caller deadline exceeded"
    done = await get(gw, "late-1")
    assert done.status == FAILED
    assert done.result.error.code == "DEADLINE_EXCEEDED"
    assert gw.fakes.seen == []


# -- retention -----------------------------------------------------------------------------


async def finished_record(
    journal: Journal, execution_id: str, ended_at: float, workflow: str = "ping"
) -> None:
    """Journal a finished execution that ended at wall-clock ``ended_at``."""
    started_at = ended_at - 1.0
    created = await journal.create(
        ExecutionRecord(
            execution_id=execution_id,
            workflow=workflow,
            source=PING,
            path="ping.yml",
            input={"sku": "A-1", "qty": 2},
            started_at=started_at,
        )
    )
    assert created is None
    result = ExecutionResult(
        execution_id, workflow, ExecutionStatus.SUCCEEDED, {}, started_at=started_at, duration=1.0
    )
    journal.submit(
        (StateEntry(execution_id, ExecutionState.SUCCEEDED, ended_at, result_data(result)),)
    )
    await journal.flush()


async def test_retention_deletes_old_finished_executions_at_start(
    journal: Journal, launch: Launch
) -> None:
    """At start, executions finished longer ago than the retention are gone and their ids free."""
    now = time.time()
    await finished_record(journal, "old-1", now - 3 * 86_400)
    await finished_record(journal, "recent-1", now - 3_600)
    gw = await launch(journal, retention=86_400.0)
    assert await gone(gw, "old-1")
    kept = await get(gw, "recent-1")
    assert kept.status == SUCCEEDED
    listed = await gw.stub.ListExecutions(pb.ListExecutionsRequest(), timeout=10)
    assert listing(listed) == ["recent-1"]
    result = await gw.stub.Run(execution_request("old-1", "ping"), timeout=30)
    assert result.status == SUCCEEDED
    assert methods(gw) == ["Ping"]
    again = await refused(gw.stub.Run(execution_request("recent-1", "ping", x=1), timeout=10))
    assert again.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_retention_deletes_while_serving(
    launch: Launch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While serving, finished executions past the retention are deleted on the next round."""
    monkeypatch.setattr(app, "RETENTION_INTERVAL", 0.05)
    gw = await launch(retention=0.3)
    await gw.stub.Run(execution_request("short-1", "ping"), timeout=30)
    assert (await get(gw, "short-1")).status == SUCCEEDED
    async with asyncio.timeout(5):
        while not await gone(gw, "short-1"):  # noqa: ASYNC110  (deletion has no event to wait on)
            await asyncio.sleep(0.05)


# -- maestro serve --journal ---------------------------------------------------------------


async def serve_refused(workflows: Path, journal: str) -> tuple[int, str, str]:
    """Run ``maestro serve --journal JOURNAL`` until it exits; its status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro_gateway",
        "serve",
        "--workflows",
        str(workflows),
        "--port",
        "0",
        "--journal",
        journal,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=workflows,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """A workflow directory for ``maestro serve``."""
    directory = tmp_path / "served"
    directory.mkdir()
    (directory / "ping.yml").write_text(PING)
    return directory


def assert_refused(outcome: tuple[int, str, str], path: Path, why: str) -> None:
    """Exit status 1, no ready line, and stderr naming ``path`` and why."""
    code, out, err = outcome
    assert code == 1, err
    assert "listening" not in out
    assert str(path) in err
    assert why in err


async def test_serve_refuses_a_directory_or_a_garbage_file_as_journal(
    served: Path, tmp_path: Path
) -> None:
    """--journal naming a directory or a file that is no journal: exit 1 naming it, not ready."""
    directory = tmp_path / "journals"
    directory.mkdir()
    assert_refused(await serve_refused(served, str(directory)), directory, "is a directory")
    garbage = tmp_path / "garbage.db"
    content = b"this is not a database\n" * 200
    garbage.write_bytes(content)
    assert_refused(await serve_refused(served, str(garbage)), garbage, "not a SQLite database")
    assert garbage.read_bytes() == content


async def test_two_gateways_cannot_share_one_journal_file(served: Path, tmp_path: Path) -> None:
    """A second maestro serve on a held journal exits 1 naming it; once released it starts."""
    path = tmp_path / "shared.db"
    first = await start_gateway(served, extra=["--journal", str(path)])
    try:
        outcome = await serve_refused(served, str(path))
        assert_refused(outcome, path, f"in use by another gateway (pid {first.process.pid})")
    finally:
        assert await first.stop() == 0
    second = await start_gateway(served, extra=["--journal", str(path)])
    assert await second.stop() == 0


async def test_serve_with_journal_none_serves_the_execution_rpcs(served: Path) -> None:
    """--journal none: the gateway starts, executions are kept in memory and can be looked up."""
    gateway = await start_gateway(served, extra=["--journal", "none"])
    try:
        await gateway.wait_log("in memory")
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            listed = await stub.ListExecutions(pb.ListExecutionsRequest(), timeout=10)
            assert list(listed.executions) == []
            req = execution_request("mem-1", "ping")
            started = await stub.Start(req, timeout=10)
            assert started.execution_id == "mem-1"
            events, err = await read_events(
                stub.WatchExecution(pb.WatchExecutionRequest(execution_id="mem-1"), timeout=20)
            )
            assert err is None
            assert kinds(events)[-1] == "finished"
            found = await stub.GetExecution(
                pb.GetExecutionRequest(execution_id="mem-1"), timeout=10
            )
            assert found.status == events[-1].finished.result.status
            assert found.last_sequence == events[-1].sequence
    finally:
        assert await gateway.stop() == 0
