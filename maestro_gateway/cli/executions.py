"""``maestro executions list|show|watch|cancel``: the executions of a running gateway (DESIGN §10).

Each sub-command calls ``maestro.v1.Gateway`` at ``--target`` (default ``$MAESTRO_TARGET``, else
``127.0.0.1:50050``) over a plaintext channel (TLS is not supported here); ``--json`` prints the
messages as proto3 JSON with the proto field names instead of text.

- ``list``: the executions, newest first, as a table (``--workflow``, ``--status``, ``--limit``).
- ``show ID``: the execution, its result and the timeline of its events so far.
- ``watch ID``: the events as they happen, in the lines ``maestro execute`` prints on stderr,
  then the result as JSON on stdout; Ctrl-C stops watching and leaves the execution running.
- ``cancel ID``: cancels a running execution (it compensates) and prints it.

Exit status: as ``maestro execute`` for ``show`` and ``watch`` of a finished execution (0
SUCCEEDED, 1 FAILED or COMPENSATED, 3 COMPENSATION_FAILED), 0 for ``show`` of a running one and
for ``list`` and ``cancel``; 1 when the RPC fails (an unknown id, a refused cancel, an unreachable
gateway: ``maestro executions: CODE: message`` on stderr); 2 on a usage error; 130 when ``watch``
is interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

import grpc
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.cli.argtypes import positive
from maestro_gateway.cli.execute import EXIT_CODES, INTERRUPTED, Progress, _print_result
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
from maestro_gateway.model.durations import DurationError, parse_duration
from maestro_gateway.server.convert import from_struct, from_value

DEFAULT_TARGET = "127.0.0.1:50050"
DEFAULT_TIMEOUT = 10.0
DEFAULT_LIMIT = 50
MAX_PAGE_SIZE = 1000
RPC_FAILED = 1

STATUSES: dict[str, int] = {
    name.removeprefix("EXECUTION_STATUS_").lower(): number
    for name, number in pb.ExecutionStatus.items()
    if number != pb.EXECUTION_STATUS_UNSPECIFIED
}
"""``--status`` names (``running``, ``compensated`` …) → ``maestro.v1.ExecutionStatus`` numbers."""

_SHOW_EXIT = {
    pb.EXECUTION_STATUS_SUCCEEDED: EXIT_CODES[ExecutionStatus.SUCCEEDED],
    pb.EXECUTION_STATUS_FAILED: EXIT_CODES[ExecutionStatus.FAILED],
    pb.EXECUTION_STATUS_COMPENSATED: EXIT_CODES[ExecutionStatus.COMPENSATED],
    pb.EXECUTION_STATUS_COMPENSATION_FAILED: EXIT_CODES[ExecutionStatus.COMPENSATION_FAILED],
}


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive duration")
    return seconds


def _page_size(text: str) -> int:
    value = positive(text)
    if value > MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"{value} is above the maximum page size {MAX_PAGE_SIZE}")
    return value


def _sequence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a sequence number (0 or more)")
    return value


def parse_status(text: str) -> int:
    """Return the ``ExecutionStatus`` number named ``text`` (case-insensitive).

    Raises:
        argparse.ArgumentTypeError: for an unknown name; the message lists the valid ones.
    """
    number = STATUSES.get(text.strip().lower())
    if number is None:
        raise argparse.ArgumentTypeError(
            f"unknown status '{text}' (choose from {', '.join(STATUSES)})"
        )
    return number


def add_target_options() -> list[argparse.ArgumentParser]:
    """Parent parsers of ``--target`` and ``--timeout`` (shared with ``maestro signals``)."""
    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "--target",
        default=os.environ.get("MAESTRO_TARGET") or DEFAULT_TARGET,
        metavar="HOST:PORT",
        help=f"the gateway, over a plaintext channel: TLS is not supported (default "
        f"$MAESTRO_TARGET, else {DEFAULT_TARGET})",
    )
    timeout = argparse.ArgumentParser(add_help=False)
    timeout.add_argument(
        "--timeout",
        default=DEFAULT_TIMEOUT,
        type=_duration,
        metavar="DURATION",
        help="deadline of each RPC (default 10s)",
    )
    return [target, timeout]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the sub-commands ``list``, ``show``, ``watch`` and ``cancel`` and their options."""
    target, timeout = add_target_options()
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = sub.add_parser(
        "list",
        parents=[target, timeout],
        help="list executions, newest first",
        description="List executions, newest first: those of --workflow AND any --status.",
    )
    listing.add_argument("--workflow", default="", metavar="W", help="only this workflow's")
    listing.add_argument(
        "--status",
        dest="statuses",
        action="append",
        default=[],
        type=parse_status,
        metavar="S",
        help=f"only executions with this status (repeatable; one of {', '.join(STATUSES)}, "
        "any case)",
    )
    listing.add_argument(
        "--limit",
        default=DEFAULT_LIMIT,
        type=positive,
        metavar="N",
        help=f"at most N executions, following pages as needed (default {DEFAULT_LIMIT})",
    )
    listing.add_argument(
        "--page-size",
        type=_page_size,
        metavar="N",
        help=f"executions per request (default: --limit, at most {MAX_PAGE_SIZE})",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list of Execution")

    show = sub.add_parser(
        "show",
        parents=[target, timeout],
        help="show an execution, its result and its events",
        description="Show an execution, its result and the timeline of its events so far. "
        "Exits as 'maestro execute' would for a finished execution, 0 while it runs.",
    )
    show.add_argument("execution_id", metavar="ID", help="the execution id")
    show.add_argument(
        "--json",
        action="store_true",
        help='print {"execution": Execution, "events": [ExecutionEvent, ...]}',
    )

    watch = sub.add_parser(
        "watch",
        parents=[target],
        help="follow an execution's events live",
        description="Follow an execution's events live (the lines 'maestro execute' prints, "
        "on stderr), then print its result as JSON on stdout. Unbounded: Ctrl-C stops "
        "watching and leaves the execution running.",
    )
    watch.add_argument("execution_id", metavar="ID", help="the execution id")
    watch.add_argument(
        "--after",
        default=0,
        type=_sequence,
        metavar="N",
        help="only events with a sequence above N (default 0: from the first)",
    )
    watch.add_argument(
        "--json",
        action="store_true",
        help="print each ExecutionEvent as one line of JSON on stdout instead",
    )

    cancel = sub.add_parser(
        "cancel",
        parents=[target, timeout],
        help="cancel a running execution (it compensates)",
        description="Cancel a running execution as a caller cancel would: calls in flight are "
        "cancelled and compensations run. Refused (FAILED_PRECONDITION) once it has finished.",
    )
    cancel.add_argument("execution_id", metavar="ID", help="the execution id")
    cancel.add_argument("--reason", default="", metavar="R", help="why; part of the error message")
    cancel.add_argument("--json", action="store_true", help="print the Execution as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command against ``args.target``; return the exit status."""
    actions = {"list": _list, "show": _show, "watch": _watch, "cancel": _cancel}
    with grpc.insecure_channel(args.target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            return actions[args.action](stub, args)
        except grpc.RpcError as exc:
            print(rpc_failure(exc), file=sys.stderr)
            return RPC_FAILED


def rpc_failure(exc: grpc.RpcError, command: str = "executions") -> str:
    """``maestro COMMAND: CODE: details`` for a failed RPC."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"maestro {command}: {code.name}: {details}"


def _list(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    page_size = args.page_size or min(args.limit, MAX_PAGE_SIZE)
    found: list[pb.Execution] = []
    token = ""
    while len(found) < args.limit:
        request = pb.ListExecutionsRequest(
            workflow=args.workflow,
            statuses=args.statuses,
            page_size=min(page_size, args.limit - len(found)),
            page_token=token,
        )
        page = stub.ListExecutions(request, timeout=args.timeout)
        found.extend(page.executions)
        token = page.next_page_token
        if not token:
            break
    found = found[: args.limit]
    if args.json:
        _print_json([_to_json(execution) for execution in found])
    else:
        sys.stdout.write(table(found))
    return 0


def _show(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    execution = stub.GetExecution(
        pb.GetExecutionRequest(execution_id=args.execution_id), timeout=args.timeout
    )
    events = list(_events_so_far(stub, execution, args.timeout))
    if args.json:
        _print_json({"execution": _to_json(execution), "events": [_to_json(e) for e in events]})
    else:
        lines = describe(execution)
        lines += ["", "events:"] if events else ["", "events: none yet"]
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        progress = Progress(sys.stdout, _colour(sys.stdout))
        for event in events:
            progress(event_from_proto(event))
    return _SHOW_EXIT.get(execution.status, 0)


def _events_so_far(
    stub: gateway_pb2_grpc.GatewayStub, execution: pb.Execution, timeout: float
) -> Iterator[pb.ExecutionEvent]:
    """The events up to ``execution.last_sequence``, then stop (the watch of a live one would not)."""
    if execution.last_sequence == 0:
        return
    call = stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=execution.execution_id), timeout=timeout
    )
    try:
        for event in call:
            yield event
            if event.sequence >= execution.last_sequence:
                break
    finally:
        call.cancel()


def _watch(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    call = stub.WatchExecution(
        pb.WatchExecutionRequest(execution_id=args.execution_id, after_sequence=args.after)
    )
    progress = Progress(sys.stderr, _colour(sys.stderr))
    result: ExecutionResult | None = None
    seen = args.after
    try:
        for message in call:
            seen = message.sequence
            if args.json:
                sys.stdout.write(json.dumps(_to_json(message), separators=(",", ":")) + "\n")
                sys.stdout.flush()
            else:
                progress(event_from_proto(message))
            if message.HasField("finished"):
                result = result_from_proto(message.finished.result)
    except KeyboardInterrupt:
        call.cancel()
        print(
            f"maestro executions: stopped watching at sequence {seen} (resume with --after "
            f"{seen}); execution {args.execution_id} continues",
            file=sys.stderr,
        )
        return INTERRUPTED
    except grpc.RpcError as exc:
        print(rpc_failure(exc), file=sys.stderr)
        if seen > args.after:
            print(f"maestro executions: resume with --after {seen}", file=sys.stderr)
        return RPC_FAILED
    if result is None:
        # The stream ends after `finished`; without one, --after skipped it: ask for the result.
        execution = stub.GetExecution(
            pb.GetExecutionRequest(execution_id=args.execution_id), timeout=DEFAULT_TIMEOUT
        )
        if not execution.HasField("result"):
            print(
                f"maestro executions: UNAVAILABLE: the watch of {args.execution_id} ended "
                "before the execution finished",
                file=sys.stderr,
            )
            return RPC_FAILED
        result = result_from_proto(execution.result)
    if not args.json:
        _print_result(result)
    return EXIT_CODES[result.status]


def _cancel(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    execution = stub.CancelExecution(
        pb.CancelExecutionRequest(execution_id=args.execution_id, reason=args.reason),
        timeout=args.timeout,
    )
    if args.json:
        _print_json(_to_json(execution))
    else:
        sys.stdout.write("".join(f"{line}\n" for line in describe(execution)))
    return 0


def _colour(stream: TextIO) -> bool:
    return bool(stream.isatty()) and not os.environ.get("NO_COLOR")


def _to_json(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def status_name(number: int) -> str:
    """``SUCCEEDED``, ``RUNNING`` …: an ``ExecutionStatus`` number without its prefix."""
    name: str = pb.ExecutionStatus.Name(number)
    return name.removeprefix("EXECUTION_STATUS_")


def iso_time(stamp: timestamp_pb2.Timestamp) -> str:
    """A Timestamp as ISO-8601 UTC with milliseconds: ``2025-05-01T12:00:00.250Z``."""
    moment = datetime.fromtimestamp(seconds(stamp), UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def table(executions: list[pb.Execution]) -> str:
    """The executions as an aligned text table (id, workflow, status, started, duration)."""
    rows = [("ID", "WORKFLOW", "STATUS", "STARTED", "DURATION")]
    for execution in executions:
        took = (
            f"{seconds(execution.end_time) - seconds(execution.start_time):.3f}s"
            if execution.HasField("end_time")
            else "running"
        )
        rows.append(
            (
                execution.execution_id,
                execution.workflow,
                status_name(execution.status),
                iso_time(execution.start_time),
                took,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        + "\n"
        for row in rows
    )


def describe(execution: pb.Execution) -> list[str]:
    """An execution as text lines: status, times, input, result's error and output, steps."""
    lines = [
        f"execution  {execution.execution_id}",
        f"workflow   {execution.workflow}",
        f"status     {status_name(execution.status)}",
        f"started    {iso_time(execution.start_time)}",
    ]
    if execution.HasField("end_time"):
        took = seconds(execution.end_time) - seconds(execution.start_time)
        lines.append(f"ended      {iso_time(execution.end_time)} (after {took:.3f}s)")
    if execution.triggered_by:
        lines.append(f"signal     {execution.triggered_by}")
    if execution.labels:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(execution.labels.items()))
        lines.append(f"labels     {labels}")
    lines.append(f"input      {_compact(from_struct(execution.input))}")
    if not execution.HasField("result"):
        return lines
    result = result_from_proto(execution.result)
    if result.error is not None:
        lines.append(f"error      {_error_text(result.error)}")
    if result.status is ExecutionStatus.SUCCEEDED:
        lines.append(f"output     {_compact(result.output)}")
    if result.steps:
        lines += ["", "steps:"]
        width = max(len(step_id) for step_id in result.steps)
        for step in result.steps.values():
            lines.append(f"  {step.step_id:<{width}}  {_step_text(step)}")
    return lines


def _step_text(step: StepResult) -> str:
    attempts = f"{step.attempts} attempt{'' if step.attempts == 1 else 's'}"
    text = f"{step.status.value:<19} {attempts}, {step.duration:.3f}s"
    if step.error is not None:
        text += f"; {_error_text(step.error)}"
    if step.compensation_error is not None:
        text += f"; compensation: {_error_text(step.compensation_error)}"
    if step.status in (StepStatus.SUCCEEDED, StepStatus.COMPENSATED) and step.output is not None:
        text += f"; output {_compact(step.output)}"
    return text


def _error_text(error: ErrorInfo) -> str:
    where = f"step '{error.step_id}' " if error.step_id else ""
    return f"{where}{error.code.name}: {error.message}"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)


# --- maestro.v1 messages → the engine's values and events ------------------------------------


def seconds(value: timestamp_pb2.Timestamp | duration_pb2.Duration) -> float:
    """A Timestamp (seconds since the epoch) or a Duration, as float seconds."""
    return float(value.seconds) + float(value.nanos) / 1e9


def error_from_proto(error: pb.Error) -> ErrorInfo:
    """A ``maestro.v1.Error`` as an engine ``ErrorInfo`` (an unknown code name is UNKNOWN)."""
    try:
        code = Code.from_name(error.code)
    except KeyError:
        code = Code.UNKNOWN
    return ErrorInfo(step_id=error.step_id, code=code, message=error.message)


def _optional_error(message: Any, field: str) -> ErrorInfo | None:
    return error_from_proto(getattr(message, field)) if message.HasField(field) else None


def result_from_proto(result: pb.ExecutionResult) -> ExecutionResult:
    """A ``maestro.v1.ExecutionResult`` as the engine's ``ExecutionResult``.

    Raises:
        ValueError: the status is not a final one (RUNNING, COMPENSATING or unset).
    """
    name = status_name(result.status)
    if name not in ExecutionStatus.__members__:
        raise ValueError(f"a result with the status {name} is not final")
    steps = {
        step.step_id: StepResult(
            step_id=step.step_id,
            status=StepStatus[pb.StepStatus.Name(step.status).removeprefix("STEP_STATUS_")],
            attempts=step.attempts,
            output=from_value(step.output),
            error=_optional_error(step, "error"),
            duration=seconds(step.duration),
            compensation_error=_optional_error(step, "compensation_error"),
        )
        for step in result.steps
    }
    return ExecutionResult(
        execution_id=result.execution_id,
        workflow=result.workflow,
        status=ExecutionStatus[name],
        output=from_value(result.output),
        error=_optional_error(result, "error"),
        steps=steps,
        started_at=seconds(result.start_time),
        duration=seconds(result.duration),
    )


def event_from_proto(message: pb.ExecutionEvent) -> Event:
    """A ``maestro.v1.ExecutionEvent`` as the engine's event dataclass.

    Raises:
        ValueError: the message has no event set (or one this client does not know).
    """
    head = (message.execution_id, message.sequence, seconds(message.time))
    match message.WhichOneof("event"):
        case "started":
            started = message.started
            return ExecutionStarted(*head, workflow=started.workflow, labels=dict(started.labels))
        case "step_started":
            e = message.step_started
            return StepStarted(*head, step_id=e.step_id, attempt=e.attempt)
        case "step_retrying":
            r = message.step_retrying
            return StepRetrying(
                *head,
                step_id=r.step_id,
                attempt=r.attempt,
                error=error_from_proto(r.error),
                delay=seconds(r.delay),
            )
        case "step_succeeded":
            s = message.step_succeeded
            return StepSucceeded(
                *head,
                step_id=s.step_id,
                attempt=s.attempt,
                output=from_value(s.output),
                duration=seconds(s.duration),
            )
        case "step_failed":
            f = message.step_failed
            return StepFailed(
                *head, step_id=f.step_id, attempt=f.attempt, error=error_from_proto(f.error)
            )
        case "step_skipped":
            return StepSkipped(
                *head, step_id=message.step_skipped.step_id, reason=message.step_skipped.reason
            )
        case "compensation_started":
            c = message.compensation_started
            return CompensationStarted(*head, step_id=c.step_id, attempt=c.attempt)
        case "compensation_succeeded":
            d = message.compensation_succeeded
            return CompensationSucceeded(
                *head, step_id=d.step_id, attempt=d.attempt, duration=seconds(d.duration)
            )
        case "compensation_failed":
            x = message.compensation_failed
            return CompensationFailed(
                *head, step_id=x.step_id, attempt=x.attempt, error=error_from_proto(x.error)
            )
        case "recovered":
            return ExecutionRecovered(*head, reason=message.recovered.reason)
        case "finished":
            return ExecutionFinished(*head, result=result_from_proto(message.finished.result))
    raise ValueError(f"event {message.sequence} of {message.execution_id} has no known kind")
