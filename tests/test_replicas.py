"""Replicas on PostgreSQL (DESIGN §11), proven with real ``maestro serve`` processes.

Two or three gateways share one database of the session's throwaway server (``pg_support.py``)
and call the demo services, which record every call they receive: so "nothing twice" is what
the services saw, not what the gateways say. The faults are real too: ``kill -9`` of the replica
running a saga, SIGSTOP past its lease and SIGCONT, the database stopped with ``pg_ctl`` under
load and started again. Leases are short (``--lease 2s``) so that take-overs happen within a
test's time; every wait is bounded and every process is stopped (continued first).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from pg_support import Cluster, running_cluster

from demo.control_client import RecordedCall
from demo.gateway import WORKFLOWS, GatewayProcess, start_gateway, write_workflows
from demo.harness import DemoServices

pytestmark = pytest.mark.asyncio(loop_scope="module")

LEASE = 2.0
ORDER: dict[str, Any] = {
    "order_id": "R-1",
    "sku": "sku-1",
    "qty": 2,
    "amount": 4999,
    "address": "1 Main Street",
    "email": "ada@example.com",
}
FINISH_WITHIN = 30.0
STATUS = pb.ExecutionStatus
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Started by the signal order.paid, once per order (dedup): exactly once across replicas.
ON_PAID = """\
name: on-paid
version: "1.0"
triggers:
  - signal: order.paid
    input: {order_id: "{{ signal.params.order_id }}"}
    dedup: "{{ signal.params.order_id }}"
input:
  type: object
  required: [order_id]
  properties: {order_id: {type: string}}
services:
  inventory:
    type: grpc
    endpoint: "127.0.0.1:50051"
    timeout: 2s
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {order_id: "{{ input.order_id }}", sku: sku-2, qty: 1}
"""


# Reserves, then announces the order as paid (on-paid above is triggered by it).
ANNOUNCE = """\
name: announce
version: "1.0"
input:
  type: object
  required: [order_id]
  properties: {order_id: {type: string}}
services:
  inventory:
    type: grpc
    endpoint: "127.0.0.1:50051"
    timeout: 2s
    retry: {attempts: 3, backoff: exponential, initial: 100ms, max: 1s}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {order_id: "{{ input.order_id }}", sku: sku-1, qty: 1}
  - id: tell
    emit:
      signal: order.paid
      params: {order_id: "{{ input.order_id }}"}
"""


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(value)
    return out


def checkout(execution_id: str, **changes: Any) -> pb.ExecuteRequest:
    return pb.ExecuteRequest(
        workflow="checkout", input=struct({**ORDER, **changes}), execution_id=execution_id
    )


class Replicas:
    """Gateways on one PostgreSQL database, over the demo services."""

    def __init__(self, demo: DemoServices, tmp: Path, dsn: str) -> None:
        self.demo = demo
        self.dsn = dsn
        source = tmp / "source"  # checkout as it ships, and on-paid; not the others in flux
        source.mkdir()
        shutil.copy(WORKFLOWS / "checkout.yaml", source / "checkout.yaml")
        (source / "on-paid.yaml").write_text(ON_PAID)
        (source / "announce.yaml").write_text(ANNOUNCE)
        self.workflows = write_workflows(tmp, demo, source=source)
        self.gateways: list[GatewayProcess] = []
        self._channels: dict[int, grpc.aio.Channel] = {}

    async def start(
        self, count: int, *extra: str, env: dict[str, str] | None = None
    ) -> list[GatewayProcess]:
        """Start ``count`` replicas at once (they migrate the schema together)."""
        options = ["--journal", self.dsn, "--lease", f"{LEASE:g}s", *extra]
        started = await asyncio.gather(
            *(start_gateway(self.workflows, extra=options, env=env) for _ in range(count))
        )
        self.gateways.extend(started)
        return list(started)

    def channel(self, gateway: GatewayProcess) -> grpc.aio.Channel:
        key = id(gateway)
        if key not in self._channels:
            self._channels[key] = grpc.aio.insecure_channel(gateway.address)
        return self._channels[key]

    def stub(self, gateway: GatewayProcess) -> Any:
        return gateway_pb2_grpc.GatewayStub(self.channel(gateway))

    async def health(self, gateway: GatewayProcess) -> int:
        stub = health_pb2_grpc.HealthStub(self.channel(gateway))
        response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(response.status)

    async def health_becomes(
        self, gateways: Sequence[GatewayProcess], status: int, within: float = 10.0
    ) -> None:
        """Poll the health of ``gateways`` until every one reports ``status`` (bounded)."""
        async with asyncio.timeout(within):
            while True:
                if [await self.health(g) for g in gateways] == [status] * len(gateways):
                    return
                await asyncio.sleep(0.1)

    async def get(self, gateway: GatewayProcess, execution_id: str) -> pb.Execution:
        request = pb.GetExecutionRequest(execution_id=execution_id)
        return await self.stub(gateway).GetExecution(request, timeout=5)

    async def finished(
        self, gateway: GatewayProcess, execution_id: str, within: float = FINISH_WITHIN
    ) -> pb.Execution:
        """Poll GetExecution on ``gateway`` until the execution has finished (bounded)."""
        async with asyncio.timeout(within):
            while True:
                execution = await self.get(gateway, execution_id)
                if execution.HasField("end_time"):
                    return execution
                await asyncio.sleep(0.02)

    async def events(self, gateway: GatewayProcess, execution_id: str) -> list[pb.ExecutionEvent]:
        call = self.stub(gateway).WatchExecution(
            pb.WatchExecutionRequest(execution_id=execution_id), timeout=10
        )
        return [event async for event in call]

    async def received(self) -> dict[str, list[RecordedCall]]:
        """Every call each demo service received, by method (compensations included)."""
        out: dict[str, list[RecordedCall]] = {}
        for endpoint in self.demo.all():
            for recorded in await endpoint.control.calls():
                out.setdefault(recorded.method, []).append(recorded)
        return out

    async def kill(self, gateway: GatewayProcess) -> None:
        """SIGKILL ``gateway`` and wait (bounded) until it is gone."""
        gateway.process.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):
            await gateway.process.wait()
        await gateway.stop()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        for gateway in self.gateways:
            if gateway.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    gateway.process.send_signal(signal.SIGCONT)
        await asyncio.gather(*(gateway.stop() for gateway in self.gateways))


@contextlib.asynccontextmanager
async def replicas_on(demo: DemoServices, tmp: Path, dsn: str) -> AsyncIterator[Replicas]:
    for endpoint in demo.all():
        await endpoint.control.reset()
    subject = Replicas(demo, tmp, dsn)
    try:
        yield subject
    finally:
        await subject.close()


@pytest_asyncio.fixture(loop_scope="module")
async def replicas(
    demo: DemoServices, tmp_path: Path, pg_cluster: Cluster, pg_database: str
) -> AsyncIterator[Replicas]:
    async with replicas_on(demo, tmp_path, pg_cluster.dsn(pg_database)) as subject:
        yield subject


def counts(received: dict[str, list[RecordedCall]]) -> dict[str, int]:
    return {method: len(calls) for method, calls in sorted(received.items())}


def in_flight(method: str) -> Any:
    return lambda calls: any(c.method == method and not c.outcome for c in calls)


def kinds(events: Sequence[pb.ExecutionEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def recovered_by(gateways: Sequence[GatewayProcess], execution_id: str) -> list[int]:
    """The indexes of the gateways whose log says they resumed ``execution_id``."""
    needle = f"execution_recovered id={execution_id} "
    return [n for n, g in enumerate(gateways) if any(needle in line for line in g.log)]


def assert_reported_once(events: Sequence[pb.ExecutionEvent]) -> None:
    """Sequences 1…N without a gap or a repeat; each step succeeded at most once; one end."""
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    names = kinds(events)
    assert names.count("finished") == 1
    assert names[-1] == "finished"
    succeeded = [e.step_succeeded.step_id for e in events if e.HasField("step_succeeded")]
    assert len(succeeded) == len(set(succeeded)), succeeded


# -- a replica dies --------------------------------------------------------------------------


async def test_kill_9_of_the_replica_running_a_saga_another_finishes_it(
    replicas: Replicas,
) -> None:
    """Three replicas; the one holding Reserve is killed: exactly one other resumes it within
    lease + 2 s, and the services see nothing twice but the interrupted Reserve."""
    first, *others = await replicas.start(3)
    await replicas.demo.inventory.control.add_fault(method="Reserve", delay_ms=3000, times=1)
    await replicas.stub(first).Start(checkout("kill-saga"), timeout=10)
    await replicas.demo.inventory.control.wait_for(in_flight("Reserve"))
    await replicas.kill(first)
    killed = time.monotonic()

    execution = await replicas.finished(others[0], "kill-saga")
    assert time.monotonic() - killed < LEASE + 2.0
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert len(recovered_by(others, "kill-saga")) == 1
    assert counts(await replicas.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 2,
        "SendMail": 1,
    }
    events = await replicas.events(others[1], "kill-saga")
    assert_reported_once(events)
    names = kinds(events)
    assert names.count("recovered") == 1
    retry = events[names.index("step_retrying")].step_retrying
    assert (retry.step_id, retry.attempt, retry.error.code) == ("reserve", 1, "UNAVAILABLE")


async def test_kill_9_in_the_middle_of_the_rollback_another_compensates(
    replicas: Replicas,
) -> None:
    """Killed during Release: another replica finishes the rollback; no compensation is lost
    or repeated but the interrupted Release."""
    first, *others = await replicas.start(3)
    await replicas.demo.shipping.control.add_fault(
        method="CreateShipment", code="FAILED_PRECONDITION", times=1
    )
    await replicas.demo.inventory.control.add_fault(method="Release", delay_ms=3000, times=1)
    await replicas.stub(first).Start(checkout("kill-rollback"), timeout=10)
    await replicas.demo.inventory.control.wait_for(in_flight("Release"))
    await replicas.kill(first)
    killed = time.monotonic()

    execution = await replicas.finished(others[1], "kill-rollback")
    assert time.monotonic() - killed < LEASE + 2.0
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    assert (execution.result.error.step_id, execution.result.error.code) == (
        "ship",
        "FAILED_PRECONDITION",
    )
    assert len(recovered_by(others, "kill-rollback")) == 1
    assert counts(await replicas.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "RecallMail": 1,
        "Refund": 1,
        "Release": 2,
        "Reserve": 1,
        "SendMail": 1,
    }
    assert_reported_once(await replicas.events(others[0], "kill-rollback"))


async def test_a_dead_replicas_executions_spread_over_the_survivors_within_capacity(
    replicas: Replicas,
) -> None:
    """Twelve sagas on one replica, killed with all twelve Reserves held; the two survivors
    (--max-concurrent 8 each) claim no more than their free capacity, so both take some, each
    execution is resumed by exactly one of them, and every one finishes; the services see
    nothing twice but the interrupted Reserves."""
    (first,) = await replicas.start(1)
    survivors = await replicas.start(2, "--max-concurrent", "8")
    inventory, payments = replicas.demo.inventory.control, replicas.demo.payments.control
    await inventory.add_fault(method="Reserve", delay_ms=1900, times=12)
    # The resumed executions hold a Charge for a while: a survivor at capacity stays so.
    await payments.add_fault(method="Charge", delay_ms=3000, times=12)
    ids = [f"spread-{n:02}" for n in range(12)]
    for execution_id in ids:
        await replicas.stub(first).Start(checkout(execution_id, order_id=execution_id), timeout=10)
    await inventory.wait_for(
        lambda calls: len([c for c in calls if c.method == "Reserve" and not c.outcome]) == 12
    )
    await replicas.kill(first)

    for execution_id in ids:
        execution = await replicas.finished(survivors[0], execution_id)
        assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED, execution_id
    owners = {execution_id: recovered_by(survivors, execution_id) for execution_id in ids}
    assert all(len(found) == 1 for found in owners.values()), owners
    taken = [sum(found == [n] for found in owners.values()) for n in range(2)]
    assert sum(taken) == 12
    assert all(1 <= count <= 8 for count in taken), taken
    assert counts(await replicas.received()) == {
        "Charge": 12,
        "CreateShipment": 12,
        "Reserve": 24,  # the twelve interrupted ones, and their retries
        "SendMail": 12,
    }
    for execution_id in ids:
        events = await replicas.events(survivors[1], execution_id)
        assert_reported_once(events)
        assert kinds(events).count("recovered") == 1


async def test_a_replica_paused_past_its_lease_stops_without_reporting_twice(
    replicas: Replicas,
) -> None:
    """SIGSTOP while Charge is held, past the lease: the other replica takes over and finishes.
    After SIGCONT the paused one sends nothing more, writes nothing, and its Execute stream
    goes on from the journal: every event exactly once, the other replica's included."""
    paused, other = await replicas.start(2)
    await replicas.demo.payments.control.add_fault(method="Charge", delay_ms=1500, times=1)
    stream = replicas.stub(paused).Execute(checkout("paused"), timeout=FINISH_WITHIN)
    seen: list[pb.ExecutionEvent] = []

    async def follow() -> None:
        seen.extend([event async for event in stream])

    following = asyncio.create_task(follow())
    try:
        await replicas.demo.payments.control.wait_for(in_flight("Charge"))
        os.kill(paused.process.pid, signal.SIGSTOP)
        try:
            execution = await replicas.finished(other, "paused")
            assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
            finished_at = execution.last_sequence
            # The held Charge answered while the replica was stopped: it is in its socket.
            await replicas.demo.payments.control.wait_for(
                lambda calls: all(c.outcome for c in calls if c.method == "Charge")
            )
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)
        await paused.wait_log("lease_lost id=paused", within=10)
        async with asyncio.timeout(10):
            await following
    finally:
        following.cancel()
    await asyncio.sleep(0.5)  # room for anything stray to reach a service or the journal

    assert counts(await replicas.received()) == {
        "Charge": 2,  # the interrupted one, and the other replica's retry
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    assert recovered_by([other], "paused") == [0]
    events = await replicas.events(paused, "paused")
    assert_reported_once(events)
    assert kinds(events).count("recovered") == 1
    assert (await replicas.get(other, "paused")).last_sequence == finished_at
    assert [e.sequence for e in seen] == [e.sequence for e in events]
    assert seen[-1].finished.result.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    # The paused replica is well: it serves on.
    result = await replicas.stub(paused).Run(checkout("after-pause"), timeout=FINISH_WITHIN)
    assert result.status == STATUS.EXECUTION_STATUS_SUCCEEDED


async def test_sigterm_releases_what_it_hands_over_for_another_replica_at_once(
    replicas: Replicas,
) -> None:
    """A replica shut down with a call held hands the execution over and releases its lease:
    the other replica resumes it at its next look, long before the lease (30 s) would expire."""
    leaving, staying = await replicas.start(2, "--lease", "30s", "--grace", "0.3s")
    await replicas.demo.inventory.control.add_fault(method="Reserve", delay_ms=3000, times=1)
    await replicas.stub(leaving).Start(checkout("released"), timeout=10)
    await replicas.demo.inventory.control.wait_for(in_flight("Reserve"))
    leaving.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(15):
        assert await leaving.process.wait() == 0
    left = time.monotonic()
    execution = await replicas.finished(staying, "released", within=10)
    assert time.monotonic() - left < 5.0
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert recovered_by([staying], "released") == [0]
    assert counts(await replicas.received())["Reserve"] == 2


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP): its state in /proc is T."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] in ("T", "t")


async def until_stopped(gateway: GatewayProcess, within: float) -> None:
    """Wait (bounded) until ``gateway``'s process is stopped."""
    async with asyncio.timeout(within):
        while True:
            if stopped(gateway.process.pid):
                return
            await asyncio.sleep(0.02)


async def test_paused_right_after_an_intent_is_durable_the_old_owner_sends_nothing(
    replicas: Replicas,
) -> None:
    """Stopped by its own writer just after Reserve's intent committed, before it could send
    the call, and kept stopped past the lease: once continued, it does not send it (its lease
    is no longer certain: it waits for its next renewal, which the test holds up for a second
    with a table lock, and learns it lost it). The new owner's retry is the only Reserve the
    service sees."""
    (paused,) = await replicas.start(1, env={"MAESTRO_FAULT_STOP_AFTER_EVENT": "2"})
    (other,) = await replicas.start(1)
    starting = asyncio.ensure_future(
        replicas.stub(paused).Start(checkout("stopped-at-intent"), timeout=30)
    )
    try:
        async with asyncio.timeout(10):
            while True:
                if stopped(paused.process.pid):
                    break
                await asyncio.sleep(0.02)
        holder = await asyncpg.connect(replicas.dsn)
        try:
            execution = await replicas.finished(other, "stopped-at-intent")
            async with holder.transaction():
                # Writes wait (a renew, a claim), reads do not.
                await holder.execute("LOCK TABLE maestro_executions IN EXCLUSIVE MODE")
                os.kill(paused.process.pid, signal.SIGCONT)
                await asyncio.sleep(1.0)  # a call sent without asking would be sent by now
                assert not any("lease_lost" in line for line in paused.log)
        finally:
            os.kill(paused.process.pid, signal.SIGCONT)
            await holder.close()
        await paused.wait_log("lease_lost id=stopped-at-intent", within=10)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await asyncio.wait_for(starting, 10)
    finally:
        starting.cancel()
    await asyncio.sleep(0.5)  # room for a stray call to reach the service

    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert {s.step_id: s.attempts for s in execution.result.steps}["reserve"] == 2
    assert counts(await replicas.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    events = await replicas.events(other, "stopped-at-intent")
    assert_reported_once(events)
    assert kinds(events).count("recovered") == 1


async def test_an_emit_from_a_replica_that_lost_the_execution_writes_nothing(
    replicas: Replicas,
) -> None:
    """A stops itself right before committing the emit step's start (and the signal sent with
    it), past its lease; B claims the execution and is stopped in turn before writing anything.
    A, continued, is fenced off: it records no signal and starts nothing. B, continued, emits:
    the signal is recorded once, produced by the execution, and the workflow it triggers runs
    once."""
    stop = {"MAESTRO_FAULT_STOP_BEFORE_EVENT": "4"}
    (fenced,) = await replicas.start(1, env=stop)
    (taker,) = await replicas.start(1, env=stop)  # its first group with an event 4: the resume
    request = pb.ExecuteRequest(
        workflow="announce", input=struct({"order_id": "A-1"}), execution_id="announced"
    )
    await replicas.stub(fenced).Start(request, timeout=10)
    try:
        await until_stopped(fenced, within=10)
        await until_stopped(taker, within=10)  # it claimed the execution, then stopped
        os.kill(fenced.process.pid, signal.SIGCONT)
        await fenced.wait_log("lease_lost id=announced workflow=announce noticed_by=fenced")
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await replicas.stub(fenced).GetSignal(
                pb.GetSignalRequest(signal_id="announced.tell"), timeout=5
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        os.kill(taker.process.pid, signal.SIGCONT)
        os.kill(fenced.process.pid, signal.SIGCONT)

    execution = await replicas.finished(fenced, "announced")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    triggered = await replicas.finished(fenced, "on-paid:A-1")
    assert triggered.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert triggered.triggered_by == "announced.tell"
    listed = await replicas.stub(fenced).ListSignals(
        pb.ListSignalsRequest(producer_execution_id="announced"), timeout=5
    )
    (emitted,) = listed.signals
    assert emitted.signal_id == "announced.tell"
    assert (emitted.producer.execution_id, emitted.producer.step_id) == ("announced", "tell")
    assert list(emitted.triggered) == ["on-paid:A-1"]
    assert not any(
        "signal_received" in line or "execution_triggered" in line for line in fenced.log
    )
    assert any("signal_received id=announced.tell" in line for line in taker.log)
    assert recovered_by([fenced, taker], "announced") == [1]
    events = await replicas.events(fenced, "announced")
    assert_reported_once(events)
    # Reserve again only if its outcome was in the group the pause held up (then interrupted).
    retried = [e for e in events if e.HasField("step_retrying")]
    reserves = [c.request["sku"] for c in (await replicas.received())["Reserve"]]
    assert sorted(reserves) == ["sku-1"] * (1 + len(retried)) + ["sku-2"]
    assert counts(await replicas.received()) == {"Reserve": 2 + len(retried)}


# -- one id, one signal, on two replicas at once ---------------------------------------------


async def test_one_execution_id_on_two_replicas_at_once_runs_once(replicas: Replicas) -> None:
    """Run and Execute with one id, concurrently on both replicas: one execution; every stream
    sees every event once, every Run the same result."""
    gateways = await replicas.start(2)
    request = checkout("same-id")

    async def stream(gateway: GatewayProcess) -> list[pb.ExecutionEvent]:
        call = replicas.stub(gateway).Execute(request, timeout=FINISH_WITHIN)
        return [event async for event in call]

    calls: list[Any] = []
    for gateway in gateways:
        calls += [stream(gateway), stream(gateway)]
        calls += [replicas.stub(gateway).Run(request, timeout=FINISH_WITHIN) for _ in range(8)]
    outcomes = await asyncio.gather(*calls)
    streams = [o for o in outcomes if isinstance(o, list)]
    results = [o for o in outcomes if not isinstance(o, list)]
    assert len(streams) == 4
    assert {r.status for r in results} == {STATUS.EXECUTION_STATUS_SUCCEEDED}
    assert len({r.SerializeToString(deterministic=True) for r in results}) == 1
    for events in streams:
        assert_reported_once(events)
        assert [e.sequence for e in events] == [e.sequence for e in streams[0]]
    assert counts(await replicas.received()) == {
        "Charge": 1,
        "CreateShipment": 1,
        "Reserve": 1,
        "SendMail": 1,
    }


async def test_one_signal_on_two_replicas_at_once_starts_one_execution(
    replicas: Replicas,
) -> None:
    """The same signal (one id) and the same order (other ids) sent to both replicas at once:
    one received signal per id, one execution per order, one Reserve."""
    gateways = await replicas.start(2)
    params = struct({"order_id": "S-1"})
    sends = [
        replicas.stub(gateways[n % 2]).SendSignal(
            pb.SendSignalRequest(name="order.paid", params=params, signal_id=signal_id),
            timeout=10,
        )
        for n in range(8)
        for signal_id in ("paid-1", f"paid-other-{n}")
    ]
    responses = await asyncio.gather(*sends)
    by_id: dict[str, list[bool]] = {}
    for response in responses:
        by_id.setdefault(response.signal.signal_id, []).append(response.duplicate)
    assert sorted(by_id["paid-1"]) == [False] + [True] * 7
    execution = await replicas.finished(gateways[1], "on-paid:S-1")
    assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED
    assert counts(await replicas.received()) == {"Reserve": 1}


# -- Watch and Cancel through a replica that does not run the execution ----------------------


async def test_a_watcher_on_another_replica_sees_each_event_within_100_ms(
    replicas: Replicas,
) -> None:
    """Watching through both replicas: the one that does not run the execution streams the
    same events, each within 100 ms of its time (LISTEN/NOTIFY, not polling)."""
    owner, other = await replicas.start(2)
    for control, method in (
        (replicas.demo.inventory.control, "Reserve"),
        (replicas.demo.payments.control, "Charge"),
        (replicas.demo.shipping.control, "CreateShipment"),
    ):
        await control.add_fault(method=method, delay_ms=300, times=1)
    await replicas.stub(owner).Start(checkout("watched"), timeout=10)
    arrivals: dict[int, list[tuple[pb.ExecutionEvent, float]]] = {0: [], 1: []}

    async def watch(n: int, gateway: GatewayProcess) -> None:
        call = replicas.stub(gateway).WatchExecution(
            pb.WatchExecutionRequest(execution_id="watched"), timeout=FINISH_WITHIN
        )
        async for event in call:
            arrivals[n].append((event, time.time()))

    await asyncio.gather(watch(0, owner), watch(1, other))
    mine = [event for event, _ in arrivals[0]]
    theirs = [event for event, _ in arrivals[1]]
    assert theirs == mine
    assert_reported_once(theirs)
    # The events emitted once both watchers were following (the first ones were read back).
    live = [
        (event, at)
        for event, at in arrivals[1]
        if event.time.ToNanoseconds() / 1e9 > arrivals[1][0][1]
    ]
    assert len(live) >= 8
    late = [
        (event.sequence, round(at - event.time.ToNanoseconds() / 1e9, 3))
        for event, at in live
        if at - event.time.ToNanoseconds() / 1e9 > 0.1
    ]
    assert late == []


async def test_cancel_through_another_replica_reaches_the_owner(replicas: Replicas) -> None:
    """CancelExecution on the replica that does not run it: the owner cancels as a caller
    cancel would (Charge cut short, Release and RecallMail run), with the reason given."""
    owner, other = await replicas.start(2)
    await replicas.demo.payments.control.add_fault(method="Charge", delay_ms=4000, times=1)
    await replicas.stub(owner).Start(checkout("cancelled"), timeout=10)
    await replicas.demo.payments.control.wait_for(in_flight("Charge"))
    await replicas.demo.mailer.control.wait_for(
        lambda calls: any(c.method == "SendMail" and c.outcome for c in calls)
    )
    asked = time.monotonic()
    answer = await replicas.stub(other).CancelExecution(
        pb.CancelExecutionRequest(execution_id="cancelled", reason="customer changed their mind"),
        timeout=10,
    )
    assert time.monotonic() - asked < 2.0
    assert answer.status in (
        STATUS.EXECUTION_STATUS_COMPENSATING,
        STATUS.EXECUTION_STATUS_COMPENSATED,
    )
    execution = await replicas.finished(other, "cancelled")
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    assert execution.result.error.code == "CANCELLED"
    assert "customer changed their mind" in execution.result.error.message
    assert counts(await replicas.received()) == {
        "Charge": 1,
        "RecallMail": 1,
        "Release": 1,
        "Reserve": 1,
        "SendMail": 1,
    }
    assert recovered_by([owner, other], "cancelled") == []
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await replicas.stub(other).CancelExecution(
            pb.CancelExecutionRequest(execution_id="cancelled"), timeout=10
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_cancel_sent_while_the_owner_is_dead_is_carried_out_by_the_next_owner(
    replicas: Replicas,
) -> None:
    """Cancelled through a survivor right after its owner was killed: the replica that takes
    it over honours the request and compensates."""
    owner, other = await replicas.start(2)
    await replicas.demo.payments.control.add_fault(method="Charge", delay_ms=4000, times=1)
    await replicas.stub(owner).Start(checkout("orphan"), timeout=10)
    await replicas.demo.payments.control.wait_for(in_flight("Charge"))
    await replicas.kill(owner)
    answer = await replicas.stub(other).CancelExecution(
        pb.CancelExecutionRequest(execution_id="orphan", reason="stop it"), timeout=10
    )
    assert answer.status == STATUS.EXECUTION_STATUS_RUNNING  # nobody runs it for now
    execution = await replicas.finished(other, "orphan")
    assert execution.status == STATUS.EXECUTION_STATUS_COMPENSATED
    assert execution.result.error.code == "CANCELLED"
    assert "stop it" in execution.result.error.message
    received = counts(await replicas.received())
    assert received.get("CreateShipment", 0) == 0
    assert (received["Release"], received["Reserve"]) == (1, 1)


# -- the database goes away ------------------------------------------------------------------


async def test_the_database_restarted_under_load_loses_nothing(
    demo: DemoServices, tmp_path: Path
) -> None:
    """pg_ctl stop while executions run on two replicas: health NOT_SERVING, new executions
    UNAVAILABLE, no call whose intent is not durable; started again, everything finishes,
    each call made once."""
    with running_cluster() as cluster:
        database = cluster.create_database()
        async with replicas_on(demo, tmp_path, cluster.dsn(database)) as subject:
            gateways = await subject.start(2, "--lease", "6s")
            await demo.inventory.control.add_fault(method="Reserve", delay_ms=1000, times=10)
            ids = [f"load-{n}" for n in range(10)]
            for n, execution_id in enumerate(ids):
                await subject.stub(gateways[n % 2]).Start(
                    checkout(execution_id, order_id=execution_id), timeout=10
                )
            await demo.inventory.control.wait_for(
                lambda calls: len([c for c in calls if c.method == "Reserve"]) == 10
            )
            cluster.stop_server()
            try:
                await subject.health_becomes(gateways, NOT_SERVING)
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await subject.stub(gateways[0]).Start(checkout("refused"), timeout=5)
                assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.5)
                # Their intents could not be committed: not sent.
                assert "Charge" not in await subject.received()
            finally:
                cluster.start_server()
            for execution_id in ids:
                execution = await subject.finished(gateways[1], execution_id)
                assert execution.status == STATUS.EXECUTION_STATUS_SUCCEEDED, execution_id
            await subject.health_becomes(gateways, SERVING)
            assert counts(await subject.received()) == {
                "Charge": 10,
                "CreateShipment": 10,
                "Reserve": 10,
                "SendMail": 10,
            }
            for execution_id in ids:
                events = await subject.events(gateways[0], execution_id)
                assert_reported_once(events)
                assert "recovered" not in kinds(events)
            result = await subject.stub(gateways[0]).Run(checkout("after"), timeout=FINISH_WITHIN)
            assert result.status == STATUS.EXECUTION_STATUS_SUCCEEDED
