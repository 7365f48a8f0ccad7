"""The real grpcurl binary against ``maestro serve`` over the four demo services.

Full stack: grpcurl (Go, reflection v1alpha) → the gateway subprocess → inventory (grpcio),
payments (grpclib), shipping (Node.js) and mailer (HTTP), all on free ports, serving the shipped
``workflows/checkout.yaml``. ``tests/test_server_process.py`` covers the server's lifecycle over
a single in-process downstream; here every assertion is about what a grpcurl user sees when the
gateway orchestrates real services, cross-checked with what those services recorded.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import Completed, Stack, order, run_program, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

GRPCURL = str(Path(sys.executable).parent / "grpcurl")
# grpcurl exits with 64 + the gRPC status code when the RPC fails.
EXIT_INVALID_ARGUMENT, EXIT_DEADLINE_EXCEEDED, EXIT_NOT_FOUND = 67, 68, 69
EXIT_FAILED_PRECONDITION = 73
DETAIL = re.compile(r"^\s*\d+\)\s+(\{.*\})\s*$", re.MULTILINE)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    """The demo services and the gateway, started once for the module."""
    async with running_stack() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(stack: Stack) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await stack.demo.reset()


async def grpcurl(
    stack: Stack, *args: str, data: Any = None, flags: tuple[str, ...] = ()
) -> Completed:
    """Run ``grpcurl -plaintext [flags] [-d JSON] GATEWAY args…``."""
    argv = [GRPCURL, "-plaintext", *flags]
    if data is not None:
        argv += ["-d", json.dumps(data)]
    return await run_program([*argv, stack.address, *args])


def events(stdout: str) -> list[dict[str, Any]]:
    """The JSON messages grpcurl printed, one pretty-printed object after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    text = stdout.strip()
    while at < len(text):
        value, end = decoder.raw_decode(text, at)
        found.append(value)
        at = end
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def kind(event: dict[str, Any]) -> str:
    """The oneof case of an ExecutionEvent as grpcurl prints it."""
    return next(k for k in event if k not in ("execution_id", "sequence", "time"))


def details(stderr: str) -> list[dict[str, Any]]:
    """The rich error details grpcurl rendered (``1)\t{"@type": …}``)."""
    return [json.loads(match) for match in DETAIL.findall(stderr)]


async def test_list_and_describe_through_reflection(stack: Stack) -> None:
    """grpcurl lists the gateway, health and reflection, the thirteen RPCs, and describes Execute."""
    listed = await grpcurl(stack, "list")
    assert listed.code == 0, listed.stderr
    assert {
        "maestro.v1.Gateway",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(listed.stdout.split())
    methods = await grpcurl(stack, "list", "maestro.v1.Gateway")
    rpcs = (
        "CancelExecution",
        "Execute",
        "GetExecution",
        "GetSignal",
        "GetWorkflow",
        "ListExecutions",
        "ListSignals",
        "ListWorkflows",
        "Run",
        "SendSignal",
        "Start",
        "ValidateWorkflow",
        "WatchExecution",
    )
    assert methods.stdout.split() == [f"maestro.v1.Gateway.{name}" for name in rpcs]
    described = await grpcurl(stack, "describe", "maestro.v1.Gateway.Execute")
    assert described.code == 0, described.stderr
    assert "returns ( stream .maestro.v1.ExecutionEvent )" in described.stdout
    message = await grpcurl(stack, "describe", "maestro.v1.ExecutionEvent")
    assert "oneof event" in message.stdout
    assert ".maestro.v1.ExecutionFinished finished = 19;" in message.stdout


async def test_streaming_execute_orchestrates_the_four_services(stack: Stack) -> None:
    """Execute with -d JSON streams every event, in sequence, ending with finished SUCCEEDED."""
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Execute",
        data={"workflow": "checkout", "input": order(), "execution_id": "grpcurl-1"},
    )
    assert done.code == 0, done.stderr
    received = events(done.stdout)
    assert [e["sequence"] for e in received] == list(range(1, len(received) + 1))
    assert {e["execution_id"] for e in received} == {"grpcurl-1"}
    kinds = [kind(e) for e in received]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert kinds.count("finished") == 1
    succeeded = [e["step_succeeded"]["step_id"] for e in received if "step_succeeded" in e]
    assert sorted(succeeded) == ["charge", "notify", "reserve", "ship"]
    assert succeeded[0] == "reserve"
    assert succeeded[-1] == "ship"
    result = received[-1]["finished"]["result"]
    assert result["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["output"]["tracking"].startswith("DP")
    assert result["output"]["paid"] == 4999
    for name, method in [
        ("inventory", "Reserve"),
        ("payments", "Charge"),
        ("shipping", "CreateShipment"),
        ("mailer", "SendMail"),
    ]:
        calls = await stack.demo[name].control.calls()
        assert [(c.method, c.outcome) for c in calls] == [(method, "OK")], name


async def test_run_returns_the_result(stack: Stack) -> None:
    """Run answers one ExecutionResult with the workflow output and every step's state."""
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Run",
        data={"workflow": "checkout", "input": order(order_id="E2E-RUN")},
    )
    assert done.code == 0, done.stderr
    (result,) = events(done.stdout)
    assert result["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["output"]["order_id"] == "E2E-RUN"
    assert [(s["step_id"], s["status"]) for s in result["steps"]] == [
        (step, "STEP_STATUS_SUCCEEDED") for step in ("reserve", "charge", "notify", "ship")
    ]


async def test_failing_run_exits_non_zero_with_code_and_error_info(stack: Stack) -> None:
    """A Run whose last step fails exits 64+code; grpcurl prints the code and the ErrorInfo."""
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Run",
        data={"workflow": "checkout", "input": order(address="")},
    )
    assert done.code == EXIT_INVALID_ARGUMENT, done.stderr
    assert done.stdout.strip() == ""
    assert "Code: InvalidArgument" in done.stderr
    assert "Message: address must not be empty" in done.stderr
    (info,) = details(done.stderr)
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert (info["domain"], info["reason"]) == ("maestro.v1", "INVALID_ARGUMENT")
    assert info["metadata"]["step_id"] == "ship"
    assert info["metadata"]["status"] == "COMPENSATED"
    assert info["metadata"]["workflow"] == "checkout"
    releases = await stack.demo.inventory.control.calls()
    assert [c.method for c in releases] == ["Reserve", "Release"]
    refunds = await stack.demo.payments.control.calls()
    assert [c.method for c in refunds] == ["Charge", "Refund"]


async def test_unknown_workflow_is_not_found_without_events(stack: Stack) -> None:
    """Execute of an unknown workflow exits with NOT_FOUND and prints no event."""
    done = await grpcurl(
        stack, "maestro.v1.Gateway/Execute", data={"workflow": "no-such", "input": {}}
    )
    assert done.code == EXIT_NOT_FOUND
    assert done.stdout.strip() == ""
    assert "Code: NotFound" in done.stderr
    assert "no-such" in done.stderr
    assert details(done.stderr)[0]["reason"] == "WORKFLOW_NOT_FOUND"


async def test_input_failing_the_schema_names_the_fields(stack: Stack) -> None:
    """Input failing checkout's schema is INVALID_ARGUMENT naming each field; nothing is called."""
    bad = order(qty="two")
    del bad["email"]
    done = await grpcurl(
        stack, "maestro.v1.Gateway/Execute", data={"workflow": "checkout", "input": bad}
    )
    assert done.code == EXIT_INVALID_ARGUMENT
    assert done.stdout.strip() == ""
    assert "input.qty" in done.stderr
    assert "input.email" in done.stderr
    assert details(done.stderr)[0]["reason"] == "INVALID_INPUT"
    assert await stack.demo.inventory.control.calls() == []


async def test_max_time_cancels_the_downstream_call_and_compensates(stack: Stack) -> None:
    """grpcurl -max-time bounds the execution: shipping sees its call cancelled, the rest undone."""
    await stack.demo.shipping.control.add_fault(method="CreateShipment", delay_ms=20_000)
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Execute",
        data={"workflow": "checkout", "input": order()},
        flags=("-max-time", "3"),
    )
    assert done.code == EXIT_DEADLINE_EXCEEDED, done.stderr
    assert "Code: DeadlineExceeded" in done.stderr
    kinds = [kind(e) for e in events(done.stdout)]
    # The last event streamed before the deadline: the shipment's start, or its failure when
    # the gateway's timer (set to the caller's deadline) fires just before grpcurl's.
    assert kinds[-1] in ("step_started", "step_failed")
    shipping = await stack.demo.shipping.control.wait_for(
        lambda calls: bool(calls) and calls[0].outcome != "", within=10
    )
    assert [(c.method, c.outcome) for c in shipping] == [("CreateShipment", "CANCELLED")]
    inventory = await stack.demo.inventory.control.wait_for(
        lambda calls: len(calls) == 2, within=10
    )
    assert [(c.method, c.outcome) for c in inventory] == [("Reserve", "OK"), ("Release", "OK")]
    payments = await stack.demo.payments.control.wait_for(lambda calls: len(calls) == 2, within=10)
    assert [c.method for c in payments] == ["Charge", "Refund"]
    await stack.gateway.wait_log("status=COMPENSATED")


async def test_health_check(stack: Stack) -> None:
    """grpc.health.v1.Health/Check answers SERVING overall and for maestro.v1.Gateway."""
    for data in (None, {"service": "maestro.v1.Gateway"}):
        done = await grpcurl(stack, "grpc.health.v1.Health/Check", data=data)
        assert done.code == 0, done.stderr
        assert events(done.stdout) == [{"status": "SERVING"}]
    unknown = await grpcurl(stack, "grpc.health.v1.Health/Check", data={"service": "nope"})
    assert unknown.code == EXIT_NOT_FOUND


LINES_ORDER: dict[str, Any] = {
    "order_id": "E2E-LINES",
    "lines": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}, {"sku": "sku-3", "qty": 1}],
    "amount": 7499,
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}
LINE_PATHS = ["lines[0].reserve", "lines[1].reserve", "lines[2].reserve"]


def step_ids(received: list[dict[str, Any]], event: str) -> list[str]:
    """The ``step_id`` of each streamed event of kind ``event``, in order."""
    return [e[event]["step_id"] for e in received if event in e]


async def test_step_kinds_stream_paths_and_get_execution_keeps_them(stack: Stack) -> None:
    """order_lines (foreach, sub-workflow, switch) streams lines[1].reserve and pay.charge, and
    GetExecution's step results carry the same ids."""
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Execute",
        data={"workflow": "order_lines", "input": LINES_ORDER, "execution_id": "grpcurl-lines"},
    )
    assert done.code == 0, done.stderr
    received = events(done.stdout)
    assert [e["sequence"] for e in received] == list(range(1, len(received) + 1))
    started = step_ids(received, "step_started")
    assert [s for s in started if s.startswith("lines[")] == LINE_PATHS
    assert started[: started.index("lines[0].reserve")] == ["lines"]
    assert started[started.index("pay") + 1 : started.index("pay") + 3] == [
        "pay.charge",
        "pay.receipt",
    ]
    succeeded = step_ids(received, "step_succeeded")
    assert set(succeeded) >= {*LINE_PATHS, "lines", "pay.charge", "pay.receipt", "pay", "gift"}
    assert step_ids(received, "step_skipped") == ["review"]
    streamed = {
        e["step_succeeded"]["step_id"]: e["step_succeeded"]["output"]
        for e in received
        if "step_succeeded" in e
    }
    result = received[-1]["finished"]["result"]
    assert result["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["output"]["reservations"] == [streamed[p]["id"] for p in LINE_PATHS]
    assert result["output"]["payment"] == streamed["pay.charge"]["id"]

    shown = await grpcurl(
        stack, "maestro.v1.Gateway/GetExecution", data={"execution_id": "grpcurl-lines"}
    )
    assert shown.code == 0, shown.stderr
    (execution,) = events(shown.stdout)
    assert execution["status"] == "EXECUTION_STATUS_SUCCEEDED"
    steps = {s["step_id"]: s for s in execution["result"]["steps"]}
    assert set(steps) == {
        "lines",
        *LINE_PATHS,
        "pay",
        "pay.charge",
        "pay.receipt",
        "route",
        "review",
        "gift",
        "ship",
        "notify",
    }
    assert steps["lines[1].reserve"]["status"] == "STEP_STATUS_SUCCEEDED"
    assert steps["lines[1].reserve"]["output"] == streamed["lines[1].reserve"]
    assert steps["pay.charge"]["output"]["id"] == streamed["pay.charge"]["id"]
    assert steps["review"]["status"] == "STEP_STATUS_SKIPPED"
    charges = await stack.demo.payments.control.calls()
    assert [(c.method, c.request["order_id"]) for c in charges] == [("Charge", "E2E-LINES")]


async def test_a_failed_shipment_undoes_every_line_and_the_payment_by_path(stack: Stack) -> None:
    """Shipping refusing the parcel streams compensations of pay.receipt, pay.charge and each
    line, newest first; GetExecution shows them COMPENSATED and ship as the cause."""
    await stack.demo.shipping.control.add_fault(
        method="CreateShipment", code="FAILED_PRECONDITION", message="no carrier", times=1
    )
    done = await grpcurl(
        stack,
        "maestro.v1.Gateway/Execute",
        data={"workflow": "order_lines", "input": LINES_ORDER, "execution_id": "grpcurl-lines-2"},
    )
    assert done.code == EXIT_FAILED_PRECONDITION, done.stderr
    received = events(done.stdout)
    undone = step_ids(received, "compensation_succeeded")
    completed = [s for s in step_ids(received, "step_succeeded") if s in set(undone)]
    assert undone == completed[::-1]
    assert set(undone) == {*LINE_PATHS, "pay.charge", "pay.receipt", "gift"}
    shown = await grpcurl(
        stack, "maestro.v1.Gateway/GetExecution", data={"execution_id": "grpcurl-lines-2"}
    )
    (execution,) = events(shown.stdout)
    assert execution["status"] == "EXECUTION_STATUS_COMPENSATED"
    assert execution["result"]["error"]["step_id"] == "ship"
    statuses = {s["step_id"]: s["status"] for s in execution["result"]["steps"]}
    for path in (*LINE_PATHS, "pay.charge", "pay.receipt"):
        assert statuses[path] == "STEP_STATUS_COMPENSATED", path
    releases = await stack.demo.inventory.control.calls()
    assert [c.method for c in releases].count("Release") == 4
    payments = await stack.demo.payments.control.calls()
    assert [c.method for c in payments] == ["Charge", "Refund"]
