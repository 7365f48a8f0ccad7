"""The JSON form of an execution result (``maestro execute``'s stdout)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from maestro_gateway.engine.events import ErrorInfo, ExecutionResult, StepResult


def error_to_json(error: ErrorInfo | None) -> dict[str, Any] | None:
    """``{step_id, code (name), message}``, or None."""
    return None if error is None else error.as_value()


def step_to_json(step: StepResult) -> dict[str, Any]:
    """One step's result: status, attempts, output, error, duration and compensation error."""
    return {
        "status": step.status.value,
        "attempts": step.attempts,
        "output": step.output,
        "error": error_to_json(step.error),
        "duration": round(step.duration, 6),
        "compensation_error": error_to_json(step.compensation_error),
    }


def result_to_json(result: ExecutionResult) -> dict[str, Any]:
    """The whole result as JSON-ready data.

    Keys: ``execution_id``, ``workflow``, ``status`` (name), ``error`` (or null), ``output``,
    ``steps`` (by id, in workflow order), ``started_at`` (ISO-8601, UTC, milliseconds) and
    ``duration`` (seconds).
    """
    started = datetime.fromtimestamp(result.started_at, UTC)
    return {
        "execution_id": result.execution_id,
        "workflow": result.workflow,
        "status": result.status.value,
        "error": error_to_json(result.error),
        "output": result.output,
        "steps": {sid: step_to_json(s) for sid, s in result.steps.items()},
        "started_at": started.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "duration": round(result.duration, 6),
    }
