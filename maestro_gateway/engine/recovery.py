"""Rebuild an execution's state from its journaled events, to resume it (DESIGN §10).

The events are the record of what happened, folded by step path (an event's ``step_id``, the
key of the execution's step states): a ``step_succeeded`` gives the step's output (it is
never called again), the order of those events is the saga's completion order, and the last event
of a step that did not end tells where its call stood:

- ``step_started(n)`` / ``compensation_started(n)``: attempt ``n`` was in flight. It counts as
  failed with UNAVAILABLE, and the retry policy decides what comes next;
- ``step_retrying(n)``: attempt ``n``'s failure was handled; the call waits out what is left of
  the delay, then makes attempt ``n + 1``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from maestro_gateway.codes import Code
from maestro_gateway.engine.context import Execution, Resume
from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    ExecutionRecovered,
    ExecutionStarted,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.errors import CallError

INTERRUPTED = "the gateway stopped during this call; the service may have acted on it"
"""The message of an attempt that was in flight when the gateway stopped (DESIGN §10)."""


class Phase(enum.Enum):
    """What a resumed execution does next."""

    RUN = "run"
    """No step failed: continue with the steps that have not finished."""
    ROLLBACK = "rollback"
    """A step failed (or the rollback had begun): run the compensations not yet done."""


def interrupted_error() -> CallError:
    """The error an interrupted attempt counts as."""
    return CallError(Code.UNAVAILABLE, INTERRUPTED)


def restore(execution: Execution, events: Sequence[Event], wall_now: float) -> Phase:
    """Apply ``events`` (in sequence order) to the fresh ``execution``; return what comes next.

    Nothing is emitted: ``execution.sequence`` continues after the last event.
    """
    states = execution.states
    clock = execution.clock
    mono_offset = clock.monotonic() - wall_now
    rollback = False
    cancelled_cause: ErrorInfo | None = None
    for event in events:
        execution.sequence = event.sequence
        match event:
            case ExecutionStarted() | ExecutionRecovered():
                pass
            case StepStarted():
                state = states[event.step_id]
                state.status = StepStatus.RUNNING
                state.attempts = event.attempt
                if event.attempt == 1:
                    state.started = event.time + mono_offset
                state.resume = Resume(event.attempt, interrupted_error())
            case StepRetrying():
                state = states[event.step_id]
                wait = max(0.0, event.time + event.delay - wall_now)
                state.resume = Resume(event.attempt, None, wait)
            case StepSucceeded():
                state = states[event.step_id]
                state.resume = None
                state.attempts = event.attempt
                execution.step_succeeded(state, event.output, emit=False)
                state.duration = event.duration
            case StepSkipped():
                execution.step_skipped(states[event.step_id], event.reason, emit=False)
            case StepFailed():
                state = states[event.step_id]
                state.resume = None
                state.status = event.status
                state.error = event.error
                state.attempts = max(state.attempts, event.attempt)
                if execution.cause is None and event.status is StepStatus.FAILED:
                    execution.cause = event.error
                if event.status is StepStatus.CANCELLED and cancelled_cause is None:
                    cancelled_cause = event.error
                execution.publish(state)
            case CompensationStarted():
                rollback = True
                state = states[event.step_id]
                state.compensation_attempts = event.attempt
                state.resume = Resume(event.attempt, interrupted_error())
            case CompensationSucceeded():
                state = states[event.step_id]
                state.resume = None
                state.status = StepStatus.COMPENSATED
                execution.publish(state)
            case CompensationFailed():
                state = states[event.step_id]
                state.resume = None
                state.status = StepStatus.COMPENSATION_FAILED
                state.compensation_error = event.error
                execution.publish(state)
            case _:
                pass
    if execution.cause is None and cancelled_cause is not None:
        execution.cause = cancelled_cause
    return Phase.ROLLBACK if rollback or execution.cause is not None else Phase.RUN
