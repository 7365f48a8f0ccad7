"""Maestro.go's envelope (DESIGN §9) against the real loyalty demo service, with and without reflection.

The loyalty service is written for Maestro.go: one ``maestro.v1.MaestroService`` whose Execute
dispatches on the method name. Workflows run on the real engine over real transports; what the
service received is read back from its control plane, as it recorded it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health, health_pb2_grpc
from integration.support import ROOT, execute

from demo.control_client import ControlClient, GrpcControlClient
from demo.harness import DemoServices, ServiceProcess, start_service
from maestro_gateway.codes import Code
from maestro_gateway.engine import Engine, ExecutionStatus, StepStatus
from maestro_gateway.model.loader import load_string
from maestro_gateway.resilience import FakeClock
from maestro_gateway.transports import Transports

pytestmark = pytest.mark.asyncio(loop_scope="module")

STRUCT = "type.googleapis.com/google.protobuf.Struct"


@dataclass
class Envelope:
    """A running loyalty service as the tests see it."""

    address: str
    control: ControlClient
    reflection: bool


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bare_loyalty() -> AsyncIterator[ServiceProcess]:
    """A second loyalty service that serves no reflection, like Maestro.go's own examples."""
    process = await start_service("loyalty", extra=("--no-reflection",))
    yield process
    await process.stop()


@pytest_asyncio.fixture(loop_scope="module", params=["reflection", "no reflection"])
async def loyalty(
    request: pytest.FixtureRequest, demo: DemoServices, bare_loyalty: ServiceProcess
) -> AsyncIterator[Envelope]:
    """The loyalty service with reflection (the demo's), then without; reset before each test."""
    if request.param == "reflection":
        envelope = Envelope(demo.loyalty.address, demo.loyalty.control, True)
        await envelope.control.reset()
        yield envelope
        return
    control = GrpcControlClient(bare_loyalty.address)
    await control.reset()
    yield Envelope(bare_loyalty.address, control, False)
    await control.close()


@pytest_asyncio.fixture(loop_scope="module")
async def engine() -> AsyncIterator[Engine]:
    """A real engine over real transports, on a fake clock (backoff sleeps do not wait)."""
    async with Transports() as transports:
        yield Engine(transports, clock=FakeClock())


def workflow(text: str, loyalty: Envelope, **extra: str) -> Any:
    """Load ``text`` with ``$loyalty`` (and ``extra`` names) substituted."""
    for name, value in {"loyalty": loyalty.address, **extra}.items():
        text = text.replace(f"${name}", value)
    return load_string(text)


REWARDS = """
name: rewards
services:
  loyalty:
    type: grpc
    endpoint: "$loyalty"
    timeout: 5s
    retry: {attempts: 3, backoff: exponential}
    metadata: {x-demo-case: rewards}
steps:
  - id: enroll
    service: loyalty
    method: EnrollMember
    input: {email: "{{ .input.email }}", name: Ada}
    output: member
    compensate:
      method: CancelMembership
      input: {member_id: "{{ .member.member_id }}"}
  - id: award
    service: loyalty
    method: AwardPoints
    input: {member_id: "{{ .member.member_id }}", order_id: o-1, points: "{{ .input.points }}"}
    output: award
    compensate:
      method: RevokePoints
      input: {award_id: "{{ .award.award_id }}"}
  - id: upgrade
    service: loyalty
    method: UpgradeTier
    input: {member_id: "{{ .member.member_id }}", tier: "{{ .input.tier }}"}
output:
  member: "{{ .member }}"
  balance: "{{ .award.balance }}"
"""


async def test_steps_arrive_as_execute_with_method_payload_ids_and_metadata(
    loyalty: Envelope, engine: Engine
) -> None:
    """Each step is an Execute naming its method, with the input as a Struct, the ids and metadata."""
    flow = workflow(REWARDS, loyalty)
    caller = [("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
    result, _ = await execute(
        engine,
        flow,
        {"email": "ada@example.com", "points": 120, "tier": "gold"},
        metadata=caller,
    )
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    member_id = result.output["member"]["member_id"]
    assert result.output == {
        "member": {
            "member_id": member_id,
            "email": "ada@example.com",
            "name": "Ada",
            "tier": "basic",
            "points": 0,
        },
        "balance": 120,
    }
    calls = await loyalty.control.calls()
    assert [(c.rpc, c.method, c.outcome) for c in calls] == [
        ("Execute", "EnrollMember", "OK"),
        ("Execute", "AwardPoints", "OK"),
        ("Execute", "UpgradeTier", "OK"),
    ]
    eid = result.execution_id
    first = calls[0]
    assert first.request == {
        "method": "EnrollMember",
        "payload": {"@type": STRUCT, "value": {"email": "ada@example.com", "name": "Ada"}},
        "headers": {"traceparent": caller[0][1], "x-demo-case": "rewards"},
        "correlation_id": f"{eid}:enroll",
        "workflow_id": eid,
        "step_id": "enroll",
    }
    assert first.metadata == {
        "traceparent": caller[0][1],
        "x-demo-case": "rewards",
        "workflow-id": eid,
        "step-id": "enroll",
        "correlation-id": f"{eid}:enroll",
    }
    award = calls[1].request
    assert award["payload"]["value"] == {"member_id": member_id, "order_id": "o-1", "points": 120}
    assert award["correlation_id"] == f"{eid}:award"


async def test_compensations_arrive_as_compensate_naming_the_undone_step(
    loyalty: Envelope, engine: Engine
) -> None:
    """A refused step rolls back through Compensate, with step_id the step being undone."""
    flow = workflow(REWARDS, loyalty)
    result, _ = await execute(
        engine, flow, {"email": "bob@example.com", "points": 50, "tier": "platinum"}
    )
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("upgrade", Code.FAILED_PRECONDITION)
    assert result.error.message == "no tier 'platinum'; tiers: basic, silver, gold"
    calls = await loyalty.control.calls()
    assert [(c.rpc, c.method, c.outcome) for c in calls] == [
        ("Execute", "EnrollMember", "OK"),
        ("Execute", "AwardPoints", "OK"),
        ("Execute", "UpgradeTier", "REFUSED"),
        ("Compensate", "RevokePoints", "OK"),
        ("Compensate", "CancelMembership", "OK"),
    ]
    eid = result.execution_id
    revoke, cancel = calls[3].request, calls[4].request
    assert revoke["method"] == "RevokePoints"
    assert revoke["payload"]["value"] == {"award_id": result.steps["award"].output["award_id"]}
    assert (revoke["step_id"], revoke["correlation_id"]) == ("award", f"{eid}:award")
    assert (cancel["step_id"], cancel["workflow_id"]) == ("enroll", eid)
    assert calls[4].metadata["step-id"] == "enroll"


async def test_success_false_is_failed_precondition_never_retried_nor_counted_by_the_breaker(
    loyalty: Envelope, engine: Engine
) -> None:
    """success: false fails at once (even with FAILED_PRECONDITION in retry.codes) and never
    trips a breaker that one infrastructure failure opens."""
    text = """
name: refused
services:
  loyalty:
    endpoint: "$loyalty"
    retry: {attempts: 4, codes: [FAILED_PRECONDITION, UNAVAILABLE]}
    circuit_breaker: {failures: 1, reset: 60s}
steps:
  - id: award
    service: loyalty
    method: AwardPoints
    input: {member_id: nobody, points: 5}
"""
    flow = workflow(text, loyalty)
    for _ in range(3):
        result, _ = await execute(engine, flow, {})
        assert result.status is ExecutionStatus.FAILED
        step = result.steps["award"]
        assert step.attempts == 1
        assert step.error is not None
        assert step.error.code is Code.FAILED_PRECONDITION
        assert step.error.message == "unknown member 'nobody'"
    assert [c.outcome for c in await loyalty.control.calls()] == ["REFUSED"] * 3
    await loyalty.control.add_fault(method="AwardPoints", code="UNAVAILABLE", times=1)
    result, _ = await execute(engine, flow, {})
    assert result.error is not None
    assert result.error.code is Code.UNAVAILABLE
    result, _ = await execute(engine, flow, {})
    assert result.error is not None
    assert "circuit breaker" in result.error.message
    assert len(await loyalty.control.calls()) == 4  # the open breaker sent nothing


async def test_grpc_errors_keep_their_codes_and_are_retried_by_policy(
    loyalty: Envelope, engine: Engine
) -> None:
    """An UNAVAILABLE from the envelope service is retried like any gRPC failure."""
    await loyalty.control.add_fault(method="EnrollMember", code="UNAVAILABLE", times=2)
    flow = workflow(REWARDS, loyalty)
    result, _ = await execute(engine, flow, {"email": "d@example.com", "points": 1, "tier": "gold"})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.steps["enroll"].attempts == 3
    unknown = workflow(REWARDS.replace("method: UpgradeTier", "method: Upgrade"), loyalty)
    result, _ = await execute(
        engine, unknown, {"email": "d@example.com", "points": 1, "tier": "gold"}
    )
    assert result.error is not None
    assert result.error.code is Code.UNIMPLEMENTED
    assert result.error.message.startswith("loyalty has no method 'Upgrade'; it has: ")


OUTPUTS = """
name: outputs
services:
  loyalty: {endpoint: "$loyalty"}
steps:
  - {id: enroll, service: loyalty, method: EnrollMember, input: {email: e@example.com}, output: member}
  - {id: balance, service: loyalty, method: GetBalance, input: {member_id: "{{ member.member_id }}"}}
  - {id: card, service: loyalty, method: IssueCard, input: {member_id: "{{ member.member_id }}"}}
"""


async def test_data_of_known_and_unknown_types(loyalty: Envelope, engine: Engine) -> None:
    """A Struct is an object, a well-known wrapper its value, an unknown type @type and base64."""
    result, _ = await execute(engine, workflow(OUTPUTS, loyalty), {})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    member_id = result.output["member"]["member_id"]
    assert result.output["balance"] == 0
    number = f"CARD-{member_id.upper()}".encode()  # a string in field 1: tag 0x0a, length
    assert result.output["card"] == {
        "@type": "type.googleapis.com/shop.loyalty.v1.Card",
        "value": base64.b64encode(b"\x0a" + bytes([len(number)]) + number).decode(),
    }


async def test_protocol_grpc_lists_what_the_service_has(loyalty: Envelope, engine: Engine) -> None:
    """protocol: grpc never uses the envelope: a method the service lacks is UNIMPLEMENTED
    listing what it has (and without reflection nothing can be called)."""
    text = """
name: typed
services:
  loyalty: {endpoint: "$loyalty", protocol: grpc}
steps:
  - {id: enroll, service: loyalty, method: EnrollMember, input: {email: e@example.com}}
"""
    result, _ = await execute(engine, workflow(text, loyalty), {})
    assert result.error is not None
    if loyalty.reflection:
        assert result.error.code is Code.UNIMPLEMENTED
        assert result.error.message.startswith(
            "no service of the target has a method 'EnrollMember'; methods: "
            "maestro.v1.MaestroService/Compensate, maestro.v1.MaestroService/Execute, "
            "shop.control.v1.Control/AddFault"
        )
    else:  # no descriptors to call its own methods with
        assert result.error.code is Code.FAILED_PRECONDITION
        assert "does not serve gRPC reflection" in result.error.message
    assert result.steps["enroll"].attempts == 1


async def test_auto_calls_the_services_own_methods_directly_and_maestro_go_never(
    loyalty: Envelope, engine: Engine
) -> None:
    """Under auto a method the service defines itself (Control/ListCalls) is called directly;
    protocol: maestro-go sends every method through Execute."""
    text = """
name: own
services:
  loyalty: {endpoint: "$loyalty", protocol: $protocol}
steps:
  - {id: calls, service: loyalty, method: ListCalls}
"""
    result, _ = await execute(engine, workflow(text, loyalty, protocol="auto"), {})
    if loyalty.reflection:
        assert result.status is ExecutionStatus.SUCCEEDED, result.error
        assert result.output == {"calls": {"calls": []}}
    else:  # without descriptors every method goes through the envelope
        assert result.error is not None
        assert result.error.message.startswith("loyalty has no method 'ListCalls'")
    result, _ = await execute(engine, workflow(text, loyalty, protocol="maestro-go"), {})
    assert result.error is not None
    assert result.error.code is Code.UNIMPLEMENTED
    assert result.error.message.startswith("loyalty has no method 'ListCalls'")
    assert [(c.rpc, c.method) for c in await loyalty.control.calls()][-1] == (
        "Execute",
        "ListCalls",
    )


async def test_the_maestro_go_example_workflow_runs_unchanged(
    demo: DemoServices, engine: Engine
) -> None:
    """workflows/order-rewards.yaml, pointed at the demo services, runs and is compensated."""
    text = (ROOT / "workflows" / "order-rewards.yaml").read_text(encoding="utf-8")
    for name, fixed in (("loyalty", "127.0.0.1:50054"), ("inventory", "127.0.0.1:50051")):
        assert text.count(f'"{fixed}"') == 1
        text = text.replace(f'"{fixed}"', f'"{demo[name].address}"')
    await demo.reset()
    flow = load_string(text)
    order = {"order_id": "o-9", "email": "f@example.com", "name": "F", "points": 1500}
    result, _ = await execute(engine, flow, {**order, "tier": "gold"})
    assert result.status is ExecutionStatus.SUCCEEDED, result.error
    assert result.output["balance"] == 1500
    assert result.output["tier"] == {"member_id": result.output["member_id"], "tier": "gold"}
    result, _ = await execute(engine, flow, {**order, "email": "g@example.com", "tier": "x"})
    assert result.status is ExecutionStatus.COMPENSATED
    assert {s: r.status for s, r in result.steps.items()} == {
        "enroll": StepStatus.COMPENSATED,
        "award": StepStatus.COMPENSATED,
        "gift": StepStatus.COMPENSATED,
        "upgrade": StepStatus.FAILED,
    }
    released = [c for c in await demo.inventory.control.calls() if c.method == "Release"]
    assert len(released) == 1


@pytest_asyncio.fixture(loop_scope="module")
async def health_only() -> AsyncIterator[str]:
    """A gRPC server with neither reflection nor Maestro.go's envelope (health only)."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


async def test_neither_reflection_nor_envelope_is_unimplemented_and_never_retried(
    health_only: str, engine: Engine
) -> None:
    """A service answering neither reflection nor Execute: UNIMPLEMENTED naming both, one attempt."""
    text = f"""
name: neither
services:
  legacy:
    endpoint: "{health_only}"
    retry: {{attempts: 5, codes: [UNIMPLEMENTED, UNAVAILABLE]}}
steps:
  - {{id: create, service: legacy, method: CreateUser, input: {{email: e@example.com}}}}
"""
    result, _ = await execute(engine, load_string(text), {})
    assert result.status is ExecutionStatus.FAILED
    step = result.steps["create"]
    assert step.attempts == 1
    assert step.error is not None
    assert step.error.code is Code.UNIMPLEMENTED
    assert step.error.message == (
        f"the service at {health_only} answers neither gRPC server reflection (v1, v1alpha) "
        "nor Maestro.go's envelope (maestro.v1.MaestroService/Execute); configure "
        "`descriptors: {protoset: …}` or `{protos: […]}` for it, or check the endpoint"
    )
