"""The events of one ``Execute`` stream, buffered up to a bound, then read back from the journal.

The engine hands each event to the stream's sink as it happens (once it is journaled), and the
stream writes them to the client as fast as the client reads. A client that reads slowly, or not
at all, must not make the gateway keep every event in memory (a foreach of 10,000 iterations
produces 20,000 of them): past ``limit`` buffered events the feed drops what it holds and stops
buffering, and when the reader next asks, it pages the events it has not sent from the journal,
which has them all (DESIGN §10: an event is journaled before it is streamed). Once it has caught
up it buffers live events again. Events reach the reader once each, in sequence order.
"""

from __future__ import annotations

import asyncio
from collections import deque

from maestro_gateway.engine.events import Event
from maestro_gateway.engine.journaling import event_from_entry
from maestro_gateway.journal.base import Journal

DEFAULT_LIMIT = 1024
"""Events an ``Execute`` stream buffers before it reads the rest back from the journal."""


class EventFeed:
    """Events of ``execution_id`` for one reader: :meth:`put` is the engine's sink.

    ``execution_id`` may be set after the feed is made (a stream learns it once its request is
    admitted), as long as it is before the first event.
    """

    def __init__(
        self, journal: Journal, execution_id: str = "", limit: int = DEFAULT_LIMIT
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._journal = journal
        self.execution_id = execution_id
        self._limit = limit
        self._buffer: deque[Event] = deque()
        self._paged: deque[Event] = deque()
        self._lagging = False
        self._closed = False
        self._sent = 0
        self._changed = asyncio.Event()
        self.overflows = 0
        """How many times the buffer overflowed (for tests and logs)."""

    def put(self, event: Event) -> None:
        """Take one live event (synchronously, from the engine)."""
        if self._lagging:
            return  # the journal has it; it is read back when the reader catches up
        if len(self._buffer) >= self._limit:
            self._lagging = True
            self.overflows += 1
            self._buffer.clear()
        else:
            self._buffer.append(event)
        self._changed.set()

    def close(self) -> None:
        """No more events will come (the execution's task is done)."""
        self._closed = True
        self._changed.set()

    async def get(self) -> Event | None:
        """The next event not yet returned, in sequence order; None once closed and drained."""
        while True:
            event = self._next_buffered()
            if event is not None:
                return event
            if self._lagging:
                await self._page()
                continue
            if self._closed:
                return None
            self._changed.clear()
            await self._changed.wait()

    def _next_buffered(self) -> Event | None:
        for queue in (self._paged, self._buffer):
            while queue:
                event = queue.popleft()
                if event.sequence > self._sent:
                    self._sent = event.sequence
                    return event
        return None

    async def _page(self) -> None:
        """Read the unsent events from the journal; stop lagging once none is left."""
        entries = await self._journal.events(self.execution_id, self._sent)
        if not entries:
            # Buffer again from now on, then look once more: an event committed between the
            # read and this point is in the journal, one after it reaches the buffer.
            self._lagging = False
            entries = await self._journal.events(self.execution_id, self._sent)
        self._paged.extend(event_from_entry(e) for e in entries[: self._limit])
