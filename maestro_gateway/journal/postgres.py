"""The PostgreSQL journal (``--journal postgresql://…``, DESIGN §11): replicas share one database.

Connections, and what runs on them (everything on the event loop: asyncpg is asynchronous)::

    writer     one connection and one task: it takes every queued unit at once (the batches the
               loop handed off, and operations such as create and claim), runs them in one
               transaction, then runs the ``then`` callbacks in submission order, wakes
               ``wait_events`` and NOTIFYs the other replicas of the new events
    readers    a small pool: get, list_executions, events, attempts, wait_events, and the
               signal reads (the signal methods are in :mod:`.postgres_signals`)
    listener   one connection LISTENing for the other replicas' commits (wait_events)

Batching is the SQLite journal's (:class:`.batch.GroupCommit`): everything submitted in one stretch of the event
loop is one batch, committed whole and never split; entries without ``then`` wait up to
``LAZY_COMMIT`` for company. A group that cannot be committed (the server is down, the connection
broke, a deadlock) is rolled back and retried, the same group, with backoff, on a new connection
when the old one broke; ``writable`` is False meanwhile. A commit whose acknowledgement was lost
may have happened all the same, so every statement can be applied twice without harm, and a
retried ``create`` recognises its own record.

Leases: ``claim`` takes the unfinished executions whose lease is free or expired under a row lock
(``FOR UPDATE SKIP LOCKED``): of two replicas claiming at once, each execution goes to exactly one
and neither waits for the other. Unlike the SQLite journal, ``open`` hands nothing back: other
replicas may be running those executions.

Fencing (:class:`~.base.Replicas`): once a gateway has registered the owner it writes as, each
group locks the rows of the executions its entries are about and writes the entries of those the
owner still holds only, in the same transaction (or the same statement); a replica that was
paused past its lease and taken over therefore cannot write after the one that took over. The
ids of the executions whose entries were dropped go to the gateway (``on_lost``) before any
``then`` of the group runs, and later entries of theirs are dropped as they are submitted. A
cancel requested on one replica is a row of ``maestro_cancels`` and a NOTIFY on
``CANCEL_CHANNEL``, which the listener hands to ``on_cancel``.

Opening retries an unreachable server (refused, timed out, starting up, out of connections) with
backoff for ``connect_timeout`` seconds; a refused login or a missing database fails at once. The
schema is checked and migrated under an advisory lock, so replicas starting together migrate once.
The password (from the URL or ``PGPASSWORD``) never appears in a message: ``description`` is the
URL without it, and driver messages are scrubbed of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from maestro_gateway.journal.base import (
    Attempt,
    Entry,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    JournalError,
    LeaseLost,
    Page,
    Replicas,
    check_claim_limit,
)
from maestro_gateway.journal.batch import (
    Batch,
    CommitObserver,
    GroupCommit,
    fail_all,
    holds_event,
)
from maestro_gateway.journal.paging import check_page_size, decode_token, execution_page
from maestro_gateway.journal.postgres_connect import (
    connect_delay,
    connection_lost,
    dsn_password,
    environmental,
    redact_dsn,
    retry_at_start,
)
from maestro_gateway.journal.postgres_listen import Waiters
from maestro_gateway.journal.postgres_schema import (
    CANCEL_CHANNEL,
    CLAIM,
    DELETE_DEFINITIONS,
    DELETE_FINISHED,
    LOCK_DEFINITIONS,
    NOTIFY,
    RECORD_FROM,
    RELEASE,
    RENEW,
    REQUEST_CANCEL,
    SCHEMA_VERSION,
    SELECT_ATTEMPTS,
    SELECT_CANCELS,
    SELECT_EVENTS,
    SELECT_LAST_SEQUENCE,
    SELECT_RECORD,
    SELECT_UNFINISHED,
    migrate,
    record_from_row,
)
from maestro_gateway.journal.postgres_signals import PostgresSignals
from maestro_gateway.journal.postgres_writes import (
    CreatesFailed,
    Op,
    OpFailed,
    commit_entries,
    insert_records,
    one_statement,
    write_batches,
)
from maestro_gateway.journal.sqlite_schema import loads_or_none, record_params

if TYPE_CHECKING:
    from maestro_gateway.resilience.clock import Clock

__all__ = ["SCHEMA_VERSION", "PostgresJournal", "connect_delay", "redact_dsn"]

logger = logging.getLogger("maestro_gateway.journal")

_T = TypeVar("_T")
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record]
    Reader = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = Reader = asyncpg.Connection

_FIRST_RETRY = 0.05
_LAST_RETRY = 1.0
_CONNECT_ATTEMPT = 10.0
"""Seconds one connection attempt may take (at most what is left of ``connect_timeout``)."""
_COMMAND_TIMEOUT = 30.0
"""Seconds a statement may take before the connection is given up as hung."""
_READERS = 4

#: Fault injection for the replica tests (tests/test_replicas.py): with ``N`` set, the writer
#: SIGSTOPs its own process once, right after committing the group that holds an event with
#: sequence ``N``, before the event loop learns of the commit (a pause at the worst moment).
FAULT_STOP_AFTER_EVENT = "MAESTRO_FAULT_STOP_AFTER_EVENT"
#: The same, but right *before* the writer commits the group holding event ``N`` (what was
#: submitted with it, such as an emit step's signal, is then written after the pause, if at all).
FAULT_STOP_BEFORE_EVENT = "MAESTRO_FAULT_STOP_BEFORE_EVENT"


def _fault(variable: str) -> int | None:
    """The event sequence a fault-injection variable names, or None."""
    try:
        return int(os.environ[variable])
    except (KeyError, ValueError):
        return None


async def _no_reset(conn: Connection) -> None:
    """Readers change no session state: skip the pool's reset query on every release."""


class PostgresJournal(PostgresSignals, GroupCommit):
    """A journal in a PostgreSQL database, shared by every replica that names it.

    Args:
        dsn: a libpq URL (``postgresql://user@host:port/db``); the password comes from it or from
            ``PGPASSWORD``, as libpq's other settings may come from their ``PG…`` variables.
        connect_timeout: how long ``open`` retries a server that cannot be reached, in seconds.
        clock: wall-clock time of leases (``claim``, ``renew``); the system clock when None.
        close_timeout: how long ``close`` waits for a store that cannot be written before it gives
            up and raises :class:`JournalError`, in seconds.
    """

    durable = True
    on_commit: CommitObserver | None = None
    """Told the seconds of each group commit (the metrics)."""

    def __init__(
        self,
        dsn: str,
        *,
        connect_timeout: float = 30.0,
        clock: Clock | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._description = redact_dsn(dsn)
        self._secrets = [s for s in (dsn_password(dsn), os.environ.get("PGPASSWORD", "")) if s]
        self._connect_timeout = connect_timeout
        self._wall: Callable[[], float] = clock.wall if clock is not None else time.time
        self._close_timeout = close_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Batch | None = None
        self._handoff_scheduled = False
        self._lazy: asyncio.TimerHandle | None = None
        self._queue: list[Batch | Op] = []
        self._current: list[Batch | Op] = []
        self._wake = asyncio.Event()
        self._abandon = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._opened = False
        self._writable = True
        self._last_error = ""
        self._conn: Connection | None = None
        self._writer_pid = 0
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._waiters = Waiters(lambda: self._writer_pid, self._cancel_announced)
        self._owner: str | None = None
        self._lease = 0.0
        self._on_lost: Callable[[set[str]], None] | None = None
        self._on_cancel: Callable[[str], None] | None = None
        self._disowned: set[str] = set()
        self._stop_after_event = _fault(FAULT_STOP_AFTER_EVENT)
        self._stop_before_event = _fault(FAULT_STOP_BEFORE_EVENT)

    @property
    def description(self) -> str:
        """The URL without its password (``postgresql://gw@db:5432/maestro``)."""
        return self._description

    @property
    def writable(self) -> bool:
        """False while the last commit failed and is being retried."""
        return self._writable

    @property
    def _label(self) -> str:
        return self._description

    @property
    def replicas(self) -> Replicas:
        """This journal: replicas share it (leases, fencing, cancels through the database)."""
        return self

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, TimeoutError):
            return "timed out"
        if isinstance(exc, OSError) and exc.strerror:
            return exc.strerror
        return self._scrub(str(exc) or type(exc).__name__)

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect (retrying for ``connect_timeout``), check or migrate the schema, start writing.

        Raises:
            JournalError: the server could not be reached within ``connect_timeout``, refused the
                login or has no such database, the tables were written by a newer version or
                cannot be created; the message names the journal (without its password).
        """
        if self._opened:
            raise JournalError(
                f"journal {self._description} was opened already (a journal opens once)"
            )
        self._opened = True
        loop = asyncio.get_running_loop()
        conn = await self._connect_at_start()
        listener: Connection | None = None
        try:
            await migrate(conn, self._description)
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=_READERS,
                timeout=_CONNECT_ATTEMPT,
                command_timeout=_COMMAND_TIMEOUT,
                reset=_no_reset,
            )
            listener = await self._connect()
            await self._waiters.subscribe(listener)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)
            if listener is not None:
                listener.terminate()
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None
            if isinstance(exc, JournalError) or not isinstance(exc, Exception):
                raise
            raise JournalError(
                f"journal {self._description} cannot be opened: {self._reason(exc)}"
            ) from None
        self._conn = conn
        self._writer_pid = conn.get_server_pid()
        self._loop = loop
        self._pending = Batch()
        self._writer = loop.create_task(self._write_loop(), name="maestro-journal-writer")
        self._writer.add_done_callback(self._writer_exited)
        self._listener = loop.create_task(
            self._waiters.listen(listener, self._connect), name="maestro-journal-listener"
        )

    async def _connect(self) -> Connection:
        conn: Connection = await asyncpg.connect(
            self._dsn, timeout=_CONNECT_ATTEMPT, command_timeout=_COMMAND_TIMEOUT
        )
        return conn

    async def _connect_at_start(self) -> Connection:
        started = time.monotonic()
        attempt = 0
        while True:
            left = self._connect_timeout - (time.monotonic() - started)
            try:
                conn: Connection = await asyncpg.connect(
                    self._dsn,
                    timeout=max(0.1, min(_CONNECT_ATTEMPT, left)),
                    command_timeout=_COMMAND_TIMEOUT,
                )
                return conn
            except Exception as exc:
                reason = self._reason(exc)
                if not retry_at_start(exc):
                    raise JournalError(f"journal {self._description}: {reason}") from None
                delay = connect_delay(attempt)
                attempt += 1
                left = self._connect_timeout - (time.monotonic() - started)
                if left <= 0:
                    raise JournalError(
                        f"journal {self._description}: cannot connect to the server within"
                        f" {self._connect_timeout:g}s ({attempt} attempts; the last: {reason})"
                    ) from None
                if attempt == 1:
                    logger.warning(
                        "journal %s: cannot connect (%s); retrying for up to %gs",
                        self._description,
                        reason,
                        self._connect_timeout,
                    )
                await asyncio.sleep(min(delay, left))

    async def close(self) -> None:
        """Commit what was submitted, stop the writer and close every connection.

        Raises:
            JournalError: the store stayed unwritable for ``close_timeout`` seconds; what was not
                committed is lost, and the callers awaiting it get this error too.
        """
        writer = self._writer
        if writer is None or self._closed:
            return
        self._handoff()
        self._pending = None
        self._closed = True
        self._stopping = True
        self._wake.set()
        uncommitted = 0
        try:
            await asyncio.wait({writer}, timeout=self._close_timeout)
            if not writer.done():
                self._abandon.set()
                writer.cancel()
                await asyncio.wait({writer})
                uncommitted = self._fail_leftover()
        finally:
            await self._release()
        if uncommitted:
            raise JournalError(
                f"journal {self._description}: gave up after {self._close_timeout:g}s:"
                f" {uncommitted} entries and operations could not be committed"
                f" ({self._last_error})"
            )

    async def _release(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 2)
            except Exception:
                pool.terminate()
        self._waiters.wake_all()

    def _writer_exited(self, writer: asyncio.Task[None]) -> None:
        if writer.cancelled() or writer.exception() is None:
            return
        logger.error(
            "journal %s: the writer stopped", self._description, exc_info=writer.exception()
        )
        self._pending = None  # nothing more is accepted: it would never be written
        self._fail_leftover()

    def _fail_leftover(self) -> int:
        leftover = self._current + self._queue
        self._current, self._queue = [], []
        gone = JournalError(f"journal {self._description} closed before this was committed")
        return fail_all(leftover, gone)

    # -- writing ---------------------------------------------------------------------------

    async def create(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """Commit a new execution; return None, or the existing record when the id is taken."""
        loop = self._running_loop()
        self._handoff()  # what was submitted before this call commits before it
        done: asyncio.Future[ExecutionRecord | None] = loop.create_future()
        self._enqueue(Op(None, done, record, record_params(record)))
        return await done

    def submit(self, entries: Sequence[Entry], then: Callable[[], None] | None = None) -> None:
        """Queue ``entries`` for the next group commit; run ``then`` once they are durable.

        The entries of an execution this process lost (``disown``, fencing) are dropped.

        Raises:
            JournalError: the journal is not open.
            TypeError: a value in an entry is not JSON-ready.
        """
        self._batch()
        if self._disowned and any(e.execution_id in self._disowned for e in entries):
            return  # an execution this process lost: nothing more of it is written or reported
        super().submit(entries, then)

    async def claim(
        self, owner: str, lease: float, limit: int | None = None
    ) -> list[ExecutionRecord]:
        """Take the unfinished executions that no live lease holds, for ``lease`` seconds (at
        most ``limit``, the oldest first; all when None).

        Rows another replica is claiming at the same moment are skipped, not waited for.
        """
        check_claim_limit(limit)

        async def run(conn: Connection, retried: bool) -> list[ExecutionRecord]:
            # Read at commit time: a commit delayed by an outage still grants a whole lease.
            now = self._wall()
            rows = await conn.fetch(CLAIM, owner, now, now + lease, limit)
            claimed = [record_from_row(row) for row in rows]
            claimed.sort(key=lambda r: (r.started_at, r.execution_id))
            return claimed

        result: list[ExecutionRecord] = await self._write(run)
        self._disowned.difference_update(r.execution_id for r in result)
        return result

    async def renew(self, owner: str, execution_ids: Sequence[str], lease: float) -> set[str]:
        """Extend ``owner``'s leases; return the ids it no longer holds."""
        ids = list(dict.fromkeys(execution_ids))

        async def run(conn: Connection, retried: bool) -> set[str]:
            if not ids:
                return set()
            rows = await conn.fetch(RENEW, self._wall() + lease, ids, owner)
            return set(ids) - {row[0] for row in rows}

        result: set[str] = await self._write(run)
        return result

    async def delete_finished(self, before: float) -> int:
        """Delete executions that finished before wall-clock ``before``, and signals received
        before it; return how many executions."""

        async def run(conn: Connection, retried: bool) -> int:
            row = await conn.fetchrow(DELETE_FINISHED, before)
            assert row is not None
            deleted, hashes = int(row[0]), list(row[1])
            if hashes:
                # Locked first, then checked in a statement of its own (a fresh snapshot): a
                # replica creating an execution of one of these definitions meanwhile holds a
                # share lock on it, so its execution is seen and the definition kept.
                locked = [r[0] for r in await conn.fetch(LOCK_DEFINITIONS, hashes)]
                if locked:
                    await conn.execute(DELETE_DEFINITIONS, locked)
            return deleted

        result: int = await self._write(run)
        return result

    # -- replicas (DESIGN §11) -------------------------------------------------------------

    def register(
        self,
        owner: str,
        *,
        lease: float,
        on_lost: Callable[[set[str]], None],
        on_cancel: Callable[[str], None],
    ) -> None:
        """Write as ``owner`` from now on (see :class:`~.base.Replicas`)."""
        if not owner:
            raise ValueError("an owner is a non-empty name")
        self._owner = owner
        self._lease = lease
        self._on_lost = on_lost
        self._on_cancel = on_cancel

    def disown(self, execution_ids: Iterable[str]) -> None:
        """Drop every entry of these executions submitted from now on, until claimed again."""
        self._disowned.update(execution_ids)

    async def release(self, owner: str, execution_ids: Sequence[str]) -> None:
        """End ``owner``'s leases on these executions now, for another replica to claim them."""
        ids = sorted(set(execution_ids))

        async def run(conn: Connection, retried: bool) -> None:
            if ids:
                await conn.execute(RELEASE, ids, owner)

        await self._write(run)

    async def request_cancel(self, execution_id: str, reason: str) -> bool:
        """Record a cancel for the owner of ``execution_id`` and announce it; False when the
        execution has finished (or is unknown)."""

        async def run(conn: Connection, retried: bool) -> bool:
            await conn.execute(REQUEST_CANCEL, execution_id, reason, self._wall())
            unfinished = bool(await conn.fetchval(SELECT_UNFINISHED, execution_id))
            if unfinished:
                await conn.execute(NOTIFY, CANCEL_CHANNEL, execution_id)
            return unfinished

        result: bool = await self._write(run)
        return result

    async def cancel_requests(self, owner: str) -> dict[str, str]:
        """The requested cancels of unfinished executions ``owner`` holds: id → reason."""

        async def read(conn: Reader) -> dict[str, str]:
            return {row[0]: row[1] for row in await conn.fetch(SELECT_CANCELS, owner)}

        return await self._read(read)

    def _cancel_announced(self, execution_id: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(execution_id)

    def _enqueue(self, item: Batch | Op) -> None:
        self._queue.append(item)
        self._wake.set()

    async def _write(self, run: Callable[[Connection, bool], Awaitable[_T]]) -> _T:
        loop = self._running_loop()
        self._handoff()  # what was submitted before this call commits before it
        done: asyncio.Future[_T] = loop.create_future()
        self._enqueue(Op(run, done))
        return await done

    # -- the writer task -------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            group, self._queue = self._queue, []
            if not group:
                if self._stopping:
                    return
                continue
            self._current = group
            if not await self._commit(group):
                return
            self._current = []

    async def _commit(self, group: list[Batch | Op]) -> bool:
        """Commit ``group``, retrying until it is durable; False when told to give up."""
        delay = _FIRST_RETRY
        retried = False
        split = False
        stop_before = self._stop_before_event
        if stop_before is not None and holds_event(group, stop_before):
            self._stop_before_event = None  # once
            os.kill(os.getpid(), signal.SIGSTOP)  # the fault: resumed by SIGCONT
        while True:
            try:
                conn = await self._writer_connection()
                started = time.perf_counter()
                results, committed, fenced = await self._transaction(conn, group, retried, split)
            except CreatesFailed:
                split = True  # one by one, to find which of them it was
                continue
            except OpFailed as failed:
                # Rolled back: that operation fails alone, and the rest of the group goes again.
                group = [item for item in group if item is not failed.op]
                self._current = group
                refused = failed.error
                if isinstance(refused, asyncpg.PostgresError | asyncpg.InterfaceError):
                    refused = JournalError(
                        f"journal {self._description} refused the write: {self._reason(refused)}"
                    )
                self._resolve(failed.op.future, refused)
                continue
            except Exception as exc:
                retried = True
                self._drop_broken(exc)
                self._commit_failed(self._reason(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._abandon.wait(), delay)
                if self._abandon.is_set():
                    return False
                delay = min(delay * 2, _LAST_RETRY)
                continue
            self._commit_succeeded(group, time.perf_counter() - started)
            stop_after = self._stop_after_event
            if stop_after is not None and holds_event(group, stop_after):
                self._stop_after_event = None  # once
                os.kill(os.getpid(), signal.SIGSTOP)  # the fault: resumed by SIGCONT
            self._committed(group, results, committed, fenced)
            return True

    async def _writer_connection(self) -> Connection:
        conn = self._conn
        if conn is None or conn.is_closed():
            self._conn = None
            conn = await self._connect()
            self._conn = conn
            self._writer_pid = conn.get_server_pid()
        return conn

    def _drop_broken(self, exc: BaseException) -> None:
        conn = self._conn
        if conn is None:
            return
        if conn.is_closed() or not isinstance(exc, asyncpg.PostgresError):
            self._conn = None
            conn.terminate()

    async def _transaction(
        self, conn: Connection, group: list[Batch | Op], retried: bool, split: bool
    ) -> tuple[dict[int, Any], dict[str, int], set[str]]:
        """Write ``group``; each operation's result (by ``id``), each execution's last event, and
        the executions whose entries were fenced off (held by another owner, or finished).

        A group of entries only is one statement (its own transaction) when its parts allow it;
        anything else runs in a transaction: the creates first, together (those awaited with
        ``create`` and the batches' ``CreateEntry`` records, so that the entries about them
        follow them), then the batches and the other operations in their order.
        """
        results: dict[int, Any] = {}
        committed: dict[str, int] = {}
        fenced: set[str] = set()
        owner = self._owner
        if all(isinstance(item, Batch) and not item.rows for item in group):
            return results, committed, fenced
        creates = [i for i in group if isinstance(i, Op) and i.record is not None]
        # The CreateEntry records of the batches: inserted with the creates, their answers
        # unread (a generated id cannot be taken).
        loop = asyncio.get_running_loop()
        entered = [
            Op(None, loop.create_future(), record, params)
            for item in group
            if isinstance(item, Batch)
            for record, params in item.creates
        ]
        creates += entered
        rest = [i for i in group if not (isinstance(i, Op) and i.record is not None)]
        single = True  # whether the batches may still go in one statement
        if not creates:
            entries_only = [item for item in rest if isinstance(item, Batch)]
            if len(entries_only) == len(rest):
                args = one_statement(entries_only, committed, owner)
                if args is not None:
                    await commit_entries(conn, args, owner, fenced)
                    for execution_id in fenced:
                        committed.pop(execution_id, None)
                    return results, committed, fenced
                committed.clear()
                single = False
        if owner is not None:
            until = self._wall() + self._lease  # a whole lease from (about) the commit
            for op in creates:
                assert op.record is not None
                if not op.record.owner:
                    op.params = (*op.params[:14], owner, until, *op.params[16:])
        async with conn.transaction():
            for chunk in [[c] for c in creates] if split else [creates] if creates else []:
                try:
                    await insert_records(conn, chunk, retried, results)
                except Exception as exc:
                    if environmental(exc):
                        raise
                    if len(chunk) == 1 and any(op is chunk[0] for op in entered):
                        # A CreateEntry's record is no operation of its own: like any entry it
                        # goes with its batch, which is retried until it is durable.
                        raise
                    if len(chunk) == 1:
                        raise OpFailed(chunk[0], exc) from exc
                    raise CreatesFailed from exc
            batches: list[Batch] = []
            for item in rest:
                if isinstance(item, Batch):
                    batches.append(item)
                    continue
                # An operation sees everything submitted before it.
                await write_batches(conn, batches, committed, owner, fenced)
                batches = []
                assert item.run is not None
                try:
                    results[id(item)] = await item.run(conn, retried)
                except Exception as exc:
                    if environmental(exc):
                        raise
                    raise OpFailed(item, exc) from exc
            await write_batches(conn, batches, committed, owner, fenced, single=single)
        return results, committed, fenced

    def _committed(
        self,
        group: list[Batch | Op],
        results: dict[int, Any],
        committed: dict[str, int],
        fenced: set[str],
    ) -> None:
        # Signal writes refused for the same reason (postgres_signals.py).
        fenced = fenced | {r.execution_id for r in results.values() if isinstance(r, LeaseLost)}
        if fenced:
            # Before any ``then`` of the group: the gateway stops those executions first, so
            # that nothing of theirs is reported, and no call of theirs sent, on this commit.
            self._disowned.update(fenced)
            logger.warning(
                "journal %s: %d executions are no longer this replica's (taken over, or"
                " finished); their entries were not written",
                self._description,
                len(fenced),
            )
            if self._on_lost is not None:
                try:
                    self._on_lost(set(fenced))
                except Exception as exc:
                    assert self._loop is not None
                    self._loop.call_exception_handler(
                        {"message": "the journal's on_lost callback failed", "exception": exc}
                    )
        for item in group:
            if isinstance(item, Op):
                self._resolve(item.future, results[id(item)])
                continue
            self._run_thens(item.thens)
        self._waiters.wake(committed.items())

    @staticmethod
    def _resolve(future: asyncio.Future[Any], result: Any) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, read: Callable[[Reader], Awaitable[_T]]) -> _T:
        self._batch()
        pool = self._pool
        assert pool is not None
        for attempt in (1, 2):
            try:
                async with pool.acquire() as conn:
                    return await read(conn)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
                # A pooled connection the server dropped while it was idle (a restart) is only
                # found out by using it: once more, on a new one.
                if attempt == 1 and connection_lost(exc):
                    continue
                raise JournalError(
                    f"journal {self._description} cannot be read: {self._reason(exc)}"
                ) from None
        raise AssertionError("unreachable")

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id, or None."""

        async def read(conn: Reader) -> ExecutionRecord | None:
            row = await conn.fetchrow(SELECT_RECORD, execution_id)
            return record_from_row(row) if row is not None else None

        return await self._read(read)

    async def list_executions(
        self, where: ExecutionFilter, page_size: int, page_token: str = ""
    ) -> Page:
        """Executions matching ``where``, newest first (by start time, then id).

        Raises:
            BadPageToken: ``page_token`` is not one this journal returned.
            ValueError: ``page_size`` is below 1.
        """
        cursor = decode_token(page_token)
        check_page_size(page_size)
        clauses: list[str] = []
        params: list[Any] = []
        if where.workflow:
            params.append(where.workflow)
            clauses.append(f"e.workflow = ${len(params)}")
        if where.states:
            params.append(sorted(state.value for state in where.states))
            clauses.append(f"e.state = ANY(${len(params)}::text[])")
        if cursor is not None:
            params.extend(cursor)
            clauses.append(
                f"(e.started_at, e.execution_id) < (${len(params) - 1}::float8, ${len(params)}::text)"
            )
        sql = RECORD_FROM
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        params.append(page_size + 1)
        sql += f" ORDER BY e.started_at DESC, e.execution_id DESC LIMIT ${len(params)}"

        async def read(conn: Reader) -> list[ExecutionRecord]:
            return [record_from_row(row) for row in await conn.fetch(sql, *params)]

        found = await self._read(read)
        return execution_page(found, page_size)

    async def events(self, execution_id: str, after: int = 0) -> list[EventEntry]:
        """The committed events of an execution with a sequence above ``after``, in order."""

        async def read(conn: Reader) -> list[EventEntry]:
            rows = await conn.fetch(SELECT_EVENTS, execution_id, after)
            return [
                EventEntry(execution_id, int(sequence), at, kind, loads_or_none(data))
                for sequence, at, kind, data in rows
            ]

        return await self._read(read)

    async def attempts(self, execution_id: str) -> list[Attempt]:
        """Every attempt of an execution, in the order their intents were committed."""

        async def read(conn: Reader) -> list[Attempt]:
            rows = await conn.fetch(SELECT_ATTEMPTS, execution_id)
            return [
                Attempt(
                    step=step,
                    compensation=compensation,
                    attempt=attempt,
                    started_at=started_at,
                    request=loads_or_none(request),
                    ended_at=ended_at,
                    response=loads_or_none(response),
                    error=loads_or_none(error),
                )
                for step, compensation, attempt, started_at, request, ended_at, response, error in rows
            ]

        return await self._read(read)

    async def wait_events(self, execution_id: str, after: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once an event with a sequence above ``after`` is committed, or after ``timeout``.

        Commits of this process wake it at once; another replica's, through its NOTIFY.
        """
        self._running_loop()
        # Parked before the read, so a commit landing between the two still wakes it (and the
        # other replicas' commits heard from before it on).
        waiter = self._waiters.park(execution_id, after)
        try:
            async with asyncio.timeout(timeout):
                await self._waiters.follow()

                async def read(conn: Reader) -> int | None:
                    last = await conn.fetchval(SELECT_LAST_SEQUENCE, execution_id)
                    return None if last is None else int(last)

                last = await self._read(read)
                if last is None or last > after:
                    return
                await waiter[1]
        except TimeoutError:
            pass
        finally:
            self._waiters.unpark(execution_id, waiter)
