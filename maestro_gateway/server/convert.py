"""Conversions between the engine's plain values and events and the ``maestro.v1`` messages.

Plain values are what the engine works with: dicts, lists, str, int, float, bool, None. On the
way in, a ``google.protobuf.Struct`` becomes a dict in which integral doubles that a double
represents exactly (|x| ≤ 2^53) are ints, so ``{"qty": 2}`` from any client means the integer 2.
On the way out, ints beyond ±2^53 become decimal strings (as proto3 JSON writes int64) so they
are never rounded by a double.
"""

from __future__ import annotations

import base64
import datetime
import math
from collections.abc import Mapping
from typing import Any

from google.protobuf import duration_pb2, struct_pb2, timestamp_pb2
from maestro.v1 import gateway_pb2 as pb

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
from maestro_gateway.engine.journaling import result_from_data
from maestro_gateway.journal.base import ExecutionRecord, ExecutionState, SignalRecord

MAX_SAFE_INTEGER = 2**53
"""Largest magnitude of an integer a double holds exactly."""

_STEP_STATUS = {s: pb.StepStatus.Value(f"STEP_STATUS_{s.value}") for s in StepStatus}

_STATUS = {
    ExecutionStatus.SUCCEEDED: pb.EXECUTION_STATUS_SUCCEEDED,
    ExecutionStatus.FAILED: pb.EXECUTION_STATUS_FAILED,
    ExecutionStatus.COMPENSATED: pb.EXECUTION_STATUS_COMPENSATED,
    ExecutionStatus.COMPENSATION_FAILED: pb.EXECUTION_STATUS_COMPENSATION_FAILED,
}


def fill_value(target: struct_pb2.Value, value: Any) -> None:
    """Write the plain ``value`` into the ``google.protobuf.Value`` ``target``."""
    if value is None:
        target.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            target.number_value = value
        else:
            target.string_value = str(value)
    elif isinstance(value, float):
        target.number_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, Mapping):
        target.struct_value.SetInParent()
        fields = target.struct_value.fields
        for key, item in value.items():
            fill_value(fields[str(key)], item)
    elif isinstance(value, list | tuple):
        target.list_value.SetInParent()
        values = target.list_value.values
        for item in value:
            fill_value(values.add(), item)
    elif isinstance(value, bytes | bytearray):
        target.string_value = base64.b64encode(bytes(value)).decode("ascii")
    elif isinstance(value, datetime.datetime):
        target.string_value = rfc3339(value)
    elif isinstance(value, datetime.timedelta):
        target.string_value = f"{value.total_seconds():g}s"
    else:
        target.string_value = str(value)


def to_value(value: Any) -> struct_pb2.Value:
    """Return the plain ``value`` as a ``google.protobuf.Value``."""
    out = struct_pb2.Value()
    fill_value(out, value)
    return out


def from_value(value: struct_pb2.Value) -> Any:
    """Return a ``google.protobuf.Value`` as a plain value (exact integral doubles as ints)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if math.isfinite(number) and number.is_integer() and abs(number) <= MAX_SAFE_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None


def from_struct(struct: struct_pb2.Struct) -> dict[str, Any]:
    """Return a ``google.protobuf.Struct`` as a plain dict (see :func:`from_value`)."""
    return {key: from_value(item) for key, item in struct.fields.items()}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    """Return epoch ``seconds`` as a Timestamp (microsecond precision)."""
    micros = round(seconds * 1_000_000)
    return timestamp_pb2.Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def duration(seconds: float) -> duration_pb2.Duration:
    """Return ``seconds`` as a Duration (microsecond precision; negative values clamp to 0)."""
    micros = max(0, round(seconds * 1_000_000))
    return duration_pb2.Duration(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def error_to_proto(error: ErrorInfo) -> pb.Error:
    """Return an engine ``ErrorInfo`` as ``maestro.v1.Error`` (code as its name)."""
    return pb.Error(step_id=error.step_id, code=error.code.name, message=error.message)


def status_to_proto(status: ExecutionStatus) -> int:
    """Return the ``maestro.v1.ExecutionStatus`` number of an engine status."""
    return int(_STATUS[status])


def step_result_to_proto(step: StepResult) -> pb.StepResult:
    """Return one step's outcome as ``maestro.v1.StepResult``."""
    out = pb.StepResult(
        step_id=step.step_id,
        status=_STEP_STATUS[step.status],
        attempts=step.attempts,
        duration=duration(step.duration),
    )
    fill_value(out.output, step.output)
    if step.error is not None:
        out.error.CopyFrom(error_to_proto(step.error))
    if step.compensation_error is not None:
        out.compensation_error.CopyFrom(error_to_proto(step.compensation_error))
    return out


def result_to_proto(result: ExecutionResult) -> pb.ExecutionResult:
    """Return an execution's outcome as ``maestro.v1.ExecutionResult``."""
    out = pb.ExecutionResult(
        execution_id=result.execution_id,
        workflow=result.workflow,
        status=status_to_proto(result.status),
        steps=[step_result_to_proto(step) for step in result.steps.values()],
        start_time=timestamp(result.started_at),
        duration=duration(result.duration),
    )
    fill_value(out.output, result.output)
    if result.error is not None:
        out.error.CopyFrom(error_to_proto(result.error))
    return out


def event_to_proto(event: Event) -> pb.ExecutionEvent:
    """Return an engine event as one ``maestro.v1.ExecutionEvent`` message."""
    out = pb.ExecutionEvent(
        execution_id=event.execution_id, sequence=event.sequence, time=timestamp(event.time)
    )
    match event:
        case ExecutionStarted():
            out.started.workflow = event.workflow
            out.started.labels.update(event.labels)
        case StepStarted():
            out.step_started.step_id = event.step_id
            out.step_started.attempt = event.attempt
        case StepRetrying():
            retrying = out.step_retrying
            retrying.step_id = event.step_id
            retrying.attempt = event.attempt
            retrying.error.CopyFrom(error_to_proto(event.error))
            retrying.delay.CopyFrom(duration(event.delay))
        case StepSucceeded():
            succeeded = out.step_succeeded
            succeeded.step_id = event.step_id
            succeeded.attempt = event.attempt
            fill_value(succeeded.output, event.output)
            succeeded.duration.CopyFrom(duration(event.duration))
        case StepFailed():
            out.step_failed.step_id = event.step_id
            out.step_failed.attempt = event.attempt
            out.step_failed.error.CopyFrom(error_to_proto(event.error))
        case StepSkipped():
            out.step_skipped.step_id = event.step_id
            out.step_skipped.reason = event.reason
        case CompensationStarted():
            out.compensation_started.step_id = event.step_id
            out.compensation_started.attempt = event.attempt
        case CompensationSucceeded():
            done = out.compensation_succeeded
            done.step_id = event.step_id
            done.attempt = event.attempt
            done.duration.CopyFrom(duration(event.duration))
        case CompensationFailed():
            out.compensation_failed.step_id = event.step_id
            out.compensation_failed.attempt = event.attempt
            out.compensation_failed.error.CopyFrom(error_to_proto(event.error))
        case ExecutionRecovered():
            out.recovered.reason = event.reason
        case ExecutionFinished():
            out.finished.result.CopyFrom(result_to_proto(event.result))
    return out


_STATE = {s: pb.ExecutionStatus.Value(f"EXECUTION_STATUS_{s.value}") for s in ExecutionState}
STATE_OF_STATUS = {number: state for state, number in _STATE.items()}
"""``maestro.v1.ExecutionStatus`` number → journal state (UNSPECIFIED has none)."""


def execution_to_proto(record: ExecutionRecord) -> pb.Execution:
    """Return a journal record as ``maestro.v1.Execution``."""
    out = pb.Execution(
        execution_id=record.execution_id,
        workflow=record.workflow,
        status=_STATE[record.state],
        labels=dict(record.labels),
        start_time=timestamp(record.started_at),
        last_sequence=record.last_sequence,
        triggered_by=record.triggered_by,
    )
    if isinstance(record.input, Mapping):
        fill_value_struct(out.input, record.input)
    if record.ended_at is not None:
        out.end_time.CopyFrom(timestamp(record.ended_at))
    if record.result is not None:
        out.result.CopyFrom(result_to_proto(result_from_data(record.result)))
    return out


def signal_to_proto(signal: SignalRecord) -> pb.Signal:
    """Return a journaled signal with its lineage as ``maestro.v1.Signal``."""
    out = pb.Signal(
        signal_id=signal.signal_id,
        name=signal.name,
        time=timestamp(signal.time),
        triggered=list(signal.triggered),
        woke=list(signal.woke),
        not_matched=list(signal.not_matched),
    )
    fill_value_struct(out.params, signal.params)
    if signal.producer_execution:
        out.producer.execution_id = signal.producer_execution
        out.producer.step_id = signal.producer_step
    return out


def fill_value_struct(target: struct_pb2.Struct, value: Mapping[str, Any]) -> None:
    """Write the plain mapping ``value`` into the ``google.protobuf.Struct`` ``target``."""
    for key, item in value.items():
        fill_value(target.fields[str(key)], item)


def rfc3339(value: datetime.datetime) -> str:
    """``value`` as RFC 3339 in UTC with a ``Z`` suffix (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
