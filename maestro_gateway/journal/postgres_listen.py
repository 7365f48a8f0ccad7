"""Who waits for an execution's next event, and the LISTEN connection that wakes them.

``wait_events`` parks a future here; the writer wakes it when this process commits a later
event, and :meth:`Waiters.listen` when another replica does (its commit NOTIFYs ``CHANNEL``
with ``id<TAB>sequence`` lines). While the LISTEN connection is down, nothing is heard: when it
is back, every waiter is woken to look for itself, so a commit announced meanwhile is not missed.

Only a replica with a waiter parked LISTENs on ``CHANNEL`` (:meth:`Waiters.follow`, before the
waiter reads where the execution stands, so a commit is either seen by that read or heard
after it); it stops (UNLISTEN) at the first heartbeat with none left. Every replica commits
events, and most have no one watching another's executions: they are not woken, nor do they
parse, for each of the other replicas' commits (DESIGN §8's bound on the CPU of replicas).

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
        self._conn: Connection | None = None
        """The LISTEN connection while it is up."""
        self._listening = False
        """Whether it LISTENs on ``CHANNEL``."""
        self._lock = asyncio.Lock()
        """One statement at a time on the connection (LISTEN, UNLISTEN, the heartbeat)."""
        self.heard = 0
        """Notifications of ``CHANNEL`` received (what the bench counts)."""

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
        self.heard += 1
        if pid == self._own_pid() or not self._by_id:
            return  # our own commit (its waiters were woken already), or nobody waits
        self.wake(parse_payload(str(payload)))

    async def follow(self) -> None:
        """LISTEN on ``CHANNEL`` if not yet (a waiter was parked): returns once the other
        replicas' commits are heard, or at once while the connection is down (when it is back,
        every waiter is woken)."""
        conn = self._conn
        if self._listening or conn is None:
            return
        async with self._lock:
            if self._listening or conn is not self._conn or conn.is_closed():
                return
            try:
                await conn.add_listener(CHANNEL, self.on_notify)
            except Exception:
                return  # broken: the heartbeat finds out and reconnects
            self._listening = True

    async def _idle(self, conn: Connection) -> None:
        """UNLISTEN on ``CHANNEL`` when nobody waits any more."""
        if self._listening and not self._by_id:
            await conn.remove_listener(CHANNEL, self.on_notify)
            self._listening = False

    def on_cancel_notify(self, conn: object, pid: int, channel: str, payload: object) -> None:
        """The LISTEN callback of ``CANCEL_CHANNEL``: a cancel was requested."""
        if self._on_cancel is not None:
            self._on_cancel(str(payload))

    async def subscribe(self, conn: Connection) -> None:
        """LISTEN on ``conn`` to the cancels, and to the commits when someone waits."""
        self._listening = False
        if self._by_id:
            await conn.add_listener(CHANNEL, self.on_notify)
            self._listening = True
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
            self._conn = conn
            try:
                while not conn.is_closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), HEARTBEAT)
                        break
                    # Nothing heard for a while: a connection dropped without a word (a
                    # network partition) would never say so; ask.
                    try:
                        async with self._lock:
                            await asyncio.wait_for(conn.execute("SELECT 1"), HEARTBEAT)
                            await asyncio.wait_for(self._idle(conn), HEARTBEAT)
                    except Exception:
                        break
            finally:
                self._conn = None
                self._listening = False
                conn.terminate()
            conn = None
