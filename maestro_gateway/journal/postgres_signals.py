"""The PostgreSQL journal's signals (DESIGN §13): the methods :class:`~.postgres.PostgresJournal`
gets.

Writes (``add_signal``, ``note_signal``) are operations of the journal's writer, in the
transaction of their group, ordered after everything submitted before them. Each first takes
the advisory lock ``SIGNAL_LOCK`` (held to the commit), so signal writes of every replica
happen one transaction after the other: an id is inserted once (``ON CONFLICT DO NOTHING``
under the lock: of two adds of one id, on any replicas, the later finds the earlier's row), a
note reads and writes the lineage with nothing between, and sequences are committed in the
order they are drawn. Reads run on the reader pool. The table and its indexes are migration 2
(:mod:`.postgres_schema`).

A commit whose acknowledgement was lost may have happened: the retried ``add_signal`` then finds
its own row, and recognises it (same name, params, time and producer) as its own; a note applied
twice changes nothing the second time.

Fencing (DESIGN §11): once the journal writes as a registered owner, a signal an execution
produced (an ``emit`` step's) and a note made ``by`` an execution are written only while that
owner holds the execution: its row is locked (``FOR NO KEY UPDATE``, as the entries of a group
lock theirs) before the signal lock, in the same transaction, so a replica claiming it meanwhile
either waits for the commit or, having claimed first, makes the write be refused. A refused
write returns :class:`~.base.LeaseLost` as its result: the writer tells ``on_lost`` before any
``then`` of the group runs, and the caller gets it raised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from maestro_gateway.journal.base import LeaseLost, SignalPage, SignalRecord
from maestro_gateway.journal.paging import check_page_size, decode_signal_token, signal_page
from maestro_gateway.journal.postgres_schema import (
    INSERT_SIGNAL,
    LOCK_HELD,
    LOCK_SIGNALS,
    SELECT_SIGNAL,
    SELECT_SIGNALS_SINCE,
    SELECT_UNDISPATCHED,
    SIGNAL_COLUMNS,
    SIGNAL_LOCK,
    UPDATE_LINEAGE,
)
from maestro_gateway.journal.signals import noted, params_json
from maestro_gateway.journal.sqlite_schema import lineage_params, signal_from_row, signal_params

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    Connection = asyncpg.Connection[asyncpg.Record]
    Reader = PoolConnectionProxy[asyncpg.Record]

_T = TypeVar("_T")


def same_signal(existing: SignalRecord, signal: SignalRecord, params: str) -> bool:
    """Whether ``existing`` is the row ``signal`` (its params as ``params``) would have made."""
    return (
        existing.name == signal.name
        and existing.time == signal.time
        and existing.producer_execution == signal.producer_execution
        and existing.producer_step == signal.producer_step
        and params_json(existing.params) == params
    )


async def _select_signal(conn: Connection | Reader, signal_id: str) -> SignalRecord | None:
    row = await conn.fetchrow(SELECT_SIGNAL, signal_id)
    return signal_from_row(row) if row is not None else None


class PostgresSignals:
    """Signals through the writer (``_write``) and the reader pool (``_read``) of the journal."""

    __slots__ = ()

    if TYPE_CHECKING:
        # Provided by PostgresJournal.
        _owner: str | None
        _disowned: set[str]

        async def _read(self, read: Callable[[Reader], Awaitable[_T]]) -> _T: ...
        async def _write(self, run: Callable[[Connection, bool], Awaitable[_T]]) -> _T: ...

    async def add_signal(self, signal: SignalRecord) -> SignalRecord | None:
        """Commit a new signal (its ``sequence`` assigned); return None, or the stored signal
        when the id is taken (then nothing is written).

        Raises:
            JournalError: the journal is not open, or the server refused the signal.
            TypeError: a value in its params cannot be stored.
        """
        params = params_json(signal.params)
        row = signal_params(signal, params)
        producer = signal.producer_execution
        self._refuse_disowned(producer)

        async def run(conn: Connection, retried: bool) -> SignalRecord | LeaseLost | None:
            if not await self._holds(conn, producer):
                return LeaseLost(producer)
            await conn.execute(LOCK_SIGNALS, SIGNAL_LOCK)
            if await conn.fetchval(INSERT_SIGNAL, *row) is not None:
                return None
            existing = await _select_signal(conn, signal.signal_id)
            if retried and existing is not None and same_signal(existing, signal, params):
                return None  # our own insert, committed by the attempt whose answer was lost
            return existing

        result = await self._write(run)
        assert not isinstance(result, LeaseLost)  # the writer raises it
        return result

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

        Raises:
            LeaseLost: made ``by`` an execution this replica no longer holds: nothing written.
        """
        # Copies: the writer applies the note later, whatever the caller does with its lists.
        triggered, woke, not_matched = tuple(triggered), tuple(woke), tuple(not_matched)
        self._refuse_disowned(by)

        async def run(conn: Connection, retried: bool) -> LeaseLost | None:
            if not await self._holds(conn, by):
                return LeaseLost(by)
            # Under the lock no other replica writes a signal until this transaction commits.
            await conn.execute(LOCK_SIGNALS, SIGNAL_LOCK)
            found = await _select_signal(conn, signal_id)
            if found is None:
                return None
            changed = noted(
                found,
                triggered=triggered,
                woke=woke,
                not_matched=not_matched,
                dispatched=dispatched,
            )
            if changed != found:
                await conn.execute(UPDATE_LINEAGE, *lineage_params(changed))
            return None

        await self._write(run)

    def _refuse_disowned(self, execution_id: str) -> None:
        """Raise LeaseLost at once for a write on behalf of an execution this process lost."""
        if execution_id and execution_id in self._disowned:
            raise LeaseLost(execution_id)

    async def _holds(self, conn: Connection, execution_id: str) -> bool:
        """Whether a write on behalf of ``execution_id`` ("": of none) may go: no owner is
        registered, or it holds the execution (its row then locked until the commit)."""
        owner = self._owner
        if not execution_id or owner is None:
            return True
        return await conn.fetchval(LOCK_HELD, execution_id, owner) is not None

    async def get_signal(self, signal_id: str) -> SignalRecord | None:
        """The signal with this id, or None."""

        async def read(conn: Reader) -> SignalRecord | None:
            return await _select_signal(conn, signal_id)

        return await self._read(read)

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
            ValueError: ``page_size`` is below 1.
        """
        below = decode_signal_token(page_token)
        check_page_size(page_size)
        clauses: list[str] = []
        params: list[Any] = []
        if name:
            params.append(name)
            clauses.append(f"name = ${len(params)}::text")
        if producer_execution:
            params.append(producer_execution)
            # The redundant test lets a generic plan use the partial index all the same.
            clauses.append(
                f"producer_execution = ${len(params)}::text AND producer_execution <> ''"
            )
        if below is not None:
            params.append(below)
            clauses.append(f"sequence < ${len(params)}::bigint")
        sql = f"SELECT {SIGNAL_COLUMNS} FROM maestro_signals"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        params.append(page_size + 1)
        sql += f" ORDER BY sequence DESC LIMIT ${len(params)}"

        async def read(conn: Reader) -> list[SignalRecord]:
            return [signal_from_row(row) for row in await conn.fetch(sql, *params)]

        found = await self._read(read)
        return signal_page(found, page_size)

    async def signals_since(self, name: str, since: float, after: int = 0) -> list[SignalRecord]:
        """Signals called ``name`` received at wall-clock ``since`` or later and with a sequence
        above ``after``, oldest first (what a ``wait`` step may match)."""

        async def read(conn: Reader) -> list[SignalRecord]:
            rows = await conn.fetch(SELECT_SIGNALS_SINCE, name, after, since)
            return [signal_from_row(row) for row in rows]

        return await self._read(read)

    async def undispatched_signals(self) -> list[SignalRecord]:
        """Signals not marked dispatched, oldest first (recovery dispatches them again)."""

        async def read(conn: Reader) -> list[SignalRecord]:
            return [signal_from_row(row) for row in await conn.fetch(SELECT_UNDISPATCHED)]

        return await self._read(read)
