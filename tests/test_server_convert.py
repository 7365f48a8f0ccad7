"""Engine values, events and results mapped onto the maestro.v1 messages (hand-built events)."""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2
from maestro.v1 import gateway_pb2 as pb

from maestro_gateway.codes import Code
from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    ExecutionFinished,
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
from maestro_gateway.server.convert import event_to_proto, from_struct, result_to_proto, to_value

ERR = ErrorInfo("charge", Code.UNAVAILABLE, "down")
T = 1_700_000_000.25


def test_integers_beyond_2_53_become_decimal_strings() -> None:
    """Ints within ±2^53 stay numbers; beyond, they are exact decimal strings, never rounded."""
    value = to_value({"ok": 2**53, "neg": -(2**53), "big": 2**53 + 1, "small": -(2**63)})
    assert json_format.MessageToDict(value) == {
        "ok": 9007199254740992.0,
        "neg": -9007199254740992.0,
        "big": "9007199254740993",
        "small": "-9223372036854775808",
    }


def test_plain_values_round_trip_through_value() -> None:
    """Nested dicts, lists, bools, null, floats and empty containers survive the conversion."""
    plain = {"a": [1, 2.5, None, True, "x"], "b": {}, "c": [], "d": {"e": {"f": False}}}
    struct = struct_pb2.Struct()
    struct.update(json_format.MessageToDict(to_value(plain)))
    assert from_struct(struct) == plain
    assert isinstance(from_struct(struct)["a"][0], int)
    assert to_value(b"\x00\xff").string_value == "AP8="


def test_integral_doubles_in_input_become_ints() -> None:
    """An integral double in a Struct is an int in the engine's input; 2.5 stays a float."""
    struct = struct_pb2.Struct()
    struct.update({"qty": 2.0, "price": 2.5, "huge": 1e300})
    value = from_struct(struct)
    assert value == {"qty": 2, "price": 2.5, "huge": 1e300}
    assert isinstance(value["qty"], int)
    assert isinstance(value["huge"], float)


def test_every_event_kind_maps_to_its_oneof_field() -> None:
    """Each engine event becomes the matching oneof with step_id, attempt, error, delay, output."""
    events = [
        ExecutionStarted("e1", 1, T, "wf", {"team": "shop"}),
        StepStarted("e1", 2, T, "charge", 1),
        StepRetrying("e1", 3, T, "charge", 1, ERR, 0.25),
        StepSucceeded("e1", 4, T, "charge", 2, {"n": 1}, 1.5),
        StepFailed("e1", 5, T, "ship", 3, ERR),
        StepSkipped("e1", 6, T, "mail", "when was false"),
        CompensationStarted("e1", 7, T, "charge", 1),
        CompensationSucceeded("e1", 8, T, "charge", 1, 0.5),
        CompensationFailed("e1", 9, T, "reserve", 2, ERR),
    ]
    out = [event_to_proto(e) for e in events]
    assert [m.WhichOneof("event") for m in out] == [
        "started",
        "step_started",
        "step_retrying",
        "step_succeeded",
        "step_failed",
        "step_skipped",
        "compensation_started",
        "compensation_succeeded",
        "compensation_failed",
    ]
    assert [m.sequence for m in out] == list(range(1, 10))
    assert all(m.execution_id == "e1" for m in out)
    assert out[0].time.seconds == 1_700_000_000
    assert out[0].time.nanos == 250_000_000
    assert out[0].started == pb.ExecutionStarted(workflow="wf", labels={"team": "shop"})
    error = pb.Error(step_id="charge", code="UNAVAILABLE", message="down")
    assert out[1].step_started == pb.StepStarted(step_id="charge", attempt=1)
    retrying = out[2].step_retrying
    assert (retrying.attempt, retrying.error, retrying.delay.nanos) == (1, error, 250_000_000)
    succeeded = out[3].step_succeeded
    assert json_format.MessageToDict(succeeded.output) == {"n": 1.0}
    assert (succeeded.attempt, succeeded.duration.seconds, succeeded.duration.nanos) == (
        2,
        1,
        500_000_000,
    )
    assert out[4].step_failed == pb.StepFailed(step_id="ship", attempt=3, error=error)
    assert out[5].step_skipped == pb.StepSkipped(step_id="mail", reason="when was false")
    assert out[6].compensation_started.step_id == "charge"
    assert out[7].compensation_succeeded.duration.nanos == 500_000_000
    assert out[8].compensation_failed == pb.CompensationFailed(
        step_id="reserve", attempt=2, error=error
    )


def test_result_maps_status_steps_error_and_times() -> None:
    """A result keeps step order, statuses, errors (codes as names), output, start and duration."""
    result = ExecutionResult(
        execution_id="e1",
        workflow="wf",
        status=ExecutionStatus.COMPENSATION_FAILED,
        output=None,
        error=ErrorInfo("ship", Code.DEADLINE_EXCEEDED, "too slow"),
        steps={
            "reserve": StepResult(
                "reserve",
                StepStatus.COMPENSATION_FAILED,
                1,
                {"id": 2**60},
                None,
                0.1,
                ErrorInfo("reserve", Code.INTERNAL, "boom"),
            ),
            "ship": StepResult("ship", StepStatus.FAILED, 3, None, ERR, 2.0),
            "mail": StepResult("mail", StepStatus.PENDING),
        },
        started_at=T,
        duration=3.0,
    )
    message = event_to_proto(ExecutionFinished("e1", 10, T, result)).finished.result
    assert message == result_to_proto(result)
    assert message.status == pb.EXECUTION_STATUS_COMPENSATION_FAILED
    assert message.error == pb.Error(step_id="ship", code="DEADLINE_EXCEEDED", message="too slow")
    assert [(s.step_id, s.status, s.attempts) for s in message.steps] == [
        ("reserve", pb.STEP_STATUS_COMPENSATION_FAILED, 1),
        ("ship", pb.STEP_STATUS_FAILED, 3),
        ("mail", pb.STEP_STATUS_PENDING, 0),
    ]
    assert message.steps[0].compensation_error.code == "INTERNAL"
    assert json_format.MessageToDict(message.steps[0].output) == {"id": "1152921504606846976"}
    assert message.output.WhichOneof("kind") == "null_value"
    assert message.start_time.seconds == 1_700_000_000
    assert message.duration.seconds == 3
