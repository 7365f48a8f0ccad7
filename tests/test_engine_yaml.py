"""The engine on workflows written in YAML (through the loader), with the scripted transport."""

from __future__ import annotations

import math

from test_engine import Run

from maestro_gateway.codes import Code
from maestro_gateway.engine import ExecutionStatus, StepStatus
from maestro_gateway.model.loader import load_string
from maestro_gateway.resilience import SystemClock

CHECKOUT = """
name: checkout
timeout: {timeout}
compensation_timeout: {budget}
services:
  inventory:
    type: grpc
    endpoint: "127.0.0.1:50051"
    retry: {{attempts: 3, initial: 100ms, jitter: false}}
  payments: {{type: grpc, endpoint: "127.0.0.1:50052"}}
steps:
  - id: reserve
    service: inventory
    method: Reserve
    input: {{sku: "{{{{ .input.sku }}}}", qty: "{{{{ input.qty }}}}"}}
    output: reservation
    compensate:
      method: Release
      input: {{reservation_id: "{{{{ .reservation.id }}}}", reason: "{{{{ error.code }}}}"}}
  - parallel:
      - {{id: charge, service: payments, method: Charge, input: {{amount: 5}}, output: payment,
          compensate: {{method: Refund, input: {{id: "{{{{ payment.id }}}}"}}}}}}
      - {{id: hold, service: inventory, method: Hold}}
  - id: ship
    when: "{{{{ .payment.amount > 0 }}}}"
    service: inventory
    method: Ship
    input: "{{{{ .reservation }}}}"
"""


def checkout(timeout: str = "30s", budget: str = "60s") -> str:
    return CHECKOUT.format(timeout=timeout, budget=budget)


async def test_yaml_checkout_succeeds_with_default_output() -> None:
    """A YAML workflow runs end to end; the default output maps every output name."""
    run = Run()
    run.backend.on("Reserve", {"id": "r-1", "sku": "s"})
    run.backend.on("Charge", {"id": "p-1", "amount": 5})
    run.backend.on("Ship", {"tracking": "t-1"})
    result = await run(load_string(checkout()), {"sku": "s", "qty": 2})
    assert result.status is ExecutionStatus.SUCCEEDED
    assert run.backend.calls[0][1:3] == ("Reserve", {"sku": "s", "qty": 2})
    assert run.backend.calls[-1][1:3] == ("Ship", {"id": "r-1", "sku": "s"})
    assert result.output == {
        "reservation": {"id": "r-1", "sku": "s"},
        "payment": {"id": "p-1", "amount": 5},
        "hold": {"echo": {}},
        "ship": {"tracking": "t-1"},
    }


async def test_yaml_late_failure_compensates_in_reverse_completion_order() -> None:
    """Ship failing undoes charge then reserve, each compensation seeing the cause."""
    run = Run()
    run.backend.on("Reserve", {"id": "r-1"})
    run.backend.on("Charge", {"id": "p-1", "amount": 5})
    run.backend.on("Ship", code=Code.FAILED_PRECONDITION, fails=math.inf)
    result = await run(load_string(checkout()), {"sku": "s", "qty": 1})
    assert result.status is ExecutionStatus.COMPENSATED
    undo = [(c[1], c[2]) for c in run.backend.calls if c[1] in {"Refund", "Release"}]
    assert undo == [
        ("Refund", {"id": "p-1"}),
        ("Release", {"reservation_id": "r-1", "reason": "FAILED_PRECONDITION"}),
    ]
    assert result.steps["hold"].status is StepStatus.SUCCEEDED


async def test_compensation_is_retried_with_its_policy() -> None:
    """A compensation failing with a retryable code is retried under the step's policy."""
    run = Run()
    run.backend.on("Reserve", {"id": "r-1"})
    run.backend.on("Charge", code=Code.INVALID_ARGUMENT, fails=math.inf)
    run.backend.on("Release", {}, code=Code.UNAVAILABLE, fails=2)
    result = await run(load_string(checkout()), {"sku": "s", "qty": 1})
    assert result.status is ExecutionStatus.COMPENSATED
    assert [c[1] for c in run.backend.calls].count("Release") == 3


async def test_parallel_deadline_names_the_first_step_in_flight() -> None:
    """A workflow deadline during a parallel group fails every child in flight; cause is the first."""
    run = Run(SystemClock())
    run.backend.on("Reserve", {"id": "r-1"})
    run.backend.on("Charge", hang=True)
    run.backend.on("Hold", hang=True)
    result = await run(load_string(checkout(timeout="200ms")), {"sku": "s", "qty": 1})
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("charge", Code.DEADLINE_EXCEEDED)
    assert result.steps["hold"].status is StepStatus.FAILED
    assert result.steps["hold"].error is not None
    assert result.steps["hold"].error.code is Code.DEADLINE_EXCEEDED
    assert {("cancel", "Charge"), ("cancel", "Hold")} <= set(run.backend.log)
    assert result.status is ExecutionStatus.COMPENSATED
    assert run.backend.calls[-1][1] == "Release"


async def test_compensation_budget_bounds_a_hanging_compensation() -> None:
    """A compensation that hangs is cut at `compensation_timeout`, giving COMPENSATION_FAILED."""
    run = Run(SystemClock())
    run.backend.on("Reserve", {"id": "r-1"})
    run.backend.on("Charge", code=Code.NOT_FOUND, fails=math.inf)
    run.backend.on("Release", hang=True)
    result = await run(load_string(checkout(budget="200ms")), {"sku": "s", "qty": 1})
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    error = result.steps["reserve"].compensation_error
    assert error is not None
    assert error.code is Code.DEADLINE_EXCEEDED
    assert ("cancel", "Release") in run.backend.log
