"""What an execution reports: progress events and the final result.

The engine emits these in order through a callback; the gateway service maps them one to one onto
``maestro.v1.ExecutionEvent`` and the CLI prints them. ``time`` is wall-clock seconds since the
epoch; durations and delays are seconds.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.redaction import redact


class ExecutionStatus(enum.Enum):
    """Final status of an execution (DESIGN §4)."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


class StepStatus(enum.Enum):
    """State of one step in a result (``steps.<id>.status`` in expressions uses these names)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """A failure as reported everywhere: the step, the gRPC code and a message.

    Every failure the gateway reports passes through this type, so the message is redacted here,
    once: each environment value a workflow read (``env.NAME``) becomes ``***``
    (``maestro_gateway.redaction``), whatever quoted it (a rendered URL, an error body, CEL).
    """

    step_id: str
    code: Code
    message: str

    def __post_init__(self) -> None:
        redacted = redact(self.message)
        if redacted is not self.message:
            object.__setattr__(self, "message", redacted)

    def as_value(self) -> dict[str, Any]:
        """The form seen by expressions and JSON output (``code`` as its name)."""
        return {"step_id": self.step_id, "code": self.code.name, "message": self.message}


@dataclass(frozen=True, slots=True)
class StepResult:
    """The outcome of one step (and of its compensation, if it ran)."""

    step_id: str
    status: StepStatus
    attempts: int = 0
    output: Any = None
    error: ErrorInfo | None = None
    duration: float = 0.0
    compensation_error: ErrorInfo | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of an execution."""

    execution_id: str
    workflow: str
    status: ExecutionStatus
    output: Any = None
    error: ErrorInfo | None = None
    steps: Mapping[str, StepResult] = field(default_factory=dict)
    started_at: float = 0.0
    duration: float = 0.0


@dataclass(frozen=True, slots=True)
class ExecutionStarted:
    execution_id: str
    sequence: int
    time: float
    workflow: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StepStarted:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class StepRetrying:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int
    error: ErrorInfo
    delay: float


@dataclass(frozen=True, slots=True)
class StepSucceeded:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int
    output: Any
    duration: float


@dataclass(frozen=True, slots=True)
class StepFailed:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int
    error: ErrorInfo
    status: StepStatus = StepStatus.FAILED
    """FAILED, or CANCELLED for a step interrupted by a failed sibling or a caller cancel."""


@dataclass(frozen=True, slots=True)
class StepSkipped:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CompensationStarted:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CompensationSucceeded:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int
    duration: float


@dataclass(frozen=True, slots=True)
class CompensationFailed:
    execution_id: str
    sequence: int
    time: float
    step_id: str
    attempt: int
    error: ErrorInfo


@dataclass(frozen=True, slots=True)
class ExecutionRecovered:
    """The execution was resumed from the journal; ``reason`` says why and where."""

    execution_id: str
    sequence: int
    time: float
    reason: str


@dataclass(frozen=True, slots=True)
class ExecutionFinished:
    execution_id: str
    sequence: int
    time: float
    result: ExecutionResult


Event = (
    ExecutionStarted
    | StepStarted
    | StepRetrying
    | StepSucceeded
    | StepFailed
    | StepSkipped
    | CompensationStarted
    | CompensationSucceeded
    | CompensationFailed
    | ExecutionRecovered
    | ExecutionFinished
)

EventSink = Callable[[Event], None]
"""Receives events synchronously, in order; must not block (queue them if needed)."""
