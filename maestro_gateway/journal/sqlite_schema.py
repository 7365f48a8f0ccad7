"""The SQLite journal's file: its schema and migrations, its statements, and the row codecs.

Values are stored as compact JSON text, and each distinct workflow definition once
(``definitions``, keyed by its hash), shared by every execution that runs it.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from maestro_gateway.journal.base import (
    EventEntry,
    ExecutionRecord,
    ExecutionState,
    IntentEntry,
    OutcomeEntry,
    SignalRecord,
    StateEntry,
)

#: ``PRAGMA application_id`` of a journal ("MGTW"): tells our file from another program's database.
APPLICATION_ID = 0x4D475457

#: The states of an execution that still has work to do, as an SQL list.
UNFINISHED = "('RUNNING', 'COMPENSATING')"

# Each migration is applied once, in order, in the transaction that opens the journal; the file's
# ``user_version`` is the number applied. Never edit one that has shipped: append another.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # The definition text is stored once per distinct source, not once per execution.
        """CREATE TABLE definitions (
            source_hash TEXT PRIMARY KEY,
            source TEXT NOT NULL
        )""",
        """CREATE TABLE executions (
            execution_id TEXT PRIMARY KEY,
            workflow TEXT NOT NULL,
            source_hash TEXT NOT NULL,
            path TEXT NOT NULL,
            input TEXT NOT NULL,
            labels TEXT NOT NULL,
            metadata TEXT NOT NULL,
            started_at REAL NOT NULL,
            workflow_deadline REAL,
            caller_deadline REAL,
            state TEXT NOT NULL,
            ended_at REAL,
            result TEXT,
            triggered_by TEXT NOT NULL,
            owner TEXT NOT NULL,
            lease_until REAL NOT NULL,
            last_sequence INTEGER NOT NULL
        )""",
        "CREATE INDEX executions_newest ON executions (started_at, execution_id)",
        "CREATE INDEX executions_workflow ON executions (workflow, started_at, execution_id)",
        "CREATE INDEX executions_state ON executions (state, started_at, execution_id)",
        "CREATE INDEX executions_ended ON executions (ended_at) WHERE ended_at IS NOT NULL",
        "CREATE INDEX executions_source ON executions (source_hash)",
        """CREATE TABLE events (
            execution_id TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            time REAL NOT NULL,
            kind TEXT NOT NULL,
            data TEXT NOT NULL,
            PRIMARY KEY (execution_id, sequence)
        ) WITHOUT ROWID""",
        # A rowid table on purpose: ``ORDER BY rowid`` is the order the intents were committed.
        """CREATE TABLE attempts (
            execution_id TEXT NOT NULL,
            step TEXT NOT NULL,
            compensation INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            started_at REAL NOT NULL,
            request TEXT NOT NULL,
            ended_at REAL,
            response TEXT,
            error TEXT,
            PRIMARY KEY (execution_id, step, compensation, attempt)
        )""",
    ),
    (
        # Signals (DESIGN §13). AUTOINCREMENT on purpose: a sequence is never reused, not even
        # after retention deleted the newest signal, so ``signals_since(after=…)`` misses none.
        """CREATE TABLE signals (
            sequence INTEGER PRIMARY KEY AUTOINCREMENT,
            signal_id TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            params TEXT NOT NULL,
            time REAL NOT NULL,
            producer_execution TEXT NOT NULL,
            producer_step TEXT NOT NULL,
            triggered TEXT NOT NULL,
            woke TEXT NOT NULL,
            not_matched TEXT NOT NULL,
            dispatched INTEGER NOT NULL
        )""",
        "CREATE INDEX signals_name ON signals (name, sequence)",
        "CREATE INDEX signals_producer ON signals (producer_execution, sequence)"
        " WHERE producer_execution != ''",
        "CREATE INDEX signals_time ON signals (time)",
        "CREATE INDEX signals_undispatched ON signals (sequence) WHERE dispatched = 0",
    ),
)

#: The schema version this code writes (``PRAGMA user_version`` of an up-to-date journal).
SCHEMA_VERSION = len(MIGRATIONS)

RECORD_COLUMNS = (
    "e.execution_id, e.workflow, d.source, e.path, e.input, e.labels, e.metadata, e.started_at,"
    " e.workflow_deadline, e.caller_deadline, e.state, e.ended_at, e.result, e.last_sequence,"
    " e.triggered_by, e.owner, e.lease_until"
    " FROM executions e JOIN definitions d ON d.source_hash = e.source_hash"
)

INSERT_EXECUTION = (
    "INSERT INTO executions (execution_id, workflow, source_hash, path, input, labels, metadata,"
    " started_at, workflow_deadline, caller_deadline, state, ended_at, result, triggered_by, owner,"
    " lease_until, last_sequence) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (execution_id) DO NOTHING"
)
INSERT_DEFINITION = (
    "INSERT INTO definitions (source_hash, source) VALUES (?, ?) ON CONFLICT DO NOTHING"
)
# Entries of an execution that is gone (deleted by retention while they were in flight) are
# dropped, as MemoryJournal drops them: an orphan row would resurface if the id were reused.
INSERT_EVENT = (
    "INSERT INTO events (execution_id, sequence, time, kind, data)"
    " SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM executions WHERE execution_id = ?1)"
    " ON CONFLICT DO NOTHING"
)
UPSERT_INTENT = (
    "INSERT INTO attempts (execution_id, step, compensation, attempt, started_at, request)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6"
    " WHERE EXISTS (SELECT 1 FROM executions WHERE execution_id = ?1)"
    " ON CONFLICT DO UPDATE SET started_at = excluded.started_at, request = excluded.request,"
    " ended_at = NULL, response = NULL, error = NULL"
)
UPDATE_OUTCOME = (
    "UPDATE attempts SET ended_at = ?, response = ?, error = ?"
    " WHERE execution_id = ? AND step = ? AND compensation = ? AND attempt = ?"
)
UPDATE_STATE = (
    "UPDATE executions SET state = ?1, ended_at = ?2,"
    " result = CASE WHEN ?3 THEN ?4 ELSE result END,"
    " owner = CASE WHEN ?3 THEN '' ELSE owner END,"
    " lease_until = CASE WHEN ?3 THEN 0 ELSE lease_until END"
    " WHERE execution_id = ?5"
)
UPDATE_LAST_SEQUENCE = (
    "UPDATE executions SET last_sequence = max(last_sequence, ?) WHERE execution_id = ?"
)

SIGNAL_COLUMNS = (
    "signal_id, name, params, time, producer_execution, producer_step, triggered, woke,"
    " not_matched, dispatched, sequence"
)
INSERT_SIGNAL = (
    "INSERT INTO signals (signal_id, name, params, time, producer_execution, producer_step,"
    " triggered, woke, not_matched, dispatched) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (signal_id) DO NOTHING"
)
SELECT_SIGNAL = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE signal_id = ?"
SELECT_SIGNALS_SINCE = (
    f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE name = ? AND sequence > ? AND time >= ?"
    " ORDER BY sequence"
)
SELECT_UNDISPATCHED = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE dispatched = 0 ORDER BY sequence"
UPDATE_LINEAGE = (
    "UPDATE signals SET triggered = ?, woke = ?, not_matched = ?, dispatched = ?"
    " WHERE signal_id = ?"
)
DELETE_SIGNALS = "DELETE FROM signals WHERE time < ?"


def jsonable(value: object) -> object:
    """What a value expressions can produce but JSON cannot hold is stored as gRPC would send it.

    Bytes as base64, timestamps as RFC 3339 in UTC, durations as ``"1.5s"`` (proto3 JSON), so a
    template that yields ``timestamp(...)`` never stops an execution from being journaled.
    """
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g}s"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# The exact encoder, for what orjson refuses. ASCII output on purpose: a lone surrogate (valid
# in a Python str, e.g. from a JSON "\ud800") survives as an escape instead of failing to bind
# as UTF-8 in the writer thread.
_exact_dumps = functools.partial(json.dumps, separators=(",", ":"), default=jsonable)


# Datetimes and dataclasses go through ``jsonable`` as with ``json`` (orjson has its own
# formats for them).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def dumps(value: object) -> str:
    """``value`` as compact JSON text, what :func:`jsonable` maps included.

    orjson first: the journal encodes every entry on the event loop, and it is several times
    faster than ``json``. What it refuses — a lone surrogate, an integer beyond 64 bits, a key
    that is not a string — goes through ``json`` instead. Numbers JSON cannot hold (NaN,
    infinities) are written as ``null`` (orjson's rule; a ``google.protobuf.Value`` cannot carry
    them to a client either).

    Raises:
        TypeError: a value is not JSON-ready.
    """
    try:
        return orjson.dumps(value, default=jsonable, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return _exact_dumps(value)


def loads(text: str | bytes) -> Any:
    """JSON text decoded: orjson, or ``json`` for what only it reads (a lone surrogate's
    escape, or ``NaN`` in a journal written before the encoder was orjson)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def loads_or_none(text: str | None) -> Any:
    """``text`` decoded, or None for NULL."""
    return None if text is None else loads(text)


def record_from_row(row: Sequence[Any]) -> ExecutionRecord:
    """The record of a row selected with ``RECORD_COLUMNS``."""
    return ExecutionRecord(
        execution_id=row[0],
        workflow=row[1],
        source=row[2],
        path=row[3],
        input=loads(row[4]),
        labels=loads(row[5]),
        metadata=tuple((str(key), str(value)) for key, value in loads(row[6])),
        started_at=row[7],
        workflow_deadline=row[8],
        caller_deadline=row[9],
        state=ExecutionState(row[10]),
        ended_at=row[11],
        result=loads_or_none(row[12]),
        last_sequence=row[13],
        triggered_by=row[14],
        owner=row[15],
        lease_until=row[16],
    )


def record_params(record: ExecutionRecord) -> tuple[Any, ...]:
    """The parameters of ``INSERT_EXECUTION``."""
    return (
        record.execution_id,
        record.workflow,
        record.source_hash,
        record.path,
        dumps(record.input),
        dumps(record.labels),
        dumps([list(pair) for pair in record.metadata]),
        record.started_at,
        record.workflow_deadline,
        record.caller_deadline,
        record.state.value,
        record.ended_at,
        None if record.result is None else dumps(record.result),
        record.triggered_by,
        record.owner,
        record.lease_until,
        record.last_sequence,
    )


class Row(Protocol):
    """A row of either driver (``sqlite3``'s tuple, ``asyncpg.Record``), read by position."""

    def __getitem__(self, index: int, /) -> Any: ...


def signal_from_row(row: Row) -> SignalRecord:
    """The signal of a row selected with ``SIGNAL_COLUMNS`` (SQLite's or PostgreSQL's)."""
    return SignalRecord(
        signal_id=row[0],
        name=row[1],
        params=loads(row[2]),
        time=row[3],
        producer_execution=row[4],
        producer_step=row[5],
        triggered=tuple(loads(row[6])),
        woke=tuple(loads(row[7])),
        not_matched=tuple(loads(row[8])),
        dispatched=bool(row[9]),
        sequence=int(row[10]),
    )


def signal_params(signal: SignalRecord, params: str) -> tuple[Any, ...]:
    """The parameters of ``INSERT_SIGNAL``: ``signal`` with its ``params`` already as JSON
    (:func:`~maestro_gateway.journal.signals.params_json`), its lineage without duplicates."""
    return (
        signal.signal_id,
        signal.name,
        params,
        signal.time,
        signal.producer_execution,
        signal.producer_step,
        dumps(list(dict.fromkeys(signal.triggered))),
        dumps(list(dict.fromkeys(signal.woke))),
        dumps(list(dict.fromkeys(signal.not_matched))),
        signal.dispatched,
    )


def lineage_params(signal: SignalRecord) -> tuple[Any, ...]:
    """The parameters of ``UPDATE_LINEAGE`` that give ``signal``'s row ``signal``'s lineage."""
    return (
        dumps(list(signal.triggered)),
        dumps(list(signal.woke)),
        dumps(list(signal.not_matched)),
        signal.dispatched,
        signal.signal_id,
    )


def select_record(conn: sqlite3.Connection, execution_id: str) -> ExecutionRecord | None:
    row = conn.execute(f"SELECT {RECORD_COLUMNS} WHERE e.execution_id = ?", (execution_id,))
    found = row.fetchone()
    return record_from_row(found) if found is not None else None


def select_signal(conn: sqlite3.Connection, signal_id: str) -> SignalRecord | None:
    found = conn.execute(SELECT_SIGNAL, (signal_id,)).fetchone()
    return signal_from_row(found) if found is not None else None


def last_sequence(conn: sqlite3.Connection, execution_id: str) -> int | None:
    """The ``last_sequence`` of an execution, or None when there is no such execution."""
    row = conn.execute(
        "SELECT last_sequence FROM executions WHERE execution_id = ?", (execution_id,)
    ).fetchone()
    return None if row is None else int(row[0])


def event_params(entry: EventEntry) -> tuple[Any, ...]:
    """The parameters of ``INSERT_EVENT``."""
    return (entry.execution_id, entry.sequence, entry.time, entry.kind, dumps(entry.data))


def intent_params(entry: IntentEntry) -> tuple[Any, ...]:
    """The parameters of ``UPSERT_INTENT``."""
    return (
        entry.execution_id,
        entry.step,
        entry.compensation,
        entry.attempt,
        entry.time,
        dumps(entry.request),
    )


def outcome_params(entry: OutcomeEntry) -> tuple[Any, ...]:
    """The parameters of ``UPDATE_OUTCOME``."""
    return (
        entry.time,
        dumps(entry.response),
        None if entry.error is None else dumps(entry.error),
        entry.execution_id,
        entry.step,
        entry.compensation,
        entry.attempt,
    )


def state_params(entry: StateEntry) -> tuple[Any, ...]:
    """The parameters of ``UPDATE_STATE``."""
    finished = entry.state.finished
    return (
        entry.state.value,
        entry.time if finished else None,
        finished,
        None if entry.result is None else dumps(entry.result),
        entry.execution_id,
    )


def migrate(conn: sqlite3.Connection, version: int, sync: str) -> None:
    """Put ``conn``'s file (at schema ``version``) in WAL mode and bring it to ``SCHEMA_VERSION``.

    One transaction: the migrations still missing, then every unfinished execution handed back
    (the caller holds the file's lock, so no other gateway runs any of them).

    Raises:
        ValueError: the file cannot be put in WAL mode.
    """
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise ValueError(f"it cannot use WAL mode (it stays in {mode})")
    conn.execute(f"PRAGMA synchronous = {sync.upper()}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                conn.execute(statement)
        if version < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(
            "UPDATE executions SET owner = '', lease_until = 0"
            f" WHERE state IN {UNFINISHED} AND owner != ''"
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
