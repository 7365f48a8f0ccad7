"""The PostgreSQL journal's side of replicas (DESIGN §11), against a real throwaway server.

Fencing: once a process registered the owner it writes as, the entries of an execution another
owner holds (or that finished) are not written, and it is told before the group's ``then``
callbacks run; records it creates are leased to it; a claim by another replica racing its
writes never lets one of them land after the claim. Then what travels between replicas through
the database: a requested cancel (announced and polled), a released lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from journal_suite import event, finish, record, until
from pg_support import Cluster

from maestro_gateway.journal import (
    ExecutionState,
    IntentEntry,
    OutcomeEntry,
    PostgresJournal,
    StateEntry,
)

LEASE = 60.0
CHECKOUT = Path(__file__).resolve().parent.parent / "workflows" / "checkout.yaml"


class Owner:
    """What a gateway gives ``register``: the ids it was told it lost, the cancels announced."""

    def __init__(self) -> None:
        self.lost: list[set[str]] = []
        self.cancels: list[str] = []

    def on_lost(self, ids: set[str]) -> None:
        self.lost.append(ids)

    def on_cancel(self, execution_id: str) -> None:
        self.cancels.append(execution_id)


@contextlib.asynccontextmanager
async def opened(dsn: str) -> AsyncIterator[PostgresJournal]:
    """An opened PostgresJournal that registered no owner (no fencing); closed on exit."""
    journal = PostgresJournal(dsn)
    await journal.open()
    try:
        yield journal
    finally:
        await journal.close()


@contextlib.asynccontextmanager
async def registered(dsn: str, owner: str, lease: float = LEASE) -> AsyncIterator[Any]:
    """An opened PostgresJournal registered as ``owner``, and its :class:`Owner`; closed on exit."""
    journal = PostgresJournal(dsn)
    await journal.open()
    told = Owner()
    journal.register(owner, lease=lease, on_lost=told.on_lost, on_cancel=told.on_cancel)
    try:
        yield journal, told
    finally:
        await journal.close()


@pytest.fixture
def dsn(pg_cluster: Cluster, pg_database: str) -> str:
    """The URL of a fresh database."""
    return pg_cluster.dsn(pg_database)


async def test_records_created_by_a_registered_journal_are_leased_to_it(dsn: str) -> None:
    """create() stamps the owner and a lease from the commit; a record with an owner keeps it."""
    async with registered(dsn, "gw-1", lease=30) as (journal, _):
        before = time.time()
        assert await journal.create(record("e-1")) is None
        created = await journal.get("e-1")
        assert created is not None
        assert created.owner == "gw-1"
        assert before + 30 <= created.lease_until <= time.time() + 30
        assert await journal.claim("gw-2", 60) == []  # a live lease: nobody else takes it
        await journal.create(record("e-2", owner="gw-9", lease_until=5.0))
        kept = await journal.get("e-2")
        assert kept is not None
        assert (kept.owner, kept.lease_until) == ("gw-9", 5.0)


@pytest.mark.parametrize("shape", ["one-statement", "transaction"])
async def test_entries_of_an_execution_another_owner_holds_are_not_written(
    dsn: str, shape: str
) -> None:
    """A took over by B: A's entries are dropped, A is told before its then-callbacks, and
    what A submits afterwards is dropped on the spot; the other executions' entries commit."""
    async with registered(dsn, "gw-a", lease=0.2) as (a, told), opened(dsn) as b:
        await a.create(record("taken"))
        await a.create(record("kept"))
        a.submit([event("taken", 1), event("kept", 1)])
        await a.flush()
        await asyncio.sleep(0.25)  # both leases expire; b claims them, then a renews "kept" only
        claimed = await b.claim("gw-b", 60)
        assert sorted(r.execution_id for r in claimed) == ["kept", "taken"]
        await b.release("gw-b", ["kept"])
        assert await a.claim("gw-a", 60) != []  # "kept" is a's again

        order: list[str] = []
        lost_first = lambda: order.append(f"then lost={len(told.lost)}")  # noqa: E731
        if shape == "transaction":  # an outcome after its intent: several statements
            for execution_id in ("taken", "kept"):
                a.submit(
                    [
                        IntentEntry(execution_id, "reserve", False, 1, 1.0, {"n": 1}),
                        OutcomeEntry(execution_id, "reserve", False, 1, 2.0, response={"ok": 1}),
                    ]
                )
        a.submit([event("taken", 2), event("kept", 2)], then=lost_first)
        await a.flush()
        assert told.lost == [{"taken"}]
        assert order == ["then lost=1"]  # told before the callbacks of the group ran
        assert [e.sequence for e in await b.events("taken")] == [1]
        assert [e.sequence for e in await b.events("kept")] == [1, 2]
        if shape == "transaction":
            assert await b.attempts("taken") == []
            assert len(await b.attempts("kept")) == 1

        called: list[int] = []
        a.submit([event("taken", 3)], then=lambda: called.append(3))  # disowned: dropped
        await a.flush()
        assert called == []
        assert told.lost == [{"taken"}]
        assert [e.sequence for e in await b.events("taken")] == [1]
        current = await b.get("taken")
        assert current is not None
        assert (current.owner, current.last_sequence) == ("gw-b", 1)


async def test_a_finished_execution_takes_no_more_entries(dsn: str) -> None:
    """Once its final state is committed (the owner cleared), a late entry is fenced off."""
    async with registered(dsn, "gw-a") as (a, told):
        await a.create(record("e-1"))
        a.submit([event("e-1", 1), finish("e-1")])
        await a.flush()
        a.submit([StateEntry("e-1", ExecutionState.COMPENSATING, 5.0), event("e-1", 2)])
        await a.flush()
        assert told.lost == [{"e-1"}]
        done = await a.get("e-1")
        assert done is not None
        assert (done.state, done.last_sequence) == (ExecutionState.SUCCEEDED, 1)


async def write_until_lost(
    journal: PostgresJournal, told: Owner, execution_id: str, stop: asyncio.Event
) -> None:
    """Commit events 1, 2, 3 … of ``execution_id`` one by one until told it was lost."""
    sequence = 0
    while not stop.is_set() and not told.lost:
        sequence += 1
        journal.submit([event(execution_id, sequence)])
        await journal.flush()


async def test_a_claim_racing_the_writes_of_the_old_owner_is_never_overtaken(dsn: str) -> None:
    """A writes events as fast as it can while its lease runs out and B claims: every event of A
    that was written has a sequence at most the one B's claim saw (none landed after it)."""
    for round_ in range(5):
        execution_id = f"race-{round_}"
        async with registered(dsn, "gw-a", lease=0.3) as (a, told), opened(dsn) as b:
            await a.create(record(execution_id))
            stop = asyncio.Event()
            writer = asyncio.create_task(write_until_lost(a, told, execution_id, stop))
            claimed: list[Any] = []
            async with asyncio.timeout(10):
                while not claimed:
                    claimed = await b.claim("gw-b", 60)
            await until(lambda: bool(told.lost), within=10)
            stop.set()
            await asyncio.wait_for(writer, 10)
            (taken,) = claimed
            sequences = [e.sequence for e in await b.events(execution_id)]
            assert sequences == list(range(1, taken.last_sequence + 1)), round_
            assert told.lost == [{execution_id}]


async def test_a_cancel_requested_anywhere_reaches_the_owner(dsn: str) -> None:
    """request_cancel on B: A hears of it within moments and finds it among its requests."""
    async with registered(dsn, "gw-a") as (a, told), opened(dsn) as b:
        await a.create(record("e-1"))
        await a.create(record("e-2"))
        assert await b.request_cancel("e-1", "changed my mind") is True
        assert await b.request_cancel("e-1", "second reason") is True  # kept once
        await until(lambda: "e-1" in told.cancels, within=5)
        assert await a.cancel_requests("gw-a") == {"e-1": "changed my mind"}
        assert await b.cancel_requests("gw-b") == {}
        a.submit([finish("e-1")])
        await a.flush()
        assert await a.cancel_requests("gw-a") == {}  # finished: nothing left to cancel
        assert await b.request_cancel("e-1", "too late") is False
        assert await b.request_cancel("unknown", "?") is False


async def test_a_released_lease_is_claimed_at_once(dsn: str) -> None:
    """release() ends the owner's lease now; another owner's release changes nothing."""
    async with registered(dsn, "gw-a") as (a, _), opened(dsn) as b:
        await a.create(record("e-1"))
        await b.release("gw-b", ["e-1"])
        assert await b.claim("gw-b", 60) == []
        await a.release("gw-a", ["e-1"])
        (claimed,) = await b.claim("gw-b", 60)
        assert claimed.owner == "gw-b"


def test_maestro_execute_refuses_a_journal_that_replicas_share() -> None:
    """``maestro execute --journal postgresql://…`` exits 2 before anything runs: it would keep no
    lease, and a replica would claim the execution under it."""
    order = {"order_id": "X", "sku": "s", "qty": 1, "amount": 1, "address": "a", "email": "e"}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "maestro_gateway", "execute", str(CHECKOUT)),
            *("--input", json.dumps(order), "--journal", "postgresql://gw:pw@127.0.0.1:1/db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "shared by replicas" in done.stderr
