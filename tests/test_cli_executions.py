"""``maestro executions list|show|watch|cancel`` as subprocesses against a real ``maestro serve``.

The gateway runs over the four demo services (``workflows/`` retargeted at their ports, plus a
one-step ``reserve-only`` workflow) with its journal in a temporary directory. Executions are made
with the real ``Execute``/``Start`` RPCs; a step is held in flight by a delay rule on the demo
service it calls. Every assertion is about what the CLI prints and how it exits (DESIGN §10).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.gateway import GatewayProcess, running_gateway, write_workflows
from demo.harness import ROOT, DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLI_LIMIT = 30.0
ORDER: dict[str, Any] = {
    "order_id": "cli-1",
    "sku": "sku-1",
    "qty": 1,
    "amount": 1250,
    "address": "1 Main Street",
    "email": "ada@example.com",
}
RESERVE_ONLY = """\
name: reserve-only
services:
  inventory: {{type: grpc, endpoint: "{address}", timeout: 5s}}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: sku-1, qty: 1}}
"""
ROW = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\s+(\S+)$")


@dataclass
class Stack:
    """The gateway, a client stub to it, and the demo services behind it."""

    demo: DemoServices
    gateway: GatewayProcess
    stub: gateway_pb2_grpc.GatewayStub


@dataclass(frozen=True)
class Completed:
    """A finished ``maestro executions`` process."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        """The stdout, parsed as JSON."""
        return json.loads(self.stdout)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(
    demo: DemoServices, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """``maestro serve`` over the demo services, journaling into a temporary file."""
    scratch = tmp_path_factory.mktemp("executions")
    workflows = write_workflows(scratch, demo)
    (workflows / "reserve-only.yaml").write_text(
        RESERVE_ONLY.format(address=demo.inventory.address)
    )
    journal = ["--journal", str(scratch / "journal.db")]
    async with (
        running_gateway(workflows, extra=journal) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        yield Stack(demo, gateway, gateway_pb2_grpc.GatewayStub(channel))


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(stack: Stack) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await stack.demo.reset()


def command(stack: Stack, *args: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``maestro executions ARGS`` aimed at the gateway."""
    env = {
        **os.environ,
        "MAESTRO_TARGET": stack.gateway.address,
        "NO_COLOR": "1",
        "PYTHONUNBUFFERED": "1",
    }
    return [sys.executable, "-m", "maestro_gateway", "executions", *args], env


async def maestro(stack: Stack, *args: str) -> Completed:
    """Run ``maestro executions ARGS`` to completion (killed after CLI_LIMIT seconds)."""
    argv, env = command(stack, *args)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), CLI_LIMIT)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())


@contextlib.asynccontextmanager
async def spawned(stack: Stack, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``maestro executions ARGS`` running in the background; killed if still running at exit."""
    argv, env = command(stack, *args)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_line_with(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> str:
    """Read lines from ``stream`` (appending them to ``seen``) until one matches ``pattern``."""
    async with asyncio.timeout(CLI_LIMIT):
        while True:
            raw = await stream.readline()
            assert raw, f"the stream ended before a line matching {pattern!r}: {seen}"
            line = raw.decode().rstrip("\n")
            seen.append(line)
            if re.search(pattern, line):
                return line


def request(workflow: str, execution_id: str, **changes: Any) -> pb.ExecuteRequest:
    """An ExecuteRequest of ``workflow`` with ``ORDER`` (and ``changes``) as its input."""
    value = struct_pb2.Struct()
    value.update({**ORDER, "order_id": execution_id, **changes})
    return pb.ExecuteRequest(workflow=workflow, input=value, execution_id=execution_id)


async def execute(stack: Stack, workflow: str, execution_id: str) -> list[pb.ExecutionEvent]:
    """Run one execution to its end with ``Execute``; return its events (a failure is fine)."""
    events: list[pb.ExecutionEvent] = []
    with contextlib.suppress(grpc.aio.AioRpcError):
        async for event in stack.stub.Execute(request(workflow, execution_id), timeout=CLI_LIMIT):
            events.append(event)  # noqa: PERF401  (kept when the stream then fails)
    assert events, f"{execution_id}: no events"
    assert events[-1].HasField("finished"), events[-1]
    return events


async def start_held(stack: Stack, execution_id: str, delay_ms: int) -> pb.Execution:
    """``Start`` a checkout whose shipment call is held ``delay_ms``; return once it is in flight."""
    await stack.demo.shipping.control.add_fault(method="CreateShipment", delay_ms=delay_ms, times=1)
    started = await stack.stub.Start(request("checkout", execution_id), timeout=10)
    assert started.status == pb.EXECUTION_STATUS_RUNNING
    await stack.demo.shipping.control.wait_for(lambda calls: bool(calls), within=15)
    return started


async def finished(stack: Stack, execution_id: str) -> pb.Execution:
    """Poll ``GetExecution`` until the execution has an end time (bounded)."""
    async with asyncio.timeout(CLI_LIMIT):
        while True:
            execution = await stack.stub.GetExecution(
                pb.GetExecutionRequest(execution_id=execution_id), timeout=10
            )
            if execution.HasField("end_time"):
                return execution
            await asyncio.sleep(0.05)


def rows(stdout: str) -> list[tuple[str, ...]]:
    """The rows of ``list``'s table (header checked and dropped)."""
    header, *lines = stdout.splitlines()
    assert header.split() == ["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"]
    parsed = []
    for line in lines:
        match = ROW.match(line)
        assert match, line
        parsed.append(match.groups())
    return parsed


async def test_list_filters_by_workflow_and_status_newest_first_across_pages(
    stack: Stack,
) -> None:
    """list follows next_page_token up to --limit, newest first, filtered by workflow AND status."""
    for i in range(5):
        await execute(stack, "reserve-only", f"list-ok-{i}")
    await stack.demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    for i in range(2):
        await execute(stack, "checkout", f"list-undone-{i}")

    paged = await maestro(
        stack, "list", "--workflow", "reserve-only", "--limit", "4", "--page-size", "2"
    )
    assert paged.code == 0, paged.stderr
    listed = rows(paged.stdout)
    assert [row[0] for row in listed] == [f"list-ok-{i}" for i in (4, 3, 2, 1)]
    assert {(row[1], row[2]) for row in listed} == {("reserve-only", "SUCCEEDED")}
    assert all(row[4].endswith("s") and row[4] != "running" for row in listed)

    everything = await maestro(stack, "list", "--workflow", "reserve-only", "--page-size", "2")
    assert [row[0] for row in rows(everything.stdout)][:5] == [
        f"list-ok-{i}" for i in (4, 3, 2, 1, 0)
    ]

    undone = await maestro(stack, "list", "--status", "Compensated", "--status", "FAILED")
    assert undone.code == 0, undone.stderr
    listed = rows(undone.stdout)
    assert [row[0] for row in listed][:2] == ["list-undone-1", "list-undone-0"]
    assert {row[2] for row in listed} <= {"COMPENSATED", "FAILED"}

    both = await maestro(stack, "list", "--workflow", "reserve-only", "--status", "compensated")
    assert rows(both.stdout) == []


async def test_list_json_is_a_list_of_executions(stack: Stack) -> None:
    """list --json prints a JSON list of Execution messages keyed by their proto field names."""
    await execute(stack, "reserve-only", "list-json-1")
    done = await maestro(stack, "list", "--json", "--limit", "1", "--workflow", "reserve-only")
    assert done.code == 0, done.stderr
    (execution,) = done.json()
    assert execution["execution_id"] == "list-json-1"
    assert execution["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert execution["input"]["order_id"] == "list-json-1"
    assert execution["result"]["steps"][0]["step_id"] == "reserve"
    assert "start_time" in execution
    assert "end_time" in execution


async def test_list_rejects_an_unknown_status_with_the_valid_names(stack: Stack) -> None:
    """An unknown --status name is a usage error (exit 2) listing every valid name."""
    done = await maestro(stack, "list", "--status", "done")
    assert done.code == 2
    assert "unknown status 'done'" in done.stderr
    for name in (
        "running",
        "compensating",
        "succeeded",
        "failed",
        "compensated",
        "compensation_failed",
    ):
        assert name in done.stderr
    assert done.stdout == ""


async def test_show_of_a_succeeded_execution_exits_0_with_result_and_timeline(
    stack: Stack,
) -> None:
    """show prints the execution, its output, its steps and every event; exit 0 when SUCCEEDED."""
    events = await execute(stack, "checkout", "show-ok")
    done = await maestro(stack, "show", "show-ok")
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "execution  show-ok" in lines
    assert "workflow   checkout" in lines
    assert "status     SUCCEEDED" in lines
    assert any(
        line.startswith("input      {") and '"order_id": "show-ok"' in line for line in lines
    )
    assert any(line.startswith("output     {") and '"paid": 1250' in line for line in lines)
    assert any(line.startswith("ended      ") for line in lines)
    for step in ("reserve", "charge", "notify", "ship"):
        assert any(re.match(rf"\s+{step}\s+SUCCEEDED\s+1 attempt, ", line) for line in lines), step
    timeline = lines[lines.index("events:") + 1 :]
    assert len(timeline) == len(events)
    assert all(line.startswith("[") for line in timeline)
    assert "checkout started (show-ok)" in timeline[0]
    assert "checkout SUCCEEDED in" in timeline[-1]
    assert done.stderr == ""


async def test_show_of_a_compensated_execution_exits_1_naming_the_failure(stack: Stack) -> None:
    """show of a COMPENSATED execution prints the error and the undone steps, and exits 1."""
    await stack.demo.shipping.control.add_fault(
        method="CreateShipment", code="INVALID_ARGUMENT", message="no such street"
    )
    await execute(stack, "checkout", "show-undone")
    done = await maestro(stack, "show", "show-undone")
    assert done.code == 1, done.stderr
    lines = done.stdout.splitlines()
    assert "status     COMPENSATED" in lines
    assert any(
        line.startswith("error      step 'ship' INVALID_ARGUMENT:") and "no such street" in line
        for line in lines
    )
    assert not any(line.startswith("output ") for line in lines)
    for step in ("reserve", "charge", "notify"):
        assert any(re.match(rf"\s+{step}\s+COMPENSATED\s", line) for line in lines), step
    assert any("reserve" in line and "compensated in" in line for line in lines)
    assert "checkout COMPENSATED in" in lines[-1]


async def test_show_json_has_the_execution_and_its_events(stack: Stack) -> None:
    """show --json prints {"execution": Execution, "events": [ExecutionEvent, ...]}."""
    events = await execute(stack, "reserve-only", "show-json")
    done = await maestro(stack, "show", "show-json", "--json")
    assert done.code == 0, done.stderr
    shown = done.json()
    assert shown["execution"]["execution_id"] == "show-json"
    assert shown["execution"]["result"]["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert [e["sequence"] for e in shown["events"]] == [e.sequence for e in events]
    assert shown["events"][0]["started"]["workflow"] == "reserve-only"
    assert "finished" in shown["events"][-1]


async def test_show_of_a_running_execution_prints_the_events_so_far_and_exits_0(
    stack: Stack,
) -> None:
    """show of a running execution returns at once with its events up to last_sequence; exit 0."""
    await start_held(stack, "show-running", delay_ms=20_000)
    done = await maestro(stack, "show", "show-running", "--timeout", "15s")
    assert done.code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "status     RUNNING" in lines
    assert not any(line.startswith("ended ") for line in lines)
    timeline = lines[lines.index("events:") + 1 :]
    assert "checkout started (show-running)" in timeline[0]
    assert "ship" in timeline[-1]
    assert "started (attempt 1)" in timeline[-1]
    listed = await maestro(stack, "list", "--status", "running", "--limit", "1")
    (row,) = rows(listed.stdout)
    assert row[0] == "show-running"
    assert row[4] == "running"
    cancelled = await maestro(stack, "cancel", "show-running")
    assert cancelled.code == 0, cancelled.stderr


async def test_watch_prints_lines_live_then_the_result(stack: Stack) -> None:
    """watch prints execute's progress lines as events happen, then the result JSON; exit 0."""
    await start_held(stack, "watch-live", delay_ms=2_000)
    seen: list[str] = []
    async with spawned(stack, "watch", "watch-live") as process:
        assert process.stderr is not None
        assert process.stdout is not None
        first = await read_line_with(process.stderr, "started", seen)
        assert "checkout started (watch-live)" in first
        await read_line_with(process.stderr, r"\] ship +started \(attempt 1\)", seen)
        assert process.returncode is None
        running = await stack.stub.GetExecution(
            pb.GetExecutionRequest(execution_id="watch-live"), timeout=10
        )
        assert running.status == pb.EXECUTION_STATUS_RUNNING
        last = await read_line_with(process.stderr, "checkout SUCCEEDED", seen)
        async with asyncio.timeout(CLI_LIMIT):
            out = await process.stdout.read()
            code = await process.wait()
    assert code == 0
    assert all(line.startswith("[") for line in seen)
    assert any("ship" in line and "succeeded in" in line for line in seen)
    assert last == seen[-1]
    result = json.loads(out)
    assert result["execution_id"] == "watch-live"
    assert result["status"] == "SUCCEEDED"
    assert result["output"]["paid"] == 1250
    assert list(result["steps"]) == ["reserve", "charge", "notify", "ship"]


async def test_watch_after_a_sequence_and_of_a_compensated_execution(stack: Stack) -> None:
    """watch --after N prints only later events; a COMPENSATED result exits 1 as execute does."""
    await stack.demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    events = await execute(stack, "checkout", "watch-after")
    after = len(events) - 2
    done = await maestro(stack, "watch", "watch-after", "--after", str(after))
    assert done.code == 1, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 2
    assert "checkout COMPENSATED" in lines[-1]
    assert done.json()["status"] == "COMPENSATED"
    assert done.json()["error"]["code"] == "INVALID_ARGUMENT"

    as_json = await maestro(stack, "watch", "watch-after", "--json")
    assert as_json.code == 1
    sent = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["sequence"] for e in sent] == [e.sequence for e in events]
    assert sent[-1]["finished"]["result"]["status"] == "EXECUTION_STATUS_COMPENSATED"


async def test_watch_interrupted_stops_watching_and_leaves_the_execution_running(
    stack: Stack,
) -> None:
    """Ctrl-C (SIGINT) ends watch with 130; the execution keeps running."""
    await start_held(stack, "watch-interrupted", delay_ms=20_000)
    seen: list[str] = []
    async with spawned(stack, "watch", "watch-interrupted") as process:
        assert process.stderr is not None
        await read_line_with(process.stderr, r"\] ship +started", seen)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(CLI_LIMIT):
            rest = await process.stderr.read()
            code = await process.wait()
    assert code == 130
    assert re.search(
        r"stopped watching at sequence (\d+) \(resume with --after \1\); "
        "execution watch-interrupted continues",
        rest.decode(),
    )
    execution = await stack.stub.GetExecution(
        pb.GetExecutionRequest(execution_id="watch-interrupted"), timeout=10
    )
    assert execution.status == pb.EXECUTION_STATUS_RUNNING
    await maestro(stack, "cancel", "watch-interrupted")


async def test_cancel_compensates_and_a_second_cancel_is_refused(stack: Stack) -> None:
    """cancel prints the execution; show then reports CANCELLED with the reason; a re-cancel exits 1."""
    await start_held(stack, "cancel-me", delay_ms=20_000)
    done = await maestro(stack, "cancel", "cancel-me", "--reason", "operator said so")
    assert done.code == 0, done.stderr
    assert "execution  cancel-me" in done.stdout.splitlines()
    ended = await finished(stack, "cancel-me")
    assert ended.status in (pb.EXECUTION_STATUS_COMPENSATED, pb.EXECUTION_STATUS_FAILED)

    shown = await maestro(stack, "show", "cancel-me")
    assert shown.code == 1, shown.stderr
    (error,) = [line for line in shown.stdout.splitlines() if line.startswith("error ")]
    assert "CANCELLED" in error
    assert "operator said so" in error
    assert any("reserve" in line and "compensated in" in line for line in shown.stdout.splitlines())
    shipping = await stack.demo.shipping.control.wait_for(
        lambda calls: bool(calls) and calls[0].outcome != "", within=10
    )
    assert shipping[0].outcome == "CANCELLED"

    again = await maestro(stack, "cancel", "cancel-me")
    assert again.code == 1
    assert again.stderr.startswith("maestro executions: FAILED_PRECONDITION: ")
    assert "cancel-me" in again.stderr
    assert again.stdout == ""


async def test_cancel_json_prints_the_execution(stack: Stack) -> None:
    """cancel --json prints the returned Execution as proto3 JSON."""
    await start_held(stack, "cancel-json", delay_ms=20_000)
    done = await maestro(stack, "cancel", "cancel-json", "--json", "--reason", "json")
    assert done.code == 0, done.stderr
    execution = done.json()
    assert execution["execution_id"] == "cancel-json"
    assert execution["workflow"] == "checkout"
    assert execution["status"].startswith("EXECUTION_STATUS_")
    await finished(stack, "cancel-json")


@pytest.mark.parametrize("action", ["show", "watch", "cancel"])
async def test_an_unknown_id_prints_not_found_and_exits_1(stack: Stack, action: str) -> None:
    """show, watch and cancel of an unknown id print the NOT_FOUND error on stderr and exit 1."""
    done = await maestro(stack, action, "no-such-execution")
    assert done.code == 1
    assert done.stderr.startswith("maestro executions: NOT_FOUND: ")
    assert done.stdout == ""


async def test_an_unreachable_gateway_prints_unavailable_and_exits_1(stack: Stack) -> None:
    """--target overrides $MAESTRO_TARGET; a gateway that does not answer is UNAVAILABLE, exit 1."""
    done = await maestro(stack, "list", "--target", "127.0.0.1:1", "--timeout", "5s")
    assert done.code == 1
    assert done.stderr.startswith("maestro executions: UNAVAILABLE: ")
