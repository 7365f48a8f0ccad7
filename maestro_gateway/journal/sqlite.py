"""The SQLite journal (``--journal PATH``, the default): one file in WAL mode, group commit.

Threads, and who touches what::

    event loop   submit() appends SQL parameters to the pending batch; the first submit of a loop
                 iteration schedules (call_soon) a hand-off that queues the whole batch as one unit
    writer       one thread owning the one writing connection: it takes every queued unit at once,
                 runs them in one transaction, then calls back into the loop once per group, which
                 runs the ``then`` callbacks in submission order and wakes ``wait_events``
    readers      get, list_executions, events, attempts and the signal reads: worker threads,
                 each read on a pooled connection of its own (WAL lets them read while the
                 writer writes)

``create``, ``claim``, ``renew``, ``delete_finished``, ``add_signal`` and ``note_signal`` are
writes: they go through the writer, ordered after what was submitted before them (the signal
methods are in :mod:`.sqlite_signals`). A group that cannot be committed (disk full, I/O error)
is rolled back and retried, the same group, with backoff; ``writable`` is False meanwhile.
Nothing is dropped, and nothing is reported durable before it is.

One gateway per file: ``open`` holds an exclusive ``flock`` on ``<path>.lock`` (the holder's pid
inside) for the life of the journal. Having it proves that no other gateway runs this journal, so
``open`` hands every unfinished execution back (unowned) and the next ``claim`` takes them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from maestro_gateway.journal.base import (
    Attempt,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    JournalError,
    Page,
    check_claim_limit,
)
from maestro_gateway.journal.batch import (
    LAZY_COMMIT,
    Batch,
    CommitObserver,
    GroupCommit,
    fail_all,
    holds_event,
    merge_last_sequences,
)
from maestro_gateway.journal.paging import check_page_size, decode_token, execution_page
from maestro_gateway.journal.sqlite_schema import (
    APPLICATION_ID,
    DELETE_SIGNALS,
    INSERT_DEFINITION,
    INSERT_EVENT,
    INSERT_EXECUTION,
    RECORD_COLUMNS,
    SCHEMA_VERSION,
    UNFINISHED,
    UPDATE_LAST_SEQUENCE,
    UPDATE_OUTCOME,
    UPDATE_STATE,
    UPSERT_INTENT,
    last_sequence,
    loads_or_none,
    migrate,
    record_from_row,
    record_params,
    select_record,
)
from maestro_gateway.journal.sqlite_signals import SqliteSignals

if TYPE_CHECKING:
    from maestro_gateway.resilience.clock import Clock

__all__ = ["APPLICATION_ID", "LAZY_COMMIT", "SCHEMA_VERSION", "SqliteJournal"]

logger = logging.getLogger("maestro_gateway.journal")

_T = TypeVar("_T")

#: Fault injection for the crash tests (tests/test_durability.py): with ``N`` set, the writer
#: SIGKILLs its own process right after committing the group that holds an event with sequence
#: ``N``, before the event loop learns of the commit; ``0`` does it right after the first new
#: execution record is committed (before its first event).
FAULT_KILL_AFTER_EVENT = "MAESTRO_FAULT_KILL_AFTER_EVENT"

_BUSY_TIMEOUT = 5.0
_FIRST_RETRY = 0.05
_LAST_RETRY = 1.0


@dataclass(slots=True)
class _Op:
    """A write whose caller awaits a result: run by the writer inside a group's transaction."""

    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Failure:
    """An operation failed for a reason that retrying cannot mend: its caller gets ``error``."""

    error: BaseException


def _environmental(exc: BaseException) -> bool:
    """Whether ``exc`` is the store failing (retry the group) rather than one operation's fault."""
    return type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)


class SqliteJournal(SqliteSignals, GroupCommit):
    """A journal in one SQLite file (WAL), written by one thread with group commit.

    Args:
        path: the database file; created (mode 0600) when missing, its directory must exist.
        sync: ``"normal"`` (a commit survives a crash of the process) or ``"full"`` (an fsync per
            commit: survives a power loss).
        clock: wall-clock time of leases (``claim``, ``renew``); the system clock when None.
        close_timeout: how long ``close`` waits for a store that cannot be written before it gives
            up and raises :class:`JournalError`, in seconds.
    """

    durable = True
    replicas = None
    """One process holds the file (a second gateway is refused): nothing to fence."""
    on_commit: CommitObserver | None = None
    """Told the seconds of each group commit, from the writer thread (the metrics)."""

    def __init__(
        self,
        path: str | Path,
        *,
        sync: Literal["normal", "full"] = "normal",
        clock: Clock | None = None,
        close_timeout: float = 5.0,
    ) -> None:
        if sync not in ("normal", "full"):
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        self._name = str(path)
        # Resolved, so two paths to one file (a symlink) share one lock file.
        self._file = Path(os.path.realpath(path))
        self._sync = sync
        self._wall: Callable[[], float] = clock.wall if clock is not None else time.time
        self._close_timeout = close_timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: Batch | None = None
        self._handoff_scheduled = False
        self._waiters: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._writable = True
        self._closed = False
        # Shared with the writer thread, under _cond.
        self._cond = threading.Condition()
        self._queue: list[Batch | _Op] = []
        self._controls: list[_Op] = []
        self._stopping = False
        self._abandon = False
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_idle = False  # waiting for work, under ``_cond``
        self._single_before = False  # the last batch was about one execution
        self._with_writer = 0  # items handed to the writer and not acknowledged yet (the loop's)
        self._uncommitted = 0
        self._lazy: asyncio.TimerHandle | None = None
        self._last_error = ""
        self._writer_done: asyncio.Future[None] | None = None
        # Read connections, each used by one worker thread at a time.
        self._readers_lock = threading.Lock()
        self._idle_readers: list[sqlite3.Connection] = []
        self._lock_fd = -1
        try:
            self._kill_after_event: int | None = int(os.environ[FAULT_KILL_AFTER_EVENT])
        except (KeyError, ValueError):
            self._kill_after_event = None
        self._created = False  # a new execution was inserted by the group being committed

    @property
    def description(self) -> str:
        """``sqlite:`` and the file's resolved absolute path."""
        return f"sqlite:{self._file}"

    @property
    def writable(self) -> bool:
        """False while the last commit failed and is being retried."""
        return self._writable

    @property
    def _label(self) -> str:
        return self._name

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Lock the file, create or migrate it, and start the writer.

        Raises:
            JournalError: the path is a directory, its directory is missing or not writable, the
                file is not a journal (or is corrupt), it was written by a newer version, or
                another gateway holds it. A refused file is left as it was.
        """
        if self._loop is not None:
            raise JournalError(f"journal {self._name} was opened already (a journal opens once)")
        loop = asyncio.get_running_loop()
        conn = await asyncio.to_thread(self._open_store)
        self._loop = loop
        self._pending = Batch()
        self._writer_done = loop.create_future()
        threading.Thread(
            target=self._write_loop, args=(conn,), name="maestro-journal-writer", daemon=True
        ).start()

    def _open_store(self) -> sqlite3.Connection:
        file, name = self._file, self._name
        if file.is_dir():
            raise JournalError(f"journal {name} is a directory, not a file")
        parent = file.parent
        if not parent.is_dir():
            raise JournalError(f"journal {name}: directory {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise JournalError(f"journal {name}: directory {parent} is not writable")
        if file.exists() and not file.is_file():
            raise JournalError(f"journal {name} is not a regular file")
        self._lock_fd = self._take_lock()
        try:
            if not file.exists():
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return self._connect_and_migrate()
        except BaseException:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise

    def _take_lock(self) -> int:
        lock = f"{self._file}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(
                f"journal {self._name}: cannot create its lock file {lock}: {exc.strerror}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise JournalError(
                f"journal {self._name} is in use by another gateway (pid {holder})"
            ) from None
        except OSError as exc:  # e.g. a file system without locks
            os.close(fd)
            raise JournalError(f"journal {self._name}: cannot lock {lock}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self._file, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT
        )

    def _connect_and_migrate(self) -> sqlite3.Connection:
        name = self._name
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {name} cannot be opened: {exc}") from exc
        try:
            # Only reads until the file is known to be ours and not from the future.
            try:
                application_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise JournalError(
                    f"journal {name} is not a SQLite database or is corrupt ({exc})"
                ) from exc
            if objects and application_id != APPLICATION_ID:
                raise JournalError(
                    f"journal {name} is a SQLite database of another program, not a journal"
                )
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {name} was written by a newer maestro-gateway"
                    f" (schema {version}, this version knows {SCHEMA_VERSION})"
                )
            try:
                migrate(conn, version, self._sync)
            except ValueError as exc:
                raise JournalError(f"journal {name}: {exc}") from None
        except JournalError:
            conn.close()
            raise
        except sqlite3.Error as exc:
            conn.close()
            raise JournalError(f"journal {name} cannot be opened: {exc}") from exc
        return conn

    async def close(self) -> None:
        """Commit what was submitted, stop the writer and release the file.

        Raises:
            JournalError: the store stayed unwritable for ``close_timeout`` seconds; what was not
                committed is lost, and the callers awaiting it get this error too.
        """
        done = self._writer_done
        if self._pending is None or done is None:
            return
        self._handoff()
        self._pending = None
        self._closed = True
        with self._cond:
            self._stopping = True
            self._cond.notify()
        try:
            await asyncio.wait_for(asyncio.shield(done), self._close_timeout)
        except TimeoutError:
            with self._cond:
                self._abandon = True
                self._cond.notify()
            await done
            if self._uncommitted:
                raise JournalError(
                    f"journal {self._name}: gave up after {self._close_timeout:g}s:"
                    f" {self._uncommitted} entries and operations could not be committed"
                    f" ({self._last_error})"
                ) from None

    # -- writing ---------------------------------------------------------------------------

    async def create(self, record: ExecutionRecord) -> ExecutionRecord | None:
        """Commit a new execution; return None, or the existing record when the id is taken."""
        params = record_params(record)
        definition = (record.source_hash, record.source)

        def run(conn: sqlite3.Connection) -> ExecutionRecord | None:
            if conn.execute(INSERT_EXECUTION, params).rowcount:
                conn.execute(INSERT_DEFINITION, definition)
                self._created = True
                return None
            return select_record(conn, record.execution_id)

        result: ExecutionRecord | None = await self._write(run)
        return result

    async def claim(
        self, owner: str, lease: float, limit: int | None = None
    ) -> list[ExecutionRecord]:
        """Take the unfinished executions that no live lease holds, for ``lease`` seconds (at
        most ``limit``, the oldest first; all when None)."""
        check_claim_limit(limit)

        def run(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            # Read at commit time: a commit delayed by an outage still grants a whole lease.
            now = self._wall()
            until = now + lease
            rows = conn.execute(
                f"SELECT {RECORD_COLUMNS} WHERE e.state IN {UNFINISHED}"
                " AND (e.owner = '' OR e.lease_until <= ?) ORDER BY e.started_at, e.execution_id"
                " LIMIT ?",
                (now, -1 if limit is None else limit),
            ).fetchall()
            claimed = [record_from_row(row) for row in rows]
            conn.executemany(
                "UPDATE executions SET owner = ?, lease_until = ? WHERE execution_id = ?",
                [(owner, until, record.execution_id) for record in claimed],
            )
            return [
                dataclasses.replace(record, owner=owner, lease_until=until) for record in claimed
            ]

        result: list[ExecutionRecord] = await self._write(run)
        return result

    async def renew(self, owner: str, execution_ids: Sequence[str], lease: float) -> set[str]:
        """Extend ``owner``'s leases; return the ids it no longer holds."""
        ids = list(execution_ids)

        def run(conn: sqlite3.Connection) -> set[str]:
            until = self._wall() + lease
            lost: set[str] = set()
            for execution_id in ids:
                renewed = conn.execute(
                    "UPDATE executions SET lease_until = ? WHERE execution_id = ? AND owner = ?",
                    (until, execution_id, owner),
                ).rowcount
                if not renewed:
                    lost.add(execution_id)
            return lost

        result: set[str] = await self._write(run)
        return result

    async def delete_finished(self, before: float) -> int:
        """Delete executions that finished before wall-clock ``before``, and signals received
        before it; return how many executions."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute(DELETE_SIGNALS, (before,))
            doomed = "SELECT execution_id FROM executions WHERE ended_at < ?1"
            conn.execute(f"DELETE FROM events WHERE execution_id IN ({doomed})", (before,))
            conn.execute(f"DELETE FROM attempts WHERE execution_id IN ({doomed})", (before,))
            hashes = conn.execute(
                "SELECT DISTINCT source_hash FROM executions WHERE ended_at < ?", (before,)
            ).fetchall()
            deleted: int = conn.execute(
                "DELETE FROM executions WHERE ended_at < ?", (before,)
            ).rowcount
            conn.executemany(
                "DELETE FROM definitions WHERE source_hash = ?1"
                " AND NOT EXISTS (SELECT 1 FROM executions WHERE source_hash = ?1)",
                hashes,
            )
            return deleted

        result: int = await self._write(run)
        return result

    async def _writer_pragma(self, sql: str) -> list[tuple[Any, ...]]:
        """Run one statement on the writer's connection between two transactions: a test hook.

        It runs even while a failed group is being retried, so a test can impose a limit such as
        ``PRAGMA max_page_count`` (the real SQLITE_FULL) and lift it again.
        """
        loop = self._running_loop()
        done: asyncio.Future[list[tuple[Any, ...]]] = loop.create_future()
        with self._cond:
            self._controls.append(_Op(lambda conn: conn.execute(sql).fetchall(), done))
            self._cond.notify()
        return await done

    def _enqueue(self, item: Batch | _Op) -> None:
        if isinstance(item, Batch) and self._commit_here(item):
            return
        self._with_writer += 1
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _commit_here(self, batch: Batch) -> bool:
        """Commit ``batch`` on the event loop when it and the last are each about one execution.

        True if done.

        With executions running side by side the writer thread commits while the loop goes on,
        and groups what arrives meanwhile. One execution alone has nothing to overlap with and
        nobody to group with: each of its commits would cost two thread hand-offs (the wake-up
        of the writer, then the loop's). So when this batch and the one before are each about a
        single execution and the writer is idle, the loop commits the batch itself, on the
        writer's connection (the writer is waiting and only the loop can give it work), once
        everything handed to the writer has been acknowledged (so that ``then`` callbacks keep
        their order). A failure leaves the batch to the writer, which retries it as it does any
        group.
        """
        if not batch.rows:  # a flush that found nothing pending
            if self._with_writer:
                return False  # the writer's commits before it must be acknowledged first
            self._run_thens(batch.thens)  # everything before it is durable already
            return True
        alone = len(batch.ids) == 1 and self._single_before
        self._single_before = len(batch.ids) == 1
        conn = self._writer_conn
        if not alone or conn is None or self._with_writer:
            return False
        with self._cond:
            if not self._writer_idle or self._queue or self._controls or self._stopping:
                return False
        group: list[Batch | _Op] = [batch]
        started = time.perf_counter()
        try:
            results, committed = self._transaction(conn, group)
        except Exception:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return False
        self._after_commit(group, time.perf_counter() - started)
        self._committed(group, results, committed)
        return True

    async def _write(self, run: Callable[[sqlite3.Connection], _T]) -> _T:
        loop = self._running_loop()
        self._handoff()  # what was submitted before this call commits before it
        done: asyncio.Future[_T] = loop.create_future()
        self._enqueue(_Op(run, done))
        return await done

    # -- the writer thread -----------------------------------------------------------------

    def _write_loop(self, conn: sqlite3.Connection) -> None:
        leftover: list[Batch | _Op] = []
        self._writer_conn = conn
        try:
            while True:
                with self._cond:
                    self._writer_idle = True
                    self._cond.wait_for(lambda: self._queue or self._controls or self._stopping)
                    self._writer_idle = False
                    group, self._queue = self._queue, []
                    controls, self._controls = self._controls, []
                    stop = self._stopping and not group
                self._run_controls(conn, controls)
                if stop:
                    break
                if not self._commit(conn, group):
                    with self._cond:
                        leftover, self._queue = group + self._queue, []
                    break
        except BaseException:
            logger.exception("journal %s: the writer stopped", self._name)
            with self._cond:
                leftover, self._queue = leftover + self._queue, []
        finally:
            with self._cond:
                self._writer_idle = False
                self._writer_conn = None
            conn.close()
            with self._readers_lock:
                self._closed = True
                for reader in self._idle_readers:
                    reader.close()
                self._idle_readers.clear()
            os.close(self._lock_fd)
            self._call_loop(self._writer_exited, leftover)

    def _run_controls(self, conn: sqlite3.Connection, controls: list[_Op]) -> None:
        for control in controls:
            try:
                result: Any = control.run(conn)
            except Exception as exc:
                result = _Failure(exc)
            self._call_loop(self._resolve, control.future, result)

    def _commit(self, conn: sqlite3.Connection, group: list[Batch | _Op]) -> bool:
        """Commit ``group``, retrying until it is durable; False when told to give up."""
        delay = _FIRST_RETRY
        while True:
            started = time.perf_counter()
            try:
                results, committed = self._transaction(conn, group)
            except Exception as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._commit_failed(
                    str(exc) if isinstance(exc, sqlite3.Error) else type(exc).__name__
                )
                with self._cond:
                    self._cond.wait_for(lambda: self._controls or self._abandon, timeout=delay)
                    controls, self._controls = self._controls, []
                    abandon = self._abandon
                self._run_controls(conn, controls)
                if abandon:
                    return False
                delay = min(delay * 2, _LAST_RETRY)
                continue
            self._after_commit(group, time.perf_counter() - started)
            self._call_loop(self._acknowledged, group, results, committed)
            return True

    def _after_commit(self, group: list[Batch | _Op], seconds: float) -> None:
        """The bookkeeping of a commit that succeeded, and the fault injections' kill."""
        self._commit_succeeded(group, seconds)
        kill_after = self._kill_after_event
        if kill_after is not None and (
            holds_event(group, kill_after) if kill_after else self._created
        ):
            os.kill(os.getpid(), signal.SIGKILL)
        self._created = False

    def _transaction(
        self, conn: sqlite3.Connection, group: list[Batch | _Op]
    ) -> tuple[list[Any], dict[str, int]]:
        results: list[Any] = []
        committed: dict[str, int] = {}
        if all(isinstance(item, Batch) and not item.rows for item in group):
            return results, committed
        if any(isinstance(item, Batch) and item.creates for item in group):
            self._created = True  # the fault injections' "after the record"
        conn.execute("BEGIN IMMEDIATE")
        batches: list[Batch] = []
        for item in group:
            if isinstance(item, Batch):
                batches.append(item)
                continue
            # An operation sees everything submitted before it.
            self._write_batches(conn, batches, committed)
            batches = []
            try:
                results.append(item.run(conn))
            except Exception as exc:
                if _environmental(exc):
                    raise
                results.append(_Failure(exc))
        self._write_batches(conn, batches, committed)
        conn.execute("COMMIT")
        return results, committed

    @staticmethod
    def _write_batches(
        conn: sqlite3.Connection, batches: list[Batch], committed: dict[str, int]
    ) -> None:
        if not batches:
            return
        creates = [create for batch in batches for create in batch.creates]
        if creates:
            # A generated id cannot be taken: ON CONFLICT DO NOTHING never leaves one out.
            conn.executemany(INSERT_EXECUTION, [params for _, params in creates])
            conn.executemany(
                INSERT_DEFINITION, [(record.source_hash, record.source) for record, _ in creates]
            )
        if any(batch.events for batch in batches):
            conn.executemany(INSERT_EVENT, chain.from_iterable(b.events for b in batches))
        for batch in batches:
            for is_intent, rows in batch.attempt_runs:
                conn.executemany(UPSERT_INTENT if is_intent else UPDATE_OUTCOME, rows)
        if any(batch.states for batch in batches):
            conn.executemany(UPDATE_STATE, chain.from_iterable(b.states for b in batches))
        last: dict[str, int] = {}
        merge_last_sequences(batches, last)
        if last:
            conn.executemany(UPDATE_LAST_SEQUENCE, [(seq, eid) for eid, seq in last.items()])
            merge_last_sequences(batches, committed)

    def _call_loop(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to tell
            loop.call_soon_threadsafe(callback, *args)

    # -- back on the event loop ------------------------------------------------------------

    def _acknowledged(
        self, group: list[Batch | _Op], results: list[Any], committed: dict[str, int]
    ) -> None:
        """:meth:`_committed` for a group the writer committed."""
        self._with_writer -= len(group)
        self._committed(group, results, committed)

    def _committed(
        self, group: list[Batch | _Op], results: list[Any], committed: dict[str, int]
    ) -> None:
        outcomes = iter(results)
        for item in group:
            if isinstance(item, _Op):
                self._resolve(item.future, next(outcomes))
                continue
            self._run_thens(item.thens)
        for execution_id, sequence in committed.items():
            for after, waiter in self._waiters.get(execution_id, ()):
                if sequence > after and not waiter.done():
                    waiter.set_result(None)

    @staticmethod
    def _resolve(future: asyncio.Future[Any], result: Any) -> None:
        if future.done():
            return
        if isinstance(result, _Failure):
            future.set_exception(result.error)
        else:
            future.set_result(result)

    def _writer_exited(self, leftover: list[Batch | _Op]) -> None:
        gone = JournalError(f"journal {self._name} closed before this was committed")
        self._uncommitted = fail_all(leftover, gone)
        with self._cond:
            controls, self._controls = self._controls, []
        for control in controls:
            self._resolve(control.future, _Failure(gone))
        if self._writer_done is not None and not self._writer_done.done():
            self._writer_done.set_result(None)

    # -- reading ---------------------------------------------------------------------------

    async def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        self._batch()
        return await asyncio.to_thread(self._with_reader, read)

    def _with_reader(self, read: Callable[[sqlite3.Connection], _T]) -> _T:
        with self._readers_lock:
            if self._closed:
                raise JournalError(f"journal {self._name} is closed")
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
        try:
            return read(conn)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self._name} cannot be read: {exc}") from exc
        finally:
            with self._readers_lock:
                if self._closed:
                    conn.close()
                else:
                    self._idle_readers.append(conn)

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        """The execution with this id, or None."""
        return await self._read(functools.partial(select_record, execution_id=execution_id))

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
            clauses.append("e.workflow = ?")
            params.append(where.workflow)
        if where.states:
            clauses.append(f"e.state IN ({', '.join('?' * len(where.states))})")
            params.extend(sorted(state.value for state in where.states))
        if cursor is not None:
            clauses.append("(e.started_at, e.execution_id) < (?, ?)")
            params.extend(cursor)
        sql = f"SELECT {RECORD_COLUMNS}"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY e.started_at DESC, e.execution_id DESC LIMIT ?"
        params.append(page_size + 1)

        def read(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            return [record_from_row(row) for row in conn.execute(sql, params)]

        found = await self._read(read)
        return execution_page(found, page_size)

    async def events(self, execution_id: str, after: int = 0) -> list[EventEntry]:
        """The committed events of an execution with a sequence above ``after``, in order."""

        def read(conn: sqlite3.Connection) -> list[EventEntry]:
            rows = conn.execute(
                "SELECT sequence, time, kind, data FROM events"
                " WHERE execution_id = ? AND sequence > ? ORDER BY sequence",
                (execution_id, after),
            )
            return [
                EventEntry(execution_id, sequence, at, kind, json.loads(data))
                for sequence, at, kind, data in rows
            ]

        return await self._read(read)

    async def attempts(self, execution_id: str) -> list[Attempt]:
        """Every attempt of an execution, in the order their intents were committed."""

        def read(conn: sqlite3.Connection) -> list[Attempt]:
            rows = conn.execute(
                "SELECT step, compensation, attempt, started_at, request, ended_at, response,"
                " error FROM attempts WHERE execution_id = ? ORDER BY rowid",
                (execution_id,),
            )
            return [
                Attempt(
                    step=step,
                    compensation=bool(compensation),
                    attempt=attempt,
                    started_at=started_at,
                    request=json.loads(request),
                    ended_at=ended_at,
                    response=loads_or_none(response),
                    error=loads_or_none(error),
                )
                for step, compensation, attempt, started_at, request, ended_at, response, error in rows
            ]

        return await self._read(read)

    async def wait_events(self, execution_id: str, after: int, timeout: float) -> None:  # noqa: ASYNC109
        """Return once an event with a sequence above ``after`` is committed, or after ``timeout``."""
        loop = self._running_loop()
        # Registered before the read, so a commit landing between the two still wakes it.
        waiter: asyncio.Future[None] = loop.create_future()
        entry = (after, waiter)
        waiters = self._waiters.setdefault(execution_id, [])
        waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                last = await self._read(functools.partial(last_sequence, execution_id=execution_id))
                if last is None or last > after:
                    return
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters.remove(entry)
            if not waiters:
                self._waiters.pop(execution_id, None)
