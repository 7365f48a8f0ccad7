"""An Execute stream's feed: bounded buffering, the rest read back from the journal (issue 14)."""

from __future__ import annotations

import asyncio

import pytest

from maestro_gateway.engine.events import StepStarted
from maestro_gateway.engine.journaling import event_entry
from maestro_gateway.journal import ExecutionRecord, MemoryJournal
from maestro_gateway.server.feed import EventFeed


async def journal_with_execution() -> MemoryJournal:
    journal = MemoryJournal()
    await journal.open()
    await journal.create(ExecutionRecord("ex", "wf", "name: wf", "<string>", {}))
    return journal


async def commit(journal: MemoryJournal, feed: EventFeed, first: int, last: int) -> None:
    """Journal events ``first``..``last``, each handed to the feed once durable (as the engine
    does)."""
    for n in range(first, last + 1):
        event = StepStarted("ex", n, 0.0, f"s{n}", 1)
        journal.submit((event_entry(event),), lambda e=event: feed.put(e))
    await journal.flush()
    await asyncio.sleep(0)


async def drain(feed: EventFeed) -> list[int]:
    out: list[int] = []
    async with asyncio.timeout(5):
        while (event := await feed.get()) is not None:
            out.append(event.sequence)
    return out


async def test_events_below_the_limit_are_streamed_from_the_buffer() -> None:
    journal = await journal_with_execution()
    feed = EventFeed(journal, "ex", limit=10)
    await commit(journal, feed, 1, 5)
    feed.close()
    assert await drain(feed) == [1, 2, 3, 4, 5]
    assert feed.overflows == 0


async def test_a_reader_that_falls_behind_gets_every_event_once_from_the_journal() -> None:
    """10,000 events with a buffer of 16: nothing lost, nothing twice, memory bounded."""
    journal = await journal_with_execution()
    feed = EventFeed(journal, "ex", limit=16)
    await commit(journal, feed, 1, 10_000)
    assert len(feed._buffer) <= 16
    feed.close()
    assert await drain(feed) == list(range(1, 10_001))
    assert feed.overflows == 1


async def test_events_keep_arriving_while_the_reader_catches_up() -> None:
    journal = await journal_with_execution()
    feed = EventFeed(journal, "ex", limit=4)
    seen: list[int] = []

    async def reader() -> None:
        while (event := await feed.get()) is not None:
            seen.append(event.sequence)
            if event.sequence % 7 == 0:
                await asyncio.sleep(0.001)  # a slow reader

    task = asyncio.create_task(reader())
    for start in range(1, 400, 20):
        await commit(journal, feed, start, start + 19)
    feed.close()
    async with asyncio.timeout(10):
        await task
    assert seen == list(range(1, 401))
    assert feed.overflows >= 1


def test_the_limit_is_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventFeed(MemoryJournal(), "ex", limit=0)
