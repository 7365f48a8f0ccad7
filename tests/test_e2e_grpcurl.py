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
    """grpcurl lists the gateway, health and reflection, the ten RPCs, and describes Execute."""
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
        "GetWorkflow",
        "ListExecutions",
        "ListWorkflows",
        "Run",
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
