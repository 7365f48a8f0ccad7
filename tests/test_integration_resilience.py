"""DESIGN §4 retries and circuit breakers against the real demo services, on all five stacks.

Faults are injected through each service's control plane; the engine runs on a FakeClock, so
backoff sleeps and breaker reset periods pass without waiting while every call is real.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from integration.support import TARGETS, execute, one_step, render

from demo.harness import SERVICES, DemoServices
from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    Engine,
    ExecutionStatus,
    StepRetrying,
    StepStarted,
)
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Workflow
from maestro_gateway.resilience import BreakerState, CircuitBreaker, FakeClock
from maestro_gateway.transports import Transports

pytestmark = pytest.mark.asyncio(loop_scope="module")

INPUT = {"qty": 1, "amount": 500}
RETRY_AFTER = {
    "inventory": 0.75,
    "payments": 0.75,
    "shipping": 0.75,
    "mailer": 1.0,
    "loyalty": 0.75,
}
"""The delay a 750 ms retry hint becomes: RetryInfo on gRPC, whole seconds in Retry-After."""


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def clean(demo: DemoServices) -> None:
    """Every test starts with no fault rules, no recorded calls and the initial demo data."""
    await demo.reset()


@pytest.fixture
def clock() -> FakeClock:
    """The engine's clock: backoff sleeps and breaker periods advance it, nothing waits."""
    return FakeClock()


@pytest_asyncio.fixture(loop_scope="module")
async def engine(clock: FakeClock) -> AsyncIterator[Engine]:
    """A real engine over real transports, on the fake clock."""
    async with Transports() as transports:
        yield Engine(transports, clock=clock)


async def recorded(demo: DemoServices, service: str) -> list[str]:
    """The outcomes of the calls ``service`` received to its first business method."""
    method = TARGETS[service].recorded
    return [c.outcome for c in await demo[service].control.calls() if c.method == method]


@pytest.mark.parametrize("service", SERVICES)
async def test_unavailable_twice_then_success_is_three_calls(
    demo: DemoServices, engine: Engine, clock: FakeClock, service: str
) -> None:
    """UNAVAILABLE twice then OK: three real calls, attempts 3, retrying events with the backoff."""
    workflow = one_step(demo, service, retry="{attempts: 3, initial: 100ms, jitter: false}")
    await demo[service].control.add_fault(
        method=TARGETS[service].recorded, code="UNAVAILABLE", times=2
    )
    result, events = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.steps["call"].attempts == 3
    assert await recorded(demo, service) == ["UNAVAILABLE", "UNAVAILABLE", "OK"]
    retrying = events.of(StepRetrying)
    assert [(e.attempt, e.error.code) for e in retrying] == [
        (1, Code.UNAVAILABLE),
        (2, Code.UNAVAILABLE),
    ]
    assert [e.delay for e in retrying] == pytest.approx([0.1, 0.2])
    assert [e.attempt for e in events.of(StepStarted)] == [1, 2, 3]
    assert clock.sleeps == pytest.approx([0.1, 0.2])


@pytest.mark.parametrize("service", SERVICES)
async def test_permanent_code_is_called_exactly_once(
    demo: DemoServices, engine: Engine, clock: FakeClock, service: str
) -> None:
    """INVALID_ARGUMENT is permanent: one call, no retrying event, the step fails with it."""
    workflow = one_step(demo, service, retry="{attempts: 5, jitter: false}")
    await demo[service].control.add_fault(method=TARGETS[service].recorded, code="INVALID_ARGUMENT")
    result, events = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("call", Code.INVALID_ARGUMENT)
    assert result.steps["call"].attempts == 1
    assert await recorded(demo, service) == ["INVALID_ARGUMENT"]
    assert events.of(StepRetrying) == []
    assert clock.sleeps == []


@pytest.mark.parametrize("service", SERVICES)
async def test_retry_codes_replace_the_default_set(
    demo: DemoServices, engine: Engine, service: str
) -> None:
    """With `retry.codes: [NOT_FOUND]` NOT_FOUND is retried and UNAVAILABLE is not."""
    workflow = one_step(demo, service, retry="{attempts: 3, codes: [NOT_FOUND], jitter: false}")
    control = demo[service].control
    method = TARGETS[service].recorded
    await control.add_fault(method=method, code="NOT_FOUND", times=2)
    result, _ = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert await recorded(demo, service) == ["NOT_FOUND", "NOT_FOUND", "OK"]
    await control.reset()
    await control.add_fault(method=method, code="UNAVAILABLE", times=2)
    result, _ = await execute(engine, workflow, INPUT)
    assert result.error is not None
    assert result.error.code is Code.UNAVAILABLE
    assert await recorded(demo, service) == ["UNAVAILABLE"]


@pytest.mark.parametrize("service", SERVICES)
async def test_service_retry_hint_sets_the_next_delay(
    demo: DemoServices, engine: Engine, clock: FakeClock, service: str
) -> None:
    """RetryInfo (gRPC) or Retry-After (HTTP) replaces the computed backoff for the next retry."""
    workflow = one_step(demo, service, retry="{attempts: 2, initial: 10ms, jitter: false}")
    await demo[service].control.add_fault(
        method=TARGETS[service].recorded, code="UNAVAILABLE", times=1, retry_after_ms=750
    )
    result, events = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    (retrying,) = events.of(StepRetrying)
    assert retrying.delay == pytest.approx(RETRY_AFTER[service])
    assert clock.sleeps == pytest.approx([RETRY_AFTER[service]])
    assert await recorded(demo, service) == ["UNAVAILABLE", "OK"]


@pytest.mark.parametrize("service", SERVICES)
async def test_attempt_timeout_is_retried_and_the_downstream_sees_the_cancel(
    demo: DemoServices, engine: Engine, service: str
) -> None:
    """An attempt cut by its own timeout is DEADLINE_EXCEEDED, cancelled downstream, and retried."""
    workflow = one_step(demo, service, timeout="300ms", retry="{attempts: 2, jitter: false}")
    method = TARGETS[service].recorded
    await demo[service].control.add_fault(method=method, delay_ms=5000, times=1)
    result, events = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    (retrying,) = events.of(StepRetrying)
    assert retrying.error.code is Code.DEADLINE_EXCEEDED
    calls = await demo[service].control.wait_for(
        lambda calls: len(calls) == 2 and all(c.outcome for c in calls)
    )
    assert [c.outcome for c in calls] == ["CANCELLED", "OK"]


async def test_backoff_never_outlives_the_deadline(
    demo: DemoServices, engine: Engine, clock: FakeClock
) -> None:
    """A retry delay longer than what is left of the workflow deadline is not slept: fail now."""
    workflow = one_step(demo, "payments", retry="{attempts: 5}", workflow_timeout="2s")
    await demo.payments.control.add_fault(
        method="Charge", code="UNAVAILABLE", retry_after_ms=10_000
    )
    result, events = await execute(engine, workflow, INPUT)
    assert result.status is ExecutionStatus.FAILED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("call", Code.UNAVAILABLE)
    assert events.of(StepRetrying) == []
    assert clock.sleeps == []
    assert await recorded(demo, "payments") == ["UNAVAILABLE"]


def breaker_of(engine: Engine, workflow: Workflow) -> CircuitBreaker:
    """The engine's breaker for the only service of ``workflow``."""
    (service,) = workflow.services.values()
    assert service.circuit_breaker is not None
    assert service.endpoint in engine.breakers
    return engine.breakers.get(service.endpoint, service.circuit_breaker)


@pytest.mark.parametrize("service", SERVICES)
async def test_breaker_opens_across_executions_and_a_probe_closes_it(
    demo: DemoServices, engine: Engine, clock: FakeClock, service: str
) -> None:
    """Two UNAVAILABLE executions open the circuit: the next is refused without a call; after
    `reset` one probe goes through — a failed probe re-opens it, a good one closes it."""
    workflow = one_step(demo, service, breaker="{failures: 2, reset: 30s}")
    control = demo[service].control
    await control.add_fault(method=TARGETS[service].recorded, code="UNAVAILABLE")
    for _ in range(2):
        result, _ = await execute(engine, workflow, INPUT)
        assert result.error is not None
        assert result.error.code is Code.UNAVAILABLE
    assert await recorded(demo, service) == ["UNAVAILABLE", "UNAVAILABLE"]
    assert breaker_of(engine, workflow).state is BreakerState.OPEN

    refused, _ = await execute(engine, workflow, INPUT)
    assert refused.status is ExecutionStatus.FAILED
    assert refused.error is not None
    assert refused.error.code is Code.UNAVAILABLE
    assert "circuit breaker" in refused.error.message
    assert refused.steps["call"].attempts == 1
    assert len(await recorded(demo, service)) == 2  # no call reached the service

    clock.advance(31)
    probe, _ = await execute(engine, workflow, INPUT)  # the probe fails: open again
    assert probe.error is not None
    assert probe.error.code is Code.UNAVAILABLE
    assert len(await recorded(demo, service)) == 3
    again, _ = await execute(engine, workflow, INPUT)
    assert again.error is not None
    assert len(await recorded(demo, service)) == 3

    await control.reset()
    clock.advance(31)
    healed, _ = await execute(engine, workflow, INPUT)
    assert healed.status is ExecutionStatus.SUCCEEDED, healed.error
    assert breaker_of(engine, workflow).state is BreakerState.CLOSED
    after, _ = await execute(engine, workflow, INPUT)
    assert after.status is ExecutionStatus.SUCCEEDED, after.error
    assert await recorded(demo, service) == ["OK", "OK"]


@pytest.mark.parametrize("service", ["payments", "mailer"])
async def test_business_errors_never_trip_the_breaker(
    demo: DemoServices, engine: Engine, service: str
) -> None:
    """INVALID_ARGUMENT answers are not infrastructure failures: every execution reaches the service."""
    workflow = one_step(demo, service, breaker="{failures: 2, reset: 30s}")
    await demo[service].control.add_fault(method=TARGETS[service].recorded, code="INVALID_ARGUMENT")
    for _ in range(4):
        result, _ = await execute(engine, workflow, INPUT)
        assert result.error is not None
        assert result.error.code is Code.INVALID_ARGUMENT
    assert await recorded(demo, service) == ["INVALID_ARGUMENT"] * 4
    assert breaker_of(engine, workflow).state is BreakerState.CLOSED


OTHER_BILLING = """
name: other-billing
services:
  billing:
    type: grpc
    endpoint: "$payments"
    circuit_breaker: {failures: 5, reset: 1s}
steps:
  - id: bill
    service: billing
    method: shop.v1.Payments/Charge
    input: {order_id: o-2, amount: 100}
"""


async def test_breaker_is_shared_by_workflows_naming_the_same_endpoint(
    demo: DemoServices, engine: Engine, clock: FakeClock
) -> None:
    """A circuit opened by one workflow refuses another's call to the same endpoint; the calling
    service's own `reset` decides when its probe may go."""
    opener = one_step(demo, "payments", breaker="{failures: 2, reset: 30s}")
    other = load_string(render(OTHER_BILLING, demo))
    await demo.payments.control.add_fault(method="Charge", code="UNAVAILABLE", times=2)
    for _ in range(2):
        result, _ = await execute(engine, opener, INPUT)
        assert result.error is not None
        assert result.error.code is Code.UNAVAILABLE
    refused, _ = await execute(engine, other, {})
    assert refused.error is not None
    assert (refused.error.step_id, refused.error.code) == ("bill", Code.UNAVAILABLE)
    assert len(await recorded(demo, "payments")) == 2
    clock.advance(2)  # past billing's 1 s reset, far from the opener's 30 s
    probe, _ = await execute(engine, other, {})
    assert probe.status is ExecutionStatus.SUCCEEDED, probe.error
    assert breaker_of(engine, opener).state is BreakerState.CLOSED
    assert await recorded(demo, "payments") == ["UNAVAILABLE", "UNAVAILABLE", "OK"]
