"""Durability proven by killing real ``maestro serve`` processes (DESIGN §10).

Each test runs ``workflows/checkout.yaml`` (or ``order-lines.yaml``, with its foreach and its
payment sub-workflow) against the demo services through a real gateway
on a SQLite journal, kills the gateway with SIGKILL at one point, starts a new one on the same
journal, and checks what the services actually received and how the execution ended
(``GetExecution``). Two ways to kill:

- from outside, while a demo service holds a call (its control API delays it);
- from inside, at an exact event: ``MAESTRO_FAULT_KILL_AFTER_EVENT=N`` makes the journal's writer
  SIGKILL its own process right after committing the group that holds event number N, before the
  engine learns of the commit (so, for a ``step_started``, the call is never sent).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.control_client import RecordedCall
from demo.gateway import GatewayProcess, start_gateway, write_workflows
from demo.harness import DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

ORDER: dict[str, Any] = {
    "order_id": "D-1",
    "sku": "sku-1",
    "qty": 2,
    "amount": 4999,
    "address": "1 Main Street",
    "email": "ada@example.com",
}
FINISH_WITHIN = 30.0
EXIT_WITHIN = 10.0


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


class Journaled:
    """Gateways started one after the other on one journal file, over the demo services."""

    def __init__(self, demo: DemoServices, tmp: Path) -> None:
        self.demo = demo
        self.workflows = write_workflows(tmp, demo)
        self.journal = tmp / "journal.db"
        self.gateway: GatewayProcess | None = None
        self._channel: grpc.aio.Channel | None = None

    async def start(self, *extra: str, kill_after_event: int | None = None) -> GatewayProcess:
        env = (
            {}
            if kill_after_event is None
            else {"MAESTRO_FAULT_KILL_AFTER_EVENT": str(kill_after_event)}
        )
        self.gateway = await start_gateway(
            self.workflows, extra=["--journal", str(self.journal), *extra], env=env
        )
        if self._channel is not None:
            await self._channel.close()
        self._channel = grpc.aio.insecure_channel(self.gateway.address)
        return self.gateway

    @property
    def stub(self) -> Any:
        assert self._channel is not None
        return gateway_pb2_grpc.GatewayStub(self._channel)

    async def kill(self) -> None:
        """SIGKILL the gateway (no shutdown of any kind) and wait until it is gone."""
        assert self.gateway is not None
        self.gateway.process.send_signal(signal.SIGKILL)
        await self.died()

    async def died(self) -> int:
        """Wait (bounded) for the gateway to exit on its own; return its status."""
        assert self.gateway is not None
        async with asyncio.timeout(EXIT_WITHIN):
            code = await self.gateway.process.wait()
        await self.gateway.stop()
        return code

    async def start_checkout(self, execution_id: str, **changes: Any) -> pb.Execution:
        request = pb.ExecuteRequest(
            workflow="checkout", input=struct({**ORDER, **changes}), execution_id=execution_id
        )
        return await self.stub.Start(request, timeout=10)

    async def finished(self, execution_id: str) -> pb.Execution:
        """Poll GetExecution until the execution has finished (bounded)."""
        async with asyncio.timeout(FINISH_WITHIN):
            while True:
                execution = await self.stub.GetExecution(
                    pb.GetExecutionRequest(execution_id=execution_id), timeout=5
                )
                if execution.HasField("end_time"):
                    return execution
                await asyncio.sleep(0.05)

    async def events(self, execution_id: str) -> list[pb.ExecutionEvent]:
        call = self.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=10
        )
        return [event async for event in call]

    async def journaled_event(self, execution_id: str, kind: str, step_id: str) -> None:
        """Wait (bounded) until the gateway has journaled a ``kind`` event of ``step_id``."""
        call = self.stub.WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=FINISH_WITHIN
        )
        try:
            async for event in call:
                name = event.WhichOneof("event")
                if name == kind and getattr(event, name).step_id == step_id:
                    return
        finally:
            call.cancel()
        raise AssertionError(f"no {kind} of {step_id} in {execution_id}")

    async def received(self) -> dict[str, list[RecordedCall]]:
        """Every call each demo service received, by method (compensations included)."""
        out: dict[str, list[RecordedCall]] = {}
        for endpoint in self.demo.all():
            for recorded in await endpoint.control.calls():
                out.setdefault(recorded.method, []).append(recorded)
        return out

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self.gateway is not None:
            await self.gateway.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def journaled(demo: DemoServices, tmp_path: Path) -> AsyncIterator[Journaled]:
    for endpoint in demo.all():
        await endpoint.control.reset()
    subject = Journaled(demo, tmp_path)
    yield subject
    await subject.close()


def counts(received: dict[str, list[RecordedCall]]) -> dict[str, int]:
    return {method: len(calls) for method, calls in sorted(received.items())}


def in_flight(method: str) -> Any:
    return lambda calls: any(c.method == method and not c.outcome for c in calls)


def kinds(events: Sequence[pb.ExecutionEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


STATUS = pb.ExecutionStatus


async def test_killed_while_a_call_is_in_flight_the_step_is_retried(
    journaled: Journaled,
) -> None:
    """Killed during Reserve: the new gateway retries it (attempt 2) and the order completes."""
    await journaled.start()
    await journaled.demo.inventory.control.add_fault(method="Reserve", delay_ms=3000, times=1)
    await journaled.start_checkout("kill-in-flight")
    await journaled.demo.inventory.control.wait_for(in_flight("Reserve"))
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-in-flight")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["reserve"].attempts == 2
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 2,
        "SendMail": 1,
    }
    events = await journaled.events("kill-in-flight")
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    names = kinds(events)
    assert names.count("recovered") == 1
    retry = events[names.index("step_retrying")].step_retrying
    assert (retry.step_id, retry.attempt, retry.error.code) == ("reserve", 1, "UNAVAILABLE")
    assert "the gateway stopped during this call" in retry.error.message


async def test_killed_during_the_parallel_group_finished_children_are_not_redone(
    journaled: Journaled,
) -> None:
    """Killed while Charge is held and the mail is sent: only Charge is called again."""
    await journaled.start()
    await journaled.demo.payments.control.add_fault(method="Charge", delay_ms=3000, times=1)
    await journaled.start_checkout("kill-in-parallel")
    await journaled.demo.payments.control.wait_for(in_flight("Charge"))
    await journaled.journaled_event("kill-in-parallel", "step_succeeded", "notify")
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-in-parallel")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert counts(await journaled.received()) == {
        "Charge": 2,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }


async def test_killed_in_flight_without_retries_left_the_saga_undoes(
    journaled: Journaled,
) -> None:
    """The mail call has no retry: after the restart it fails, and charge and reserve are undone."""
    await journaled.start()
    await journaled.demo.mailer.control.add_fault(method="SendMail", delay_ms=3000, times=1)
    await journaled.start_checkout("kill-no-retry")
    await journaled.demo.mailer.control.wait_for(in_flight("SendMail"))
    # The charge's success must be journaled, not only answered: a charge still in flight at
    # the kill is cut short by the failing mail after the restart, and never compensated.
    await journaled.journaled_event("kill-no-retry", "step_succeeded", "charge")
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-no-retry")
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    error = execution.result.error
    assert (error.step_id, error.code) == ("notify", "UNAVAILABLE")
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "Refund": 1,
        "Release": 1,
        "Reserve": 1,
        "SendMail": 1,
    }


async def test_killed_in_the_middle_of_the_rollback_no_compensation_is_lost_or_repeated(
    journaled: Journaled,
) -> None:
    """Killed during Release: Refund and RecallMail are not run again; Release is retried."""
    await journaled.start()
    shipping = journaled.demo.shipping.control
    await shipping.add_fault(method="CreateShipment", code="FAILED_PRECONDITION", times=1)
    await journaled.demo.inventory.control.add_fault(method="Release", delay_ms=3000, times=1)
    await journaled.start_checkout("kill-in-rollback")
    await journaled.demo.inventory.control.wait_for(in_flight("Release"))
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-in-rollback")
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    assert execution.result.error.step_id == "ship"
    assert execution.result.error.code == "FAILED_PRECONDITION"
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "RecallMail": 1,
        "Refund": 1,
        "Release": 2,
        "Reserve": 1,
        "SendMail": 1,
    }


@pytest.mark.parametrize(
    ("kill_after", "reserve_attempts"),
    [
        # 0: the record only; 2: `started`, `step_started(reserve)` and its intent commit as
        # one group, so the call is never sent; 7: the second parallel child succeeded (ship's
        # intent may share its group: never sent either, and ship has retries).
        pytest.param(0, 1, id="after-the-record-before-the-first-event"),
        pytest.param(2, 2, id="intent-committed-call-never-sent"),
        pytest.param(7, 1, id="between-a-success-and-the-next-step"),
    ],
)
async def test_killed_at_an_exact_event(
    journaled: Journaled, kill_after: int, reserve_attempts: int
) -> None:
    """Killed right after event N is durable: nothing done is redone, nothing is lost."""
    await journaled.start(kill_after_event=kill_after)

    async def start_and_follow() -> None:
        await journaled.start_checkout(f"kill-at-{kill_after}")
        await journaled.finished(f"kill-at-{kill_after}")

    with pytest.raises(grpc.aio.AioRpcError):  # the gateway dies under the call, or just after
        await start_and_follow()
    assert await journaled.died() == -signal.SIGKILL

    await journaled.start()
    execution = await journaled.finished(f"kill-at-{kill_after}")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["reserve"].attempts == reserve_attempts
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    kinds_seen = kinds(await journaled.events(f"kill-at-{kill_after}"))
    assert kinds_seen[0] == "started"
    assert kinds_seen.count("recovered") == 1


async def test_a_caller_reattaches_after_the_restart_and_sees_every_event(
    journaled: Journaled,
) -> None:
    """Execute with the same id after a restart streams the whole history, then ends OK."""
    await journaled.start()
    await journaled.demo.inventory.control.add_fault(method="Reserve", delay_ms=3000, times=1)
    await journaled.start_checkout("reattach")
    await journaled.demo.inventory.control.wait_for(in_flight("Reserve"))
    await journaled.kill()

    await journaled.start()
    request = pb.ExecuteRequest(workflow="checkout", input=struct(ORDER), execution_id="reattach")
    events = [e async for e in journaled.stub.Execute(request, timeout=FINISH_WITHIN)]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert kinds(events)[0] == "started"
    assert kinds(events)[-1] == "finished"
    assert "recovered" in kinds(events)
    assert events[-1].finished.result.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert counts(await journaled.received())["Reserve"] == 2


async def test_sigterm_hands_running_executions_over_to_the_next_start(
    journaled: Journaled,
) -> None:
    """After --grace the RPC ends UNAVAILABLE 'continues', and the next start finishes it."""
    await journaled.start("--grace", "0.3s")
    await journaled.demo.inventory.control.add_fault(method="Reserve", delay_ms=3000, times=1)
    request = pb.ExecuteRequest(workflow="checkout", input=struct(ORDER), execution_id="handover")
    run = asyncio.ensure_future(journaled.stub.Run(request, timeout=FINISH_WITHIN))
    await journaled.demo.inventory.control.wait_for(in_flight("Reserve"))
    assert journaled.gateway is not None
    journaled.gateway.process.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await run
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "execution handover continues" in str(caught.value.details())
    assert await journaled.died() == 0
    assert counts(await journaled.received()).get("Release", 0) == 0  # not compensated

    await journaled.start()
    execution = await journaled.finished("handover")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert counts(await journaled.received())["Reserve"] == 2


async def test_concurrent_runs_with_one_id_run_it_once(journaled: Journaled) -> None:
    """20 concurrent Run calls with one execution_id: one execution, 20 identical results."""
    await journaled.start()
    request = pb.ExecuteRequest(workflow="checkout", input=struct(ORDER), execution_id="once")
    results = await asyncio.gather(
        *(journaled.stub.Run(request, timeout=FINISH_WITHIN) for _ in range(20))
    )
    assert {r.execution_id for r in results} == {"once"}
    assert {r.status for r in results} == {STATUS.EXECUTION_STATUS_SUCCEEDED}
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    other = pb.ExecuteRequest(
        workflow="checkout", input=struct({**ORDER, "qty": 3}), execution_id="once"
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await journaled.stub.Run(other, timeout=10)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "once" in str(caught.value.details())


async def test_killed_while_waiting_to_retry_the_wait_is_not_reported_twice(
    journaled: Journaled,
) -> None:
    """Killed during the backoff after a failed Reserve: attempt 2 follows, one step_retrying."""
    await journaled.start()
    await journaled.demo.inventory.control.add_fault(
        method="Reserve", code="UNAVAILABLE", times=1, retry_after_ms=5000
    )
    await journaled.start_checkout("kill-in-backoff")
    await journaled.demo.inventory.control.wait_for(
        lambda calls: any(c.method == "Reserve" and c.outcome for c in calls)
    )
    await asyncio.sleep(0.5)  # step_retrying is committed within milliseconds; the wait is 5 s
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-in-backoff")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert {s.step_id: s.attempts for s in execution.result.steps}["reserve"] == 2
    names = kinds(await journaled.events("kill-in-backoff"))
    assert names.count("step_retrying") == 1
    assert names.index("step_retrying") < names.index("recovered")
    assert counts(await journaled.received())["Reserve"] == 2


async def test_killed_right_after_finished_is_durable_nothing_runs_again(
    journaled: Journaled,
) -> None:
    """Killed once `finished` (event 10) is committed: the restart resumes nothing."""
    await journaled.start(kill_after_event=10)

    async def start_and_follow() -> None:
        await journaled.start_checkout("kill-after-finished")
        await journaled.finished("kill-after-finished")

    with pytest.raises(grpc.aio.AioRpcError):
        await start_and_follow()
    assert await journaled.died() == -signal.SIGKILL

    await journaled.start()
    execution = await journaled.finished("kill-after-finished")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert "recovered" not in kinds(await journaled.events("kill-after-finished"))
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }


@pytest.mark.parametrize("kill_after", [0, 1], ids=["after-the-record", "after-started"])
async def test_a_generated_id_is_durable_with_the_first_intent(
    journaled: Journaled, kill_after: int
) -> None:
    """An Execute without an execution_id: its record commits with its first entries (one
    commit, no round trip of its own); killed right after it, the restart finds the execution
    and finishes it, Reserve's intent counted as an attempt whose call was never sent."""
    await journaled.start(kill_after_event=kill_after)
    request = pb.ExecuteRequest(workflow="checkout", input=struct(ORDER))
    with pytest.raises(grpc.aio.AioRpcError):  # the gateway dies under the call
        async for _ in journaled.stub.Execute(request, timeout=10):
            pass
    assert await journaled.died() == -signal.SIGKILL

    await journaled.start()
    listed = await journaled.stub.ListExecutions(pb.ListExecutionsRequest(), timeout=5)
    (only,) = listed.executions
    execution = await journaled.finished(only.execution_id)
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["reserve"].attempts == 2
    assert counts(await journaled.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    assert kinds(await journaled.events(only.execution_id))[:2] == ["started", "step_started"]


LINES_ORDER: dict[str, Any] = {
    "order_id": "L-9",
    "lines": [
        {"sku": "sku-1", "qty": 1},
        {"sku": "sku-2", "qty": 1},
        {"sku": "sku-3", "qty": 1},
        {"sku": "sku-1", "qty": 2},
    ],
    "amount": 2500,
    "address": "1 Main Street",
    "email": "ada@example.com",
}


async def start_lines(journaled: Journaled, execution_id: str) -> None:
    request = pb.ExecuteRequest(
        workflow="order_lines", input=struct(LINES_ORDER), execution_id=execution_id
    )
    await journaled.stub.Start(request, timeout=10)


async def test_killed_during_a_foreach_finished_iterations_are_not_redone(
    journaled: Journaled,
) -> None:
    """Killed while one line's reservation is held (the three others done): the restart
    reserves that line again (attempt 2) and nothing else; the order completes with every line
    in order."""
    await journaled.start()
    inventory = journaled.demo.inventory.control
    await inventory.add_fault(method="Reserve", times=2)  # the first two calls to arrive pass
    await inventory.add_fault(method="Reserve", delay_ms=4000, times=1)  # the third is held
    await start_lines(journaled, "kill-foreach")
    calls = await inventory.wait_for(
        lambda calls: (
            len([c for c in calls if c.method == "Reserve" and c.outcome]) >= 3
            and in_flight("Reserve")(calls)
        ),
        within=10,
    )
    await journaled.kill()
    # Usually line 2, but under load line 2's call may arrive before line 0's: find it.
    (held,) = [c.request for c in calls if c.method == "Reserve" and not c.outcome]
    lines = [(line["sku"], line["qty"]) for line in LINES_ORDER["lines"]]
    held_line = lines.index((held["sku"], held["qty"]))

    await journaled.start()
    execution = await journaled.finished("kill-foreach")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED, execution.result.error
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps[f"lines[{held_line}].reserve"].attempts == 2
    assert all(steps[f"lines[{i}].reserve"].attempts == 1 for i in range(4) if i != held_line)
    received = await journaled.received()
    # Four lines, the held one twice (the interrupted attempt and its retry), and the gift.
    assert len(received["Reserve"]) == 6
    assert counts(received)["Charge"] == 1
    events = await journaled.events("kill-foreach")
    started = [e.step_started.step_id for e in events if e.WhichOneof("event") == "step_started"]
    assert started.count("lines") == 1
    for i in range(4):  # one step_started per attempt: the held line's twice
        assert started.count(f"lines[{i}].reserve") == (2 if i == held_line else 1)


async def test_killed_inside_a_sub_workflow_the_child_resumes_where_it_stood(
    journaled: Journaled,
) -> None:
    """Killed while the payment sub-workflow's receipt mail is held: the charge is not redone."""
    await journaled.start()
    await journaled.demo.mailer.control.add_fault(method="SendMail", delay_ms=4000, times=1)
    await start_lines(journaled, "kill-child")
    await journaled.demo.mailer.control.wait_for(in_flight("SendMail"), within=10)
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-child")
    # The receipt has no retry: its interrupted attempt fails it after the restart; the child
    # refunds its own charge, then the parent releases every line. Nothing is done twice.
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    error = execution.result.error
    assert (error.step_id, error.code) == ("pay.receipt", "UNAVAILABLE")
    received = counts(await journaled.received())
    assert received["Charge"] == 1
    assert received["Refund"] == 1
    assert received["Release"] == 4
    assert "CreateShipment" not in received
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["pay.charge"].attempts == 1
    assert steps["pay.charge"].status == pb.STEP_STATUS_COMPENSATED


async def test_killed_while_a_failed_sub_workflow_undoes_itself(journaled: Journaled) -> None:
    """The receipt fails, and the payment sub-workflow is refunding its own charge when the
    gateway is killed: the restart retries the refund (its interrupted attempt counts as
    UNAVAILABLE), then the parent releases every line; the charge is never undone twice."""
    await journaled.start()
    await journaled.demo.mailer.control.add_fault(
        method="SendMail", code="FAILED_PRECONDITION", times=1
    )
    await journaled.demo.payments.control.add_fault(method="Refund", delay_ms=4000, times=1)
    await start_lines(journaled, "kill-child-undo")
    await journaled.demo.payments.control.wait_for(in_flight("Refund"), within=10)
    await journaled.kill()

    await journaled.start()
    execution = await journaled.finished("kill-child-undo")
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    assert execution.result.error.step_id == "pay.receipt"
    received = counts(await journaled.received())
    assert received["Charge"] == 1
    assert received["Refund"] == 2  # the interrupted attempt and its retry
    assert received["Release"] == 4
    steps = {s.step_id: s for s in execution.result.steps}
    assert steps["pay.charge"].status == pb.STEP_STATUS_COMPENSATED
