"""The engine with a journal: write-ahead order and resumption (DESIGN §10), in process.

A gateway stop is played by :meth:`Engine.hand_over` plus a cancel (what a shutdown with a
durable journal does, and what a crash leaves behind: an intent without an outcome). A second
engine on the same journal then resumes the execution. The real ``kill -9`` of ``maestro serve``
is in ``test_durability.py``.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from test_engine import Backend, FakeTransports

from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    Engine,
    Event,
    ExecutionFinished,
    ExecutionStatus,
    StepRetrying,
    StepStatus,
)
from maestro_gateway.engine.events import ExecutionRecovered
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.engine.recovery import INTERRUPTED
from maestro_gateway.journal import ExecutionState, MemoryJournal
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Workflow
from maestro_gateway.resilience import FakeClock

CHECKOUT = """
name: checkout
timeout: 30s
services:
  inventory:
    type: grpc
    endpoint: "127.0.0.1:50051"
    retry: {attempts: 3, initial: 100ms, jitter: false}
  payments: {type: grpc, endpoint: "127.0.0.1:50052"}
steps:
  - id: reserve
    service: inventory
    method: Reserve
    input: {sku: "{{ input.sku }}"}
    output: reservation
    compensate: {method: Release, input: {id: "{{ reservation.id }}"}}
  - parallel:
      - {id: charge, service: payments, method: Charge, input: {amount: 5}, output: payment,
         compensate: {method: Refund, input: {id: "{{ payment.id }}"},
                      retry: {attempts: 2, initial: 10ms, jitter: false}}}
      - {id: hold, service: inventory, method: Hold}
  - id: ship
    service: inventory
    method: Ship
    retry: {attempts: 1}
    input: {id: "{{ reservation.id }}"}
"""


class Gateway:
    """One "process": an engine over a backend, sharing ``journal`` with the next one."""

    def __init__(self, journal: MemoryJournal, clock: FakeClock) -> None:
        self.backend = Backend()
        self.backend.on("Reserve", {"id": "r-1"})
        self.backend.on("Charge", {"id": "p-1"})
        self.journal = journal
        self.engine = Engine(
            FakeTransports(self.backend), clock=clock, rng=random.Random(1), journal=journal
        )
        self.events: list[Event] = []

    async def start(self, wf: Workflow, execution_id: str = "ex-1") -> asyncio.Task[Any]:
        return asyncio.create_task(
            self.engine.execute(
                wf, {"sku": "s"}, execution_id=execution_id, on_event=self.events.append
            )
        )

    async def crash_when(self, task: asyncio.Task[Any], method: str, count: int = 1) -> None:
        """Stop the "process" while ``method`` is in flight for the ``count``-th time."""
        b = self.backend
        await b.wait_for(lambda: sum(1 for m in b.methods() if m == method) >= count)
        self.engine.hand_over()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def resume(self, wf: Workflow, execution_id: str = "ex-1") -> Any:
        record = await self.journal.get(execution_id)
        assert record is not None
        events = [event_from_entry(e) for e in await self.journal.events(execution_id)]
        return await self.engine.resume(
            wf, record, events, reason="test restart", on_event=self.events.append
        )


@pytest.fixture
def wf() -> Workflow:
    return load_string(CHECKOUT)


@pytest.fixture
def journal() -> MemoryJournal:
    return MemoryJournal()


async def all_events(journal: MemoryJournal, execution_id: str = "ex-1") -> list[Event]:
    return [event_from_entry(e) for e in await journal.events(execution_id)]


async def test_every_attempt_has_its_intent_and_outcome_journaled(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """Each attempt is journaled with its rendered request, then its response."""
    gw = Gateway(journal, FakeClock())
    task = await gw.start(wf)
    result = await task
    assert result.status is ExecutionStatus.SUCCEEDED
    attempts = await journal.attempts("ex-1")
    assert [(a.step, a.attempt, a.compensation) for a in attempts] == [
        ("reserve", 1, False),
        ("charge", 1, False),
        ("hold", 1, False),
        ("ship", 1, False),
    ]
    assert attempts[0].request == {"sku": "s"}
    assert attempts[0].response == {"id": "r-1"}
    assert all(a.error is None and a.ended_at is not None for a in attempts)
    record = await journal.get("ex-1")
    assert record is not None
    assert record.state is ExecutionState.SUCCEEDED
    assert record.result is not None
    assert record.result["status"] == "SUCCEEDED"


async def test_the_intent_is_committed_before_the_service_sees_the_call(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """Inside the service's handler, the journal already holds that attempt's intent."""
    gw = Gateway(journal, FakeClock())
    intents: list[list[str]] = []

    async def snapshot() -> None:
        intents.append([a.step for a in await journal.attempts("ex-1") if a.ended_at is None])

    gw.backend.on("Hold", hang=True)
    task = await gw.start(wf)
    await gw.backend.wait_for(lambda: "Hold" in gw.backend.methods())
    await snapshot()
    assert set(intents[0]) == {"charge", "hold"} or intents[0] == ["hold"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_call_in_flight_at_the_stop_is_retried_once_resumed(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """The interrupted attempt counts as UNAVAILABLE; the retry policy sends attempt 2."""
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Reserve", hang=True)
    task = await first.start(wf)
    await first.crash_when(task, "Reserve")
    record = await journal.get("ex-1")
    assert record is not None
    assert record.state is ExecutionState.RUNNING

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert second.backend.methods().count("Reserve") == 1
    assert sorted(second.backend.methods()) == ["Charge", "Hold", "Reserve", "Ship"]
    events = await all_events(journal)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    recovered = [e for e in events if isinstance(e, ExecutionRecovered)]
    assert len(recovered) == 1
    retry = next(e for e in events if isinstance(e, StepRetrying))
    assert (retry.step_id, retry.attempt, retry.error.code) == ("reserve", 1, Code.UNAVAILABLE)
    assert retry.error.message == INTERRUPTED
    assert result.steps["reserve"].attempts == 2
    assert isinstance(events[-1], ExecutionFinished)
    # The first attempt has an outcome now: the interruption.
    attempts = [a for a in await journal.attempts("ex-1") if a.step == "reserve"]
    assert attempts[0].error is not None
    assert attempts[0].error["code"] == "UNAVAILABLE"


async def test_completed_steps_are_not_called_again(wf: Workflow, journal: MemoryJournal) -> None:
    """Stopped during the parallel group: reserve and the finished child are not redone."""
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Hold", hang=True)
    task = await first.start(wf)
    await first.backend.wait_for(lambda: ("end", "Charge") in first.backend.log)
    await first.crash_when(task, "Hold")

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert second.backend.methods() == ["Hold", "Ship"]
    assert result.output["reservation"] == {"id": "r-1"}
    assert result.output["payment"] == {"id": "p-1"}


async def test_an_interrupted_call_without_retries_fails_and_the_saga_undoes(
    journal: MemoryJournal,
) -> None:
    """No retry left: the step fails with the interruption and the succeeded steps are undone."""
    wf = load_string(CHECKOUT)
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Ship", hang=True)
    task = await first.start(wf)
    await first.crash_when(task, "Ship")

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert (result.error.step_id, result.error.code) == ("ship", Code.UNAVAILABLE)
    assert second.backend.methods() in (["Refund", "Release"], ["Release", "Refund"])
    assert second.backend.methods()[-1] == "Release"


async def test_an_interrupted_rollback_continues_without_redoing_compensations(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """Stopped during Release (the last undo): Refund is not run again; Release is retried."""
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Ship", code=Code.FAILED_PRECONDITION, fails=1)
    first.backend.on("Release", hang=True)
    task = await first.start(wf)
    await first.crash_when(task, "Release")
    record = await journal.get("ex-1")
    assert record is not None
    assert record.state is ExecutionState.COMPENSATING
    assert first.backend.methods().count("Refund") == 1

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert second.backend.methods() == ["Release"]
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.steps["reserve"].status is StepStatus.COMPENSATED
    assert result.steps["charge"].status is StepStatus.COMPENSATED
    assert result.error is not None
    assert result.error.step_id == "ship"
    assert result.error.code is Code.FAILED_PRECONDITION


async def test_a_deadline_that_passed_while_down_ends_the_execution(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """The workflow timeout is wall-clock: past it on resume, DEADLINE_EXCEEDED and the saga."""
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Charge", hang=True)
    task = await first.start(wf)
    await first.crash_when(task, "Charge")
    clock.advance(60)

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert result.status is ExecutionStatus.COMPENSATED
    assert result.error is not None
    assert result.error.code is Code.DEADLINE_EXCEEDED
    assert result.error.step_id == "charge"
    assert second.backend.methods() == ["Release"]
    assert result.duration >= 60


async def test_a_stop_during_backoff_waits_out_the_rest_of_the_delay(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """Stopped while waiting to retry: the next attempt is the next number, after the delay."""
    clock = FakeClock()
    first = Gateway(journal, clock)
    first.backend.on("Reserve", {"id": "r-1"}, fails=1)
    sleeping = asyncio.Event()
    real_sleep = clock.sleep

    async def slow_sleep(seconds: float) -> None:
        sleeping.set()
        await asyncio.Event().wait()
        await real_sleep(seconds)

    clock.sleep = slow_sleep  # type: ignore[method-assign]
    task = await first.start(wf)
    async with asyncio.timeout(5):
        await sleeping.wait()
    first.engine.hand_over()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.sleep = real_sleep  # type: ignore[method-assign]

    second = Gateway(journal, clock)
    result = await second.resume(wf)
    assert result.status is ExecutionStatus.SUCCEEDED
    assert result.steps["reserve"].attempts == 2
    retries = [e for e in await all_events(journal) if isinstance(e, StepRetrying)]
    assert len(retries) == 1  # not reported twice
    assert clock.sleeps
    assert 0 < clock.sleeps[0] <= 0.1


async def test_a_finished_execution_is_in_the_journal_before_execute_returns(
    wf: Workflow, journal: MemoryJournal
) -> None:
    """``finished`` and the final state are journaled; the event sink saw the same events."""
    gw = Gateway(journal, FakeClock())
    task = await gw.start(wf)
    result = await task
    events = await all_events(journal)
    assert events == gw.events
    record = await journal.get("ex-1")
    assert record is not None
    assert record.state is ExecutionState.SUCCEEDED
    assert record.ended_at is not None
    assert record.last_sequence == events[-1].sequence
    assert result.status is ExecutionStatus.SUCCEEDED
