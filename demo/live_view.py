"""An in-process gateway with its admin port over the demo services, and executions to look at.

Used by the live view's tests and to take the README's screenshot::

    .venv/bin/python -m demo.live_view --screenshot docs/live-view.png

which starts the demo services, a gateway (the real engine, transports and SQLite journal) with
its admin port on 127.0.0.1, runs a few executions (succeeded, compensated, retried line by line,
one still running), opens the live view in a headless Chromium (:mod:`demo.browser`) and saves
two PNGs: ``NAME.png`` one execution's timeline, ``NAME-list.png`` the executions list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.gateway import write_workflows
from demo.harness import DemoServices, running_services
from maestro_gateway.admin import AdminServer
from maestro_gateway.journal import Journal, SqliteJournal
from maestro_gateway.server.app import GatewayServer, create_gateway
from maestro_gateway.server.metrics import GatewayMetrics

CALL_TIMEOUT = 60.0
ORDER: dict[str, Any] = {
    "sku": "sku-1",
    "qty": 2,
    "amount": 4999,
    "currency": "EUR",
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}
LINES: dict[str, Any] = {
    "lines": [{"sku": "sku-1", "qty": 1}, {"sku": "sku-2", "qty": 2}, {"sku": "sku-3", "qty": 1}],
    "amount": 2599,
    "currency": "EUR",
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}


@dataclass
class ViewStack:
    """A gateway in this process, its admin port, and a client to it."""

    demo: DemoServices
    server: GatewayServer
    admin: AdminServer
    stub: gateway_pb2_grpc.GatewayStub
    journal: Journal

    @property
    def url(self) -> str:
        """The admin port's ``http://host:port``."""
        return self.admin.url


def execute_request(
    workflow: str, execution_id: str, value: Mapping[str, Any], labels: Mapping[str, str] = {}
) -> pb.ExecuteRequest:
    """An ExecuteRequest of ``workflow`` with input ``value``."""
    struct = struct_pb2.Struct()
    struct.update(dict(value))
    return pb.ExecuteRequest(
        workflow=workflow, input=struct, execution_id=execution_id, labels=dict(labels)
    )


@contextlib.asynccontextmanager
async def running_view_stack(
    demo: DemoServices,
    scratch: Path,
    *,
    journal: Journal | None = None,
    view_payloads: bool = True,
    max_streams: int = 32,
) -> AsyncIterator[ViewStack]:
    """The shipped workflows (retargeted at ``demo``) served in-process, with an admin port.

    ``journal`` (opened; closed with the gateway) defaults to a SQLite file in ``scratch``.
    """
    workflows = write_workflows(scratch, demo)
    if journal is None:
        journal = SqliteJournal(scratch / "journal.db")
        await journal.open()
    metrics = GatewayMetrics()
    server, problems = create_gateway(workflows, journal=journal, metrics=metrics)
    assert not problems, problems
    admin = AdminServer(server, metrics, view_payloads=view_payloads, max_streams=max_streams)
    await admin.start()
    try:
        await server.start()
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield ViewStack(demo, server, admin, gateway_pb2_grpc.GatewayStub(channel), journal)
    finally:
        await server.shutdown(0)
        await admin.close()


async def run(stack: ViewStack, request: pb.ExecuteRequest) -> pb.ExecutionResult:
    """Run one execution to its end (``Run``); a failed one is returned, not raised."""
    try:
        result: pb.ExecutionResult = await stack.stub.Run(request, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError:
        execution = await stack.stub.GetExecution(
            pb.GetExecutionRequest(execution_id=request.execution_id), timeout=CALL_TIMEOUT
        )
        result = execution.result
    return result


async def examples(stack: ViewStack) -> dict[str, str]:
    """Run the executions the screenshot shows; return their ids by what they show.

    The running one is a ``fulfil`` waiting (up to five minutes) for its parcel to be packed.
    """
    ok = "A-2001"
    await run(stack, execute_request("checkout", ok, {**ORDER, "order_id": ok}, {"channel": "web"}))
    declined = "A-2002"
    await run(
        stack,
        execute_request(
            "checkout",
            declined,
            {**ORDER, "order_id": declined, "amount": 250_000},
            {"channel": "app"},
        ),
    )
    lines = "A-2003"
    inventory = stack.demo.inventory.control
    await inventory.add_fault(method="Reserve", code="UNAVAILABLE", times=2)
    await run(stack, execute_request("order_lines", lines, {**LINES, "order_id": lines}))
    undone = "A-2004"
    await inventory.add_fault(method="Reserve", code="UNAVAILABLE", times=1)
    await run(
        stack,
        execute_request("order_lines", undone, {**LINES, "order_id": undone, "amount": 64_000}),
    )
    waiting = "A-2005"
    fulfil = {"order_id": waiting, "sku": "sku-1", "qty": 1, "address": ORDER["address"]}
    await stack.stub.Start(execute_request("fulfil", waiting, fulfil), timeout=CALL_TIMEOUT)
    async with asyncio.timeout(CALL_TIMEOUT):
        while (seen := len(await stack.journal.events(waiting))) < 4:  # started, reserve ×2, packed
            await stack.journal.wait_events(waiting, seen, 1.0)
    return {
        "succeeded": ok,
        "compensated": declined,
        "retried": lines,
        "undone": undone,
        "running": waiting,
    }


async def screenshots() -> tuple[bytes, bytes, list[str]]:
    """The README's screenshots: the list, one execution, and the page's script errors."""
    from demo.browser import headless_chromium

    with tempfile.TemporaryDirectory(prefix="maestro-view-") as scratch:
        async with (
            running_services() as demo,
            running_view_stack(demo, Path(scratch)) as stack,
            headless_chromium() as browser,
        ):
            ids = await examples(stack)
            page = await browser.page()
            await page.set_size(1440, 560)
            await page.navigate(stack.url + "/")
            await page.wait_for(
                "document.querySelectorAll('#recent-rows tr').length >= 4 && "
                "document.querySelectorAll('#running-rows tr').length >= 1"
            )
            await asyncio.sleep(0.3)  # the badges' first frame
            listing = await page.screenshot()
            await page.set_size(1440, 900)
            await page.navigate(f"{stack.url}/#/executions/{ids['undone']}")
            await page.wait_for(
                "document.querySelector('#log-rows tr.k-finished') !== null && "
                "document.querySelectorAll('.tl-row[data-step]').length > 8"
            )
            await asyncio.sleep(0.3)
            return listing, await page.screenshot(), page.errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.live_view", description=__doc__)
    parser.add_argument("--screenshot", type=Path, default=Path("docs/live-view.png"))
    args = parser.parse_args(argv)
    listing, detail, errors = asyncio.run(screenshots())
    target: Path = args.screenshot
    target.write_bytes(detail)
    listed = target.with_name(target.stem + "-list.png")
    listed.write_bytes(listing)
    print(f"wrote {target} and {listed}")
    if errors:
        print("the page logged errors:", *errors, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
