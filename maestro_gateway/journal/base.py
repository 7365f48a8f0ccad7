"""The journal interface: the durable record of executions (DESIGN §2, §10).

The engine writes through :class:`Journal` and never sees SQL. Every implementation
(``MemoryJournal``, ``SqliteJournal``, ``PostgresJournal``) passes one shared test suite
(``tests/journal_suite.py``).

Writing is write-ahead and ordered::

    create(record)            committed when it returns (before the first call, before Start returns)
    submit(entries, then)     queued; everything submitted between two awaits of the event loop
                              commits in one transaction (perhaps with later entries, never
                              split), in submission order; ``then`` runs on the event loop once
                              those entries are durable. Entries without ``then`` may wait a few
                              milliseconds for company; with ``then`` they commit at once
    flush()                   returns once everything submitted before it is durable

Entries are plain data (JSON-ready values): the journal knows nothing of the engine's event
classes. An event is stored as its ``kind`` and a ``data`` dict; the engine's codec
(``maestro_gateway.engine.journaling``) maps them to and from events.

When the store cannot be written (disk full, database down) the journal keeps what was submitted,
retries with backoff and reports ``writable`` False meanwhile; nothing submitted is dropped and
``then`` callbacks and ``flush`` wait until it is durable. The gateway refuses new executions
while ``writable`` is False.

A journal several gateway processes share (PostgreSQL, DESIGN §11) also offers
:class:`Replicas` (``journal.replicas``; None for the in-memory and SQLite journals, which one
process holds: nothing can take an execution away from it). Fencing, there: once a process has
registered as an owner, entries are written only for the executions that owner holds at commit
time, checked under a row lock in the transaction that writes them; the entries of an execution
another replica took (or that finished meanwhile) are dropped, and the process is told at once,
before any ``then`` of their group runs. Signal writes made on behalf of an execution (the
signal an ``emit`` step sends, a lineage note ``by`` it) are fenced the same way, and refused
with :class:`LeaseLost`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class JournalError(Exception):
    """The journal cannot be opened or used: the message names the file or server and why."""


class ExecutionState(enum.Enum):
    """Where an execution stands in the journal (``ExecutionStatus`` plus the two live states)."""

    RUNNING = "RUNNING"
    COMPENSATING = "COMPENSATING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    COMPENSATED = "COMPENSATED"
    COMPENSATION_FAILED = "COMPENSATION_FAILED"

    @property
    def finished(self) -> bool:
        """True for the four final states."""
        return self not in (ExecutionState.RUNNING, ExecutionState.COMPENSATING)


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, no spaces, UTF-8 kept (comparing inputs)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def source_hash(source: str) -> str:
    """The SHA-256 (hex) of a workflow definition's text."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One execution as the journal holds it.

    Attributes:
        execution_id: unique in the journal while the execution is retained.
        workflow: the workflow name.
        source: the exact definition (YAML text) it runs; recovery loads this, not today's file.
        path: the file the definition was loaded from (relative paths in it resolve against it).
        input: the execution input (JSON-ready).
        labels: the caller's labels.
        metadata: the caller headers forwarded to every downstream call.
        started_at: wall-clock start, seconds since the epoch.
        workflow_deadline: wall-clock time the workflow ``timeout`` ends, or None.
        caller_deadline: wall-clock time the caller's deadline ends, or None.
        state: RUNNING, COMPENSATING or final.
        ended_at: wall-clock end, None while unfinished.
        result: the final result (JSON form, the engine's codec), None while unfinished.
        last_sequence: the sequence number of the latest committed event (0: none yet).
        triggered_by: the signal that started it, or "".
        owner: the gateway that runs it now ("" when none does).
        lease_until: wall-clock time the owner's lease ends (0 when not owned).
    """

    execution_id: str
    workflow: str
    source: str
    path: str
    input: Any
    labels: Mapping[str, str] = field(default_factory=dict)
    metadata: tuple[tuple[str, str], ...] = ()
    started_at: float = 0.0
    workflow_deadline: float | None = None
    caller_deadline: float | None = None
    state: ExecutionState = ExecutionState.RUNNING
    ended_at: float | None = None
    result: Mapping[str, Any] | None = None
    last_sequence: int = 0
    triggered_by: str = ""
    owner: str = ""
    lease_until: float = 0.0

    @property
    def source_hash(self) -> str:
        """The SHA-256 of ``source`` (stored beside it)."""
        return source_hash(self.source)

    def same_request(self, workflow: str, input: Any) -> bool:
        """Whether ``workflow`` and ``input`` (as canonical JSON) are this execution's."""
        return workflow == self.workflow and canonical_json(input) == canonical_json(self.input)


@dataclass(frozen=True, slots=True)
class EventEntry:
    """One event of an execution: ``sequence`` 1, 2, 3 … without gaps."""

    execution_id: str
    sequence: int
    time: float
    kind: str
    data: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IntentEntry:
    """An attempt is about to be sent: committed before the call leaves the gateway.

    ``step`` is the step path (``reserve``, later ``lines[2].reserve``); ``compensation`` tells a
    compensation attempt from a step attempt; ``request`` is the rendered request value.
    """

    execution_id: str
    step: str
    compensation: bool
    attempt: int
    time: float
    request: Any


@dataclass(frozen=True, slots=True)
class OutcomeEntry:
    """How an attempt ended: ``error`` (``{step_id, code, message}``) or None and ``response``."""

    execution_id: str
    step: str
    compensation: bool
    attempt: int
    time: float
    response: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StateEntry:
    """The execution changed state: COMPENSATING, or final with its ``result`` (JSON form)."""

    execution_id: str
    state: ExecutionState
    time: float
    result: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CreateEntry:
    """A new execution whose id no one else can hold (the gateway generated it).

    Unlike :meth:`Journal.create` it answers nothing and waits for nothing: the record is
    committed with what is submitted after it (the execution's ``started`` event and its first
    intent), in the same transaction or an earlier one, so the write-ahead order holds at one
    commit less. An id a caller chose may exist already: that goes through ``create``.
    """

    record: ExecutionRecord

    @property
    def execution_id(self) -> str:
        return self.record.execution_id


Entry = CreateEntry | EventEntry | IntentEntry | OutcomeEntry | StateEntry


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt as read back: its intent and, once known, its outcome."""

    step: str
    compensation: bool
    attempt: int
    started_at: float
    request: Any
    ended_at: float | None = None
    response: Any = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """What ``list_executions`` returns: ``workflow`` (or any) AND any of ``states`` (or all)."""

    workflow: str = ""
    states: frozenset[ExecutionState] = frozenset()


@dataclass(frozen=True, slots=True)
class Page:
    """A page of executions, newest first; ``next_token`` is "" on the last page."""

    executions: tuple[ExecutionRecord, ...]
    next_token: str = ""


@dataclass(frozen=True, slots=True)
class SignalRecord:
    """One received signal and its lineage (DESIGN §13).

    Attributes:
        signal_id: unique in the journal while the signal is retained.
        name: the signal name.
        params: its parameters (a JSON-ready object).
        time: wall-clock time it was received.
        producer_execution: the execution whose ``emit`` step sent it ("" for an external one).
        producer_step: the path of that step ("").
        triggered: the executions its triggers started (or deduplicated onto), in order.
        woke: the executions whose ``wait`` it satisfied, in order.
        not_matched: the workflows with a trigger on its name whose ``when`` was false.
        dispatched: its triggers have all been processed (recovery dispatches the others again;
            the derived execution ids make that idempotent).
        sequence: its position in the order signals were received (assigned by the journal,
            increasing; 0 before it is stored).
    """

    signal_id: str
    name: str
    params: Mapping[str, Any]
    time: float
    producer_execution: str = ""
    producer_step: str = ""
    triggered: tuple[str, ...] = ()
    woke: tuple[str, ...] = ()
    not_matched: tuple[str, ...] = ()
    dispatched: bool = False
    sequence: int = 0


@dataclass(frozen=True, slots=True)
class SignalPage:
    """A page of signals, newest first; ``next_token`` is "" on the last page."""

    signals: tuple[SignalRecord, ...]
    next_token: str = ""


class BadPageToken(ValueError):
    """A page token that this journal did not produce."""


class LeaseLost(JournalError):
    """A write made on behalf of an execution this process no longer holds (another replica
    took it over, or it finished) was refused: nothing of it was written (DESIGN §11)."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution {execution_id} is no longer this replica's: not written")
        self.execution_id = execution_id


def check_claim_limit(limit: int | None) -> None:
    """Refuse a ``claim`` limit below 0 (ValueError naming it)."""
    if limit is not None and limit < 0:
        raise ValueError(f"claim limit must be at least 0, not {limit}")


class Replicas(Protocol):
    """What gateway processes sharing one journal need of it (DESIGN §11).

    Leases themselves are the journal's ``claim`` and ``renew``; this adds what makes them safe
    and what travels between replicas through the store.
    """

    def register(
        self,
        owner: str,
        *,
        lease: float,
        on_lost: Callable[[set[str]], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        """Write as ``owner`` from now on.

        Records created without an owner are created owned by ``owner`` for ``lease`` seconds
        (from the commit). Entries of an execution ``owner`` does not hold when they commit are
        not written: their ids go to ``on_lost`` (on the event loop, before any ``then`` of
        their group runs) and are disowned (:meth:`disown`). So are the signal writes made on
        behalf of such an execution (``add_signal`` of its emitted signal, ``note_signal`` with
        ``by``), which raise :class:`LeaseLost`. ``on_cancel`` gets the id of each
        cancel requested through :meth:`request_cancel` as it is announced (best effort: the
        owner also polls :meth:`cancel_requests`).
        """
        ...

    def disown(self, execution_ids: Iterable[str]) -> None:
        """Drop every entry of these executions submitted from now on (their ``then`` never
        runs), until ``claim`` returns them to this process again."""
        ...

    async def release(self, owner: str, execution_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on these executions now, for another replica to claim them."""
        ...

    async def request_cancel(self, execution_id: str, reason: str) -> bool:
        """Ask the owner of an unfinished execution to cancel it; False when it has finished."""
        ...

    async def cancel_requests(self, owner: str) -> dict[str, str]:
        """The requested cancels of unfinished executions ``owner`` holds: id → reason."""
        ...


class Journal(Protocol):
    """The durable record of executions. See the module docstring for the write order."""

    @property
    def description(self) -> str:
        """Where it lives, for logs and messages (``sqlite:/var/lib/maestro/journal.db``)."""
        ...

    @property
    def durable(self) -> bool:
        """False for the in-memory journal: nothing survives the process."""
        ...

    @property
    def writable(self) -> bool:
        """False while the last commit failed and is being retried."""
        ...

    @property
    def replicas(self) -> Replicas | None:
        """What replicas sharing this journal use (DESIGN §11); None when one process holds it."""
        ...

    async def open(self) -> None:
        """Create or migrate the store and take it for this process.

        Raises:
            JournalError: unusable (a directory, unwritable, corrupt, written by a newer
                version, held by another gateway); the message names it.
        """
        ...

    async def close(self) -> None:
        """Commit what was submitted and release the store."""
        ...

    async def create(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """Commit a new execution; return None, or the existing record when the id is taken."""
        ...

    def submit(self, entries: Sequence[Entry], then: Callable[[], None] | None = None) -> None:
        """Queue ``entries`` for the next group commit; run ``then`` once they are durable."""
        ...

    async def flush(self) -> None:
        """Return once everything submitted so far is durable."""
        ...

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id, or None."""
        ...

    async def list_executions(
        self, where: ExecutionFilter, page_size: int, page_token: str = ""
    ) -> Page:
        """Executions matching ``where``, newest first (by start time, then id).

        Raises:
            BadPageToken: ``page_token`` is not one this journal returned.
        """
        ...

    async def events(self, execution_id: str, after: int = 0) -> list[EventEntry]:
        """The committed events of an execution with a sequence above ``after``, in order."""
        ...

    async def attempts(self, execution_id: str) -> list[Attempt]:
        """Every attempt of an execution, in the order their intents were committed."""
        ...

    async def wait_events(self, execution_id: str, after: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once an event with a sequence above ``after`` is committed, or after ``timeout``."""
        ...

    async def claim(
        self, owner: str, lease: float, limit: int | None = None
    ) -> list[ExecutionRecord]:
        """Take the unfinished executions that no live lease holds, for ``lease`` seconds: all
        of them, or with ``limit`` at most that many, the oldest first (by start time, then
        id). Of concurrent claims, each execution goes to one.

        Raises:
            ValueError: ``limit`` is below 0.
        """
        ...

    async def renew(self, owner: str, execution_ids: Sequence[str], lease: float) -> set[str]:
        """Extend ``owner``'s leases; return the ids it no longer holds."""
        ...

    async def delete_finished(self, before: float) -> int:
        """Delete executions that finished before wall-clock ``before``, and signals received
        before it; return how many executions."""
        ...

    # -- signals (DESIGN §13) ----------------------------------------------------------------

    async def add_signal(self, signal: SignalRecord) -> SignalRecord | None:
        """Commit a new signal (its ``sequence`` assigned); return None, or the stored signal
        when the id is taken (then nothing is written). Atomic: of concurrent adds of one id,
        exactly one returns None.

        A signal with a ``producer_execution`` (an ``emit`` step's) is fenced as the entries of
        that execution are: on a journal replicas share, a registered process that no longer
        holds it writes nothing.

        Raises:
            LeaseLost: fenced off, as above (the process is told through ``on_lost`` first).
        """
        ...

    async def get_signal(self, signal_id: str) -> SignalRecord | None:
        """The signal with this id, or None."""
        ...

    async def list_signals(
        self,
        *,
        name: str = "",
        producer_execution: str = "",
        page_size: int = 50,
        page_token: str = "",
    ) -> SignalPage:
        """Signals with this name and/or producer ("" matches any), newest first (by sequence).

        Raises:
            BadPageToken: ``page_token`` is not one this journal returned.
        """
        ...

    async def signals_since(self, name: str, since: float, after: int = 0) -> list[SignalRecord]:
        """Signals called ``name`` received at wall-clock ``since`` or later and with a sequence
        above ``after``, oldest first (what a ``wait`` step may match)."""
        ...

    async def note_signal(
        self,
        signal_id: str,
        *,
        triggered: Sequence[str] = (),
        woke: Sequence[str] = (),
        not_matched: Sequence[str] = (),
        dispatched: bool = False,
        by: str = "",
    ) -> None:
        """Add to a signal's lineage (ids already listed are not listed twice) and, with
        ``dispatched``, mark it dispatched; committed when it returns. Unknown ids are ignored.

        ``by``: the execution the note is written on behalf of (a wait it woke, the emit that
        produced the signal). On a journal replicas share, a registered process that no longer
        holds it writes nothing (:class:`LeaseLost`, see :class:`Replicas`); elsewhere one
        process holds every execution and ``by`` changes nothing.

        Raises:
            LeaseLost: fenced off, as above.
        """
        ...

    async def undispatched_signals(self) -> list[SignalRecord]:
        """Signals not marked dispatched, oldest first (recovery dispatches them again)."""
        ...
