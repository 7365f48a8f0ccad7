"""The full stack for end-to-end tests: the four demo services and ``maestro serve`` over them.

The demo services (inventory on grpcio, payments on grpclib, shipping on Node.js, mailer on
aiohttp) and the gateway all run as subprocesses on free ports; the gateway serves the shipped
``workflows/`` retargeted at the services' ports. Clients are real external programs (grpcurl,
Node.js), run through :func:`run_program` with a bounded wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.gateway import GatewayProcess, running_gateway, write_workflows
from demo.harness import DemoServices, running_services

PROGRAM_TIMEOUT = 30.0

ORDER: dict[str, Any] = {
    "order_id": "E2E-1",
    "sku": "sku-1",
    "qty": 2,
    "amount": 4999,
    "currency": "EUR",
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}


def order(**changes: Any) -> dict[str, Any]:
    """A valid ``checkout`` input with ``changes`` applied."""
    return {**ORDER, **changes}


@dataclass
class Stack:
    """The running demo services and the gateway in front of them."""

    demo: DemoServices
    gateway: GatewayProcess

    @property
    def address(self) -> str:
        """The gateway's ``host:port``."""
        return self.gateway.address


@contextlib.asynccontextmanager
async def running_stack() -> AsyncIterator[Stack]:
    """Run the demo services and ``maestro serve`` over them for the duration of the block."""
    with tempfile.TemporaryDirectory(prefix="maestro-e2e-") as scratch:
        async with running_services() as demo:
            workflows = write_workflows(Path(scratch), demo)
            async with running_gateway(workflows) as gateway:
                yield Stack(demo, gateway)


@dataclass(frozen=True)
class Completed:
    """A finished external program."""

    code: int
    stdout: str
    stderr: str


async def run_program(argv: Sequence[str], limit: float = PROGRAM_TIMEOUT) -> Completed:
    """Run ``argv`` to completion (killed after ``limit`` seconds) and return its output."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), limit)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Completed(process.returncode, out.decode(), err.decode())
