"""How the PostgreSQL journal's writer turns a group into statements (:mod:`.postgres`).

A group is what the writer takes at once: batches of entries (:mod:`.batch`) and operations
(create, claim, renew, delete_finished), in submission order. Entries alone go in one statement
when their parts do not depend on each other; creates go in one statement for the group.

Fencing (DESIGN §11): given the owner this process writes as, the entries of an execution it does
not hold at commit time are not written (the rows are locked first, so a claim by another replica
cannot slip in between the check and the write); their ids are collected in ``fenced``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maestro_gateway.journal.base import ExecutionRecord, JournalError
from maestro_gateway.journal.batch import Batch, merge_last_sequences
from maestro_gateway.journal.postgres_schema import (
    CHANNEL,
    COMMIT_ENTRIES,
    CREATE_EXECUTIONS,
    INSERT_EVENTS,
    KEEP_DEFINITION,
    LOCK_OWNED,
    NOTIFY,
    SELECT_RECORD,
    UPDATE_LAST_SEQUENCES,
    UPDATE_OUTCOME,
    UPDATE_STATE,
    UPSERT_INTENT,
    notify_payloads,
    record_from_row,
)

if TYPE_CHECKING:
    import asyncpg

    Connection = asyncpg.Connection[asyncpg.Record]


@dataclass(slots=True, eq=False)
class Op:
    """A write whose caller awaits a result: run by the writer inside a group's transaction.

    ``run(conn, retried)``: ``retried`` is True when an earlier attempt at this group failed in a
    way that leaves unknown whether it committed. A ``create`` has no ``run`` but its record (and
    the record's parameters): the creates of a group are inserted together.
    """

    run: Callable[[Connection, bool], Awaitable[Any]] | None
    future: asyncio.Future[Any]
    record: ExecutionRecord | None = None
    params: tuple[Any, ...] = ()


class CreatesFailed(Exception):
    """The creates of a group, inserted together, failed for a reason retrying cannot mend."""


class OpFailed(Exception):
    """An operation failed for a reason that retrying cannot mend; the rest of its group goes on."""

    def __init__(self, op: Op, error: BaseException) -> None:
        super().__init__(str(error))
        self.op = op
        self.error = error


async def keep_definition(conn: Connection, source_hash: str, source: str) -> None:
    """Insert the definition, or share-lock the one there: retention cannot delete it under us."""
    for _ in range(3):
        if await conn.fetchval(KEEP_DEFINITION, source_hash, source):
            return
        # A replica's retention deleted it between our insert and our lock: insert it again.
    raise JournalError(
        f"definition {source_hash} kept being deleted while an execution was created"
    )


def same_creation(existing: ExecutionRecord, record: ExecutionRecord) -> bool:
    return (
        existing.started_at == record.started_at
        and existing.same_request(record.workflow, record.input)
        and existing.metadata == record.metadata
        and dict(existing.labels) == dict(record.labels)
    )


async def insert_records(
    conn: Connection, creates: list[Op], retried: bool, results: dict[int, Any]
) -> None:
    """Insert the records of ``creates`` in one statement; each one's result into ``results``."""
    first: dict[str, Op] = {}
    for op in creates:
        assert op.record is not None
        first.setdefault(op.record.execution_id, op)
    rows = await conn.fetch(CREATE_EXECUTIONS, *columns([op.params for op in first.values()], 17))
    inserted = {row[0] for row in rows}
    definitions: dict[str, str] = {}
    for execution_id, op in first.items():
        assert op.record is not None
        if execution_id in inserted:
            definitions[op.record.source_hash] = op.record.source
    for source_hash, source in sorted(definitions.items()):  # locked in one order everywhere
        await keep_definition(conn, source_hash, source)
    for op in creates:
        record = op.record
        assert record is not None
        ours = first[record.execution_id] is op
        if ours and record.execution_id in inserted:
            results[id(op)] = None
            continue
        row = await conn.fetchrow(SELECT_RECORD, record.execution_id)
        existing = record_from_row(row) if row is not None else None
        if ours and retried and existing is not None and same_creation(existing, record):
            existing = None  # our own insert, committed by the attempt whose answer was lost
        results[id(op)] = existing


async def commit_entries(
    conn: Connection, args: list[Any], owner: str | None, fenced: set[str]
) -> None:
    """Run COMMIT_ENTRIES with ``args`` (from :func:`one_statement`); what it fenced into
    ``fenced``."""
    row = await conn.fetchrow(COMMIT_ENTRIES, *args)
    if owner is not None and row is not None and row[1]:
        fenced.update(row[1])


async def write_batches(
    conn: Connection,
    batches: list[Batch],
    committed: dict[str, int],
    owner: str | None = None,
    fenced: set[str] | None = None,
    *,
    single: bool = True,
) -> None:
    """Apply ``batches`` (one statement when their parts allow it), announcing their events.

    With an ``owner``, only the entries of the executions it holds are written; the ids of the
    others are added to ``fenced``. ``single=False``: the caller found already that their parts
    need the statements one after the other.
    """
    if not any(batch.rows for batch in batches):
        return
    lost: set[str] = set()
    part: dict[str, int] = {}
    args = one_statement(batches, part, owner) if single else None
    if args is not None:
        await commit_entries(conn, args, owner, lost)
    else:
        part.clear()
        if owner is not None:
            touched = touched_ids(batches)
            owned = {row[0] for row in await conn.fetch(LOCK_OWNED, touched, owner)}
            lost.update(i for i in touched if i not in owned)
            if lost:
                batches = [kept(batch, owned) for batch in batches]
        events = [row for batch in batches for row in batch.events]
        if events:
            await conn.execute(INSERT_EVENTS, *columns(events, 5))
        for is_intent, rows in attempt_runs(batches):
            await conn.executemany(UPSERT_INTENT if is_intent else UPDATE_OUTCOME, rows)
        states = [row for batch in batches for row in batch.states]
        if states:
            # In id order (stable: one execution's states keep theirs), so that two
            # transactions locking the same rows take them in the same order.
            states.sort(key=lambda row: str(row[4]))
            await conn.executemany(UPDATE_STATE, states)
        merge_last_sequences(batches, part)
        payloads = notify_payloads(part)
        for payload in payloads[1:]:  # the first goes with the last-sequence update
            await conn.execute(NOTIFY, CHANNEL, payload)
        if part:
            ids = sorted(part)
            await conn.execute(
                UPDATE_LAST_SEQUENCES,
                ids,
                [part[i] for i in ids],
                CHANNEL,
                payloads[0] if payloads else "",
            )
    for execution_id, sequence in part.items():
        if execution_id not in lost and committed.get(execution_id, 0) < sequence:
            committed[execution_id] = sequence
    if fenced is not None:
        fenced.update(lost)


def touched_ids(batches: list[Batch]) -> list[str]:
    """Every execution id the entries of ``batches`` are about, sorted (rows lock in one order)."""
    ids: set[str] = set()
    for batch in batches:
        ids.update(row[0] for row in batch.events)
        for is_intent, rows in batch.attempt_runs:
            ids.update(row[0] if is_intent else row[3] for row in rows)
        ids.update(row[4] for row in batch.states)
    return sorted(ids)


def kept(batch: Batch, owned: set[str]) -> Batch:
    """``batch`` with the entries of the executions in ``owned`` only (no ``then``: the writer
    runs those of the batches it was given)."""
    out = Batch()
    out.events = [row for row in batch.events if row[0] in owned]
    for is_intent, rows in batch.attempt_runs:
        for row in rows:
            if (row[0] if is_intent else row[3]) in owned:
                out.add_attempt(is_intent, row)
    out.states = [row for row in batch.states if row[4] in owned]
    out.last_sequence = {i: s for i, s in batch.last_sequence.items() if i in owned}
    out.rows = len(out.events) + len(out.states) + sum(len(r) for _, r in out.attempt_runs)
    return out


def one_statement(
    batches: list[Batch], committed: dict[str, int], owner: str | None = None
) -> list[Any] | None:
    """The arguments of COMMIT_ENTRIES for ``batches``, or None when their parts depend on each
    other (then they need the statements one after the other); fills ``committed``.

    ``owner`` fences the entries (None: every existing execution's are written)."""
    intents: list[tuple[Any, ...]] = []
    outcomes: list[tuple[Any, ...]] = []
    keys: set[tuple[Any, ...]] = set()
    for batch in batches:
        for is_intent, rows in batch.attempt_runs:
            for row in rows:
                key = (True, *row[:4]) if is_intent else (False, *row[3:7])
                if key in keys or (not is_intent and (True, *row[3:7]) in keys):
                    return None  # one attempt twice, or an outcome after its intent
                keys.add(key)
                (intents if is_intent else outcomes).append(row)
    states: dict[str, tuple[Any, ...]] = {}
    for batch in batches:
        for row in batch.states:
            if row[4] in states:
                return None  # one execution's state twice: the second must follow the first
            states[row[4]] = row
    events = [row for batch in batches for row in batch.events]
    merge_last_sequences(batches, committed)
    ids = sorted(committed.keys() | states.keys())  # rows locked in one order by every writer
    payloads = notify_payloads(committed)
    if len(payloads) > 1:
        return None
    no_state = (None, None, None, None, None)
    # (execution_id, last sequence, state, ended_at, finished, result): None where unchanged.
    execution_rows = [(i, committed.get(i), *states.get(i, no_state)[:4]) for i in ids]
    return [
        *columns(events, 5),
        *columns(intents, 6),
        *columns(outcomes, 7),
        *columns(execution_rows, 6),
        CHANNEL,
        payloads[0] if payloads else "",
        owner,
        touched_ids(batches),
    ]


def columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """``rows`` as ``width`` column lists (the arrays of an ``unnest``)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def attempt_runs(batches: list[Batch]) -> list[tuple[bool, list[tuple[Any, ...]]]]:
    """The group's intents and outcomes as few statements as their order allows.

    All intents, then all outcomes, unless an outcome precedes an intent of the same attempt in
    the group (an attempt written again): then the runs in their exact order.
    """
    runs = [run for batch in batches for run in batch.attempt_runs]
    intents: list[tuple[Any, ...]] = []
    outcomes: list[tuple[Any, ...]] = []
    ended: set[tuple[Any, ...]] = set()
    for is_intent, rows in runs:
        for row in rows:
            if not is_intent:
                ended.add(tuple(row[3:7]))
                outcomes.append(row)
            elif tuple(row[:4]) in ended:
                merged: list[tuple[bool, list[tuple[Any, ...]]]] = []
                for kind, run_rows in runs:
                    if merged and merged[-1][0] is kind:
                        merged[-1][1].extend(run_rows)
                    else:
                        merged.append((kind, list(run_rows)))
                return merged
            else:
                intents.append(row)
    return [(kind, rows) for kind, rows in ((True, intents), (False, outcomes)) if rows]
