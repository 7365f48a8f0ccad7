"""A Node.js client (``tests/node/client.js``: @grpc/grpc-js + @grpc/proto-loader from ``proto/``)
against ``maestro serve`` over the four demo services.

The client prints one JSON line per event, then one ``{"status": …}`` line, and exits with the
gRPC status code; these tests read those lines as a Node.js user of the API would see them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from e2e_support import Stack, order, run_program, running_stack

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT = Path(__file__).resolve().parent / "node" / "client.js"
NODE = shutil.which("node")
INVALID_ARGUMENT, NOT_FOUND = 3, 5

if NODE is None:  # the shipping demo service needs Node.js as well
    pytest.skip("node is not on PATH", allow_module_level=True)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    """The demo services and the gateway, started once for the module."""
    async with running_stack() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(stack: Stack) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await stack.demo.reset()


async def node_client(stack: Stack, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """Run the Node.js client against the gateway; return its exit code and JSON lines."""
    assert NODE is not None
    done = await run_program([NODE, str(CLIENT), "--address", stack.address, *args])
    assert done.stderr == "", done.stderr
    return done.code, [json.loads(line) for line in done.stdout.splitlines()]


def execute_args(value: dict[str, Any], *extra: str) -> list[str]:
    """Arguments of an Execute call of ``checkout`` with ``value`` as input."""
    return ["--workflow", "checkout", "--input", json.dumps(value), *extra]


async def test_execute_streams_events_then_ok(stack: Stack) -> None:
    """Execute from Node: started, step events, finished last; sequences 1..n; then status OK."""
    code, lines = await node_client(
        stack, *execute_args(order(), "--execution-id", "node-1", "--label", "team=web")
    )
    assert code == 0
    *events, status = lines
    assert status == {"status": {"code": 0, "name": "OK", "details": "", "error_info": None}}
    events = [line["event"] for line in events]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert {e["execution_id"] for e in events} == {"node-1"}
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert events[0]["started"] == {"workflow": "checkout", "labels": {"team": "web"}}
    for step in ("reserve", "charge", "notify", "ship"):
        mine = [e["kind"] for e in events if e[e["kind"]].get("step_id") == step]
        assert mine == ["step_started", "step_succeeded"], step
    reserve = next(e for e in events if e["kind"] == "step_succeeded")["step_succeeded"]
    assert reserve["step_id"] == "reserve"
    assert reserve["output"]["id"].startswith("res-")
    assert reserve["output"]["qty"] == 2
    assert reserve["duration"].endswith("s")
    result = events[-1]["finished"]["result"]
    assert result["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["output"]["paid"] == 4999
    assert result["error"] is None


async def test_failing_execute_ends_with_the_code_after_finished(stack: Stack) -> None:
    """A compensated run streams the undoing, then finished, then ends INVALID_ARGUMENT."""
    code, lines = await node_client(stack, *execute_args(order(address="")))
    assert code == INVALID_ARGUMENT
    *events, status = lines
    events = [line["event"] for line in events]
    assert events[-1]["kind"] == "finished"
    result = events[-1]["finished"]["result"]
    assert result["status"] == "EXECUTION_STATUS_COMPENSATED"
    assert result["error"] == {
        "step_id": "ship",
        "code": "INVALID_ARGUMENT",
        "message": "address must not be empty",
    }
    failed = [e["step_failed"] for e in events if e["kind"] == "step_failed"]
    assert [(f["step_id"], f["error"]["code"]) for f in failed] == [("ship", "INVALID_ARGUMENT")]
    done = [e["step_succeeded"]["step_id"] for e in events if e["kind"] == "step_succeeded"]
    undone = [
        e["compensation_succeeded"]["step_id"]
        for e in events
        if e["kind"] == "compensation_succeeded"
    ]
    assert undone == list(reversed(done))
    assert status["status"]["name"] == "INVALID_ARGUMENT"
    assert status["status"]["details"] == "address must not be empty"
    info = status["status"]["error_info"]
    assert (info["domain"], info["reason"]) == ("maestro.v1", "INVALID_ARGUMENT")
    assert info["metadata"]["execution_id"] == events[0]["execution_id"]
    assert info["metadata"]["status"] == "COMPENSATED"
    shipping = await stack.demo.shipping.control.calls()
    assert [(c.method, c.outcome) for c in shipping] == [("CreateShipment", "INVALID_ARGUMENT")]


async def test_retries_are_streamed_with_error_and_delay(stack: Stack) -> None:
    """An UNAVAILABLE charge is retried: step_retrying carries the error and the delay."""
    await stack.demo.payments.control.add_fault(method="Charge", code="UNAVAILABLE", times=1)
    code, lines = await node_client(stack, *execute_args(order()))
    assert code == 0
    events = [line["event"] for line in lines[:-1]]
    (retrying,) = [e["step_retrying"] for e in events if e["kind"] == "step_retrying"]
    assert (retrying["step_id"], retrying["attempt"]) == ("charge", 1)
    assert retrying["error"]["code"] == "UNAVAILABLE"
    assert retrying["delay"].endswith("s")
    charge = [e for e in events if e[e["kind"]].get("step_id") == "charge"]
    assert [(e["kind"], e[e["kind"]].get("attempt")) for e in charge] == [
        ("step_started", 1),
        ("step_retrying", 1),
        ("step_started", 2),
        ("step_succeeded", 2),
    ]


async def test_run_from_node(stack: Stack) -> None:
    """Run from Node returns the result; an unknown workflow is NOT_FOUND with no result."""
    code, lines = await node_client(stack, *execute_args(order(), "--rpc", "run"))
    assert code == 0
    result, status = lines
    assert result["result"]["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert result["result"]["output"]["tracking"].startswith("DP")
    assert [s["status"] for s in result["result"]["steps"]] == ["STEP_STATUS_SUCCEEDED"] * 4
    assert status["status"]["code"] == 0
    code, lines = await node_client(stack, "--workflow", "nope", "--rpc", "run")
    assert code == NOT_FOUND
    (status,) = lines
    assert status["status"]["name"] == "NOT_FOUND"
    assert status["status"]["error_info"]["reason"] == "WORKFLOW_NOT_FOUND"
