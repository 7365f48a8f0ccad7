"""The SQLite journal's signals (DESIGN §13): the methods :class:`~.sqlite.SqliteJournal` gets.

Writes (``add_signal``, ``note_signal``) are operations of the one writer thread, so they are
ordered after everything submitted before them and atomic without locks: of two adds of one id,
the one the writer runs first inserts it and the other finds it. Reads run on the journal's
read connections. The table and its indexes are migration 2 (:mod:`.sqlite_schema`); its
``sequence`` is an AUTOINCREMENT rowid, assigned in the order the writer inserts.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from maestro_gateway.journal.base import SignalPage, SignalRecord
from maestro_gateway.journal.paging import check_page_size, decode_signal_token, signal_page
from maestro_gateway.journal.signals import noted, params_json
from maestro_gateway.journal.sqlite_schema import (
    INSERT_SIGNAL,
    SELECT_SIGNALS_SINCE,
    SELECT_UNDISPATCHED,
    SIGNAL_COLUMNS,
    UPDATE_LINEAGE,
    lineage_params,
    select_signal,
    signal_from_row,
    signal_params,
)

_T = TypeVar("_T")


class SqliteSignals:
    """Signals through the writer (``_write``) and the readers (``_read``) of the journal."""

    __slots__ = ()

    if TYPE_CHECKING:
        # Provided by SqliteJournal.
        async def _read(self, read: Callable[[sqlite3.Connection], _T]) -> _T: ...
        async def _write(self, run: Callable[[sqlite3.Connection], _T]) -> _T: ...

    async def add_signal(self, signal: SignalRecord) -> SignalRecord | None:
        """Commit a new signal (its ``sequence`` assigned); return None, or the stored signal
        when the id is taken (then nothing is written).

        Raises:
            JournalError: the journal is not open.
            TypeError: a value in its params cannot be stored.
        """
        params = signal_params(signal, params_json(signal.params))

        def run(conn: sqlite3.Connection) -> SignalRecord | None:
            if conn.execute(INSERT_SIGNAL, params).rowcount:
                return None
            return select_signal(conn, signal.signal_id)

        result: SignalRecord | None = await self._write(run)
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
        ``dispatched``, mark it dispatched; committed when it returns. Unknown ids are ignored."""
        # Copies: the writer applies the note later, whatever the caller does with its lists.
        triggered, woke, not_matched = tuple(triggered), tuple(woke), tuple(not_matched)

        def run(conn: sqlite3.Connection) -> None:
            # Read and written in the writer's transaction: no other write comes between.
            found = select_signal(conn, signal_id)
            if found is None:
                return
            changed = noted(
                found,
                triggered=triggered,
                woke=woke,
                not_matched=not_matched,
                dispatched=dispatched,
            )
            if changed != found:
                conn.execute(UPDATE_LINEAGE, lineage_params(changed))

        await self._write(run)

    async def get_signal(self, signal_id: str) -> SignalRecord | None:
        """The signal with this id, or None."""
        return await self._read(functools.partial(select_signal, signal_id=signal_id))

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
            clauses.append("name = ?")
            params.append(name)
        if producer_execution:
            # The redundant test lets SQLite use the partial index on external-less rows.
            clauses.append("producer_execution = ? AND producer_execution != ''")
            params.append(producer_execution)
        if below is not None:
            clauses.append("sequence < ?")
            params.append(below)
        sql = f"SELECT {SIGNAL_COLUMNS} FROM signals"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY sequence DESC LIMIT ?"
        params.append(page_size + 1)

        def read(conn: sqlite3.Connection) -> list[SignalRecord]:
            return [signal_from_row(row) for row in conn.execute(sql, params)]

        found = await self._read(read)
        return signal_page(found, page_size)

    async def signals_since(self, name: str, since: float, after: int = 0) -> list[SignalRecord]:
        """Signals called ``name`` received at wall-clock ``since`` or later and with a sequence
        above ``after``, oldest first (what a ``wait`` step may match)."""

        def read(conn: sqlite3.Connection) -> list[SignalRecord]:
            rows = conn.execute(SELECT_SIGNALS_SINCE, (name, after, since))
            return [signal_from_row(row) for row in rows]

        return await self._read(read)

    async def undispatched_signals(self) -> list[SignalRecord]:
        """Signals not marked dispatched, oldest first (recovery dispatches them again)."""

        def read(conn: sqlite3.Connection) -> list[SignalRecord]:
            return [signal_from_row(row) for row in conn.execute(SELECT_UNDISPATCHED)]

        return await self._read(read)
