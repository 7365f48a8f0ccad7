"""The execution engine: runs workflows, emits events, returns results (DESIGN §4)."""

from maestro_gateway.engine.events import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    ErrorInfo,
    Event,
    EventSink,
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
from maestro_gateway.engine.executor import Engine
from maestro_gateway.engine.serialize import result_to_json
from maestro_gateway.engine.tracing import ExecutionTrace

__all__ = [
    "CompensationFailed",
    "CompensationStarted",
    "CompensationSucceeded",
    "Engine",
    "ErrorInfo",
    "Event",
    "EventSink",
    "ExecutionFinished",
    "ExecutionRecovered",
    "ExecutionResult",
    "ExecutionStarted",
    "ExecutionStatus",
    "ExecutionTrace",
    "StepFailed",
    "StepResult",
    "StepRetrying",
    "StepSkipped",
    "StepStarted",
    "StepStatus",
    "StepSucceeded",
    "result_to_json",
]
