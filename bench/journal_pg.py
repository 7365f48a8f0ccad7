"""The PostgreSQL journal's driver, measured: asyncpg against psycopg 3 (DESIGN §7, §11).

Starts a throwaway PostgreSQL server (``tests/pg_support.py``: ``initdb`` and ``pg_ctl`` on
127.0.0.1, fsync on, as a real deployment has it) and measures, for each driver:

- **commit latency**: one connection, one small transaction after another (an event row inserted
  and committed, as a lone ``then`` commit is), p50 and p99 over ``--commits``;
- **CPU per execution at concurrency 64**: ``--executions`` executions, 64 in flight, each
  with the entry mix of a four-step workflow — one record (``create``, awaited), 10 events, 4
  intents (each awaited before its "call", a sleep of 0–2 ms) and 4 outcomes, then the final
  state and a flush — group-committed the way the journals do it (everything submitted in one
  stretch of the event loop in one transaction; entries nobody waits for wait up to 2 ms for
  company; a NOTIFY per transaction). Reported: executions/s, this process's CPU (the event loop
  and the driver: what the gateway pays) and the server's CPU, each in ms per execution.

Both drivers run the same SQL (``maestro_gateway/journal/postgres_schema.py``) in the same
group-commit loop; only the calls to the driver differ. ``--journals`` runs the same execution
mix through the real journals instead (``MemoryJournal``, ``SqliteJournal``, ``PostgresJournal``):
the PostgreSQL journal's cost against SQLite's.

    python -m bench.journal_pg [--executions 3000] [--commits 2000] [--journals]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.procs import cpu_seconds
from maestro_gateway.journal import (
    Entry,
    EventEntry,
    ExecutionRecord,
    ExecutionState,
    IntentEntry,
    Journal,
    MemoryJournal,
    OutcomeEntry,
    SqliteJournal,
    StateEntry,
)
from maestro_gateway.journal import postgres_schema as pg
from maestro_gateway.journal.sqlite_schema import (
    event_params,
    intent_params,
    outcome_params,
    record_params,
    state_params,
)
from tests.pg_support import Cluster, running_cluster

CONCURRENCY = 64
STEPS = 4
LAZY = 0.002
REQUEST = {"order_id": "B-1", "sku": "sku-1", "qty": 2, "amount": 4999, "currency": "EUR"}
RESPONSE = {"reservation_id": "r-123456", "status": "RESERVED", "expires": "2026-12-01T12:00Z"}
SOURCE = "name: bench\nsteps:\n" + "".join(f"  - id: step{n}\n" for n in range(STEPS))

# The journal's statements, one row each (executemany) where the journal batches columns: the
# drivers are compared on the plainest common path.
INSERT_DEFINITION = (
    "INSERT INTO maestro_definitions (source_hash, source) VALUES ($1, $2) ON CONFLICT DO NOTHING"
)
INSERT_EVENT = (
    "INSERT INTO maestro_events (execution_id, sequence, time, kind, data)"
    " SELECT $1::text, $2::bigint, $3::float8, $4::text, $5::text"
    " WHERE EXISTS (SELECT 1 FROM maestro_executions WHERE execution_id = $1::text)"
    " ON CONFLICT DO NOTHING"
)
UPDATE_LAST_SEQUENCE = (
    "UPDATE maestro_executions SET last_sequence = greatest(last_sequence, $1::bigint)"
    " WHERE execution_id = $2::text"
)
NOTIFY = "SELECT pg_notify($1::text, $2::text)"


# -- one group-commit loop, two drivers ----------------------------------------------------


Statements = list[tuple[str, list[tuple[Any, ...]]]]


class Driver(Protocol):
    """What the group-commit loop needs from a driver: one connection, one transaction."""

    name: str

    async def connect(self, dsn: str) -> None: ...

    async def transaction(self, statements: Statements) -> list[list[tuple[Any, ...]]]:
        """Run each statement over its rows in one transaction; the rows each last one returned."""
        ...

    async def close(self) -> None: ...


class Asyncpg:
    """asyncpg: ``executemany`` per statement inside ``conn.transaction()``."""

    name = "asyncpg"

    async def connect(self, dsn: str) -> None:
        import asyncpg

        self._conn = await asyncpg.connect(dsn)

    async def transaction(self, statements: Statements) -> list[list[tuple[Any, ...]]]:
        results: list[list[tuple[Any, ...]]] = []
        async with self._conn.transaction():
            for sql, rows in statements:
                if len(rows) == 1:
                    results.append([tuple(r) for r in await self._conn.fetch(sql, *rows[0])])
                else:
                    await self._conn.executemany(sql, rows)
                    results.append([])
        return results

    async def close(self) -> None:
        await self._conn.close()


class Psycopg:
    """psycopg 3 (C build): a raw cursor (``$1`` placeholders) in pipeline mode, one round trip."""

    name = "psycopg"

    async def connect(self, dsn: str) -> None:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        self._cursor = psycopg.AsyncRawCursor(self._conn)

    async def transaction(self, statements: Statements) -> list[list[tuple[Any, ...]]]:
        results: list[list[tuple[Any, ...]]] = []
        cursor = self._cursor
        async with self._conn.pipeline(), self._conn.transaction():
            for sql, rows in statements:
                if len(rows) == 1:
                    await cursor.execute(sql, rows[0])
                    results.append(await cursor.fetchall() if cursor.description else [])
                else:
                    await cursor.executemany(sql, rows)
                    results.append([])
        return results

    async def close(self) -> None:
        await self._conn.close()


class GroupWriter:
    """The journals' write path, reduced: batches per loop stretch, one transaction per group."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.pending: list[tuple[Statements, list[asyncio.Future[None]]]] = []
        self.batch: Statements = []
        self.thens: list[asyncio.Future[None]] = []
        self.wake = asyncio.Event()
        self.scheduled = False
        self.lazy: asyncio.TimerHandle | None = None
        self.transactions = 0
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def create(self, record: ExecutionRecord) -> None:
        done = asyncio.get_running_loop().create_future()
        self.batch.append((INSERT_DEFINITION, [(record.source_hash, record.source)]))
        self.batch.append((pg.INSERT_EXECUTION, [record_params(record)]))
        self.thens.append(done)
        self._handoff_soon()
        await done

    def submit(self, entries: Sequence[Entry], then: asyncio.Future[None] | None = None) -> None:
        events, intents, outcomes, states = [], [], [], []
        for entry in entries:
            match entry:
                case EventEntry():
                    events.append(event_params(entry))
                case IntentEntry():
                    intents.append(intent_params(entry))
                case OutcomeEntry():
                    outcomes.append(outcome_params(entry))
                case StateEntry():
                    states.append(state_params(entry))
        for sql, rows in (
            (INSERT_EVENT, events),
            (pg.UPSERT_INTENT, intents),
            (pg.UPDATE_OUTCOME, outcomes),
            (pg.UPDATE_STATE, states),
        ):
            if rows:
                self.batch.append((sql, rows))
        last = {e.execution_id: e.sequence for e in entries if isinstance(e, EventEntry)}
        if last:
            self.batch.append(
                (UPDATE_LAST_SEQUENCE, [(seq, eid) for eid, seq in sorted(last.items())])
            )
        if then is not None:
            self.thens.append(then)
            self._handoff_soon()
        elif self.lazy is None and not self.scheduled:
            self.lazy = asyncio.get_running_loop().call_later(LAZY, self._handoff)

    async def flush(self) -> None:
        done = asyncio.get_running_loop().create_future()
        self.thens.append(done)
        self._handoff_soon()
        await done

    def _handoff_soon(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._handoff)

    def _handoff(self) -> None:
        self.scheduled = False
        if self.lazy is not None:
            self.lazy.cancel()
            self.lazy = None
        if self.batch or self.thens:
            self.pending.append((self.batch, self.thens))
            self.batch, self.thens = [], []
            self.wake.set()

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            group, self.pending = self.pending, []
            merged: dict[str, list[tuple[Any, ...]]] = {}
            ordered: Statements = []
            for statements, _ in group:
                for sql, rows in statements:
                    # Same-statement rows of consecutive batches run as one executemany, as the
                    # journals do it (creates stay one statement each: they return a row).
                    if sql in merged and sql not in (pg.INSERT_EXECUTION, INSERT_DEFINITION):
                        merged[sql].extend(rows)
                    else:
                        merged[sql] = list(rows)
                        ordered.append((sql, merged[sql]))
            ordered.append((NOTIFY, [(pg.CHANNEL, "bench\t1")]))
            await self.driver.transaction(ordered)
            self.transactions += 1
            for _, futures in group:
                for future in futures:
                    if not future.done():
                        future.set_result(None)


# -- the workload --------------------------------------------------------------------------


class Writer(Protocol):
    """What an execution needs: a Journal, or the bench's GroupWriter."""

    async def create(self, record: ExecutionRecord) -> Any: ...

    async def flush(self) -> None: ...


def _record(execution_id: str) -> ExecutionRecord:
    return ExecutionRecord(
        execution_id=execution_id,
        workflow="bench",
        source=SOURCE,
        path="/srv/workflows/bench.yaml",
        input=REQUEST,
        labels={"team": "bench"},
        metadata=(("x-request-id", execution_id),),
        started_at=time.time(),
    )


async def one_execution(
    writer: Any, execution_id: str, rng: random.Random, awaited: Callable[[Any, Any], Any]
) -> None:
    """One four-step execution's entries, in the order and with the waits the engine has."""
    await writer.create(_record(execution_id))
    now = time.time
    writer.submit([EventEntry(execution_id, 1, now(), "execution_started", {"input": REQUEST})])
    sequence = 1
    for step in range(STEPS):
        name = f"step{step}"
        sequence += 1
        await awaited(
            writer,
            [
                EventEntry(execution_id, sequence, now(), "step_started", {"step_id": name}),
                IntentEntry(execution_id, name, False, 1, now(), REQUEST),
            ],
        )
        await asyncio.sleep(rng.uniform(0, 0.002))  # the downstream call
        sequence += 1
        writer.submit(
            [
                OutcomeEntry(execution_id, name, False, 1, now(), response=RESPONSE),
                EventEntry(execution_id, sequence, now(), "step_succeeded", {"output": RESPONSE}),
            ]
        )
    result = {"status": "SUCCEEDED", "output": RESPONSE}
    writer.submit(
        [
            EventEntry(execution_id, sequence + 1, now(), "execution_finished", result),
            StateEntry(execution_id, ExecutionState.SUCCEEDED, now(), result),
        ]
    )
    await writer.flush()


async def await_then_bench(writer: GroupWriter, entries: list[Entry]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    writer.submit(entries, then=done)
    await done


async def await_then_journal(journal: Journal, entries: list[Entry]) -> None:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    journal.submit(entries, then=lambda: done.done() or done.set_result(None))
    await done


async def run_executions(
    writer: Any, executions: int, awaited: Callable[[Any, Any], Any], prefix: str
) -> float:
    """Run ``executions`` with CONCURRENCY in flight; the wall-clock seconds it took."""
    rng = random.Random(7)
    numbers = iter(range(executions))
    started = time.perf_counter()

    async def worker() -> None:
        for n in numbers:
            await one_execution(writer, f"{prefix}-{n}", rng, awaited)

    async with asyncio.timeout(600), asyncio.TaskGroup() as group:
        for _ in range(CONCURRENCY):
            group.create_task(worker())
    return time.perf_counter() - started


# -- measuring -----------------------------------------------------------------------------


def server_cpu(cluster: Cluster) -> float:
    """CPU seconds used so far by the server: the postmaster and every backend, reaped included."""
    postmaster = int((cluster.data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry), int(fields[1])
        if pid == postmaster or ppid == postmaster:
            total += cpu_seconds(pid)
    with open(f"/proc/{postmaster}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return total + (int(fields[13]) + int(fields[14])) / ticks  # cutime + cstime


async def commit_latency(driver: Driver, commits: int) -> dict[str, float]:
    """p50/p99 of one small transaction after another, in ms."""
    record = _record("latency")
    await driver.transaction(
        [
            (INSERT_DEFINITION, [(record.source_hash, record.source)]),
            (pg.INSERT_EXECUTION, [record_params(record)]),
        ]
    )
    samples: list[float] = []
    for n in range(1, commits + 1):
        params = event_params(EventEntry("latency", n, time.time(), "tick", {"n": n}))
        started = time.perf_counter()
        await driver.transaction([(INSERT_EVENT, [params])])
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
    }


async def measure_driver(
    driver: Driver, cluster: Cluster, database: str, executions: int, commits: int
) -> dict[str, Any]:
    await driver.connect(cluster.dsn(database))
    try:
        await driver.transaction([(sql, [()]) for sql in pg.MIGRATIONS[0]])
        latency = await commit_latency(driver, commits)
        writer = GroupWriter(driver)
        await writer.start()
        try:
            await run_executions(writer, 200, await_then_bench, "warm")
            cpu, server = time.process_time(), server_cpu(cluster)
            wall = await run_executions(writer, executions, await_then_bench, "x")
            cpu, server = time.process_time() - cpu, server_cpu(cluster) - server
        finally:
            await writer.stop()
    finally:
        await driver.close()
    return {
        "driver": driver.name,
        "commit": latency,
        "executions_per_s": round(executions / wall),
        "client_cpu_ms_per_execution": round(cpu * 1000 / executions, 3),
        "server_cpu_ms_per_execution": round(server * 1000 / executions, 3),
        "transactions": writer.transactions,
    }


@contextlib.asynccontextmanager
async def opened(journal: Journal) -> AsyncIterator[Journal]:
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


async def measure_journal(
    name: str, journal: Journal, executions: int, cluster: Cluster | None
) -> dict[str, Any]:
    async with opened(journal):
        await run_executions(journal, 200, await_then_journal, "warm")
        cpu = time.process_time()
        server = server_cpu(cluster) if cluster else 0.0
        wall = await run_executions(journal, executions, await_then_journal, "x")
        cpu = time.process_time() - cpu
        server = (server_cpu(cluster) - server) if cluster else 0.0
    return {
        "journal": name,
        "executions_per_s": round(executions / wall),
        "client_cpu_ms_per_execution": round(cpu * 1000 / executions, 3),
        "server_cpu_ms_per_execution": round(server * 1000 / executions, 3),
    }


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with running_cluster(fsync=True) as cluster:
        if args.journals:
            from maestro_gateway.journal.postgres import PostgresJournal

            with tempfile.TemporaryDirectory(prefix="maestro-bench-") as scratch:
                journals: list[tuple[str, Journal]] = [
                    ("memory", MemoryJournal()),
                    ("sqlite", SqliteJournal(Path(scratch) / "journal.db")),
                    ("postgresql", PostgresJournal(cluster.dsn(cluster.create_database("j")))),
                ]
                for name, journal in journals:
                    server = cluster if name == "postgresql" else None
                    result = await measure_journal(name, journal, args.executions, server)
                    print(json.dumps(result), flush=True)
                    results.append(result)
            return results
        drivers: list[Driver] = []
        for module, hint, driver in (
            ("asyncpg", "asyncpg", Asyncpg()),
            ("psycopg", "'psycopg[binary]'", Psycopg()),
        ):
            if importlib.util.find_spec(module) is None:
                print(f"{module} is not installed: pip install {hint}", file=sys.stderr)
                continue
            drivers.append(driver)
        for _ in range(args.rounds):
            for driver in drivers:
                database = cluster.create_database(driver.name)
                result = await measure_driver(
                    driver, cluster, database, args.executions, args.commits
                )
                print(json.dumps(result), flush=True)
                results.append(result)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=3000)
    parser.add_argument("--commits", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2, help="each driver this many times")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument(
        "--journals", action="store_true", help="the real journals instead of the two drivers"
    )
    args = parser.parse_args()
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main_async(args))


if __name__ == "__main__":
    main()
