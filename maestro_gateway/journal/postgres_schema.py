"""The PostgreSQL journal's tables: schema and migrations, statements, and how rows read back.

The tables carry a ``maestro_`` prefix, so a journal can share a database (and its schema on the
search path) with other programs' tables. Values are stored as compact JSON text, encoded exactly
as the SQLite journal encodes them (:mod:`.sqlite_schema`: the parameter tuples are the same), and
each distinct workflow definition once (``maestro_definitions``). Times are seconds since the
epoch in ``double precision``, as the records hold them.

Placeholders are PostgreSQL's own (``$1``): both drivers take them as they are.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import asyncpg

from maestro_gateway.journal.base import JournalError

if TYPE_CHECKING:
    from asyncpg import Record

    Connection = asyncpg.Connection[Record]

from maestro_gateway.journal.base import ExecutionRecord, ExecutionState
from maestro_gateway.journal.sqlite_schema import loads_or_none

#: The key of the advisory lock held while the schema is checked and migrated ("MGTW"): two
#: replicas starting at once migrate one after the other, and the second finds nothing to do.
MIGRATION_LOCK = 0x4D475457

#: The key of the advisory lock a transaction holds from its first signal write to its commit
#: ("MGTWSG"): signals are numbered in the order they commit, so a reader that has seen signal
#: ``n`` never finds one below ``n`` committed later (``signals_since(after=n)`` misses none).
SIGNAL_LOCK = 0x4D4754575347

#: The states of an execution that still has work to do, as an SQL list.
UNFINISHED = "('RUNNING', 'COMPENSATING')"

#: One row that says which schema version the tables have (and that they are a journal's).
META_TABLE = "maestro_journal"

# Each migration is applied once, in order, in the transaction that checks the version under the
# advisory lock; ``maestro_journal.schema_version`` is the number applied. Never edit one that
# has shipped: append another.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {META_TABLE} (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            schema_version integer NOT NULL
        )""",
        """CREATE TABLE maestro_definitions (
            source_hash text PRIMARY KEY,
            source text NOT NULL
        )""",
        """CREATE TABLE maestro_executions (
            execution_id text PRIMARY KEY,
            workflow text NOT NULL,
            source_hash text NOT NULL,
            path text NOT NULL,
            input text NOT NULL,
            labels text NOT NULL,
            metadata text NOT NULL,
            started_at double precision NOT NULL,
            workflow_deadline double precision,
            caller_deadline double precision,
            state text NOT NULL,
            ended_at double precision,
            result text,
            triggered_by text NOT NULL,
            owner text NOT NULL,
            lease_until double precision NOT NULL,
            last_sequence bigint NOT NULL
        )""",
        "CREATE INDEX maestro_executions_newest ON maestro_executions (started_at, execution_id)",
        "CREATE INDEX maestro_executions_workflow"
        " ON maestro_executions (workflow, started_at, execution_id)",
        "CREATE INDEX maestro_executions_state"
        " ON maestro_executions (state, started_at, execution_id)",
        "CREATE INDEX maestro_executions_ended"
        " ON maestro_executions (ended_at) WHERE ended_at IS NOT NULL",
        "CREATE INDEX maestro_executions_source ON maestro_executions (source_hash)",
        # What claim scans: the unfinished executions, by lease.
        "CREATE INDEX maestro_executions_unfinished"
        f" ON maestro_executions (lease_until) WHERE state IN {UNFINISHED}",
        """CREATE TABLE maestro_events (
            execution_id text NOT NULL,
            sequence bigint NOT NULL,
            time double precision NOT NULL,
            kind text NOT NULL,
            data text NOT NULL,
            PRIMARY KEY (execution_id, sequence)
        )""",
        # ``seq`` is the order the intents were committed (an upsert keeps the first one's).
        """CREATE TABLE maestro_attempts (
            seq bigint GENERATED ALWAYS AS IDENTITY,
            execution_id text NOT NULL,
            step text NOT NULL,
            compensation boolean NOT NULL,
            attempt integer NOT NULL,
            started_at double precision NOT NULL,
            request text NOT NULL,
            ended_at double precision,
            response text,
            error text,
            PRIMARY KEY (execution_id, step, compensation, attempt)
        )""",
    ),
    (
        # Signals (DESIGN §13). An identity never hands out a number twice, so a sequence is
        # not reused after retention deleted the newest signal.
        """CREATE TABLE maestro_signals (
            sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            signal_id text NOT NULL UNIQUE,
            name text NOT NULL,
            params text NOT NULL,
            time double precision NOT NULL,
            producer_execution text NOT NULL,
            producer_step text NOT NULL,
            triggered text NOT NULL,
            woke text NOT NULL,
            not_matched text NOT NULL,
            dispatched boolean NOT NULL
        )""",
        "CREATE INDEX maestro_signals_name ON maestro_signals (name, sequence)",
        "CREATE INDEX maestro_signals_producer ON maestro_signals (producer_execution, sequence)"
        " WHERE producer_execution <> ''",
        "CREATE INDEX maestro_signals_time ON maestro_signals (time)",
        "CREATE INDEX maestro_signals_undispatched ON maestro_signals (sequence)"
        " WHERE NOT dispatched",
    ),
    (
        # Cancels asked for on one replica of an execution another one runs (DESIGN §11): the
        # owner is told by NOTIFY and polls; a request outlives a takeover, so the next owner
        # honours it too. Deleted with its execution.
        """CREATE TABLE maestro_cancels (
            execution_id text PRIMARY KEY,
            reason text NOT NULL,
            requested_at double precision NOT NULL
        )""",
    ),
)

#: The schema version this code writes.
SCHEMA_VERSION = len(MIGRATIONS)

SELECT_VERSION = f"SELECT schema_version FROM {META_TABLE}"
TABLE_EXISTS = "SELECT to_regclass($1) IS NOT NULL"

RECORD_COLUMNS = (
    "e.execution_id, e.workflow, d.source, e.path, e.input, e.labels, e.metadata, e.started_at,"
    " e.workflow_deadline, e.caller_deadline, e.state, e.ended_at, e.result, e.last_sequence,"
    " e.triggered_by, e.owner, e.lease_until"
)
RECORD_FROM = (
    f"SELECT {RECORD_COLUMNS} FROM maestro_executions e"
    " JOIN maestro_definitions d ON d.source_hash = e.source_hash"
)
SELECT_RECORD = f"{RECORD_FROM} WHERE e.execution_id = $1"

SET_VERSION = (
    f"INSERT INTO {META_TABLE} (singleton, schema_version) VALUES (true, $1)"
    " ON CONFLICT (singleton) DO UPDATE SET schema_version = excluded.schema_version"
)

# The records of a group's creates, in one statement; those whose id was taken come back not.
CREATE_EXECUTIONS = (
    "INSERT INTO maestro_executions (execution_id, workflow, source_hash, path, input, labels,"
    " metadata, started_at, workflow_deadline, caller_deadline, state, ended_at, result,"
    " triggered_by, owner, lease_until, last_sequence)"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
    " $6::text[], $7::text[], $8::float8[], $9::float8[], $10::float8[], $11::text[],"
    " $12::float8[], $13::text[], $14::text[], $15::text[], $16::float8[], $17::bigint[])"
    " ON CONFLICT (execution_id) DO NOTHING RETURNING execution_id"
)
# The definition inserted, or the one there share-locked (non-zero either way): retention on
# another replica locks a definition before it checks that no execution uses it, so it waits
# for this transaction and then sees its execution. Zero: it was deleted meanwhile; try again.
KEEP_DEFINITION = (
    "WITH inserted AS ("
    "  INSERT INTO maestro_definitions (source_hash, source) VALUES ($1, $2)"
    "  ON CONFLICT DO NOTHING RETURNING 1"
    "), kept AS ("
    "  SELECT 1 FROM maestro_definitions WHERE source_hash = $1 FOR KEY SHARE"
    ") SELECT (SELECT count(*) FROM inserted) + (SELECT count(*) FROM kept)"
)
# Entries of an execution that is gone (deleted by retention while they were in flight) are
# dropped, as MemoryJournal drops them: an orphan row would resurface if the id were reused.
# Events go in one statement per group: one array per column.
INSERT_EVENTS = (
    "INSERT INTO maestro_events (execution_id, sequence, time, kind, data)"
    " SELECT v.execution_id, v.sequence, v.time, v.kind, v.data"
    " FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::text[], $5::text[])"
    " AS v(execution_id, sequence, time, kind, data)"
    " WHERE EXISTS (SELECT 1 FROM maestro_executions e WHERE e.execution_id = v.execution_id)"
    " ON CONFLICT DO NOTHING"
)
UPSERT_INTENT = (
    "INSERT INTO maestro_attempts (execution_id, step, compensation, attempt, started_at, request)"
    " SELECT $1::text, $2::text, $3::boolean, $4::integer, $5::float8, $6::text"
    " WHERE EXISTS (SELECT 1 FROM maestro_executions WHERE execution_id = $1::text)"
    " ON CONFLICT (execution_id, step, compensation, attempt) DO UPDATE"
    " SET started_at = excluded.started_at, request = excluded.request,"
    " ended_at = NULL, response = NULL, error = NULL"
)
UPDATE_OUTCOME = (
    "UPDATE maestro_attempts SET ended_at = $1, response = $2, error = $3"
    " WHERE execution_id = $4 AND step = $5 AND compensation = $6 AND attempt = $7"
)
UPDATE_STATE = (
    "UPDATE maestro_executions SET state = $1::text, ended_at = $2::float8,"
    " result = CASE WHEN $3::boolean THEN $4::text ELSE result END,"
    " owner = CASE WHEN $3::boolean THEN '' ELSE owner END,"
    " lease_until = CASE WHEN $3::boolean THEN 0 ELSE lease_until END"
    " WHERE execution_id = $5::text"
)
# Every execution's latest sequence in one statement, with the NOTIFY that tells the other
# replicas (an empty payload announces nothing).
UPDATE_LAST_SEQUENCES = (
    "WITH updated AS ("
    "  UPDATE maestro_executions e SET last_sequence = greatest(e.last_sequence, v.sequence)"
    "  FROM unnest($1::text[], $2::bigint[]) AS v(execution_id, sequence)"
    "  WHERE e.execution_id = v.execution_id RETURNING 1"
    ") SELECT CASE WHEN $4::text = '' THEN NULL ELSE pg_notify($3::text, $4::text) END"
)
# Fencing (DESIGN §11): the executions of a group's entries that still exist and, when an owner
# is given ($27; NULL: no fencing), that this owner holds, locked until the commit: a replica
# claiming one meanwhile either waits for us or, having committed first, makes us see its
# owner and skip the row (READ COMMITTED re-checks a locked row's condition on its newest
# version). Only these executions' entries are written. $28: every execution id of the group.
OWNED = (
    "SELECT execution_id FROM maestro_executions WHERE execution_id = ANY($28::text[])"
    " AND ($27::text IS NULL OR owner = $27::text) ORDER BY execution_id FOR NO KEY UPDATE"
)
FENCED = (
    "ARRAY(SELECT i FROM unnest($28::text[]) AS i WHERE i NOT IN (SELECT execution_id FROM owned))"
)
# The same lock, as a statement of its own (groups written in several statements): $1 ids, $2
# owner.
LOCK_OWNED = (
    "SELECT execution_id FROM maestro_executions WHERE execution_id = ANY($1::text[])"
    " AND owner = $2::text ORDER BY execution_id FOR NO KEY UPDATE"
)
# One execution's row, locked when the owner $2 holds it (a signal write on its behalf): $1 id.
LOCK_HELD = (
    "SELECT 1 FROM maestro_executions WHERE execution_id = $1::text AND owner = $2::text"
    " FOR NO KEY UPDATE"
)
# A group of entries only (no create, claim ...) in one statement, so one round trip and no
# BEGIN/COMMIT: the statement is its own transaction. Its parts see the table as it was before
# it, so the writer uses it only when no part depends on another (an outcome whose intent is in
# the same group, one attempt or one execution's state twice): else the statements above, in
# order, inside a transaction.
COMMIT_ENTRIES = (
    "WITH owned AS MATERIALIZED ("
    f"  {OWNED}"
    "), events AS ("
    "  INSERT INTO maestro_events (execution_id, sequence, time, kind, data)"
    "  SELECT v.execution_id, v.sequence, v.time, v.kind, v.data"
    "  FROM unnest($1::text[], $2::bigint[], $3::float8[], $4::text[], $5::text[])"
    "  AS v(execution_id, sequence, time, kind, data)"
    "  WHERE v.execution_id IN (SELECT execution_id FROM owned)"
    "  ON CONFLICT DO NOTHING"
    "), intents AS ("
    "  INSERT INTO maestro_attempts"
    "  (execution_id, step, compensation, attempt, started_at, request)"
    "  SELECT v.execution_id, v.step, v.compensation, v.attempt, v.started_at, v.request"
    "  FROM unnest($6::text[], $7::text[], $8::boolean[], $9::integer[], $10::float8[],"
    "  $11::text[]) AS v(execution_id, step, compensation, attempt, started_at, request)"
    "  WHERE v.execution_id IN (SELECT execution_id FROM owned)"
    "  ON CONFLICT (execution_id, step, compensation, attempt) DO UPDATE"
    "  SET started_at = excluded.started_at, request = excluded.request,"
    "  ended_at = NULL, response = NULL, error = NULL"
    "), outcomes AS ("
    "  UPDATE maestro_attempts a SET ended_at = v.ended_at, response = v.response, error = v.error"
    "  FROM unnest($12::float8[], $13::text[], $14::text[], $15::text[], $16::text[],"
    "  $17::boolean[], $18::integer[])"
    "  AS v(ended_at, response, error, execution_id, step, compensation, attempt)"
    "  WHERE a.execution_id = v.execution_id AND a.step = v.step"
    "  AND a.compensation = v.compensation AND a.attempt = v.attempt"
    "  AND v.execution_id IN (SELECT execution_id FROM owned)"
    "), executions AS ("
    "  UPDATE maestro_executions e SET"
    "  last_sequence = greatest(e.last_sequence, v.sequence),"
    "  state = coalesce(v.state, e.state),"
    "  ended_at = CASE WHEN v.state IS NULL THEN e.ended_at ELSE v.ended_at END,"
    "  result = CASE WHEN v.finished THEN v.result ELSE e.result END,"
    "  owner = CASE WHEN v.finished THEN '' ELSE e.owner END,"
    "  lease_until = CASE WHEN v.finished THEN 0 ELSE e.lease_until END"
    "  FROM unnest($19::text[], $20::bigint[], $21::text[], $22::float8[], $23::boolean[],"
    "  $24::text[]) AS v(execution_id, sequence, state, ended_at, finished, result)"
    "  WHERE e.execution_id = v.execution_id AND e.execution_id IN (SELECT execution_id FROM owned)"
    ") SELECT CASE WHEN $26::text = '' THEN NULL ELSE pg_notify($25::text, $26::text) END,"
    f" {FENCED}"
)
SELECT_LAST_SEQUENCE = "SELECT last_sequence FROM maestro_executions WHERE execution_id = $1"
SELECT_EVENTS = (
    "SELECT sequence, time, kind, data FROM maestro_events"
    " WHERE execution_id = $1 AND sequence > $2 ORDER BY sequence"
)
SELECT_ATTEMPTS = (
    "SELECT step, compensation, attempt, started_at, request, ended_at, response, error"
    " FROM maestro_attempts WHERE execution_id = $1 ORDER BY seq"
)
# Under a row lock: rows another replica's transaction holds (claiming or renewing them) are
# skipped, not waited for, so two claimers never take one execution and never block each other;
# at most $4 of them (NULL: all), the oldest first, so that claimers at once share them out.
CLAIM = (
    "WITH free AS ("
    f"  SELECT execution_id FROM maestro_executions WHERE state IN {UNFINISHED}"
    "   AND (owner = '' OR lease_until <= $2::float8)"
    "   ORDER BY started_at, execution_id LIMIT $4::bigint FOR UPDATE SKIP LOCKED"
    ") UPDATE maestro_executions e SET owner = $1::text, lease_until = $3::float8"
    " FROM free, maestro_definitions d"
    " WHERE e.execution_id = free.execution_id AND d.source_hash = e.source_hash"
    f" RETURNING {RECORD_COLUMNS}"
)
RENEW = (
    "UPDATE maestro_executions SET lease_until = $1::float8"
    " WHERE execution_id = ANY($2::text[]) AND owner = $3::text RETURNING execution_id"
)
DELETE_FINISHED = (
    "WITH doomed AS ("
    "  DELETE FROM maestro_executions WHERE ended_at < $1::float8"
    "  RETURNING execution_id, source_hash"
    "), events AS ("
    "  DELETE FROM maestro_events WHERE execution_id IN (SELECT execution_id FROM doomed)"
    "), attempts AS ("
    "  DELETE FROM maestro_attempts WHERE execution_id IN (SELECT execution_id FROM doomed)"
    "), cancels AS ("
    "  DELETE FROM maestro_cancels WHERE execution_id IN (SELECT execution_id FROM doomed)"
    "), signals AS ("
    "  DELETE FROM maestro_signals WHERE time < $1::float8"
    ") SELECT count(*), coalesce(array_agg(DISTINCT source_hash), '{}') FROM doomed"
)
LOCK_DEFINITIONS = (
    "SELECT source_hash FROM maestro_definitions WHERE source_hash = ANY($1::text[])"
    " ORDER BY source_hash FOR UPDATE"
)
# A statement of its own after LOCK_DEFINITIONS: its fresh snapshot sees every execution
# committed by a replica that held one of these definitions.
DELETE_DEFINITIONS = (
    "DELETE FROM maestro_definitions d WHERE d.source_hash = ANY($1::text[])"
    " AND NOT EXISTS (SELECT 1 FROM maestro_executions e WHERE e.source_hash = d.source_hash)"
)
NOTIFY = "SELECT pg_notify($1::text, $2::text)"
# Leases handed back at a graceful shutdown: another replica claims them at its next look.
RELEASE = (
    "UPDATE maestro_executions SET owner = '', lease_until = 0"
    f" WHERE execution_id = ANY($1::text[]) AND owner = $2::text AND state IN {UNFINISHED}"
)
# A cancel asked for on one replica, for the owner to carry out (kept once: the first reason).
REQUEST_CANCEL = (
    "INSERT INTO maestro_cancels (execution_id, reason, requested_at)"
    " SELECT $1::text, $2::text, $3::float8 WHERE EXISTS (SELECT 1 FROM maestro_executions"
    f" WHERE execution_id = $1::text AND state IN {UNFINISHED})"
    " ON CONFLICT (execution_id) DO NOTHING"
)
SELECT_UNFINISHED = f"SELECT EXISTS (SELECT 1 FROM maestro_executions WHERE execution_id = $1 AND state IN {UNFINISHED})"
SELECT_CANCELS = (
    "SELECT c.execution_id, c.reason FROM maestro_cancels c"
    " JOIN maestro_executions e ON e.execution_id = c.execution_id"
    f" WHERE e.owner = $1::text AND e.state IN {UNFINISHED} ORDER BY c.requested_at"
)

# Signals: the columns in the order of ``sqlite_schema.SIGNAL_COLUMNS`` (one row codec), the
# parameters in the order of its ``signal_params`` and ``lineage_params``.
SIGNAL_COLUMNS = (
    "signal_id, name, params, time, producer_execution, producer_step, triggered, woke,"
    " not_matched, dispatched, sequence"
)
LOCK_SIGNALS = "SELECT pg_advisory_xact_lock($1)"
INSERT_SIGNAL = (
    "INSERT INTO maestro_signals (signal_id, name, params, time, producer_execution,"
    " producer_step, triggered, woke, not_matched, dispatched)"
    " VALUES ($1::text, $2::text, $3::text, $4::float8, $5::text, $6::text, $7::text, $8::text,"
    " $9::text, $10::boolean) ON CONFLICT (signal_id) DO NOTHING RETURNING sequence"
)
SELECT_SIGNAL = f"SELECT {SIGNAL_COLUMNS} FROM maestro_signals WHERE signal_id = $1"
SELECT_SIGNALS_SINCE = (
    f"SELECT {SIGNAL_COLUMNS} FROM maestro_signals"
    " WHERE name = $1 AND sequence > $2 AND time >= $3::float8 ORDER BY sequence"
)
SELECT_UNDISPATCHED = (
    f"SELECT {SIGNAL_COLUMNS} FROM maestro_signals WHERE NOT dispatched ORDER BY sequence"
)
UPDATE_LINEAGE = (
    "UPDATE maestro_signals SET triggered = $1::text, woke = $2::text, not_matched = $3::text,"
    " dispatched = $4::boolean WHERE signal_id = $5::text"
)

#: The LISTEN/NOTIFY channel on which commits announce new events (``id\tsequence`` lines).
CHANNEL = "maestro_journal_events"
#: The channel on which a requested cancel is announced (the payload: the execution id).
CANCEL_CHANNEL = "maestro_journal_cancels"
#: PostgreSQL refuses a notification payload of 8000 bytes or more.
NOTIFY_LIMIT = 7900


def record_from_row(row: Record) -> ExecutionRecord:
    """The record of a row selected with ``RECORD_COLUMNS``."""
    return ExecutionRecord(
        execution_id=row[0],
        workflow=row[1],
        source=row[2],
        path=row[3],
        input=json.loads(row[4]),
        labels=json.loads(row[5]),
        metadata=tuple((str(key), str(value)) for key, value in json.loads(row[6])),
        started_at=row[7],
        workflow_deadline=row[8],
        caller_deadline=row[9],
        state=ExecutionState(row[10]),
        ended_at=row[11],
        result=loads_or_none(row[12]),
        last_sequence=int(row[13]),
        triggered_by=row[14],
        owner=row[15],
        lease_until=row[16],
    )


def notify_payloads(committed: dict[str, int]) -> list[str]:
    """``committed`` (execution id → latest sequence) as payloads of at most NOTIFY_LIMIT bytes."""
    payloads: list[str] = []
    lines: list[str] = []
    size = 0
    for execution_id, sequence in committed.items():
        line = f"{execution_id}\t{sequence}"
        length = len(line.encode("utf-8")) + 1
        if length > NOTIFY_LIMIT:
            continue  # an absurdly long id: its watchers fall back to polling
        if size + length > NOTIFY_LIMIT:
            payloads.append("\n".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += length
    if lines:
        payloads.append("\n".join(lines))
    return payloads


def parse_payload(payload: str) -> list[tuple[str, int]]:
    """The (execution id, sequence) pairs of a notification; malformed lines are ignored."""
    pairs: list[tuple[str, int]] = []
    for line in payload.split("\n"):
        execution_id, _, sequence = line.rpartition("\t")
        if execution_id and sequence.isdigit():
            pairs.append((execution_id, int(sequence)))
    return pairs


async def migrate(conn: Connection, name: str) -> None:
    """Bring the tables of ``conn``'s database to ``SCHEMA_VERSION``, under the advisory lock.

    One transaction: two replicas starting at once migrate one after the other, and the second
    finds nothing left to do.

    Raises:
        JournalError: the tables were written by a newer version, a table of the journal's name
            belongs to another program, or they cannot be read or created; ``name`` is the
            journal's description.
    """
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            version = 0
            if await conn.fetchval(TABLE_EXISTS, META_TABLE):
                found = await conn.fetchval(SELECT_VERSION)
                if found is None:
                    raise JournalError(f"journal {name}: table {META_TABLE} is empty")
                version = int(found)
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"journal {name} was written by a newer maestro-gateway"
                    f" (schema {version}, this version knows {SCHEMA_VERSION})"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    await conn.execute(statement)
            if version < SCHEMA_VERSION:
                await conn.execute(SET_VERSION, SCHEMA_VERSION)
    except asyncpg.DuplicateTableError as exc:
        raise JournalError(
            f"journal {name}: the database already has a table of that name that is not"
            f" a journal's ({exc})"
        ) from None
    except asyncpg.PostgresError as exc:
        raise JournalError(f"journal {name}: cannot check or create its tables: {exc}") from None
