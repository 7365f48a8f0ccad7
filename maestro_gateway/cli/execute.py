"""``maestro execute FILE --input JSON | --input-file PATH [--timeout DURATION] [--journal URL]
[--workflows DIR]``.

Runs one execution in-process, without a server. Progress goes to stderr as the events arrive
(one plain line per event, coloured when stderr is a terminal and ``NO_COLOR`` is unset); the full
result goes to stdout as JSON, also when the execution fails.

Exit status: 0 SUCCEEDED; 1 FAILED or COMPENSATED; 3 COMPENSATION_FAILED; 2 usage or definition
error (an unreadable or invalid file, input that is not JSON or fails the workflow's schema, a bad
``--timeout``, a journal that cannot be used); 130 when interrupted (Ctrl-C cancels the
execution, which compensates, prints its result, then exits; a second Ctrl-C stops at once).

Sub-workflows (``workflow:`` steps) resolve among the workflow files of FILE's directory, or of
``--workflows DIR`` (``maestro_gateway.model.bundle``); an unknown, cyclic or invalid one is a
definition error (status 2) listing its problems.

A workflow using an environment variable that is not set does not run (``file:line:col:
environment variable NAME is not set``, status 2). Error messages in the progress lines and the
result show each value read from the environment as ``***``, and so do the warnings any library
logs on stderr; step outputs are printed as the services sent them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import Any, TextIO

from maestro_gateway.cli import USAGE_ERROR
from maestro_gateway.engine import (
    CompensationFailed,
    CompensationStarted,
    CompensationSucceeded,
    Engine,
    ErrorInfo,
    Event,
    ExecutionFinished,
    ExecutionResult,
    ExecutionStarted,
    ExecutionStatus,
    StepFailed,
    StepRetrying,
    StepSkipped,
    StepStarted,
    StepSucceeded,
    result_to_json,
)
from maestro_gateway.engine.events import ExecutionRecovered
from maestro_gateway.errors import DefinitionError, ExecutionError
from maestro_gateway.journal import Journal, JournalError, open_journal
from maestro_gateway.model.bundle import load_linked
from maestro_gateway.model.durations import DurationError, parse_duration
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.types import Workflow
from maestro_gateway.redaction import RedactingFormatter

INTERRUPTED = 130
EXIT_CODES = {
    ExecutionStatus.SUCCEEDED: 0,
    ExecutionStatus.FAILED: 1,
    ExecutionStatus.COMPENSATED: 1,
    ExecutionStatus.COMPENSATION_FAILED: 3,
}

_COLOURS = {"ok": "32", "fail": "31", "warn": "33", "info": "36", "dim": "2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``FILE``, ``--input``/``--input-file`` and ``--timeout``."""
    parser.add_argument("file", metavar="FILE", help="workflow file to run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", metavar="JSON", help="the execution input as JSON text")
    source.add_argument(
        "--input-file", metavar="PATH", help="read the input JSON from PATH ('-' for stdin)"
    )
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        help="a deadline for the whole execution, e.g. 10s (the workflow's own also applies)",
    )
    parser.add_argument(
        "--journal",
        metavar="URL",
        help="record the execution in this journal (a file path or sqlite:PATH), as maestro "
        "serve does; a gateway on the same journal resumes it if this command is killed "
        "(default: no journal)",
    )
    parser.add_argument(
        "--journal-sync", default="normal", choices=["normal", "full"], help="as for serve"
    )
    parser.add_argument(
        "--workflows",
        metavar="DIR",
        help="resolve sub-workflow names among the files of DIR (default: FILE's directory)",
    )


class Progress:
    """Prints one line per event on ``stream``: ``[  0.012s] reserve        started (attempt 1)``.

    Args:
        stream: where lines go.
        colour: wrap the verb of each line in ANSI colours.
    """

    def __init__(self, stream: TextIO, colour: bool) -> None:
        self._stream = stream
        self._colour = colour
        self._start: float | None = None
        self.result: ExecutionResult | None = None
        """The result, once ``ExecutionFinished`` has been seen (kept for an interrupted run)."""

    def __call__(self, event: Event) -> None:
        """Print ``event``."""
        if self._start is None:
            self._start = event.time
        what = self._describe(event)
        self._stream.write(f"[{event.time - self._start:8.3f}s] {what}\n")
        self._stream.flush()

    def _paint(self, kind: str, text: str) -> str:
        return f"\x1b[{_COLOURS[kind]}m{text}\x1b[0m" if self._colour else text

    def _describe(self, event: Event) -> str:
        step = f"{getattr(event, 'step_id', ''):<14} "
        match event:
            case ExecutionStarted():
                return f"{event.workflow} {self._paint('info', 'started')} ({event.execution_id})"
            case StepStarted():
                return f"{step}{self._paint('info', 'started')} (attempt {event.attempt})"
            case StepRetrying():
                return (
                    f"{step}{self._paint('warn', 'retrying')} in {event.delay:.3f}s after attempt "
                    f"{event.attempt}: {_error(event.error)}"
                )
            case StepSucceeded():
                return f"{step}{self._paint('ok', 'succeeded')} in {event.duration:.3f}s (attempt {event.attempt})"
            case StepFailed():
                return f"{step}{self._paint('fail', 'failed')} (attempt {event.attempt}): {_error(event.error)}"
            case StepSkipped():
                return f"{step}{self._paint('dim', 'skipped')}: {event.reason}"
            case CompensationStarted():
                return f"{step}{self._paint('warn', 'compensating')} (attempt {event.attempt})"
            case CompensationSucceeded():
                return f"{step}{self._paint('ok', 'compensated')} in {event.duration:.3f}s"
            case CompensationFailed():
                return f"{step}{self._paint('fail', 'compensation failed')}: {_error(event.error)}"
            case ExecutionRecovered():
                return f"{self._paint('warn', 'recovered')} ({event.execution_id}): {event.reason}"
            case ExecutionFinished():
                self.result = event.result
                status = event.result.status
                kind = "ok" if status is ExecutionStatus.SUCCEEDED else "fail"
                cause = f": {_error(event.result.error)}" if event.result.error else ""
                return f"{event.result.workflow} {self._paint(kind, status.value)} in {event.result.duration:.3f}s{cause}"
        return type(event).__name__  # pragma: no cover - every event kind is matched above


def _error(error: ErrorInfo) -> str:
    where = f"step '{error.step_id}' " if error.step_id else ""
    return f"{where}{error.code.name}: {error.message}"


def _read_input(args: argparse.Namespace) -> Any:
    """The input value; raises ValueError (JSON) or OSError (file) with a readable message."""
    if args.input is not None:
        return json.loads(args.input)
    if args.input_file == "-":
        return json.load(sys.stdin)
    with open(args.input_file, encoding="utf-8") as handle:
        return json.load(handle)


async def _execute(
    workflow: Workflow,
    value: Any,
    seconds: float | None,
    progress: Progress,
    journal: Journal | None,
) -> ExecutionResult:
    from maestro_gateway.transports.factory import Transports

    if journal is not None:
        await journal.open()
    try:
        async with Transports() as transports:
            engine = Engine(transports, journal=journal)
            engine.prepare(workflow)
            return await engine.execute(workflow, value, timeout=seconds, on_event=progress)
    finally:
        if journal is not None:
            await journal.close()


def _print_result(result: ExecutionResult) -> None:
    json.dump(result_to_json(result), sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    """Run the workflow of ``args.file``; return the exit status."""
    if args.workflows is not None and not os.path.isdir(args.workflows):
        print(f"maestro execute: --workflows: not a directory: {args.workflows}", file=sys.stderr)
        return USAGE_ERROR
    try:
        workflow = load_linked(args.file, directory=args.workflows)
    except DefinitionError as exc:
        for problem in exc.diagnostics:
            print(problem, file=sys.stderr)
        return USAGE_ERROR
    try:
        value = _read_input(args)
    except (OSError, ValueError) as exc:
        source = "--input" if args.input is not None else args.input_file
        print(f"maestro execute: cannot read the input from {source}: {exc}", file=sys.stderr)
        return USAGE_ERROR
    timeout: float | None = None
    if args.timeout is not None:
        try:
            timeout = parse_duration(args.timeout)
        except DurationError as exc:
            print(f"maestro execute: --timeout: {exc}", file=sys.stderr)
            return USAGE_ERROR
    try:
        check_input(workflow, value)
    except ExecutionError as exc:
        print(f"maestro execute: invalid input: {exc.message}", file=sys.stderr)
        return USAGE_ERROR
    journal: Journal | None = None
    if args.journal is not None:
        try:
            journal = open_journal(args.journal, sync=args.journal_sync)
        except JournalError as exc:
            print(f"maestro execute: --journal: {exc}", file=sys.stderr)
            return USAGE_ERROR
        if journal.replicas is not None:
            # This command keeps no lease: a replica would claim the execution while it runs.
            print(
                "maestro execute: --journal: a journal shared by replicas (PostgreSQL) takes"
                " executions from the gateways only: start it on one with Start",
                file=sys.stderr,
            )
            return USAGE_ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])  # a no-op when configured
    colour = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
    progress = Progress(sys.stderr, colour)
    try:
        result = asyncio.run(_execute(workflow, value, timeout, progress, journal))
    except JournalError as exc:
        print(f"maestro execute: --journal: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        if progress.result is not None:
            _print_result(progress.result)
        return INTERRUPTED
    _print_result(result)
    return EXIT_CODES[result.status]
