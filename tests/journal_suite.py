"""The journal contract (``maestro_gateway/journal/base.py``): one suite for every implementation.

A test module runs it by subclassing :class:`JournalSuite` in a ``Test…`` class; the ``journal``
fixture opens each implementation in turn: in memory, SQLite in a fresh file, PostgreSQL in a
fresh database of the session's throwaway server (``pg_support.py``). Every test talks to the
journal only through the protocol.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from maestro_gateway.journal import (
    BadPageToken,
    CreateEntry,
    EventEntry,
    ExecutionFilter,
    ExecutionRecord,
    ExecutionState,
    IntentEntry,
    Journal,
    LeaseLost,
    MemoryJournal,
    OutcomeEntry,
    PostgresJournal,
    SignalRecord,
    SqliteJournal,
    StateEntry,
)

RUNNING = ExecutionState.RUNNING
COMPENSATING = ExecutionState.COMPENSATING
SUCCEEDED = ExecutionState.SUCCEEDED
FAILED = ExecutionState.FAILED
COMPENSATED = ExecutionState.COMPENSATED


def record(
    execution_id: str, *, workflow: str = "checkout", started_at: float = 1000.0, **changes: Any
) -> ExecutionRecord:
    """A plausible execution record; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "execution_id": execution_id,
        "workflow": workflow,
        "source": f"name: {workflow}\nsteps:\n  - id: reserve\n",
        "path": f"/srv/workflows/{workflow}.yaml",
        "input": {"order_id": execution_id, "qty": 2, "lines": [{"sku": "A-1"}]},
        "labels": {"team": "shop"},
        "metadata": (("x-request-id", f"req-{execution_id}"), ("traceparent", "00-abc-01")),
        "started_at": started_at,
    }
    fields.update(changes)
    return ExecutionRecord(**fields)


def event(execution_id: str, sequence: int, kind: str = "step_started", **data: Any) -> EventEntry:
    """An event with a time derived from its sequence."""
    return EventEntry(
        execution_id, sequence, 2000.0 + sequence, kind, data or {"step_id": "reserve"}
    )


def finish(execution_id: str, state: ExecutionState = SUCCEEDED, at: float = 3000.0) -> StateEntry:
    """The final state entry of an execution, with a result."""
    return StateEntry(execution_id, state, at, {"status": state.value, "output": {"ok": True}})


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Wait until ``condition()`` holds, polling; TimeoutError after ``within`` seconds."""
    for _ in range(int(within / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"still not true after {within}s")


def ids(records: Any) -> list[str]:
    """The execution ids of records, in order."""
    return [r.execution_id for r in records]


def received(
    signal_id: str, *, name: str = "order.paid", time: float = 1000.0, **changes: Any
) -> SignalRecord:
    """A plausible received signal; ``changes`` override any field."""
    fields: dict[str, Any] = {
        "signal_id": signal_id,
        "name": name,
        "params": {"order_id": signal_id, "amount": 12.5, "lines": [{"sku": "A-1"}]},
        "time": time,
    }
    fields.update(changes)
    return SignalRecord(**fields)


def signal_ids(signals: Any) -> list[str]:
    """The signal ids of signal records, in order."""
    return [s.signal_id for s in signals]


async def add_all(journal: Journal, *signals: SignalRecord) -> list[SignalRecord]:
    """Add ``signals`` one after the other (each new); the stored records, in order."""
    added: list[SignalRecord] = []
    for new in signals:
        assert await journal.add_signal(new) is None, new.signal_id
        found = await journal.get_signal(new.signal_id)
        assert found is not None
        added.append(found)
    return added


class JournalSuite:
    """Behaviour every journal shares; MemoryJournal is the reference."""

    @pytest.fixture(params=["memory", "sqlite", "postgresql"])
    async def journal(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> AsyncIterator[Journal]:
        """An opened journal of each kind (SQLite in a fresh file, PostgreSQL in a fresh database)."""
        store: Journal
        if request.param == "memory":
            store = MemoryJournal()
        elif request.param == "sqlite":
            store = SqliteJournal(tmp_path / "journal.db")
        else:
            cluster = request.getfixturevalue("pg_cluster")
            store = PostgresJournal(cluster.dsn(request.getfixturevalue("pg_database")))
        await store.open()
        yield store
        await store.close()

    @pytest.fixture
    async def peer(
        self, journal: Journal, request: pytest.FixtureRequest
    ) -> AsyncIterator[Journal | None]:
        """A second process's journal on the same store (another replica), when replicas can
        share it (PostgreSQL); None otherwise."""
        if journal.replicas is None:
            yield None
            return
        cluster = request.getfixturevalue("pg_cluster")
        other = PostgresJournal(cluster.dsn(request.getfixturevalue("pg_database")))
        await other.open()
        yield other
        await other.close()

    # -- create and get --------------------------------------------------------------------

    async def test_create_commits_the_whole_record(self, journal: Journal) -> None:
        """A created record reads back field for field."""
        original = record(
            "e-1",
            workflow_deadline=1030.5,
            caller_deadline=1010.25,
            triggered_by="sig-7",
            labels={"team": "shop", "tier": "gold"},
        )
        assert await journal.create(original) is None
        assert await journal.get("e-1") == original
        assert await journal.get("e-unknown") is None

    async def test_create_is_insert_if_absent(self, journal: Journal) -> None:
        """A second create with a taken id changes nothing and returns the existing record."""
        original = record("e-1")
        assert await journal.create(original) is None
        again = record("e-1", input={"order_id": "other"}, workflow="refund")
        assert await journal.create(again) == original
        assert await journal.get("e-1") == original

    async def test_creates_racing_for_one_id_make_one_record(self, journal: Journal) -> None:
        """Creates in one stretch: the first with an id commits it, the later ones get its record."""
        first, second, third = (record("same", input={"n": n}) for n in range(3))
        others = [record(f"e-{n}", started_at=float(n)) for n in range(4)]
        results = await asyncio.wait_for(
            asyncio.gather(*(journal.create(r) for r in [first, *others, second, third])), 10
        )
        assert results == [None, None, None, None, None, first, first]
        for created in [first, *others]:
            assert await journal.get(created.execution_id) == created

    async def test_a_create_entry_commits_with_what_follows_it(self, journal: Journal) -> None:
        """A record submitted as an entry is committed no later than the entries after it,
        which are about it, and reads back as ``create`` would have written it."""
        first, second = record("gen-1", labels={"team": "pay"}), record("gen-2", started_at=7.0)
        journal.submit([CreateEntry(first), event("gen-1", 1)])
        journal.submit([CreateEntry(second)])
        journal.submit([IntentEntry("gen-2", "reserve", False, 1, 8.0, {"sku": "A"})])
        await asyncio.wait_for(journal.flush(), 5)
        assert await journal.get("gen-1") == dataclasses.replace(first, last_sequence=1)
        assert await journal.get("gen-2") == second
        assert [e.sequence for e in await journal.events("gen-1")] == [1]
        (attempt,) = await journal.attempts("gen-2")
        assert attempt.request == {"sku": "A"}
        claimed = await journal.claim("me", 30.0)
        assert sorted(r.execution_id for r in claimed) == ["gen-1", "gen-2"]

    async def test_values_round_trip(self, journal: Journal) -> None:
        """JSON-ready values come back equal: unicode, a lone surrogate, big integers, nesting."""
        data = {
            "text": "grüße 🚚 \ud800",
            "big": 2**62 + 1,
            "float": 0.1,
            "nested": {"list": [1, None, True, {"k": []}]},
        }
        await journal.create(record("e-1", input=data))
        journal.submit(
            [
                event("e-1", 1, "step_succeeded", output=data),
                IntentEntry("e-1", "reserve", False, 1, 2001.0, [data, "x"]),
                OutcomeEntry("e-1", "reserve", False, 1, 2002.0, response="plain"),
            ]
        )
        await journal.flush()
        fetched = await journal.get("e-1")
        assert fetched is not None
        assert fetched.input == data
        assert (await journal.events("e-1"))[0].data == {"output": data}
        attempt = (await journal.attempts("e-1"))[0]
        assert (attempt.request, attempt.response) == ([data, "x"], "plain")

    # -- submit, then, flush ---------------------------------------------------------------

    async def test_one_synchronous_stretch_becomes_visible_at_once(self, journal: Journal) -> None:
        """Entries submitted between two awaits are all visible or none: readers never see half."""
        await journal.create(record("e-1"))
        seen: list[int] = []
        stopped = asyncio.Event()

        async def observe() -> None:
            while not stopped.is_set():
                seen.append(len(await journal.events("e-1")))
                await asyncio.sleep(0)

        observer = asyncio.create_task(observe())
        for stretch in range(8):
            for k in range(3):  # three separate submits in one stretch
                journal.submit([event("e-1", 3 * stretch + k + 1)])
                # The stretch holds the loop but lets the writer thread run meanwhile.
                time.sleep(0.002)  # noqa: ASYNC251
            await asyncio.sleep(0.001)
        await journal.flush()
        stopped.set()
        await asyncio.wait_for(observer, 5)
        assert all(count % 3 == 0 for count in seen), seen
        assert [e.sequence for e in await journal.events("e-1")] == list(range(1, 25))
        fetched = await journal.get("e-1")
        assert fetched is not None
        assert fetched.last_sequence == 24

    async def test_then_runs_in_submission_order_once_durable(self, journal: Journal) -> None:
        """Each ``then`` runs in submission order, and what it acknowledges is already readable."""
        await journal.create(record("e-1"))
        order: list[int] = []
        reads: list[asyncio.Task[list[EventEntry]]] = []

        def acknowledge(sequence: int) -> Callable[[], None]:
            def then() -> None:
                order.append(sequence)
                reads.append(asyncio.ensure_future(journal.events("e-1")))

            return then

        for sequence in range(1, 7):
            journal.submit([event("e-1", sequence)], then=acknowledge(sequence))
            if sequence % 2 == 0:
                await asyncio.sleep(0)
        journal.submit([], then=acknowledge(0))  # no entries: still after the ones before
        await journal.flush()
        assert order == [1, 2, 3, 4, 5, 6, 0]
        visible = [len(events) for events in await asyncio.gather(*reads)]
        least = [1, 2, 3, 4, 5, 6, 6]
        assert all(count >= n for count, n in zip(visible, least, strict=True)), visible

    async def test_flush_waits_for_everything_submitted(self, journal: Journal) -> None:
        """After flush every submitted entry is readable, in order; an idle flush returns."""
        await journal.flush()
        await journal.create(record("e-1"))
        for sequence in range(1, 201):
            journal.submit([event("e-1", sequence, n=sequence)])
        await asyncio.wait_for(journal.flush(), 5)
        events = await journal.events("e-1")
        assert [e.sequence for e in events] == list(range(1, 201))
        assert events[199] == event("e-1", 200, n=200)

    async def test_events_after(self, journal: Journal) -> None:
        """``events(id, after)`` returns the events above ``after`` only, in order."""
        await journal.create(record("e-1"))
        journal.submit([event("e-1", n) for n in range(1, 6)])
        await journal.flush()
        assert [e.sequence for e in await journal.events("e-1", 3)] == [4, 5]
        assert [e.sequence for e in await journal.events("e-1")] == [1, 2, 3, 4, 5]
        assert await journal.events("e-1", 5) == []
        assert await journal.events("e-unknown") == []

    async def test_attempts_record_intent_then_outcome(self, journal: Journal) -> None:
        """An intent reads back without outcome until its outcome is committed; order is kept."""
        await journal.create(record("e-1"))
        unavailable = {"step_id": "reserve", "code": "UNAVAILABLE", "message": "down"}
        journal.submit([IntentEntry("e-1", "reserve", False, 1, 10.0, {"sku": "A"})])
        await journal.flush()
        (in_flight,) = await journal.attempts("e-1")
        assert (in_flight.ended_at, in_flight.response, in_flight.error) == (None, None, None)
        journal.submit(
            [
                OutcomeEntry("e-1", "reserve", False, 1, 11.0, error=unavailable),
                IntentEntry("e-1", "reserve", False, 2, 12.0, {"sku": "A"}),
                OutcomeEntry("e-1", "reserve", False, 2, 13.0, response={"id": "r-9"}),
                IntentEntry("e-1", "reserve", True, 1, 14.0, {"id": "r-9"}),
            ]
        )
        await journal.flush()
        first, second, compensation = await journal.attempts("e-1")
        assert (first.attempt, first.ended_at, first.error, first.response) == (
            1,
            11.0,
            unavailable,
            None,
        )
        assert (second.attempt, second.started_at, second.request) == (2, 12.0, {"sku": "A"})
        assert (second.ended_at, second.response, second.error) == (13.0, {"id": "r-9"}, None)
        assert (compensation.step, compensation.compensation, compensation.ended_at) == (
            "reserve",
            True,
            None,
        )
        assert await journal.attempts("e-unknown") == []

    async def test_state_entries(self, journal: Journal) -> None:
        """COMPENSATING keeps the owner; a final state sets ended_at and result, clears the owner."""
        await journal.create(record("e-1"))
        assert ids(await journal.claim("gw-1", 60)) == ["e-1"]
        journal.submit([StateEntry("e-1", COMPENSATING, 2500.0)])
        await journal.flush()
        compensating = await journal.get("e-1")
        assert compensating is not None
        assert (compensating.state, compensating.ended_at, compensating.result) == (
            COMPENSATING,
            None,
            None,
        )
        assert compensating.owner == "gw-1"
        result = {"status": "COMPENSATED", "error": {"step_id": "charge", "code": "ABORTED"}}
        journal.submit([StateEntry("e-1", COMPENSATED, 2600.0, result)])
        await journal.flush()
        final = await journal.get("e-1")
        assert final is not None
        assert (final.state, final.ended_at, final.result) == (COMPENSATED, 2600.0, result)
        assert (final.owner, final.lease_until) == ("", 0.0)
        assert await journal.claim("gw-2", 60) == []

    async def test_entries_of_an_unknown_execution_are_dropped(self, journal: Journal) -> None:
        """Late entries for an execution that is not there (deleted) leave nothing behind."""
        journal.submit(
            [
                event("ghost", 1),
                IntentEntry("ghost", "reserve", False, 1, 1.0, {}),
                OutcomeEntry("ghost", "reserve", False, 1, 2.0, response={}),
                finish("ghost"),
            ]
        )
        await journal.flush()
        assert await journal.get("ghost") is None
        assert await journal.events("ghost") == []
        assert await journal.attempts("ghost") == []
        await journal.create(record("ghost"))
        assert await journal.events("ghost") == []

    # -- listing ---------------------------------------------------------------------------

    async def test_list_filters_newest_first(self, journal: Journal) -> None:
        """``workflow`` AND any of ``states``; an empty filter lists all, newest first."""
        for execution_id, workflow, started, state in [
            ("a-run", "a", 1.0, RUNNING),
            ("a-ok", "a", 2.0, SUCCEEDED),
            ("a-bad", "a", 3.0, FAILED),
            ("b-ok", "b", 4.0, SUCCEEDED),
            ("b-run", "b", 5.0, RUNNING),
        ]:
            await journal.create(record(execution_id, workflow=workflow, started_at=started))
            if state.finished:
                journal.submit([finish(execution_id, state)])
        await journal.flush()

        async def listed(where: ExecutionFilter) -> list[str]:
            page = await journal.list_executions(where, 50)
            assert page.next_token == ""
            return ids(page.executions)

        assert await listed(ExecutionFilter()) == ["b-run", "b-ok", "a-bad", "a-ok", "a-run"]
        assert await listed(ExecutionFilter(workflow="a")) == ["a-bad", "a-ok", "a-run"]
        assert await listed(ExecutionFilter(states=frozenset({SUCCEEDED}))) == ["b-ok", "a-ok"]
        both = ExecutionFilter(workflow="a", states=frozenset({SUCCEEDED, FAILED}))
        assert await listed(both) == ["a-bad", "a-ok"]
        assert await listed(ExecutionFilter(workflow="c")) == []
        page = await journal.list_executions(ExecutionFilter(workflow="b"), 50)
        assert page.executions[0] == await journal.get("b-run")

    async def test_list_pages_without_duplicates_or_gaps(self, journal: Journal) -> None:
        """Pages of any size cover the listing exactly once, start-time ties broken by id."""
        numbers = list(range(23))
        random.Random(5).shuffle(numbers)
        for n in numbers:  # three executions share each start time
            await journal.create(record(f"x{n:02}", workflow="ab"[n % 2], started_at=float(n // 3)))
        expected = [f"x{n:02}" for n in sorted(range(23), key=lambda n: (n // 3, n), reverse=True)]

        async def walk(where: ExecutionFilter, size: int) -> tuple[list[str], int]:
            seen: list[str] = []
            pages, token = 0, ""
            while True:
                page = await journal.list_executions(where, size, token)
                pages += 1
                assert len(page.executions) <= size
                seen += ids(page.executions)
                token = page.next_token
                if not token:
                    return seen, pages

        for size in (1, 4, 7, 22, 23, 50):
            seen, pages = await walk(ExecutionFilter(), size)
            assert seen == expected
            assert pages == max(1, -(-23 // size))
        only_a = [i for i in expected if int(i[1:]) % 2 == 0]
        assert (await walk(ExecutionFilter(workflow="a"), 3))[0] == only_a

    async def test_later_executions_do_not_shift_the_pages(self, journal: Journal) -> None:
        """A token continues after its execution: one started meanwhile does not repeat a row."""
        for n in range(6):
            await journal.create(record(f"x{n}", started_at=float(n)))
        first = await journal.list_executions(ExecutionFilter(), 2)
        assert ids(first.executions) == ["x5", "x4"]
        await journal.create(record("newer", started_at=100.0))
        rest = await journal.list_executions(ExecutionFilter(), 10, first.next_token)
        assert ids(rest.executions) == ["x3", "x2", "x1", "x0"]

    @pytest.mark.parametrize(
        "token",
        [
            "garbage!",
            "bm90LWEtdG9rZW4",  # "not-a-token"
            base64.urlsafe_b64encode(b"m1:[1.5,2]").decode().rstrip("="),
            base64.urlsafe_b64encode(b'm1:["1.5","x"]').decode().rstrip("="),
            base64.urlsafe_b64encode(b'm2:[1.5,"x"]').decode().rstrip("="),
            base64.urlsafe_b64encode(b'm1:[1.5,"x"; DROP TABLE executions').decode(),
        ],
    )
    async def test_list_refuses_a_forged_token(self, journal: Journal, token: str) -> None:
        """A page token this journal did not produce is BadPageToken."""
        await journal.create(record("e-1"))
        with pytest.raises(BadPageToken):
            await journal.list_executions(ExecutionFilter(), 10, token)

    # -- waiting ---------------------------------------------------------------------------

    async def test_wait_events_wakes_on_commit(self, journal: Journal) -> None:
        """A waiter parked on ``after`` returns once a later event is committed."""
        await journal.create(record("e-1"))
        journal.submit([event("e-1", 1)])
        await journal.flush()
        parked = asyncio.create_task(journal.wait_events("e-1", 1, 30))
        await asyncio.sleep(0.02)
        assert not parked.done()
        racing = asyncio.create_task(journal.wait_events("e-1", 1, 30))
        journal.submit([event("e-1", 2)])  # in the same stretch as the waiter's start
        await asyncio.wait_for(asyncio.gather(parked, racing), 5)
        assert [e.sequence for e in await journal.events("e-1", 1)] == [2]

    async def test_wait_events_times_out_or_returns_at_once(self, journal: Journal) -> None:
        """No new event: it returns after ``timeout``; already above ``after``: at once."""
        await journal.create(record("e-1"))
        started = time.monotonic()
        await asyncio.wait_for(journal.wait_events("e-1", 0, 0.05), 5)
        assert time.monotonic() - started >= 0.04
        journal.submit([event("e-1", 1)])
        await journal.flush()
        await asyncio.wait_for(journal.wait_events("e-1", 0, 30), 5)
        await asyncio.wait_for(journal.wait_events("e-unknown", 0, 30), 5)

    # -- leases and retention --------------------------------------------------------------

    async def test_claim_and_renew(self, journal: Journal) -> None:
        """Claim takes unfinished executions without a live lease; renew extends the owner's."""
        for execution_id in ("a", "b", "done"):
            await journal.create(record(execution_id))
        journal.submit([finish("done")])
        await journal.flush()
        before = time.time()
        claimed = await journal.claim("gw-1", 60)
        assert sorted(ids(claimed)) == ["a", "b"]
        assert all(r.owner == "gw-1" and r.lease_until >= before + 60 for r in claimed)
        assert await journal.claim("gw-2", 60) == []
        assert await journal.renew("gw-1", ["a", "b", "done", "ghost"], 120) == {"done", "ghost"}
        renewed = await journal.get("a")
        assert renewed is not None
        assert renewed.owner == "gw-1"
        assert renewed.lease_until >= before + 120
        assert await journal.renew("gw-2", ["a"], 60) == {"a"}
        await journal.create(record("c"))
        assert ids(await journal.claim("gw-3", 0)) == ["c"]  # a lease that ends at once
        (taken,) = await journal.claim("gw-4", 60)
        assert (taken.execution_id, taken.owner) == ("c", "gw-4")
        assert await journal.renew("gw-3", ["c"], 60) == {"c"}

    async def test_claim_takes_at_most_its_limit_oldest_first(self, journal: Journal) -> None:
        """With a limit, claim takes that many free executions, the oldest first; the next
        claim takes the rest; a limit of 0 takes none, and a negative one is refused."""
        for n in (4, 1, 3, 0, 2):  # created out of order: taken by start time, then id
            await journal.create(record(f"e-{n}", started_at=100.0 + n))
        await journal.create(record("e-1b", started_at=101.0))
        await journal.create(record("done", started_at=1.0))
        journal.submit([finish("done")])
        await journal.flush()
        assert await journal.claim("gw-1", 60, 0) == []
        assert ids(await journal.claim("gw-1", 60, 3)) == ["e-0", "e-1", "e-1b"]
        assert ids(await journal.claim("gw-2", 60, 2)) == ["e-2", "e-3"]
        assert ids(await journal.claim("gw-3", 60, 50)) == ["e-4"]
        assert await journal.claim("gw-3", 60, 50) == []
        owners = {i: r.owner for i in ("e-0", "e-2", "e-4") if (r := await journal.get(i))}
        assert owners == {"e-0": "gw-1", "e-2": "gw-2", "e-4": "gw-3"}
        with pytest.raises(ValueError, match="claim limit"):
            await journal.claim("gw-4", 60, -1)

    async def test_signal_writes_by_the_holder_of_the_execution_are_written(
        self, journal: Journal
    ) -> None:
        """An emitted signal (with its producer) and notes ``by`` an execution this process
        holds are written like any other."""
        if journal.replicas is not None:
            journal.replicas.register(
                "gw-1", lease=60, on_lost=lambda _: None, on_cancel=lambda _: None
            )
        await journal.create(record("e-1", owner="gw-1", lease_until=time.time() + 600))
        emitted = received("e-1.announce", producer_execution="e-1", producer_step="announce")
        assert await journal.add_signal(emitted) is None
        await journal.note_signal(
            "e-1.announce", triggered=["on-paid:o-1"], dispatched=True, by="e-1"
        )
        await journal.note_signal("e-1.announce", woke=["e-1"], by="e-1")
        found = await journal.get_signal("e-1.announce")
        assert found is not None
        assert (found.producer_execution, found.triggered, found.woke, found.dispatched) == (
            "e-1",
            ("on-paid:o-1",),
            ("e-1",),
            True,
        )

    async def test_signal_writes_for_an_execution_taken_over_are_refused(
        self, journal: Journal, peer: Journal | None
    ) -> None:
        """Replicas: once another replica claimed an execution, this one's emit of its signal
        and its notes ``by`` it raise LeaseLost, write nothing and report the execution lost;
        the new owner's emit is the one emission the lineage shows."""
        replicas = journal.replicas
        if replicas is None or peer is None or peer.replicas is None:
            pytest.skip("one process holds this journal: nothing can take an execution from it")
        lost: list[set[str]] = []
        replicas.register("gw-a", lease=0.2, on_lost=lost.append, on_cancel=lambda _: None)
        await journal.create(record("e-1"))
        await journal.create(record("e-2"))
        await journal.create(record("held", owner="gw-a", lease_until=time.time() + 600))
        await add_all(journal, received("external"))
        await asyncio.sleep(0.3)  # the leases of e-1 and e-2 run out; another replica takes them
        assert ids(await peer.claim("gw-b", 60)) == ["e-1", "e-2"]
        emitted = received("e-1.announce", producer_execution="e-1", producer_step="announce")
        with pytest.raises(LeaseLost, match="e-1"):
            await journal.add_signal(emitted)
        assert lost == [{"e-1"}]
        with pytest.raises(LeaseLost, match="e-2"):
            await journal.note_signal("external", woke=["e-2"], by="e-2")
        assert lost == [{"e-1"}, {"e-2"}]
        with pytest.raises(LeaseLost):  # lost already: refused before it reaches the store
            await journal.add_signal(emitted)
        assert lost == [{"e-1"}, {"e-2"}]
        assert await peer.get_signal("e-1.announce") is None
        untouched = await peer.get_signal("external")
        assert untouched is not None
        assert untouched.woke == ()
        # What this replica still holds is written; so is the new owner's emit, once.
        kept = received("held.announce", producer_execution="held", producer_step="announce")
        assert await journal.add_signal(kept) is None
        peer.replicas.register("gw-b", lease=60, on_lost=lost.append, on_cancel=lambda _: None)
        assert await peer.add_signal(emitted) is None
        await peer.note_signal("e-1.announce", triggered=["on-paid:o-1"], dispatched=True, by="e-1")
        page = await peer.list_signals(producer_execution="e-1")
        assert signal_ids(page.signals) == ["e-1.announce"]
        (signal,) = page.signals
        assert (signal.producer_step, signal.triggered, signal.dispatched) == (
            "announce",
            ("on-paid:o-1",),
            True,
        )
        assert signal_ids((await peer.list_signals(producer_execution="held")).signals) == [
            "held.announce"
        ]
        assert lost == [{"e-1"}, {"e-2"}]

    async def test_delete_finished_removes_events_and_attempts(self, journal: Journal) -> None:
        """Retention deletes executions that ended before the cutoff, with all they hold."""
        for execution_id, ended in (("old", 150.0), ("newer", 250.0), ("running", None)):
            await journal.create(record(execution_id))
            journal.submit(
                [
                    event(execution_id, 1),
                    IntentEntry(execution_id, "reserve", False, 1, 1.0, {"sku": "A"}),
                    OutcomeEntry(execution_id, "reserve", False, 1, 2.0, response={"id": 1}),
                ]
            )
            if ended is not None:
                journal.submit([finish(execution_id, at=ended)])
        await journal.flush()
        assert await journal.delete_finished(200.0) == 1
        assert await journal.get("old") is None
        assert await journal.events("old") == []
        assert await journal.attempts("old") == []
        assert len(await journal.events("newer")) == 1
        assert len(await journal.attempts("newer")) == 1
        assert await journal.delete_finished(1e12) == 1
        assert ids((await journal.list_executions(ExecutionFilter(), 10)).executions) == ["running"]
        assert await journal.create(record("old")) is None  # the id is free again
        assert await journal.events("old") == []
        assert await journal.attempts("old") == []

    # -- signals ---------------------------------------------------------------------------

    async def test_add_signal_commits_the_whole_signal(self, journal: Journal) -> None:
        """An added signal reads back field for field, under a sequence the journal assigned."""
        original = received(
            "s-1",
            producer_execution="e-1",
            producer_step="announce",
            triggered=("checkout:s-1",),
            not_matched=("refund",),
        )
        assert await journal.add_signal(original) is None
        found = await journal.get_signal("s-1")
        assert found is not None
        assert found.sequence > 0
        assert found == SignalRecord(**{**_fields(original), "sequence": found.sequence})
        assert type(found.params) is dict
        assert await journal.get_signal("s-unknown") is None

    async def test_sequences_increase_in_the_order_signals_are_received(
        self, journal: Journal
    ) -> None:
        """Each signal gets a sequence above every earlier one's, whatever its time says."""
        added = await add_all(journal, *(received(f"s-{n}", time=1000.0 - n) for n in range(5)))
        sequences = [s.sequence for s in added]
        assert sequences == sorted(sequences)
        assert len(set(sequences)) == 5

    async def test_add_signal_is_insert_if_absent(self, journal: Journal) -> None:
        """A second add of an id writes nothing and returns the stored signal."""
        (original,) = await add_all(journal, received("s-1"))
        again = received("s-1", name="order.refunded", params={"other": True}, time=5000.0)
        assert await journal.add_signal(again) == original
        assert await journal.get_signal("s-1") == original
        (later,) = await add_all(journal, received("s-2"))
        assert later.sequence > original.sequence

    async def test_concurrent_adds_of_one_id_make_one_signal(self, journal: Journal) -> None:
        """Adds racing for one id: exactly one returns None, the others its stored signal."""
        racing = [received("same", params={"n": n}) for n in range(6)]
        others = [received(f"s-{n}") for n in range(3)]
        results = await asyncio.wait_for(
            asyncio.gather(*(journal.add_signal(s) for s in [*racing[:3], *others, *racing[3:]])),
            10,
        )
        same = results[:3] + results[6:]
        assert results[3:6] == [None, None, None]
        assert same.count(None) == 1
        stored = await journal.get_signal("same")
        assert stored is not None
        winner = racing[same.index(None)]
        assert stored.params == winner.params
        assert all(result == stored for result in same if result is not None)

    async def test_params_come_back_as_equal_dicts(self, journal: Journal) -> None:
        """Params round-trip as fresh dicts: unicode, a lone surrogate, big integers, nesting."""
        params = {
            "text": "grüße 🚚 \ud800",
            "big": 2**62 + 1,
            "float": 0.1,
            "nested": {"list": [1, None, True, {"k": []}]},
        }
        await journal.add_signal(received("s-1", params=params))
        found = await journal.get_signal("s-1")
        assert found is not None
        assert found.params == params
        assert type(found.params) is dict
        found.params["text"] = "changed"  # type: ignore[index]
        again = await journal.get_signal("s-1")
        assert again is not None
        assert again.params == params

    async def test_params_beyond_json_are_stored_as_grpc_sends_them(self, journal: Journal) -> None:
        """Bytes, timestamps and durations in params (an ``emit`` may render them) are stored."""
        moment = datetime.datetime(2026, 12, 1, 12, 30, tzinfo=datetime.UTC)
        params = {"raw": b"\x00\xff", "at": moment, "wait": datetime.timedelta(seconds=1.5)}
        assert await journal.add_signal(received("s-1", params=params)) is None
        found = await journal.get_signal("s-1")
        assert found is not None
        assert found.params == {"raw": "AP8=", "at": "2026-12-01T12:30:00Z", "wait": "1.5s"}

    async def test_params_that_cannot_be_stored_are_refused(self, journal: Journal) -> None:
        """A value no JSON form exists for is TypeError, and nothing is added."""
        with pytest.raises(TypeError):
            await journal.add_signal(received("s-1", params={"what": object()}))
        assert await journal.get_signal("s-1") is None
        assert await journal.add_signal(received("s-1")) is None

    async def test_add_signal_follows_the_entries_submitted_before_it(
        self, journal: Journal
    ) -> None:
        """Entries submitted before an add are durable once it returns (it commits after them)."""
        await journal.create(record("e-1"))
        journal.submit([event("e-1", 1), event("e-1", 2)])  # no ``then``: they would wait
        await journal.add_signal(received("s-1", producer_execution="e-1"))
        assert [e.sequence for e in await journal.events("e-1")] == [1, 2]

    async def test_list_signals_filters_newest_first(self, journal: Journal) -> None:
        """``name`` and/or ``producer_execution``; "" matches any; newest first by sequence."""
        await add_all(
            journal,
            received("paid-ext", name="order.paid"),
            received("paid-e1", name="order.paid", producer_execution="e-1", producer_step="a"),
            received("ship-e1", name="order.shipped", producer_execution="e-1", producer_step="b"),
            received("paid-e2", name="order.paid", producer_execution="e-2", producer_step="a"),
            received("ship-ext", name="order.shipped", time=1.0),
        )

        async def listed(**where: str) -> list[str]:
            page = await journal.list_signals(**where)
            assert page.next_token == ""
            return signal_ids(page.signals)

        assert await listed() == ["ship-ext", "paid-e2", "ship-e1", "paid-e1", "paid-ext"]
        assert await listed(name="order.paid") == ["paid-e2", "paid-e1", "paid-ext"]
        assert await listed(producer_execution="e-1") == ["ship-e1", "paid-e1"]
        assert await listed(name="order.paid", producer_execution="e-1") == ["paid-e1"]
        assert await listed(name="order.cancelled") == []
        assert await listed(producer_execution="e-3") == []
        page = await journal.list_signals(name="order.shipped")
        assert page.signals[0] == await journal.get_signal("ship-ext")

    async def test_list_signals_pages_without_duplicates_or_gaps(self, journal: Journal) -> None:
        """Pages of any size cover the listing once; a signal added meanwhile shifts nothing."""
        await add_all(journal, *(received(f"s{n:02}", name="ab"[n % 2]) for n in range(17)))
        expected = [f"s{n:02}" for n in reversed(range(17))]

        async def walk(size: int, **where: str) -> tuple[list[str], int]:
            seen: list[str] = []
            pages, token = 0, ""
            while True:
                page = await journal.list_signals(page_size=size, page_token=token, **where)
                pages += 1
                assert len(page.signals) <= size
                seen += signal_ids(page.signals)
                token = page.next_token
                if not token:
                    return seen, pages

        for size in (1, 4, 16, 17, 50):
            seen, pages = await walk(size)
            assert seen == expected
            assert pages == max(1, -(-17 // size))
        assert (await walk(3, name="a"))[0] == [i for i in expected if int(i[1:]) % 2 == 0]
        first = await journal.list_signals(page_size=2)
        assert signal_ids(first.signals) == ["s16", "s15"]
        await add_all(journal, received("newer"))
        rest = await journal.list_signals(page_size=3, page_token=first.next_token)
        assert signal_ids(rest.signals) == ["s14", "s13", "s12"]
        with pytest.raises(ValueError, match="page_size"):
            await journal.list_signals(page_size=0)

    @pytest.mark.parametrize(
        "token",
        [
            "garbage!",
            "bm90LWEtdG9rZW4",  # "not-a-token"
            base64.urlsafe_b64encode(b"s1:1.5").decode().rstrip("="),
            base64.urlsafe_b64encode(b"s1:true").decode().rstrip("="),
            base64.urlsafe_b64encode(b"s1:-1").decode().rstrip("="),
            base64.urlsafe_b64encode(b's1:"3"').decode().rstrip("="),
            base64.urlsafe_b64encode(b"s1:99999999999999999999").decode().rstrip("="),
            base64.urlsafe_b64encode(b"s2:3").decode().rstrip("="),
            base64.urlsafe_b64encode(b'm1:[1.5,"x"]').decode().rstrip("="),
            base64.urlsafe_b64encode(b"s1:3; DROP TABLE signals").decode(),
        ],
    )
    async def test_list_signals_refuses_a_forged_token(self, journal: Journal, token: str) -> None:
        """A page token this journal did not produce for signals is BadPageToken."""
        await add_all(journal, received("s-1"))
        with pytest.raises(BadPageToken):
            await journal.list_signals(page_token=token)

    async def test_tokens_of_one_listing_are_refused_by_the_other(self, journal: Journal) -> None:
        """An executions token is no signals token, and the other way round."""
        for n in range(3):
            await journal.create(record(f"e-{n}", started_at=float(n)))
        await add_all(journal, *(received(f"s-{n}") for n in range(3)))
        executions = await journal.list_executions(ExecutionFilter(), 1)
        signals = await journal.list_signals(page_size=1)
        assert executions.next_token
        assert signals.next_token
        with pytest.raises(BadPageToken):
            await journal.list_signals(page_token=executions.next_token)
        with pytest.raises(BadPageToken):
            await journal.list_executions(ExecutionFilter(), 1, signals.next_token)

    async def test_signals_since_by_name_time_and_sequence(self, journal: Journal) -> None:
        """Signals of one name at ``since`` or later and above ``after``, oldest first."""
        added = await add_all(
            journal,
            received("early", time=100.0),
            received("at", time=200.0),
            received("other-name", name="order.shipped", time=300.0),
            received("late", time=400.0),
            received("late-but-clock-behind", time=150.0),
            received("later", time=500.0),
        )
        by_id = {s.signal_id: s for s in added}
        assert signal_ids(await journal.signals_since("order.paid", 200.0)) == [
            "at",
            "late",
            "later",
        ]
        assert await journal.signals_since("order.paid", 200.0) == [
            by_id["at"],
            by_id["late"],
            by_id["later"],
        ]
        after = by_id["late"].sequence
        assert signal_ids(await journal.signals_since("order.paid", 0.0, after)) == [
            "late-but-clock-behind",
            "later",
        ]
        assert signal_ids(await journal.signals_since("order.shipped", 0.0)) == ["other-name"]
        assert await journal.signals_since("order.paid", 501.0) == []
        assert await journal.signals_since("order.paid", 0.0, by_id["later"].sequence) == []

    async def test_note_signal_grows_the_lineage_once_per_id(self, journal: Journal) -> None:
        """Notes append ids not listed yet, in order; ``dispatched`` once set stays set."""
        await add_all(journal, received("s-1"), received("s-2"))
        await journal.note_signal("s-1", triggered=["checkout:s-1"], not_matched=["refund"])
        noted = await journal.get_signal("s-1")
        assert noted is not None
        assert (noted.triggered, noted.woke, noted.not_matched) == (
            ("checkout:s-1",),
            (),
            ("refund",),
        )
        assert not noted.dispatched
        await journal.note_signal(
            "s-1",
            triggered=["billing:o-7", "checkout:s-1", "billing:o-7", "audit:s-1"],
            woke=["e-9", "e-3", "e-9"],
            not_matched=["refund"],
            dispatched=True,
        )
        await journal.note_signal("s-1", woke=["e-3", "e-1"])  # not dispatched: it stays so
        final = await journal.get_signal("s-1")
        assert final is not None
        assert final.triggered == ("checkout:s-1", "billing:o-7", "audit:s-1")
        assert final.woke == ("e-9", "e-3", "e-1")
        assert final.not_matched == ("refund",)
        assert final.dispatched
        assert (final.params, final.sequence) == (noted.params, noted.sequence)
        untouched = await journal.get_signal("s-2")
        assert untouched is not None
        assert (untouched.triggered, untouched.woke, untouched.dispatched) == ((), (), False)
        await journal.note_signal("s-unknown", triggered=["x"], dispatched=True)
        assert await journal.get_signal("s-unknown") is None

    async def test_an_added_signal_keeps_its_lineage_without_duplicates(
        self, journal: Journal
    ) -> None:
        """The lineage an added signal already holds is kept, each id once, in order."""
        await journal.add_signal(
            received("s-1", triggered=("a", "b", "a"), woke=("w", "w"), dispatched=True)
        )
        found = await journal.get_signal("s-1")
        assert found is not None
        assert (found.triggered, found.woke, found.not_matched, found.dispatched) == (
            ("a", "b"),
            ("w",),
            (),
            True,
        )

    async def test_undispatched_signals_oldest_first(self, journal: Journal) -> None:
        """The signals not marked dispatched, in the order they were received."""
        await add_all(
            journal,
            received("s-1", time=300.0),
            received("s-2", time=200.0, dispatched=True),
            received("s-3", time=100.0),
            received("s-4", time=50.0),
        )
        assert signal_ids(await journal.undispatched_signals()) == ["s-1", "s-3", "s-4"]
        await journal.note_signal("s-3", triggered=["checkout:s-3"], dispatched=True)
        await journal.note_signal("s-1", triggered=["checkout:s-1"])
        pending = await journal.undispatched_signals()
        assert signal_ids(pending) == ["s-1", "s-4"]
        assert pending[0] == await journal.get_signal("s-1")

    async def test_delete_finished_removes_old_signals(self, journal: Journal) -> None:
        """Retention deletes signals received before the cutoff and counts executions only."""
        await journal.create(record("done"))
        journal.submit([finish("done", at=150.0)])
        await journal.flush()
        old, _, _ = await add_all(
            journal,
            received("old", time=100.0),
            received("at-cutoff", time=200.0),
            received("newer", time=300.0, producer_execution="done"),
        )
        assert await journal.delete_finished(200.0) == 1
        assert await journal.get_signal("old") is None
        assert signal_ids((await journal.list_signals()).signals) == ["newer", "at-cutoff"]
        assert signal_ids(await journal.undispatched_signals()) == ["at-cutoff", "newer"]
        assert await journal.delete_finished(1e12) == 0
        assert (await journal.list_signals()).signals == ()
        # A duplicate of an expired signal is a new signal, under a sequence never used before.
        (again,) = await add_all(journal, received("old", time=1e12))
        assert again.sequence > old.sequence
        assert again.time == 1e12


def _fields(value: Any) -> dict[str, Any]:
    """The fields of a slotted dataclass instance, by name."""
    return {name: getattr(value, name) for name in value.__slots__}
