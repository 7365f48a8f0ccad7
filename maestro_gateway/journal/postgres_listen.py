"""Who waits for an execution's next event, and the LISTEN connection that wakes them.

``wait_events`` parks a future here; the writer wakes it when this process commits a later
event, and :meth:`Waiters.listen` when another replica does (its commit NOTIFYs ``CHANNEL``
with ``id<TAB>sequence`` lines). While the LISTEN connection is down, nothing is heard: when it
is back, every waiter is woken to look for itself, so a commit announced meanwhile is not missed.

The same connection hears the cancels requested on any replica (``CANCEL_CHANNEL``, the payload
an execution id), handed to ``on_cancel``; after a reconnection it is called with "" (look at
every request: some may have been announced meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from maestro_gateway.journal.postgres_connect import connect_delay
from maestro_gateway.journal.postgres_schema import CANCEL_CHANNEL, CHANNEL, parse_payload

if TYPE_CHECKING:
    import asyncpg

    Connection = asyncpg.Connection[asyncpg.Record]

HEARTBEAT = 10.0
"""Seconds of silence after which the LISTEN connection is checked."""

Waiter = tuple[int, asyncio.Future[None]]


class Waiters:
    """The parked ``wait_events`` calls of one journal, by execution id.

    Args:
        own_pid: the server pid of this journal's writer connection (its NOTIFYs are its own).
        on_cancel: told the execution id of each cancel announced on ``CANCEL_CHANNEL``.
    """

    def __init__(
        self, own_pid: Callable[[], int], on_cancel: Callable[[str], None] | None = None
    ) -> None:
        self._own_pid = own_pid
        self._on_cancel = on_cancel
        self._by_id: dict[str, list[Waiter]] = {}

    def park(self, execution_id: str, after: int) -> Waiter:
        """A future that is set once an event above ``after`` is committed (or on :meth:`wake_all`)."""
        waiter: Waiter = (after, asyncio.get_running_loop().create_future())
        self._by_id.setdefault(execution_id, []).append(waiter)
        return waiter

    def unpark(self, execution_id: str, waiter: Waiter) -> None:
        """Forget ``waiter`` (it returned)."""
        waiters = self._by_id.get(execution_id)
        if waiters is not None:
            waiters.remove(waiter)
            if not waiters:
                del self._by_id[execution_id]

    def wake(self, committed: Iterable[tuple[str, int]]) -> None:
        """Wake the waiters of each (execution id, latest sequence) that are behind it."""
        for execution_id, sequence in committed:
            for after, future in self._by_id.get(execution_id, ()):
                if sequence > after and not future.done():
                    future.set_result(None)

    def wake_all(self) -> None:
        """Wake every waiter: each reads for itself what it missed."""
        for waiters in self._by_id.values():
            for _, future in waiters:
                if not future.done():
                    future.set_result(None)

    def on_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        """The LISTEN callback: another replica committed events."""
        if pid == self._own_pid():
            return  # our own commit: its waiters were woken already
        self.wake(parse_payload(str(payload)))

    def on_cancel_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        """The LISTEN callback of ``CANCEL_CHANNEL``: a cancel was requested."""
        if self._on_cancel is not None:
            self._on_cancel(str(payload))

    async def subscribe(self, conn: Connection) -> None:
        """LISTEN on ``conn`` to both channels."""
        await conn.add_listener(CHANNEL, self.on_notify)
        await conn.add_listener(CANCEL_CHANNEL, self.on_cancel_notify)

    async def listen(
        self, conn: Connection | None, connect: Callable[[], Awaitable[Connection]]
    ) -> None:
        """Hold the LISTEN connection (``conn``, else a new one); reconnect whenever it breaks."""
        attempt = 0
        while True:
            if conn is None:
                try:
                    conn = await connect()
                    await self.subscribe(conn)
                except Exception:
                    if conn is not None:
                        conn.terminate()
                        conn = None
                    await asyncio.sleep(connect_delay(attempt))
                    attempt += 1
                    continue
                attempt = 0
                self.wake_all()  # what was announced while no one listened
                if self._on_cancel is not None:
                    self._on_cancel("")
            lost = asyncio.Event()

            def terminated(_: object, lost: asyncio.Event = lost) -> None:
                lost.set()

            conn.add_termination_listener(terminated)
            try:
                while not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), HEARTBEAT)
                        break
                    # Nothing heard for a while: a connection dropped without a word (a
                    # network partition) would never say so; ask.
                    try:
                        await asyncio.wait_for(conn.execute("SELECT 1"), HEARTBEAT)
                    except Exception:
                        break
            finally:
                conn.terminate()
            conn = None
