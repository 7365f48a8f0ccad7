"""The executions this gateway process runs: their tasks, recovery, leases, cancel and hand-over.

Every execution runs in a task owned here rather than by the RPC that asked for it: when a caller
cancels, its RPC handler cancels the task, but the task keeps running until the engine has
finished compensating; a ``Start`` or a recovered execution has no RPC at all. The same tasks are
what a graceful shutdown waits for (DESIGN §5, §10):

- with a durable journal, what is still running after the grace period is *handed over*: its
  calls in flight are cancelled and it stays unfinished in the journal, for the next start (or
  another replica) to resume;
- with ``--journal none`` it is cancelled and compensated, as a caller cancel would.

On a journal that replicas share (``journal.replicas``: PostgreSQL, DESIGN §11) this process is
one owner among several:

- every execution it runs is leased to it for ``lease`` seconds and renewed every third of that;
  the records it creates are created leased to it (the journal stamps them);
- every third of a lease (at most every second) it claims the executions whose lease expired
  (their replica died or stopped) and resumes them as recovery at start does: at most its free
  capacity (``capacity``, the service's ``max_concurrent``, minus the executions in flight
  here), in batches of at most ``CLAIM_BATCH``, so that the executions of a dead replica spread
  over the survivors (each claims under the row lock, skipping the rows another is claiming)
  and a replica at capacity claims nothing, leaving them to the others;
- an execution it no longer holds (``renew`` says so, or the journal fenced its entries off) is
  handed over on the spot: its task is cancelled without compensating, and nothing more of it
  is journaled, streamed or called. Before each call the engine asks :meth:`Runs._may_send`:
  a lease renewed less than ``lease`` minus a margin ago is certainly still held; an older one
  (the process was paused, or the database is away) waits for the next renewal's answer;
- a cancel asked for on another replica reaches it through the journal (announced, and polled
  at every look for expired leases), and it cancels as a caller cancel would;
- at shutdown, it stops claiming, and releases what it hands over for another replica to claim
  at once.

The in-memory and SQLite journals are held by one process: nothing is renewed or claimed while
serving (recovery at start claims everything), and nothing is guarded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from maestro_gateway.engine import Engine, Event, EventSink, ExecutionFinished, ExecutionResult
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.errors import DefinitionError
from maestro_gateway.journal.base import ExecutionRecord, Journal, JournalError
from maestro_gateway.model.stored import load_stored
from maestro_gateway.model.types import Workflow
from maestro_gateway.server.logfmt import logfmt

if TYPE_CHECKING:
    from maestro_gateway.server.otel import ExecutionSpan, Tracing

log = logging.getLogger("maestro_gateway.server")

DEFAULT_LEASE = 15.0
LEASE_MARGIN = 0.2
"""The part of a lease not counted on: a renewal is trusted for ``lease * (1 - LEASE_MARGIN)``
seconds from when it was asked for (room for clocks that disagree a little)."""
CLAIM_EVERY = 1.0
"""Most seconds between two looks for expired leases (a third of the lease when shorter)."""
CLAIM_BATCH = 32
"""Most executions one claim takes (replicas): a batch is resumed before the next is claimed,
so that replicas looking at the same moment share a dead one's executions out."""
HAND_OVER_WAIT = 5.0
"""Seconds a shutdown waits for handed-over executions to stop."""

Running = Coroutine[Any, Any, ExecutionResult]


def owner_id() -> str:
    """This process's name in the journal: host, pid and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)
class _Run:
    """One execution this process runs, and what it knows of its lease."""

    record: ExecutionRecord
    held_until: float = math.inf
    """Monotonic time until which the lease is certainly held (inf: one process holds the
    journal)."""
    task: asyncio.Task[ExecutionResult] | None = None
    finished: list[ExecutionResult] = field(default_factory=list)
    """The result, once ``finished`` is durable."""
    lost: bool = False
    """Another replica holds it now: stopped here, nothing more reported."""
    cancel_requested: bool = False

    @property
    def execution_id(self) -> str:
        return self.record.execution_id


class RunObserver(Protocol):
    """Sees every execution run here (the metrics, DESIGN §14)."""

    def watch(
        self, workflow: Workflow, record: ExecutionRecord, then: EventSink | None
    ) -> EventSink:
        """The sink the events of an execution starting or resuming go through, to ``then``."""
        ...

    def done(self, execution_id: str) -> None:
        """The execution's task ended, however."""
        ...


class Runs:
    """The execution tasks of one gateway process.

    Args:
        engine: runs executions; its journal is ``journal``.
        journal: the journal the gateway serves from.
        lease: seconds an execution's lease lasts (replicas, DESIGN §11).
        capacity: most executions in flight here that claims fill up to (replicas); None: no
            bound. The gateway service sets it to its ``max_concurrent``.
    """

    def __init__(
        self,
        engine: Engine,
        journal: Journal,
        *,
        lease: float = DEFAULT_LEASE,
        capacity: int | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError("the lease must be positive")
        if capacity is not None and capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity}")
        self.engine = engine
        self.journal = journal
        self.owner = owner_id()
        self.lease = lease
        self.capacity = capacity
        self._runs: dict[str, _Run] = {}
        self.handed_over: set[str] = set()
        """Executions left unfinished for the next start by a shutdown."""
        self.lost: set[str] = set()
        """Executions stopped here because another replica holds them now (DESIGN §11)."""
        self.observer: RunObserver | None = None
        """Sees every execution started or resumed from now on, and its events."""
        self.tracing: Tracing | None = None
        """Makes the spans of every execution started or resumed from now on (DESIGN §14)."""
        self.replicas = journal.replicas
        self._renewed = asyncio.Event()
        self._chores: list[asyncio.Task[None]] = []
        self._claiming = True
        self._cancel_check: asyncio.Task[None] | None = None
        self._cancel_again = False
        self._unloadable: set[str] = set()
        if self.replicas is not None:
            self.replicas.register(
                self.owner, lease=lease, on_lost=self._lose, on_cancel=self._cancel_announced
            )
            engine.guard_calls(self._may_send)

    def __len__(self) -> int:
        return len(self._runs)

    def task(self, execution_id: str) -> asyncio.Task[ExecutionResult] | None:
        """The task running ``execution_id`` in this process, if any."""
        run = self._runs.get(execution_id)
        return run.task if run is not None else None

    def start(
        self,
        workflow: Workflow,
        record: ExecutionRecord,
        on_event: EventSink | None,
        *,
        rpc: str | None = None,
    ) -> asyncio.Task[ExecutionResult]:
        """Run the execution of ``record`` (already committed) in a task of its own.

        ``rpc`` names the method that asked for it (``Execute``, ``Run``, ``Start``; None for a
        signal's trigger): the name of its span when tracing.
        """
        run = _Run(record, self._held_from(time.monotonic()))
        trace = None if self.tracing is None else self.tracing.execution(record, rpc=rpc)
        coro = self.engine.execute(
            workflow,
            record.input,
            record=record,
            on_event=self._sink(run, on_event, workflow),
            trace=trace,
        )
        return self._own(run, coro, trace)

    async def recover(self) -> int:
        """Resume every unfinished execution of the journal; return how many were resumed.

        Each resumes with the definition it started with. One whose definition no longer loads
        (a changed loader, say) is logged and left unfinished, never marked done. On a journal
        replicas share, the executions another replica holds a live lease on are left to it,
        and at most the free capacity is claimed (in batches): the claim loop takes more as
        executions finish.
        """
        reason = f"resumed by {self.owner} after the gateway stopped"
        if self.replicas is None:  # one process holds the journal: everything is ours
            asked = time.monotonic()
            return await self._resume(
                await self.journal.claim(self.owner, self.lease), asked, reason
            )
        resumed = 0
        while (limit := self._claim_limit()) > 0:
            asked = time.monotonic()
            claimed = await self.journal.claim(self.owner, self.lease, limit)
            resumed += await self._resume(claimed, asked, reason)
            if len(claimed) < limit:
                break
        return resumed

    def _claim_limit(self) -> int:
        """How many executions one claim may take now: the free capacity, at most a batch."""
        free = CLAIM_BATCH if self.capacity is None else self.capacity - len(self._runs)
        return max(0, min(free, CLAIM_BATCH))

    async def _resume(self, records: Sequence[ExecutionRecord], asked: float, reason: str) -> int:
        resumed = 0
        loaded: dict[tuple[str, str], Workflow] = {}  # many executions share a definition
        for record in records:
            execution_id = record.execution_id
            old = self._runs.get(execution_id)
            if old is not None and not old.lost:
                # Still running here: its lease had run out unrenewed (the journal was away) and
                # this claim gave it back.
                old.held_until = self._held_from(asked)
                continue
            if old is not None:
                # Its earlier run here lost the lease and is still stopping: nothing of the new
                # run may be written before that one is gone. Left to expire and be claimed again.
                if self.replicas is not None:
                    self.replicas.disown([execution_id])
                log.warning(logfmt("claim_deferred", id=execution_id, workflow=record.workflow))
                continue
            key = (record.source_hash, record.path)
            workflow = loaded.get(key)
            if workflow is None:
                try:
                    workflow = load_stored(record.source, record.path)
                except DefinitionError as exc:
                    if execution_id not in self._unloadable:
                        self._unloadable.add(execution_id)
                        log.error(
                            logfmt(
                                "recovery_failed",
                                id=execution_id,
                                workflow=record.workflow,
                                problem=str(exc.diagnostics[0]) if exc.diagnostics else "invalid",
                            )
                        )
                    continue
                loaded[key] = workflow
                self.engine.prepare(workflow)
            events = [event_from_entry(e) for e in await self.journal.events(execution_id)]
            self.lost.discard(execution_id)
            run = _Run(record, self._held_from(asked))
            trace = None if self.tracing is None else self.tracing.execution(record, resumed=True)
            coro = self.engine.resume(
                workflow,
                record,
                events,
                reason=reason,
                on_event=self._sink(run, None, workflow),
                trace=trace,
            )
            self._own(run, coro, trace)
            resumed += 1
            log.info(
                logfmt(
                    "execution_recovered",
                    id=execution_id,
                    workflow=record.workflow,
                    after_sequence=record.last_sequence,
                )
            )
        return resumed

    def _held_from(self, asked: float) -> float:
        """Until when a lease granted by a request made at monotonic ``asked`` is held for sure."""
        if self.replicas is None:
            return math.inf
        return asked + self.lease * (1 - LEASE_MARGIN)

    def _sink(self, run: _Run, sink: EventSink | None, workflow: Workflow) -> EventSink:
        """``sink`` (if any), keeping the result of ``finished``; silent once ``run`` is lost."""
        if self.observer is not None:
            sink = self.observer.watch(workflow, run.record, sink)

        def keep(event: Event) -> None:
            if run.lost:
                return
            if isinstance(event, ExecutionFinished):
                run.finished.append(event.result)
            if sink is not None:
                sink(event)

        return keep

    def _own(
        self, run: _Run, coro: Running, trace: ExecutionSpan | None = None
    ) -> asyncio.Task[ExecutionResult]:
        execution_id = run.execution_id
        body = self._logged(run, coro) if trace is None else self._traced(run, coro, trace)
        task = asyncio.get_running_loop().create_task(body)
        run.task = task
        self._runs[execution_id] = run

        observer = self.observer

        def forget(_: object) -> None:
            if self._runs.get(execution_id) is run:
                del self._runs[execution_id]
            if observer is not None:
                observer.done(execution_id)

        task.add_done_callback(forget)
        return task

    async def _traced(self, run: _Run, coro: Running, trace: ExecutionSpan) -> ExecutionResult:
        """:meth:`_logged` with the execution's span current, then ended with its outcome."""
        with trace.current():
            try:
                result = await self._logged(run, coro)
            except asyncio.CancelledError:
                trace.finish(run.finished[0] if run.finished else None, self._stopped_as(run))
                raise
            except Exception:
                trace.finish(None, "CRASHED")
                raise
            trace.finish(result)
            return result

    def _stopped_as(self, run: _Run) -> str:
        """How an execution cancelled before its end stopped here."""
        if run.lost:
            return "LEASE_LOST"
        if run.execution_id in self.handed_over:
            return "HANDED_OVER"
        return "CANCELLED"

    async def _logged(self, run: _Run, coro: Running) -> ExecutionResult:
        record = run.record
        started = time.monotonic()
        try:
            result: ExecutionResult = await coro
        except asyncio.CancelledError:
            if run.finished:  # cancelled by its caller, and compensated
                log_result(run.finished[0])
                raise
            status = self._stopped_as(run)
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
        run = self._runs.get(execution_id)
        if run is None or run.lost or run.task is None or run.task.done():
            return False
        if not run.cancel_requested:  # once: the second would cut its compensations short
            run.cancel_requested = True
            self.engine.note_cancel(execution_id, reason or "cancelled through CancelExecution")
            run.task.cancel()
        return True

    # -- leases (replicas, DESIGN §11) -------------------------------------------------------

    def keep_leases(self) -> None:
        """Start renewing leases, claiming expired ones and taking cancels from the journal
        (a journal replicas share only; call once recovery at start is done)."""
        if self.replicas is None or self._chores:
            return
        loop = asyncio.get_running_loop()
        self._chores = [
            loop.create_task(self._renew_loop(), name="maestro-lease-renew"),
            loop.create_task(self._claim_loop(), name="maestro-lease-claim"),
        ]

    async def _stop_leases(self) -> None:
        chores, self._chores = self._chores, []
        for chore in chores:
            chore.cancel()
        if chores:
            await asyncio.wait(chores)
        self._renewed.set()  # nobody waits for a renewal that will not come

    async def _renew_loop(self) -> None:
        interval = self.lease / 3
        while True:
            asked = time.monotonic()
            runs = [r for r in self._runs.values() if not (r.lost or r.finished)]
            try:
                if runs:
                    lost = await self.journal.renew(
                        self.owner, [r.execution_id for r in runs], self.lease
                    )
                    for run in runs:
                        if run.execution_id in lost:
                            self._lose_run(run, "renew")
                        else:
                            run.held_until = self._held_from(asked)
            except JournalError as exc:
                log.warning(logfmt("lease_renew_failed", error=str(exc)))
            except Exception:
                log.exception(logfmt("lease_renew_failed"))
            finally:
                renewed, self._renewed = self._renewed, asyncio.Event()
                renewed.set()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - asked)))

    async def _claim_loop(self) -> None:
        interval = min(self.lease / 3, CLAIM_EVERY)
        reason = f"resumed by {self.owner}: the lease of the replica running it expired"
        while True:
            await asyncio.sleep(interval)
            if not self._claiming:
                return
            try:
                stopping = [r.task for r in self._runs.values() if r.lost and r.task is not None]
                if stopping:
                    # What lost a lease stops before anything is claimed: a claim gives this
                    # process back the right to write, which that run must not use.
                    _, pending = await asyncio.wait(stopping, timeout=interval)
                    if pending:
                        continue
                while self._claiming and (limit := self._claim_limit()) > 0:
                    asked = time.monotonic()
                    claimed = await self.journal.claim(self.owner, self.lease, limit)
                    if claimed and self._claiming:
                        await self._resume(claimed, asked, reason)
                    elif claimed:
                        await self._release([r.execution_id for r in claimed])
                    if len(claimed) < limit:
                        break
                    await asyncio.sleep(0)  # a full batch: more may wait; the loop breathes
                await self._apply_cancels()
            except JournalError as exc:
                log.warning(logfmt("lease_claim_failed", error=str(exc)))
            except Exception:
                log.exception(logfmt("lease_claim_failed"))

    def _lose(self, execution_ids: Iterable[str]) -> None:
        """The journal fenced these executions off: another replica holds them now."""
        for execution_id in sorted(execution_ids):
            run = self._runs.get(execution_id)
            if run is not None:
                self._lose_run(run, "fenced")

    def _lose_run(self, run: _Run, how: str) -> None:
        """Stop ``run`` at once, reporting nothing more: its lease is another replica's now."""
        task = run.task
        if run.lost or run.finished or task is None or task.done():
            return  # finished already (its lease ended with it), or stopping
        run.lost = True
        execution_id = run.execution_id
        self.lost.add(execution_id)
        if self.replicas is not None:
            self.replicas.disown([execution_id])
        log.warning(
            logfmt("lease_lost", id=execution_id, workflow=run.record.workflow, noticed_by=how)
        )
        self.engine.hand_over(execution_id)
        task.cancel()

    async def _may_send(self, execution_id: str) -> bool:
        """Whether a call of ``execution_id`` may be sent: its lease is certainly still held.

        A lease renewed too long ago (a pause, a database away) waits for the next renewal's
        answer; a lost one returns False (its task has been cancelled).
        """
        run = self._runs.get(execution_id)
        if run is None:
            return True
        while not run.lost:
            if time.monotonic() < run.held_until or not self._chores:
                return True
            await self._renewed.wait()
        return False

    def _cancel_announced(self, execution_id: str) -> None:
        """A cancel was requested on some replica ("" : perhaps several, while unheard)."""
        if execution_id and execution_id not in self._runs:
            return
        if self._cancel_check is not None and not self._cancel_check.done():
            self._cancel_again = True
            return
        self._cancel_check = asyncio.get_running_loop().create_task(self._check_cancels())

    async def _check_cancels(self) -> None:
        while True:
            self._cancel_again = False
            try:
                await self._apply_cancels()
            except JournalError as exc:  # polled again at the next look for expired leases
                log.warning(logfmt("cancel_requests_failed", error=str(exc)))
            except Exception:
                log.exception(logfmt("cancel_requests_failed"))
            if not self._cancel_again:
                return

    async def _apply_cancels(self) -> None:
        """Cancel what another replica asked to cancel, of the executions running here."""
        if self.replicas is None or not self._runs:
            return
        for execution_id, reason in (await self.replicas.cancel_requests(self.owner)).items():
            run = self._runs.get(execution_id)
            if run is None or run.cancel_requested or run.lost:
                continue
            log.info(logfmt("cancel_requested", id=execution_id, workflow=run.record.workflow))
            await self.cancel(execution_id, reason)

    async def _release(self, execution_ids: Sequence[str]) -> None:
        if self.replicas is None or not execution_ids:
            return
        try:
            await self.replicas.release(self.owner, execution_ids)
        except JournalError as exc:  # they are claimed once their lease expires instead
            log.warning(logfmt("lease_release_failed", error=str(exc)))

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self, grace: float, cancel_budget: float) -> None:
        """Let running executions finish for ``grace`` s, then hand over (or cancel) the rest.

        Args:
            grace: seconds running executions get to finish on their own.
            cancel_budget: with a journal that does not survive the process, seconds to wait
                after cancelling what is left, for their compensations.
        """
        self._claiming = False  # no more of the other replicas' executions
        try:
            await self._drain(grace, cancel_budget)
        finally:
            await self._stop_leases()
        if self.handed_over:
            await self._release(sorted(self.handed_over))

    async def _drain(self, grace: float, cancel_budget: float) -> None:
        tasks = {r.task for r in self._runs.values() if r.task is not None}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace)
        if not pending:
            return
        if self.journal.durable:
            log.warning(logfmt("drain_hand_over", executions=len(pending), grace_s=grace))
            self.handed_over.update(i for i, r in self._runs.items() if r.task in pending)
            self.engine.hand_over()
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=HAND_OVER_WAIT)
            return
        log.warning(logfmt("drain_cancel", executions=len(pending), grace_s=grace))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=cancel_budget)


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
