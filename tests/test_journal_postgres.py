"""What only the PostgreSQL journal promises (DESIGN §11), against a real throwaway server.

The shared contract runs in ``test_journal.py``; here: two journals and two processes on one
database (records seen across them, a claim won by exactly one, a watcher woken by the other's
commit), migrations when replicas start together, a broken connection replaced, and start-up
failures — an unreachable server retried for ``--journal-connect-timeout``, a wrong password
refused at once, naming the user and never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from journal_suite import event, finish, received, record, until
from pg_support import PASSWORD, PASSWORD_ROLE, Cluster, closed_port

from maestro_gateway.journal import (
    JournalError,
    PostgresJournal,
    canonical_json,
    open_journal,
    postgres_listen,
)
from maestro_gateway.journal.postgres import connect_delay, redact_dsn
from maestro_gateway.journal.postgres_schema import (
    CREATE_EXECUTIONS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SET_VERSION,
)
from maestro_gateway.journal.postgres_writes import columns
from maestro_gateway.journal.sqlite_schema import record_params

CHILD_TIMEOUT = 30.0


@contextlib.asynccontextmanager
async def opened(dsn: str, **options: Any) -> AsyncIterator[PostgresJournal]:
    """An opened PostgresJournal, closed on exit."""
    journal = PostgresJournal(dsn, **options)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


@pytest.fixture
def dsn(pg_cluster: Cluster, pg_database: str) -> str:
    """The URL of a fresh database, as the superuser (no password)."""
    return pg_cluster.dsn(pg_database)


# -- naming it ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        ("postgresql://gw:hunter2@db:5432/maestro", "postgresql://gw@db:5432/maestro"),
        ("postgres://gw@db/maestro", "postgres://gw@db/maestro"),
        (
            "postgresql://db/maestro?password=hunter2&sslmode=require",
            "postgresql://db/maestro?sslmode=require",
        ),
        ("postgresql://gw:p%40ss%3Ahunter2@db/maestro", "postgresql://gw@db/maestro"),
    ],
)
def test_open_journal_names_a_postgresql_url_without_its_password(spec: str, shown: str) -> None:
    """``postgresql://`` and ``postgres://`` open a PostgresJournal described without a password."""
    journal = open_journal(spec)
    assert isinstance(journal, PostgresJournal)
    assert journal.durable
    assert journal.description == shown
    assert redact_dsn(spec) == shown


def test_connect_backoff_is_bounded() -> None:
    """The delays between start-up attempts double from 0.1 s and stop growing at 2 s."""
    assert [connect_delay(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


# -- one database, two journals ----------------------------------------------------------


async def test_two_journals_share_records_events_and_leases(dsn: str) -> None:
    """What one journal commits the other reads; a watcher on one wakes at the other's commit."""
    async with opened(dsn) as first, opened(dsn) as second:
        assert await first.create(record("e-1")) is None
        assert await second.get("e-1") == record("e-1")
        assert await second.create(record("e-1", input={"other": 1})) == record("e-1")

        parked = asyncio.create_task(second.wait_events("e-1", 0, 30))
        await asyncio.sleep(0.05)
        assert not parked.done()
        started = time.monotonic()
        first.submit([event("e-1", 1)])
        await asyncio.wait_for(parked, 5)
        assert time.monotonic() - started < 2  # a NOTIFY, not the 30 s timeout
        assert [e.sequence for e in await second.events("e-1")] == [1]

        (claimed,) = await second.claim("gw-2", 60)
        assert claimed.execution_id == "e-1"
        assert await first.claim("gw-1", 60) == []
        assert await first.renew("gw-1", ["e-1"], 60) == {"e-1"}
        assert await second.renew("gw-2", ["e-1"], 60) == set()
        first.submit([finish("e-1")])
        await first.flush()
        finished = await second.get("e-1")
        assert finished is not None
        assert (finished.state.finished, finished.owner) == (True, "")


async def test_concurrent_claimers_take_each_execution_once(dsn: str) -> None:
    """Four journals claiming at once: every unfinished execution goes to exactly one of them."""
    journals = [PostgresJournal(dsn) for _ in range(4)]
    for journal in journals:
        await journal.open()
    try:
        for round_ in range(3):
            expected = {f"r{round_}-{n}" for n in range(60)}
            for execution_id in sorted(expected):
                await journals[0].create(record(execution_id))
            claims = await asyncio.wait_for(
                asyncio.gather(*(j.claim(f"gw-{n}", 60) for n, j in enumerate(journals))), 30
            )
            taken = [r.execution_id for claimed in claims for r in claimed]
            assert sorted(taken) == sorted(expected), f"round {round_}: {len(taken)} claims"
            for n, claimed in enumerate(claims):
                assert all(r.owner == f"gw-{n}" for r in claimed)
    finally:
        for journal in journals:
            await journal.close()


CHILD = """
import asyncio, json, sys
from maestro_gateway.journal import EventEntry, ExecutionRecord, PostgresJournal

async def main() -> None:
    journal = PostgresJournal(sys.argv[1])
    await journal.open()
    record = ExecutionRecord("from-child", "wf", "name: wf", "wf.yaml", {"n": 1}, started_at=5.0)
    await journal.create(record)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    for line in iter(sys.stdin.readline, ""):
        command = line.split()
        if command[0] == "event":
            journal.submit([EventEntry("from-child", int(command[1]), 1.0, "tick", {})])
            await journal.flush()
            print("submitted", flush=True)
        elif command[0] == "get":
            found = await journal.get(command[1])
            print(json.dumps(found.input if found else None), flush=True)
        elif command[0] == "claim":
            claimed = await journal.claim("child", 60)
            print(json.dumps([r.execution_id for r in claimed]), flush=True)
        elif command[0] == "quit":
            break
    await journal.close()

asyncio.run(main())
"""


class Child:
    """A journal in another process, driven by one-line commands on its stdin."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        text = await asyncio.wait_for(self.process.stdout.readline(), CHILD_TIMEOUT)
        assert text, "the child journal process died"
        return text.decode().strip()

    async def ask(self, command: str) -> str:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{command}\n".encode())
        await self.process.stdin.drain()
        return await self.line()


@contextlib.asynccontextmanager
async def child_journal(dsn: str) -> AsyncIterator[Child]:
    """A journal opened on ``dsn`` in a child process; it is quit (or killed) on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        dsn,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    child = Child(process)
    try:
        assert await child.line() == "ready"
        yield child
        assert process.stdin is not None
        process.stdin.write(b"quit\n")
        await process.stdin.drain()
        await asyncio.wait_for(process.wait(), CHILD_TIMEOUT)
    finally:
        if process.returncode is None:
            process.kill()
        _, stderr = await asyncio.wait_for(process.communicate(), CHILD_TIMEOUT)
        assert process.returncode == 0 or process.returncode == -signal.SIGKILL, stderr.decode()


async def test_two_processes_share_one_database(dsn: str) -> None:
    """Another process's records, events and claims: seen here, and a claim won by exactly one."""
    async with opened(dsn) as journal, child_journal(dsn) as child:
        found = await journal.get("from-child")
        assert found is not None
        assert found.input == {"n": 1}
        await journal.create(record("from-parent", input={"here": True}))
        assert json.loads(await child.ask("get from-parent")) == {"here": True}

        parked = asyncio.create_task(journal.wait_events("from-child", 0, 30))
        await asyncio.sleep(0.05)
        assert await child.ask("event 1") == "submitted"
        await asyncio.wait_for(parked, 5)
        assert [e.sequence for e in await journal.events("from-child")] == [1]

        for n in range(100):
            await journal.create(record(f"x{n:03}"))
        assert child.process.stdin is not None
        child.process.stdin.write(b"claim\n")  # the child claims while this process does
        await child.process.stdin.drain()
        mine = [r.execution_id for r in await journal.claim("parent", 60)]
        theirs = json.loads(await child.line())
        expected = {"from-child", "from-parent", *(f"x{n:03}" for n in range(100))}
        assert sorted(mine + theirs) == sorted(expected)
        assert not set(mine) & set(theirs)


# -- signals across replicas -------------------------------------------------------------


async def test_two_journals_add_each_signal_once(dsn: str) -> None:
    """Adds of one id racing on two journals: one None per id; a note is seen by the other."""
    async with opened(dsn) as first, opened(dsn) as second:
        journals = (first, second, first, second)
        for round_ in range(4):
            signal_ids = [f"r{round_}-{n}" for n in range(8)]
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        journal.add_signal(received(signal_id, params={"by": k}))
                        for signal_id in signal_ids
                        for k, journal in enumerate(journals)
                    )
                ),
                30,
            )
            for n, signal_id in enumerate(signal_ids):
                adds = results[4 * n : 4 * n + 4]
                assert adds.count(None) == 1, (signal_id, adds)
                stored = await second.get_signal(signal_id)
                assert stored is not None
                assert stored.params == {"by": adds.index(None)}
                assert all(result == stored for result in adds if result is not None)
        await first.note_signal("r0-0", triggered=["checkout:r0-0"], dispatched=True)
        seen = await second.get_signal("r0-0")
        assert seen is not None
        assert (seen.triggered, seen.dispatched) == (("checkout:r0-0",), True)
        await asyncio.gather(
            first.note_signal("r0-0", woke=["e-1", "e-2"]),
            second.note_signal("r0-0", woke=["e-2", "e-3"]),
        )
        both = await first.get_signal("r0-0")
        assert both is not None
        assert sorted(both.woke) == ["e-1", "e-2", "e-3"]  # neither note lost the other's


async def test_a_signal_cursor_misses_nothing_across_replicas(dsn: str) -> None:
    """Two replicas adding at once: a reader following ``signals_since(after=…)`` sees all."""
    async with opened(dsn) as first, opened(dsn) as second, opened(dsn) as reader:
        produced = asyncio.Event()
        seen: list[str] = []

        async def produce(journal: PostgresJournal, prefix: str) -> None:
            for n in range(60):
                assert await journal.add_signal(received(f"{prefix}-{n}")) is None

        async def follow() -> None:
            after = 0
            while True:
                last_round = produced.is_set()
                found = await reader.signals_since("order.paid", 0.0, after)
                seen.extend(s.signal_id for s in found)
                if found:
                    after = found[-1].sequence
                elif last_round:
                    return

        follower = asyncio.create_task(follow())
        await asyncio.wait_for(asyncio.gather(produce(first, "a"), produce(second, "b")), 60)
        produced.set()
        await asyncio.wait_for(follower, 30)
    expected = [f"{prefix}-{n}" for prefix in "ab" for n in range(60)]
    assert sorted(seen) == sorted(expected)


async def test_signals_are_committed_on_return_as_canonical_json(
    dsn: str, pg_cluster: Cluster
) -> None:
    """Once add_signal returns the row is in the database, its params canonical JSON."""
    database = dsn.rsplit("/", 1)[1]
    params = {"b": [1, {"z": None, "a": "é"}], "a": 2.5}
    async with opened(dsn) as journal:
        assert await journal.add_signal(received("s-1", params=params, time=7)) is None
        stored = pg_cluster.execute(
            "SELECT params FROM maestro_signals WHERE signal_id = 's-1'", database
        )
        assert stored.strip() == canonical_json(params)
        found = await journal.get_signal("s-1")
        assert found is not None
        assert found.time == 7.0


async def test_a_refused_signal_waits_and_is_added_once(
    pg_cluster: Cluster, pg_database: str
) -> None:
    """An add the server refuses for a while (privilege revoked) waits, then commits once."""
    dsn = pg_cluster.dsn(pg_database, user=PASSWORD_ROLE, password=PASSWORD)
    async with opened(dsn) as journal:
        assert await journal.add_signal(received("s-0")) is None
        pg_cluster.execute(f"REVOKE INSERT ON maestro_signals FROM {PASSWORD_ROLE}", pg_database)
        adding = asyncio.create_task(journal.add_signal(received("s-1")))
        await until(lambda: not journal.writable)
        await asyncio.sleep(0.2)  # a few retries
        assert not adding.done()
        assert await journal.get_signal("s-1") is None
        pg_cluster.execute(f"GRANT INSERT ON maestro_signals TO {PASSWORD_ROLE}", pg_database)
        assert await asyncio.wait_for(adding, 10) is None
        assert journal.writable
        assert [s.signal_id for s in (await journal.list_signals()).signals] == ["s-1", "s-0"]


# -- schema ------------------------------------------------------------------------------


async def write_version_1(dsn: str) -> None:
    """The tables exactly as schema version 1 left them, holding one execution."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            for statement in MIGRATIONS[0]:
                await conn.execute(statement)
            await conn.execute(SET_VERSION, 1)
            old = record("old")
            await conn.execute(CREATE_EXECUTIONS, *columns([record_params(old)], 17))
            await conn.execute(
                "INSERT INTO maestro_definitions (source_hash, source) VALUES ($1, $2)",
                old.source_hash,
                old.source,
            )
    finally:
        await conn.close()


async def test_a_version_1_database_migrates_in_place(dsn: str, pg_cluster: Cluster) -> None:
    """Tables of schema 1 (before signals), two replicas opening at once: migrated once, kept."""
    assert SCHEMA_VERSION == 3
    await write_version_1(dsn)
    journals = [PostgresJournal(dsn) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(j.open() for j in journals)), 30)
        assert await journals[0].get("old") == record("old")
        assert await journals[0].add_signal(received("s-1")) is None
        assert await journals[1].get_signal("s-1") is not None
    finally:
        for journal in journals:
            await journal.close()
    database = dsn.rsplit("/", 1)[1]
    assert pg_cluster.execute("SELECT schema_version FROM maestro_journal", database).strip() == (
        str(SCHEMA_VERSION)
    )
    indexes = pg_cluster.execute(
        "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes"
        " WHERE tablename = 'maestro_signals'",
        database,
    )
    assert indexes.strip().split(",") == [
        "maestro_signals_name",
        "maestro_signals_pkey",
        "maestro_signals_producer",
        "maestro_signals_signal_id_key",
        "maestro_signals_time",
        "maestro_signals_undispatched",
    ]


async def test_replicas_starting_together_migrate_once(dsn: str, pg_cluster: Cluster) -> None:
    """Five journals opened at once on an empty database all open; the schema is made once."""
    journals = [PostgresJournal(dsn) for _ in range(5)]
    try:
        await asyncio.wait_for(asyncio.gather(*(j.open() for j in journals)), 30)
        await journals[0].create(record("e-1"))
        assert await journals[4].get("e-1") is not None
    finally:
        for journal in journals:
            await journal.close()
    database = dsn.rsplit("/", 1)[1]
    assert pg_cluster.execute("SELECT schema_version FROM maestro_journal", database).strip() == (
        str(SCHEMA_VERSION)
    )


async def test_reopen_keeps_everything_and_hands_back_nothing(dsn: str) -> None:
    """Closed and opened again: all is there, and leases stay (another replica may hold them)."""
    async with opened(dsn) as journal:
        await journal.create(record("e-1"))
        journal.submit([event("e-1", 1)])
        (claimed,) = await journal.claim("gw-old", 3600)
    async with opened(dsn) as journal:
        again = await journal.get("e-1")
        assert again == claimed.__class__(**{**_fields(claimed), "last_sequence": 1})
        assert await journal.claim("gw-new", 60) == []


def _fields(value: Any) -> dict[str, Any]:
    return {name: getattr(value, name) for name in value.__slots__}


async def test_a_newer_schema_is_refused(dsn: str, pg_cluster: Cluster) -> None:
    """Tables written by a newer version are refused with both versions, and left as they are."""
    async with opened(dsn):
        pass
    database = dsn.rsplit("/", 1)[1]
    pg_cluster.execute(
        f"UPDATE maestro_journal SET schema_version = {SCHEMA_VERSION + 98}", database
    )
    with pytest.raises(JournalError) as refused:
        await PostgresJournal(dsn).open()
    assert str(refused.value) == (
        f"journal {dsn} was written by a newer maestro-gateway"
        f" (schema {SCHEMA_VERSION + 98}, this version knows {SCHEMA_VERSION})"
    )
    assert pg_cluster.execute("SELECT schema_version FROM maestro_journal", database).strip() == (
        str(SCHEMA_VERSION + 98)
    )


async def test_another_programs_table_is_refused(dsn: str, pg_cluster: Cluster) -> None:
    """A table of the journal's name that is not the journal's is refused by name, and kept."""
    database = dsn.rsplit("/", 1)[1]
    pg_cluster.execute(
        "CREATE TABLE maestro_events (name text); INSERT INTO maestro_events VALUES ('ada')",
        database,
    )
    with pytest.raises(JournalError, match="already has a table") as refused:
        await PostgresJournal(dsn).open()
    assert "maestro_events" in str(refused.value)
    assert pg_cluster.execute("SELECT name FROM maestro_events", database).strip() == "ada"
    assert (
        pg_cluster.execute("SELECT to_regclass('maestro_journal') IS NULL", database).strip() == "t"
    )


async def test_a_refused_create_fails_alone(dsn: str) -> None:
    """A record the server refuses (a NUL in its id) fails its create; the rest of the group commits."""
    async with opened(dsn) as journal:
        await journal.create(record("e-0"))
        acknowledged: list[int] = []
        journal.submit([event("e-0", 1)], then=lambda: acknowledged.append(1))
        results = await asyncio.wait_for(
            asyncio.gather(
                journal.create(record("e-1")),
                journal.create(record("bad\x00id")),
                journal.create(record("e-2")),
                return_exceptions=True,
            ),
            10,
        )
        assert results[0] is None
        assert results[2] is None
        assert isinstance(results[1], JournalError)
        assert "refused the write" in str(results[1])
        assert acknowledged == [1]
        assert await journal.get("e-1") == record("e-1")
        assert await journal.get("e-2") == record("e-2")
        assert [e.sequence for e in await journal.events("e-0")] == [1]
        assert journal.writable


# -- a connection that breaks ------------------------------------------------------------


async def test_only_a_journal_with_a_waiter_hears_the_other_replicas_commits(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other replicas' commits are not delivered to a journal nobody waits on: it LISTENs
    once a waiter parks (woken by the next commit) and stops at the first heartbeat without."""
    monkeypatch.setattr(postgres_listen, "HEARTBEAT", 0.2)
    async with opened(dsn) as writer, opened(dsn) as quiet:
        heard = lambda: quiet._waiters.heard  # noqa: E731 (what it received)
        await writer.create(record("e-1"))
        for sequence in range(1, 6):
            writer.submit([event("e-1", sequence)])
            await writer.flush()
        await asyncio.sleep(0.3)  # room for a stray notification to arrive
        assert heard() == 0
        parked = asyncio.create_task(quiet.wait_events("e-1", 5, 30))
        await asyncio.sleep(0.05)
        writer.submit([event("e-1", 6)])
        await asyncio.wait_for(parked, 5)
        assert heard() >= 1
        await until(lambda: not quiet._waiters._listening, within=5)
        before = heard()
        for sequence in range(7, 10):
            writer.submit([event("e-1", sequence)])
            await writer.flush()
        await asyncio.sleep(0.3)
        assert heard() == before
        again = asyncio.create_task(quiet.wait_events("e-1", 9, 30))  # listens again
        await asyncio.sleep(0.05)
        writer.submit([event("e-1", 10)])
        await asyncio.wait_for(again, 5)
        assert [e.sequence for e in await quiet.events("e-1", 8)] == [9, 10]


async def test_broken_connections_are_replaced_and_nothing_is_lost(
    dsn: str, pg_cluster: Cluster
) -> None:
    """Every backend of the journal killed: reads and the next commit reconnect, the listener too."""
    database = dsn.rsplit("/", 1)[1]
    async with opened(dsn) as journal, opened(dsn) as watcher:
        await journal.create(record("e-1"))
        pg_cluster.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            f" WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        assert await watcher.get("e-1") == record("e-1")  # a dead pooled connection: one more try
        acknowledged: list[int] = []
        journal.submit([event("e-1", 1)], then=lambda: acknowledged.append(1))
        await asyncio.wait_for(journal.flush(), 10)
        assert acknowledged == [1]
        assert journal.writable
        assert [e.sequence for e in await watcher.events("e-1")] == [1]

        parked = asyncio.create_task(watcher.wait_events("e-1", 1, 30))
        await asyncio.sleep(0.05)
        deadline = time.monotonic() + 10
        sequence = 1
        while not parked.done():  # the watcher's listener reconnects in the background
            assert time.monotonic() < deadline, "the watcher never saw another commit"
            sequence += 1
            journal.submit([event("e-1", sequence)])
            await journal.flush()
            await asyncio.wait([parked], timeout=0.2)


async def test_a_refusing_server_delays_and_loses_nothing(
    pg_cluster: Cluster, pg_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Commits refused (privilege revoked): not writable, nothing acknowledged; then all, in order."""
    caplog.set_level(logging.INFO, logger="maestro_gateway.journal")
    dsn = pg_cluster.dsn(pg_database, user=PASSWORD_ROLE, password=PASSWORD)
    secret = "card-4111-1111"
    async with opened(dsn) as journal:
        await journal.create(record("e-1"))
        pg_cluster.execute(f"REVOKE INSERT ON maestro_events FROM {PASSWORD_ROLE}", pg_database)
        acknowledged: list[int] = []
        for sequence in (1, 2):
            journal.submit(
                [event("e-1", sequence, payload=secret)],
                then=lambda sequence=sequence: acknowledged.append(sequence),
            )
            await asyncio.sleep(0)
        flushed = asyncio.create_task(journal.flush())
        await until(lambda: not journal.writable)
        await asyncio.sleep(0.2)  # a few retries
        assert (acknowledged, flushed.done()) == ([], False)
        assert await journal.events("e-1") == []
        pg_cluster.execute(f"GRANT INSERT ON maestro_events TO {PASSWORD_ROLE}", pg_database)
        await asyncio.wait_for(flushed, 10)
        assert journal.writable
        assert acknowledged == [1, 2]
        assert [e.sequence for e in await journal.events("e-1")] == [1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("permission denied for table maestro_events" in w for w in warnings), warnings
    assert "commits succeed again" in caplog.text
    assert secret not in caplog.text
    assert PASSWORD not in caplog.text


async def test_close_gives_up_on_a_server_that_keeps_refusing(
    pg_cluster: Cluster, pg_database: str
) -> None:
    """Close is bounded: commits that keep failing make it raise, and no waiter is left hanging."""
    dsn = pg_cluster.dsn(pg_database, user=PASSWORD_ROLE, password=PASSWORD)
    journal = PostgresJournal(dsn, close_timeout=0.3)
    await journal.open()
    await journal.create(record("e-1"))
    pg_cluster.execute(f"REVOKE INSERT ON maestro_events FROM {PASSWORD_ROLE}", pg_database)
    journal.submit([event("e-1", 1)])
    flushed = asyncio.create_task(journal.flush())
    await until(lambda: not journal.writable)
    with pytest.raises(JournalError, match=r"gave up after 0\.3s") as refused:
        await asyncio.wait_for(journal.close(), 10)
    assert "permission denied" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    with pytest.raises(JournalError, match="closed before"):
        await asyncio.wait_for(flushed, 5)
    with pytest.raises(JournalError, match="closed"):
        journal.submit([event("e-1", 2)])
    pg_cluster.execute(f"GRANT INSERT ON maestro_events TO {PASSWORD_ROLE}", pg_database)
    async with opened(dsn) as again:
        assert await again.events("e-1") == []
        assert await again.get("e-1") is not None


# -- start-up ----------------------------------------------------------------------------


async def test_an_unreachable_server_is_retried_then_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing listens: attempts go on for connect_timeout, then a clear error naming it."""
    caplog.set_level(logging.WARNING, logger="maestro_gateway.journal")
    port = closed_port()
    dsn = f"postgresql://gw:hunter2@127.0.0.1:{port}/maestro"
    started = time.monotonic()
    with pytest.raises(JournalError) as refused:
        await asyncio.wait_for(PostgresJournal(dsn, connect_timeout=1.0).open(), 10)
    took = time.monotonic() - started
    message = str(refused.value)
    assert 0.9 <= took < 5, took
    assert message.startswith(
        f"journal postgresql://gw@127.0.0.1:{port}/maestro: cannot connect to the server within 1s"
    ), message
    assert "connection refused" in message
    assert int(message.split("(")[1].split()[0]) >= 3  # attempts
    assert "hunter2" not in message + caplog.text
    assert "retrying for up to 1s" in caplog.text


async def test_a_wrong_password_is_refused_at_once_naming_the_user(pg_cluster: Cluster) -> None:
    """A refused login is not retried; the message names the user and never the password."""
    dsn = pg_cluster.dsn("postgres", user=PASSWORD_ROLE, password="wrong-horse-battery")
    started = time.monotonic()
    with pytest.raises(JournalError) as refused:
        await asyncio.wait_for(PostgresJournal(dsn, connect_timeout=30).open(), 10)
    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f'password authentication failed for user "{PASSWORD_ROLE}"' in message
    assert f"postgresql://{PASSWORD_ROLE}@127.0.0.1:{pg_cluster.port}/postgres" in message
    assert "wrong-horse-battery" not in message


async def test_the_password_may_come_from_pgpassword(
    pg_cluster: Cluster, pg_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PGPASSWORD supplies the password a URL leaves out; a wrong one is refused, unechoed."""
    dsn = pg_cluster.dsn(pg_database, user=PASSWORD_ROLE)
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    async with opened(dsn) as journal:
        assert await journal.create(record("e-1")) is None
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(JournalError, match="password authentication failed") as refused:
        await PostgresJournal(dsn).open()
    assert "not-the-password" not in str(refused.value)


async def test_a_missing_database_is_refused_at_once(pg_cluster: Cluster) -> None:
    """A database that does not exist is not waited for: the message says so."""
    with pytest.raises(JournalError, match='database "absent_db" does not exist'):
        await asyncio.wait_for(PostgresJournal(pg_cluster.dsn("absent_db")).open(), 10)


async def serve(*args: str, cwd: Path, limit: float = 30) -> asyncio.subprocess.Process:
    """``maestro serve`` with ``args`` on an empty workflow directory, stdout and stderr piped."""
    workflows = cwd / "workflows"
    workflows.mkdir(exist_ok=True)
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(workflows)),
        *("--port", "0", *args),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def test_serve_exits_1_when_the_database_stays_unreachable(tmp_path: Path) -> None:
    """``--journal-connect-timeout 1s`` on a closed port: status 1 within seconds, a clear line."""
    dsn = f"postgresql://gw:hunter2@127.0.0.1:{closed_port()}/maestro"
    started = time.monotonic()
    process = await serve("--journal", dsn, "--journal-connect-timeout", "1s", cwd=tmp_path)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 1
    assert time.monotonic() - started < 15
    lines = stderr.decode().splitlines()
    assert lines[-1].startswith(
        f"maestro serve: --journal: journal {redact_dsn(dsn)}: cannot connect to the server within 1s"
    ), lines
    assert "hunter2" not in stdout.decode() + stderr.decode()
    assert "listening" not in stdout.decode()


async def test_serve_runs_on_a_postgresql_journal(
    tmp_path: Path, pg_cluster: Cluster, pg_database: str
) -> None:
    """``maestro serve --journal postgresql://…`` starts, logs the URL without its password, stops."""
    dsn = pg_cluster.dsn(pg_database, user=PASSWORD_ROLE, password=PASSWORD)
    process = await serve("--journal", dsn, cwd=tmp_path)
    try:
        assert process.stdout is not None
        ready = await asyncio.wait_for(process.stdout.readline(), 30)
        assert b"maestro-gateway listening on" in ready, ready
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert f"journal={pg_cluster.dsn(pg_database, user=PASSWORD_ROLE)}" in log
    assert PASSWORD not in log
    assert not (tmp_path / "maestro-journal.db").exists()
