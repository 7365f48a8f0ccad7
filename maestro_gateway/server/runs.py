"""The executions this gateway process runs: their tasks, recovery, cancel and hand-over.

Every execution runs in a task owned here rather than by the RPC that asked for it: when a caller
cancels, its RPC handler cancels the task, but the task keeps running until the engine has
finished compensating; a ``Start`` or a recovered execution has no RPC at all. The same tasks are
what a graceful shutdown waits for (DESIGN §5, §10):

- with a durable journal, what is still running after the grace period is *handed over*: its
  calls in flight are cancelled and it stays unfinished in the journal, for the next start (or
  another replica) to resume;
- with ``--journal none`` it is cancelled and compensated, as a caller cancel would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from typing import Any

from maestro_gateway.engine import Engine, Event, EventSink, ExecutionFinished, ExecutionResult
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.errors import DefinitionError
from maestro_gateway.journal.base import ExecutionRecord, Journal
from maestro_gateway.model.stored import load_stored
from maestro_gateway.model.types import Workflow
from maestro_gateway.server.logfmt import logfmt

log = logging.getLogger("maestro_gateway.server")

DEFAULT_LEASE = 15.0


def owner_id() -> str:
    """This process's name in the journal: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Runs:
    """The execution tasks of one gateway process.

    Args:
        engine: runs executions; its journal is ``journal``.
        journal: the journal the gateway serves from.
        lease: seconds an execution's lease lasts (replicas, DESIGN §11).
    """

    def __init__(self, engine: Engine, journal: Journal, *, lease: float = DEFAULT_LEASE) -> None:
        self.engine = engine
        self.journal = journal
        self.owner = owner_id()
        self.lease = lease
        self._tasks: dict[str, asyncio.Task[ExecutionResult]] = {}
        self.handed_over: set[str] = set()
        """Executions left unfinished for the next start by a shutdown."""

    def __len__(self) -> int:
        return len(self._tasks)

    def task(self, execution_id: str) -> asyncio.Task[ExecutionResult] | None:
        """The task running ``execution_id`` in this process, if any."""
        return self._tasks.get(execution_id)

    def start(
        self, workflow: Workflow, record: ExecutionRecord, on_event: EventSink | None
    ) -> asyncio.Task[ExecutionResult]:
        """Run the execution of ``record`` (already committed) in a task of its own."""
        finished: list[ExecutionResult] = []
        run = self.engine.execute(
            workflow, record.input, record=record, on_event=_keeping(finished, on_event)
        )
        return self._own(record, self._logged(record, run, finished))

    async def recover(self) -> int:
        """Resume every unfinished execution of the journal; return how many were resumed.

        Each resumes with the definition it started with. One whose definition no longer loads
        (a changed loader, say) is logged and left unfinished, never marked done.
        """
        records = await self.journal.claim(self.owner, self.lease)
        resumed = 0
        loaded: dict[tuple[str, str], Workflow] = {}  # many executions share a definition
        for record in records:
            key = (record.source_hash, record.path)
            workflow = loaded.get(key)
            if workflow is None:
                try:
                    workflow = load_stored(record.source, record.path)
                except DefinitionError as exc:
                    log.error(
                        logfmt(
                            "recovery_failed",
                            id=record.execution_id,
                            workflow=record.workflow,
                            problem=str(exc.diagnostics[0]) if exc.diagnostics else "invalid",
                        )
                    )
                    continue
                loaded[key] = workflow
                self.engine.prepare(workflow)
            events = [event_from_entry(e) for e in await self.journal.events(record.execution_id)]
            reason = f"resumed by {self.owner} after the gateway stopped"
            finished: list[ExecutionResult] = []
            run = self.engine.resume(
                workflow, record, events, reason=reason, on_event=_keeping(finished, None)
            )
            self._own(record, self._logged(record, run, finished))
            resumed += 1
            log.info(
                logfmt(
                    "execution_recovered",
                    id=record.execution_id,
                    workflow=record.workflow,
                    after_sequence=record.last_sequence,
                )
            )
        return resumed

    def _own(self, record: ExecutionRecord, run: Any) -> asyncio.Task[ExecutionResult]:
        execution_id = record.execution_id
        task: asyncio.Task[ExecutionResult] = asyncio.get_running_loop().create_task(run)
        self._tasks[execution_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(execution_id, None))
        return task

    async def _logged(
        self, record: ExecutionRecord, run: Any, finished: list[ExecutionResult]
    ) -> ExecutionResult:
        started = time.monotonic()
        try:
            result: ExecutionResult = await run
        except asyncio.CancelledError:
            if finished:  # cancelled by its caller, and compensated
                log_result(finished[0])
                raise
            status = "HANDED_OVER" if record.execution_id in self.handed_over else "CANCELLED"
            log.info(
                logfmt(
                    "execution",
                    id=record.execution_id,
                    workflow=record.workflow,
                    status=status,
                    duration_ms=_ms(time.monotonic() - started),
                )
            )
            raise
        except Exception:
            log.exception(
                logfmt("execution_crashed", id=record.execution_id, workflow=record.workflow)
            )
            raise
        log_result(result)
        return result

    async def cancel(self, execution_id: str, reason: str) -> bool:
        """Cancel ``execution_id`` if this process runs it (it compensates); False otherwise."""
        task = self._tasks.get(execution_id)
        if task is None or task.done():
            return False
        self.engine.note_cancel(execution_id, reason or "cancelled through CancelExecution")
        task.cancel()
        return True

    async def drain(self, grace: float, cancel_budget: float) -> None:
        """Let running executions finish for ``grace`` s, then hand over (or cancel) the rest.

        Args:
            grace: seconds running executions get to finish on their own.
            cancel_budget: with a journal that does not survive the process, seconds to wait
                after cancelling what is left, for their compensations.
        """
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks.values()), timeout=grace)
        if not pending:
            return
        if self.journal.durable:
            log.warning(logfmt("drain_hand_over", executions=len(pending), grace_s=grace))
            self.handed_over.update(i for i, t in self._tasks.items() if t in pending)
            self.engine.hand_over()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5.0)
            return
        log.warning(logfmt("drain_cancel", executions=len(pending), grace_s=grace))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=cancel_budget)


def _keeping(into: list[ExecutionResult], sink: EventSink | None) -> EventSink:
    """``sink`` (if any), keeping the result of ``finished`` in ``into`` on the way."""

    def keep(event: Event) -> None:
        if isinstance(event, ExecutionFinished):
            into.append(event.result)
        if sink is not None:
            sink(event)

    return keep


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def log_result(result: ExecutionResult) -> None:
    """Log one finished execution (codes and ids only; messages at debug level)."""
    log.info(
        logfmt(
            "execution",
            id=result.execution_id,
            workflow=result.workflow,
            status=result.status.value,
            duration_ms=_ms(result.duration),
        )
    )
    error = result.error
    if error is None:
        return
    log.warning(
        logfmt(
            "execution_failed",
            id=result.execution_id,
            workflow=result.workflow,
            status=result.status.value,
            step=error.step_id,
            code=error.code.name,
        )
    )
    # Messages can quote downstream data: only at debug level.
    log.debug(logfmt("execution_error", id=result.execution_id, message=error.message))
    for step in result.steps.values():
        if step.compensation_error is not None:
            log.warning(
                logfmt(
                    "compensation_failed",
                    id=result.execution_id,
                    workflow=result.workflow,
                    step=step.step_id,
                    code=step.compensation_error.code.name,
                )
            )
