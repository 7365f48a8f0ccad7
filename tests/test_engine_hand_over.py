"""Handing one execution over (DESIGN §11), in process: what a replica that lost a lease does.

``Engine.hand_over(execution_id)`` followed by a cancel stops that execution where it is (no
compensation, nothing more journaled), while a cancel of any other execution still compensates;
``Engine.guard_calls`` is asked before every call, once its intent is durable, and can stop the
execution there, before anything is sent.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from test_engine import Backend, FakeTransports
from test_engine_recovery import CHECKOUT

from maestro_gateway.engine import Engine, ExecutionFinished, ExecutionStatus
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.journal import ExecutionState, MemoryJournal
from maestro_gateway.model.loader import load_string
from maestro_gateway.resilience import FakeClock


def engine_over(backend: Backend, journal: MemoryJournal) -> Engine:
    backend.on("Reserve", {"id": "r-1"})
    backend.on("Charge", {"id": "p-1"}, hang=True)
    return Engine(FakeTransports(backend), clock=FakeClock(), rng=random.Random(1), journal=journal)


async def test_one_execution_handed_over_the_others_still_compensate() -> None:
    """Both cancelled while Charge hangs: the handed-over one stops as it is (RUNNING in the
    journal, no Release), the other compensates; resumed later (claimed again), the handed-over
    one runs normally, as do new executions."""
    backend, journal = Backend(), MemoryJournal()
    engine = engine_over(backend, journal)
    wf = load_string(CHECKOUT)
    tasks = {
        execution_id: asyncio.create_task(
            engine.execute(wf, {"sku": "s"}, execution_id=execution_id)
        )
        for execution_id in ("lost", "kept")
    }
    await backend.wait_for(lambda: backend.methods().count("Charge") == 2)
    engine.hand_over("lost")
    for task in tasks.values():
        task.cancel()
    for task in tasks.values():
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)

    lost = await journal.get("lost")
    kept = await journal.get("kept")
    assert lost is not None
    assert kept is not None
    assert lost.state is ExecutionState.RUNNING
    assert kept.state is ExecutionState.COMPENSATED
    assert backend.methods().count("Release") == 1
    kinds = [e.kind for e in await journal.events("lost")]
    assert "finished" not in kinds
    assert "step_failed" not in kinds

    backend.on("Charge", {"id": "p-2"})  # no hang any more
    record = await journal.get("lost")
    assert record is not None
    events = [event_from_entry(e) for e in await journal.events("lost")]
    resumed = await engine.resume(wf, record, events, reason="claimed again")
    assert resumed.error is not None  # Charge has no retry: the interrupted one fails it
    assert (resumed.error.step_id, resumed.error.code.name) == ("charge", "UNAVAILABLE")
    assert resumed.status is ExecutionStatus.COMPENSATED  # this time it compensates
    assert backend.methods().count("Release") == 2
    later = await engine.execute(wf, {"sku": "s"}, execution_id="later")
    assert later.status is ExecutionStatus.SUCCEEDED


async def test_a_guard_that_refuses_stops_the_execution_before_the_call_is_sent() -> None:
    """The guard is asked once the intent is durable; refusing (having handed the execution
    over) means the call is never sent and nothing more is journaled."""
    backend, journal = Backend(), MemoryJournal()
    engine = engine_over(backend, journal)
    asked: list[str] = []

    async def may_send(execution_id: str) -> bool:
        asked.append(execution_id)
        if execution_id != "refused":
            return True
        engine.hand_over(execution_id)
        return False

    engine.guard_calls(may_send)
    wf = load_string(CHECKOUT)
    seen: list[Any] = []
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(
            engine.execute(wf, {"sku": "s"}, execution_id="refused", on_event=seen.append), 5
        )
    assert asked == ["refused"]
    assert backend.methods() == []
    attempts = await journal.attempts("refused")
    assert [(a.step, a.attempt, a.ended_at) for a in attempts] == [("reserve", 1, None)]
    record = await journal.get("refused")
    assert record is not None
    assert record.state is ExecutionState.RUNNING
    assert not any(isinstance(e, ExecutionFinished) for e in seen)

    backend.on("Charge", {"id": "p-2"})
    allowed = await engine.execute(wf, {"sku": "s"}, execution_id="allowed")
    assert allowed.status is ExecutionStatus.SUCCEEDED
    assert asked.count("allowed") == 4  # reserve, charge, hold, ship
