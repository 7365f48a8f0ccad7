"""Journals: the shared contract suite over every implementation, then what only SQLite promises.

(What only PostgreSQL promises is in ``test_journal_postgres.py``.)

SQLite's promises are tested for real: a second process, SIGKILL, the file's mode, and a full
disk through SQLite's own limit (``PRAGMA max_page_count``: commits fail with SQLITE_FULL).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from journal_suite import JournalSuite, event, finish, received, record, until

from maestro_gateway.journal import (
    ExecutionState,
    IntentEntry,
    JournalError,
    MemoryJournal,
    OutcomeEntry,
    SqliteJournal,
    canonical_json,
    open_journal,
)
from maestro_gateway.journal.sqlite_schema import (
    APPLICATION_ID,
    INSERT_DEFINITION,
    INSERT_EXECUTION,
    MIGRATIONS,
    SCHEMA_VERSION,
    dumps,
    loads,
    record_params,
)


class TestJournal(JournalSuite):
    """The contract, for MemoryJournal, SqliteJournal and PostgresJournal alike."""


@contextlib.asynccontextmanager
async def opened(path: Path, **options: Any) -> AsyncIterator[SqliteJournal]:
    """An opened SqliteJournal, closed on exit."""
    journal = SqliteJournal(path, **options)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


def run_python(code: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


PROBE = """
import asyncio, sys
from maestro_gateway.journal import JournalError, SqliteJournal

async def main() -> None:
    journal = SqliteJournal(sys.argv[1])
    await journal.open()
    await journal.close()

try:
    asyncio.run(main())
except JournalError as exc:
    print(exc)
    sys.exit(3)
print("opened")
"""


# -- durability --------------------------------------------------------------------------


async def test_reopen_finds_everything_and_frees_unfinished(tmp_path: Path) -> None:
    """Close and reopen: records, events and attempts are there; unfinished ones are claimable."""
    path = tmp_path / "journal.db"
    async with opened(path) as journal:
        for execution_id in ("running", "done"):
            await journal.create(record(execution_id, started_at=5.0))
            journal.submit(
                [
                    event(execution_id, 1),
                    IntentEntry(execution_id, "reserve", False, 1, 1.0, {"sku": "A"}),
                    OutcomeEntry(execution_id, "reserve", False, 1, 2.0, response={"id": 7}),
                    event(execution_id, 2, "step_succeeded", output={"id": 7}),
                ]
            )
        journal.submit([finish("done")])
        assert [r.execution_id for r in await journal.claim("gw-old", 3600)] == ["running"]
        before = {
            execution_id: (
                await journal.get(execution_id),
                await journal.events(execution_id),
                await journal.attempts(execution_id),
            )
            for execution_id in ("running", "done")
        }
    async with opened(path) as journal:
        running = await journal.get("running")
        assert running is not None
        assert (running.owner, running.lease_until) == ("", 0.0)
        old_running = before["running"][0]
        assert old_running is not None
        assert old_running.owner == "gw-old"
        assert running == record("running", started_at=5.0, last_sequence=2)
        assert await journal.get("done") == before["done"][0]
        for execution_id, (_, events, attempts) in before.items():
            assert await journal.events(execution_id) == events
            assert await journal.attempts(execution_id) == attempts
        assert [r.execution_id for r in await journal.claim("gw-new", 60)] == ["running"]


async def test_one_stretch_is_one_transaction(tmp_path: Path) -> None:
    """A reader on its own connection, polling while the loop is mid-stretch, never sees part of it."""
    path = tmp_path / "journal.db"
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            while not stop.is_set():
                seen.append(conn.execute("SELECT count(*) FROM events").fetchone()[0])

    async with opened(path) as journal:
        await journal.create(record("e-1"))
        poller = threading.Thread(target=poll)
        poller.start()
        try:
            for stretch in range(5):
                for k in range(3):
                    journal.submit([event("e-1", 3 * stretch + k + 1)])
                    time.sleep(0.003)  # noqa: ASYNC251 - a long stretch: the writer may run
                await asyncio.sleep(0.005)
            await journal.flush()
            await until(lambda: bool(seen) and seen[-1] == 15)
        finally:
            stop.set()
            await asyncio.to_thread(poller.join, 10)
    assert set(seen) <= {0, 3, 6, 9, 12, 15}, sorted(set(seen))


CRASHING_WRITER = """
import asyncio, sys
from maestro_gateway.journal import EventEntry, ExecutionRecord, SqliteJournal

async def main() -> None:
    journal = SqliteJournal(sys.argv[1], sync="normal")
    await journal.open()
    await journal.create(ExecutionRecord("crash", "wf", "name: wf", "wf.yaml", {}))
    sequence = 0
    while True:
        for _ in range(10):
            sequence += 1
            journal.submit([EventEntry("crash", sequence, float(sequence), "tick", {"n": sequence})])
        await journal.flush()
        print(sequence, flush=True)

asyncio.run(main())
"""


async def test_sigkill_keeps_everything_flushed(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-stream loses nothing it had flushed (sync=normal)."""
    path = tmp_path / "journal.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CRASHING_WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        flushed = 0
        for _ in range(40):  # it keeps writing while we read: the kill lands mid-stream
            line = await asyncio.wait_for(child.stdout.readline(), 30)
            assert line, "the writer died on its own"
            flushed = int(line)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.returncode is None:
            child.kill()
        await asyncio.wait_for(child.communicate(), 30)
    assert child.returncode == -signal.SIGKILL
    async with opened(path) as journal:
        sequences = [e.sequence for e in await journal.events("crash")]
    assert flushed >= 400
    assert sequences == list(range(1, len(sequences) + 1))
    assert len(sequences) >= flushed


async def test_signals_are_committed_on_return_as_canonical_json(tmp_path: Path) -> None:
    """Once add_signal or note_signal returns, another connection reads it: params canonical."""
    path = tmp_path / "journal.db"
    params = {"b": [1, {"z": None, "a": "é"}], "a": 2.5}
    async with opened(path) as journal:
        assert await journal.add_signal(received("s-1", params=params)) is None
        with contextlib.closing(sqlite3.connect(path)) as other:
            row = other.execute(
                "SELECT params, dispatched FROM signals WHERE signal_id = 's-1'"
            ).fetchone()
            assert row == (canonical_json(params), 0)
            assert row[0] == '{"a":2.5,"b":[1,{"a":"é","z":null}]}'
            await journal.note_signal("s-1", triggered=["checkout:s-1"], dispatched=True)
            lineage = other.execute(
                "SELECT triggered, woke, not_matched, dispatched FROM signals"
            ).fetchall()
            assert lineage == [('["checkout:s-1"]', "[]", "[]", 1)]


async def test_signal_sequences_survive_reopen_and_are_never_reused(tmp_path: Path) -> None:
    """Signals are there after a reopen; retention deleting them all does not reuse a sequence."""
    path = tmp_path / "journal.db"
    async with opened(path) as journal:
        for n in range(3):
            await journal.add_signal(received(f"s-{n}", time=100.0 + n))
        await journal.note_signal("s-1", woke=["e-1"], dispatched=True)
        before = (await journal.list_signals()).signals
    async with opened(path) as journal:
        assert (await journal.list_signals()).signals == before
        assert await journal.delete_finished(1e12) == 0
        assert (await journal.list_signals()).signals == ()
    async with opened(path) as journal:
        assert await journal.add_signal(received("s-new")) is None
        found = await journal.get_signal("s-new")
        assert found is not None
        assert found.sequence > max(s.sequence for s in before)


# -- the file ----------------------------------------------------------------------------


def write_version_1(path: Path) -> None:
    """A journal file exactly as schema version 1 left it, holding one finished execution."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        old = record("old", state=ExecutionState.SUCCEEDED, ended_at=3000.0, result={"ok": True})
        conn.execute(INSERT_EXECUTION, record_params(old))
        conn.execute(INSERT_DEFINITION, (old.source_hash, old.source))
        conn.execute("COMMIT")


async def test_a_version_1_journal_migrates_in_place(tmp_path: Path) -> None:
    """A file of schema 1 (before signals) opens at the current schema, its executions kept."""
    assert SCHEMA_VERSION == 2
    path = tmp_path / "journal.db"
    write_version_1(path)
    async with opened(path) as journal:
        old = await journal.get("old")
        assert old is not None
        assert (old.state.finished, old.result) == (True, {"ok": True})
        assert await journal.add_signal(received("s-1")) is None
        assert [s.signal_id for s in (await journal.list_signals()).signals] == ["s-1"]
    with contextlib.closing(sqlite3.connect(path)) as other:
        assert other.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        indexes = {
            row[0]
            for row in other.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'signals'"
                " AND sql IS NOT NULL"
            )
        }
        assert indexes == {
            "signals_name",
            "signals_producer",
            "signals_time",
            "signals_undispatched",
        }
    async with opened(path) as journal:  # reopened: nothing left to migrate
        assert await journal.get_signal("s-1") is not None
        assert await journal.get("old") == old


@pytest.mark.parametrize(("sync", "level"), [("normal", 1), ("full", 2)])
async def test_wal_mode_and_synchronous(tmp_path: Path, sync: Any, level: int) -> None:
    """The file is in WAL mode and the writer commits with the configured synchronous level."""
    path = tmp_path / "journal.db"
    async with opened(path, sync=sync) as journal:
        assert await journal._writer_pragma("PRAGMA synchronous") == [(level,)]
        with contextlib.closing(sqlite3.connect(path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert other.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert other.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)


async def test_files_are_private(tmp_path: Path) -> None:
    """The database, its WAL and shared-memory files and the lock file are mode 0600."""
    path = tmp_path / "journal.db"
    async with opened(path) as journal:
        await journal.create(record("e-1"))
        await journal.get("e-1")
        for name in ("journal.db", "journal.db-wal", "journal.db-shm", "journal.db.lock"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


async def test_a_second_journal_in_this_process_is_refused(tmp_path: Path) -> None:
    """Two journals on one file: the second is refused, naming the file and the holder's pid."""
    path = tmp_path / "journal.db"
    async with opened(path):
        second = SqliteJournal(path)
        with pytest.raises(JournalError) as refused:
            await second.open()
        message = str(refused.value)
        assert str(path) in message
        assert f"in use by another gateway (pid {os.getpid()})" in message
    async with opened(path):
        pass  # released on close


async def test_a_second_process_is_refused(tmp_path: Path) -> None:
    """Another process opening the same journal is refused while this one holds it."""
    path = tmp_path / "journal.db"
    async with opened(path):
        probe = await asyncio.to_thread(run_python, PROBE, str(path))
        assert probe.returncode == 3, probe.stdout + probe.stderr
        assert str(path) in probe.stdout
        assert f"in use by another gateway (pid {os.getpid()})" in probe.stdout
    probe = await asyncio.to_thread(run_python, PROBE, str(path))
    assert probe.stdout.strip() == "opened", probe.stderr


async def test_a_symlink_to_a_held_journal_is_refused(tmp_path: Path) -> None:
    """Another name for the same file (a symlink) finds the same lock."""
    path = tmp_path / "journal.db"
    alias = tmp_path / "alias.db"
    alias.symlink_to(path)
    async with opened(path):
        with pytest.raises(JournalError, match="in use by another gateway"):
            await SqliteJournal(alias).open()


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    """A directory given as the journal is refused by name."""
    with pytest.raises(JournalError, match="is a directory") as refused:
        await SqliteJournal(tmp_path).open()
    assert str(tmp_path) in str(refused.value)


async def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    """A journal in a directory that does not exist is refused, and nothing is created."""
    path = tmp_path / "absent" / "journal.db"
    with pytest.raises(JournalError, match="does not exist") as refused:
        await SqliteJournal(path).open()
    assert str(path) in str(refused.value)
    assert not (tmp_path / "absent").exists()


FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    """Make ``directory`` unwritable for this process, even when it runs as root."""
    if os.geteuid() != 0:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)
        return
    # Root writes through permission bits; the immutable attribute stops it too.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        plain = flags[0]
        flags[0] = plain | FS_IMMUTABLE_FL
        try:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
        except OSError as exc:
            pytest.skip(f"cannot make a directory read-only for root here: {exc}")
        try:
            yield
        finally:
            flags[0] = plain
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    finally:
        os.close(fd)


async def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    """A journal whose directory cannot be written is refused by name."""
    directory = tmp_path / "readonly"
    directory.mkdir()
    path = directory / "journal.db"
    with unwritable(directory), pytest.raises(JournalError, match="not writable") as refused:
        await SqliteJournal(path).open()
    assert str(path) in str(refused.value)
    assert list(directory.iterdir()) == []


async def test_a_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A file that is not a database is refused ("not a database") and not changed at all."""
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database\n" * 300)
    before = path.read_bytes()
    with pytest.raises(JournalError, match="not a database") as refused:
        await SqliteJournal(path).open()
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before
    assert sorted(await asyncio.to_thread(os.listdir, tmp_path)) == [
        "journal.db",
        "journal.db.lock",
    ]


async def test_a_newer_schema_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A journal written by a newer version is refused with both versions, and not changed."""
    path = tmp_path / "journal.db"
    async with opened(path) as journal:
        await journal.create(record("e-1"))
    with contextlib.closing(sqlite3.connect(path)) as newer:
        newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 98}")
    before = path.read_bytes()
    with pytest.raises(JournalError) as refused:
        await SqliteJournal(path).open()
    assert str(refused.value) == (
        f"journal {path} was written by a newer maestro-gateway"
        f" (schema {SCHEMA_VERSION + 98}, this version knows {SCHEMA_VERSION})"
    )
    assert path.read_bytes() == before


async def test_another_programs_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    """A SQLite database that is not a journal is refused, and not migrated into one."""
    path = tmp_path / "app.db"
    with contextlib.closing(sqlite3.connect(path)) as app:
        app.execute("CREATE TABLE users (name TEXT)")
        app.execute("INSERT INTO users VALUES ('ada')")
        app.commit()
    before = path.read_bytes()
    with pytest.raises(JournalError, match="another program") as refused:
        await SqliteJournal(path).open()
    assert str(path) in str(refused.value)
    assert path.read_bytes() == before


# -- an unwritable store -----------------------------------------------------------------


async def test_a_full_disk_delays_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Commits failing with SQLITE_FULL: not writable, nothing acknowledged, then all, in order."""
    caplog.set_level(logging.INFO, logger="maestro_gateway.journal")
    secret = "card-4111-1111 " * 800  # pages beyond the limit; must never reach the log
    async with opened(tmp_path / "journal.db") as journal:
        await journal.create(record("e-1"))
        await journal._writer_pragma("PRAGMA max_page_count = 1")  # = the pages it has now
        acknowledged: list[int] = []
        for sequence in (1, 2, 3):
            journal.submit(
                [event("e-1", sequence, payload=secret)],
                then=functools.partial(acknowledged.append, sequence),
            )
        flushed = asyncio.create_task(journal.flush())
        await until(lambda: not journal.writable)
        journal.submit([event("e-1", 4, payload=secret)], then=lambda: acknowledged.append(4))
        created = asyncio.create_task(journal.create(record("e-2")))
        await asyncio.sleep(0.2)  # a few retries (50 ms, 100 ms ...)
        assert not journal.writable
        assert acknowledged == []
        assert not flushed.done()
        assert not created.done()
        assert await journal.events("e-1") == []

        await journal._writer_pragma("PRAGMA max_page_count = 1073741823")
        await asyncio.wait_for(flushed, 5)
        assert await asyncio.wait_for(created, 5) is None
        await journal.flush()
        assert journal.writable
        assert acknowledged == [1, 2, 3, 4]
        assert [e.sequence for e in await journal.events("e-1")] == [1, 2, 3, 4]
        assert await journal.get("e-2") is not None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert "database or disk is full" in warnings[0].getMessage()
    assert "card-4111" not in caplog.text


async def test_close_gives_up_on_a_store_that_stays_broken(tmp_path: Path) -> None:
    """Close is bounded: a store that stays full makes it raise, and waiters are not left hanging."""
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path, close_timeout=0.3)
    await journal.open()
    await journal.create(record("e-1"))
    await journal._writer_pragma("PRAGMA max_page_count = 1")
    journal.submit([event("e-1", 1, payload="x" * 20_000)])
    flushed = asyncio.create_task(journal.flush())
    await until(lambda: not journal.writable)
    with pytest.raises(JournalError, match="gave up") as refused:
        await asyncio.wait_for(journal.close(), 10)
    assert str(path) in str(refused.value)
    with pytest.raises(JournalError, match="closed before"):
        await asyncio.wait_for(flushed, 5)
    with pytest.raises(JournalError, match="closed"):
        journal.submit([event("e-1", 2)])
    async with opened(path) as again:  # released: the next gateway can open it
        assert await again.events("e-1") == []
        assert await again.get("e-1") is not None


def test_runs_on_uvloop(tmp_path: Path) -> None:
    """The hand-offs between the writer thread and the loop work on uvloop (maestro serve's)."""
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[int]:
        async with opened(tmp_path / "journal.db") as journal:
            await journal.create(record("e-1"))
            done: list[int] = []
            waiter = asyncio.create_task(journal.wait_events("e-1", 0, 30))
            journal.submit([event("e-1", 1)], then=lambda: done.append(1))
            await asyncio.wait_for(waiter, 5)
            await journal.flush()
            done.append(len(await journal.events("e-1")))
            return done

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == [1, 1]


# -- choosing a journal ------------------------------------------------------------------


async def test_open_journal_names(tmp_path: Path) -> None:
    """``none`` is in memory; ``sqlite:PATH``, ``sqlite://PATH`` and a plain path are SQLite."""
    assert isinstance(open_journal("none"), MemoryJournal)
    path = tmp_path / "journal.db"
    for spec in (f"sqlite:{path}", f"sqlite://{path}", str(path)):
        journal = open_journal(spec)
        assert isinstance(journal, SqliteJournal)
        assert journal.description == f"sqlite:{path}"
        assert journal.durable
    full = open_journal(str(path), sync="full")
    await full.open()
    try:
        assert isinstance(full, SqliteJournal)
        assert await full._writer_pragma("PRAGMA synchronous") == [(2,)]
    finally:
        await full.close()


@pytest.mark.parametrize(
    ("spec", "sync", "message"),
    [
        ("", "normal", "empty"),
        ("   ", "normal", "empty"),
        ("sqlite:", "normal", "names no file"),
        ("journal.db", "fast", "'normal' or 'full'"),
        ("mysql://gw:hunter2@db/maestro", "normal", "mysql:// is not supported"),
    ],
)
def test_open_journal_refuses(spec: str, sync: str, message: str) -> None:
    """Unusable specs are JournalError with a clear message that never echoes a password."""
    with pytest.raises(JournalError) as refused:
        open_journal(spec, sync=sync)
    assert message in str(refused.value)
    assert "hunter2" not in str(refused.value)


async def test_values_beyond_json_are_stored_as_grpc_sends_them(tmp_path: Path) -> None:
    """Bytes, timestamps and durations (CEL can produce them) are journaled, never refused."""
    import datetime

    async with opened(tmp_path / "j.db") as journal:
        assert await journal.create(record("ex-1")) is None
        moment = datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.UTC)
        request = {"raw": b"\x00\xff", "at": moment, "wait": datetime.timedelta(seconds=1.5)}
        journal.submit((IntentEntry("ex-1", "reserve", False, 1, 2000.0, request),))
        await journal.flush()
        (attempt,) = await journal.attempts("ex-1")
        assert attempt.request == {"raw": "AP8=", "at": "2026-12-01T12:30:00Z", "wait": "1.5s"}


def test_the_encoder_falls_back_to_json_for_what_orjson_refuses() -> None:
    """orjson encodes; what it refuses is written by ``json`` (same text), nothing is lost."""
    for value in ({"s": "\ud800"}, {"n": 2**70}, {1: "one"}, {"u": "é€😀", "f": 1e16}):
        assert loads(dumps(value)) == json.loads(json.dumps(value))
    assert dumps({"s": "\ud800"}) == '{"s":"\\ud800"}'
    # JSON has no NaN: written as null (a google.protobuf.Value cannot carry it either) ...
    assert dumps({"x": float("nan"), "y": float("inf")}) == '{"x":null,"y":null}'
    # ... and a journal written by json before reads back as it was.
    assert loads('{"x":NaN}')["x"] != loads('{"x":NaN}')["x"]
    with pytest.raises(TypeError):
        dumps({"x": object()})


async def test_journal_none_keeps_the_newest_finished_executions_and_signals() -> None:
    """A bounded memory journal forgets the oldest finished executions and dispatched signals
    first; running executions and undispatched signals always stay."""
    journal = MemoryJournal(keep_finished=3)
    await journal.create(record("running"))
    for n in range(5):
        await journal.create(record(f"ex-{n}"))
        journal.submit((finish(f"ex-{n}"),))
    assert [n for n in range(5) if await journal.get(f"ex-{n}") is not None] == [2, 3, 4]
    assert await journal.get("running") is not None
    journal.submit((finish("ex-4"),))  # a second final state counts once
    assert await journal.get("ex-2") is not None

    await journal.add_signal(received("waiting"))
    for n in range(4):
        await journal.add_signal(received(f"sig-{n}"))
        await journal.note_signal(f"sig-{n}", dispatched=True)
    kept = [s.signal_id for s in (await journal.list_signals(page_size=10)).signals]
    assert sorted(kept) == ["sig-2", "sig-3", "waiting"]
    with pytest.raises(ValueError, match="keep_finished"):
        MemoryJournal(keep_finished=0)
