"""What the ``wait`` and ``emit`` step kinds need from the gateway (DESIGN §13).

The engine knows no journal query or trigger: it asks a :class:`SignalPort`, which the gateway
implements (``maestro_gateway.server.signals.Signals``). Signals reach a waiting step as plain
values, ``{signal_id, name, params, time}``, the form templates see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

SignalValue = dict[str, Any]
"""A signal as templates see it: ``{signal_id, name, params, time}``."""


class SignalPort(Protocol):
    """Sends signals and waits for them on behalf of executions."""

    async def emit(
        self, name: str, params: Mapping[str, Any], signal_id: str, producer: tuple[str, str]
    ) -> SignalValue:
        """Send a signal produced by ``producer`` (execution id, step path); return the stored
        signal (for an id already received: the one received first, nothing sent again)."""
        ...

    async def wait(
        self,
        execution_id: str,
        name: str,
        matches: Callable[[SignalValue], bool],
        since: float,
        consumed: set[str],
    ) -> SignalValue:
        """The first signal called ``name`` received at wall-clock ``since`` or later, whose id
        is not in ``consumed`` and that ``matches``; wait for it as long as it takes (the caller
        bounds the wait). Its id is added to ``consumed`` and ``execution_id`` to its ``woke``.
        ``matches`` may raise ``EvaluationError``, which this raises."""
        ...
