"""``maestro execute workflows/checkout.yaml`` as a subprocess against the running demo services.

The example file names fixed ports; each test runs a copy pointed at the harness's services.
Exit codes, the JSON result on stdout and the progress lines on stderr are checked (DESIGN §6).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from integration.support import CHECKOUT_INPUT, ROOT, checkout_text, only

from demo.harness import DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

RUN_LIMIT = 30.0


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await demo.reset()


@dataclass(frozen=True)
class Outcome:
    """What one ``maestro execute`` process did."""

    status: int
    result: Any
    stderr: str


@pytest_asyncio.fixture(loop_scope="module")
async def maestro_execute(demo: DemoServices, tmp_path: Path) -> Any:
    """Run ``maestro execute`` on the checkout copy with an input; kill it if it outlives the limit."""
    path = tmp_path / "checkout.yaml"
    path.write_text(checkout_text(demo), encoding="utf-8")

    async def run(value: Any) -> Outcome:
        env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "maestro_gateway",
            "execute",
            str(path),
            "--input",
            json.dumps(value),
            cwd=ROOT,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(RUN_LIMIT):
                stdout, stderr = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode is not None
        return Outcome(process.returncode, json.loads(stdout), stderr.decode())

    return run


async def test_execute_succeeds_with_json_on_stdout_and_progress_on_stderr(
    demo: DemoServices, maestro_execute: Any
) -> None:
    """A successful run exits 0, prints the result as JSON on stdout and one line per event on stderr."""
    outcome = await maestro_execute(CHECKOUT_INPUT)
    assert outcome.status == 0, outcome.stderr
    result = outcome.result
    assert result["status"] == "SUCCEEDED"
    assert result["workflow"] == "checkout"
    assert result["error"] is None
    assert result["output"]["order_id"] == "o-1"
    assert result["output"]["paid"] == 1250
    assert result["output"]["payment"] == result["steps"]["charge"]["output"]["id"]
    assert result["steps"]["charge"]["output"]["status"] == "PAYMENT_STATUS_CAPTURED"
    assert list(result["steps"]) == ["reserve", "charge", "notify", "ship"]
    lines = outcome.stderr.splitlines()
    assert "checkout started" in lines[0]
    assert "checkout SUCCEEDED" in lines[-1]
    for step in ("reserve", "charge", "notify", "ship"):
        assert any(step in line and "succeeded" in line for line in lines), step
    (call,) = await demo.shipping.control.calls()
    assert call.request["reservation_id"] == result["output"]["reservation"]


async def test_execute_failing_run_exits_1_compensated(
    demo: DemoServices, maestro_execute: Any
) -> None:
    """A failed, fully compensated run exits 1 and still prints the whole result on stdout."""
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    outcome = await maestro_execute(CHECKOUT_INPUT)
    assert outcome.status == 1, outcome.stderr
    result = outcome.result
    assert result["status"] == "COMPENSATED"
    assert result["error"]["step_id"] == "ship"
    assert result["error"]["code"] == "INVALID_ARGUMENT"
    assert result["output"] is None
    for step in ("reserve", "charge", "notify"):
        assert result["steps"][step]["status"] == "COMPENSATED"
    (refund,) = only(await demo.payments.control.calls(), "Refund")
    assert refund.request["reason"] == "rollback after ship failed: INVALID_ARGUMENT"
    assert "compensated" in outcome.stderr
    assert "checkout COMPENSATED" in outcome.stderr.splitlines()[-1]


async def test_execute_failed_compensation_exits_3(
    demo: DemoServices, maestro_execute: Any
) -> None:
    """A failed compensation exits 3; the result names the step whose compensation failed."""
    await demo.shipping.control.add_fault(method="CreateShipment", code="INVALID_ARGUMENT")
    await demo.inventory.control.add_fault(method="Release", code="FAILED_PRECONDITION")
    outcome = await maestro_execute(CHECKOUT_INPUT)
    assert outcome.status == 3, outcome.stderr
    result = outcome.result
    assert result["status"] == "COMPENSATION_FAILED"
    assert result["error"]["code"] == "INVALID_ARGUMENT"
    reserve = result["steps"]["reserve"]
    assert reserve["status"] == "COMPENSATION_FAILED"
    assert reserve["compensation_error"]["code"] == "FAILED_PRECONDITION"
    assert result["steps"]["charge"]["status"] == "COMPENSATED"
    assert result["steps"]["notify"]["status"] == "COMPENSATED"
    assert any(
        "reserve" in line and "compensation failed" in line for line in outcome.stderr.splitlines()
    )
