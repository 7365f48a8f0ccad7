"""The engine's side of the journal: events and results as journal entries, and back.

The journal stores plain data; this codec is lossless for everything the engine reads back on
recovery (outputs, errors, attempts, times as epoch floats). ``data`` keys are the event's
fields; an ``error`` is ``{step_id, code (name), message}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    ExecutionFinished,
    ExecutionRecovered,
    ExecutionResult,
    ExecutionStarted,
    ExecutionStatus,
    StepFailed,
    StepResult,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepStatus,
    StepSucceeded,
)
from maestro_gateway.journal.base import EventEntry, ExecutionState

KINDS: dict[type[Any], str] = {
    ExecutionStarted: "started",
    StepStarted: "step_started",
    StepRetrying: "step_retrying",
    StepSucceeded: "step_succeeded",
    StepFailed: "step_failed",
    StepSkipped: "step_skipped",
    CompensationStarted: "compensation_started",
    CompensationSucceeded: "compensation_succeeded",
    CompensationFailed: "compensation_failed",
    ExecutionRecovered: "recovered",
    ExecutionFinished: "finished",
}
"""Event class → the kind stored (the name of its field in ``maestro.v1.ExecutionEvent``)."""

_CLASSES = {kind: cls for cls, kind in KINDS.items()}


def error_data(error: ErrorInfo | None) -> dict[str, Any] | None:
    """``{step_id, code, message}`` or None."""
    return None if error is None else error.as_value()


def error_from_data(data: Mapping[str, Any] | None) -> ErrorInfo | None:
    """The inverse of :func:`error_data`."""
    if data is None:
        return None
    return ErrorInfo(str(data["step_id"]), Code[str(data["code"])], str(data["message"]))


def result_data(result: ExecutionResult) -> dict[str, Any]:
    """An execution result as plain data (lossless; :func:`result_from_data` reverses it)."""
    return {
        "execution_id": result.execution_id,
        "workflow": result.workflow,
        "status": result.status.value,
        "output": result.output,
        "error": error_data(result.error),
        "steps": [
            {
                "step_id": s.step_id,
                "status": s.status.value,
                "attempts": s.attempts,
                "output": s.output,
                "error": error_data(s.error),
                "duration": s.duration,
                "compensation_error": error_data(s.compensation_error),
            }
            for s in result.steps.values()
        ],
        "started_at": result.started_at,
        "duration": result.duration,
    }


def result_from_data(data: Mapping[str, Any]) -> ExecutionResult:
    """The inverse of :func:`result_data`."""
    steps = {
        s["step_id"]: StepResult(
            step_id=s["step_id"],
            status=StepStatus(s["status"]),
            attempts=int(s["attempts"]),
            output=s["output"],
            error=error_from_data(s["error"]),
            duration=float(s["duration"]),
            compensation_error=error_from_data(s["compensation_error"]),
        )
        for s in data["steps"]
    }
    return ExecutionResult(
        execution_id=data["execution_id"],
        workflow=data["workflow"],
        status=ExecutionStatus(data["status"]),
        output=data["output"],
        error=error_from_data(data["error"]),
        steps=steps,
        started_at=float(data["started_at"]),
        duration=float(data["duration"]),
    )


def final_state(status: ExecutionStatus) -> ExecutionState:
    """The journal state of a final status."""
    return ExecutionState(status.value)


def event_entry(event: Event) -> EventEntry:
    """``event`` as a journal entry."""
    data: dict[str, Any]
    match event:
        case ExecutionStarted():
            data = {"workflow": event.workflow, "labels": dict(event.labels)}
        case StepStarted() | CompensationStarted():
            data = {"step_id": event.step_id, "attempt": event.attempt}
        case StepRetrying():
            data = {
                "step_id": event.step_id,
                "attempt": event.attempt,
                "error": error_data(event.error),
                "delay": event.delay,
            }
        case StepSucceeded():
            data = {
                "step_id": event.step_id,
                "attempt": event.attempt,
                "output": event.output,
                "duration": event.duration,
            }
        case StepFailed():
            data = {
                "step_id": event.step_id,
                "attempt": event.attempt,
                "error": error_data(event.error),
                "status": event.status.value,
            }
        case StepSkipped():
            data = {"step_id": event.step_id, "reason": event.reason}
        case CompensationSucceeded():
            data = {"step_id": event.step_id, "attempt": event.attempt, "duration": event.duration}
        case CompensationFailed():
            data = {
                "step_id": event.step_id,
                "attempt": event.attempt,
                "error": error_data(event.error),
            }
        case ExecutionRecovered():
            data = {"reason": event.reason}
        case ExecutionFinished():
            data = {"result": result_data(event.result)}
    return EventEntry(event.execution_id, event.sequence, event.time, KINDS[type(event)], data)


def event_from_entry(entry: EventEntry) -> Event:
    """The event a journal entry holds."""
    d = entry.data
    head = (entry.execution_id, entry.sequence, entry.time)
    cls = _CLASSES[entry.kind]
    if cls is ExecutionStarted:
        return ExecutionStarted(*head, d["workflow"], dict(d.get("labels") or {}))
    if cls is StepStarted or cls is CompensationStarted:
        return cls(*head, d["step_id"], int(d["attempt"]))  # type: ignore[no-any-return]
    if cls is StepRetrying:
        error = error_from_data(d["error"])
        assert error is not None
        return StepRetrying(*head, d["step_id"], int(d["attempt"]), error, float(d["delay"]))
    if cls is StepSucceeded:
        return StepSucceeded(
            *head, d["step_id"], int(d["attempt"]), d["output"], float(d["duration"])
        )
    if cls is StepFailed:
        error = error_from_data(d["error"])
        assert error is not None
        status = StepStatus(d.get("status", "FAILED"))
        return StepFailed(*head, d["step_id"], int(d["attempt"]), error, status)
    if cls is StepSkipped:
        return StepSkipped(*head, d["step_id"], d["reason"])
    if cls is CompensationSucceeded:
        return CompensationSucceeded(*head, d["step_id"], int(d["attempt"]), float(d["duration"]))
    if cls is CompensationFailed:
        error = error_from_data(d["error"])
        assert error is not None
        return CompensationFailed(*head, d["step_id"], int(d["attempt"]), error)
    if cls is ExecutionRecovered:
        return ExecutionRecovered(*head, d["reason"])
    return ExecutionFinished(*head, result_from_data(d["result"]))
