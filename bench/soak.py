"""Soak: 10,000 executions at 256 in flight with injected faults; nothing lost, memory flat.

``maestro serve`` (its default SQLite journal) runs ``bench/workflows/soak.yaml``: Reserve →
(Charge ‖ CreateShipment) → Confirm, every call with a compensation. Inventory and Payments are
one child process (``python -m bench.soak serve shop``: grpc.aio with reflection), Shipping
another (``serve shipping``), which the driver kills with SIGKILL once 30% of the executions
have finished and restarts on the same port a second later. The faults, by
the order's number ``i`` (``order_id`` is ``soak-i``, also the ``execution_id``):

- ``i % 10 == 1``: the first Charge answers UNAVAILABLE (the retry must hide it);
- ``i % 25 == 2``: Confirm answers FAILED_PRECONDITION (the execution must be compensated);
- ``i % 20 == 3``: Reserve waits 150 ms; ``i % 7 == 5``: CreateShipment waits 50 ms;
- ``i % 40 == 4``: Charge waits 300 ms and the caller cancels its ``Run`` after 100 ms (the
  execution must be compensated without its caller);
- the shipping outage: calls to Shipping fail while it is down (retries, then the breaker).

The services append every call they answer successfully to a file at once, so the records
survive a SIGKILL. Shipping is idempotent per order (a retried CreateShipment whose first answer
was lost to the kill books nothing new). Afterwards every execution's final state is
read with ``GetExecution`` and checked against those records:

- *unexpected*: an execution that did not succeed for a reason other than the faults above
  (and any RPC error other than the cancels);
- *lost compensations*: a call that succeeded in an execution that did not succeed, without its
  compensation (a COMPENSATION_FAILED execution reports its failed one and is counted apart);
- *twice*: a call or a compensation answered twice for one order;
- memory: the gateway's RSS after a warm-up of 1,000 executions, at its peak, once the run is
  over and the gateway idle (the target: back within 10% of the start), and after each of two
  rounds of as many executions again without faults (a leak keeps growing from round to round;
  caches and the allocator do not).

Exit status 1 when anything unexpected, lost or doubled was found.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from shop.v1 import (
    inventory_pb2,
    inventory_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    shipping_pb2,
    shipping_pb2_grpc,
)

from bench.procs import Children, rss_bytes
from bench.services import add_reflection

BENCH = Path(__file__).resolve().parent
PY = sys.executable
READY = r"maestro-gateway listening on (\S+)"
OUTAGE_AT = 0.3
"""Fraction of the executions finished when Shipping is killed."""
OUTAGE_S = 1.0
"""Seconds Shipping stays down."""
CANCEL_AFTER_S = 0.1
EXPLAINED_CODES = frozenset(
    (grpc.StatusCode.CANCELLED, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
)
"""The codes ``Run`` may answer with because of an injected fault (the cancels, Confirm, the
shipping outage); whether each was the right one is checked against the journal."""
WARMUP = 1000
AGAIN_ROUNDS = 2
SETTLE_S = 3.0
"""Seconds the gateway is left idle before its final RSS is read."""
RUN_TIMEOUT_S = 60.0

INPUT = {"sku": "sku-42", "qty": 2, "amount": 1999, "address": "1 Main Street"}


def order_number(order_id: str) -> int:
    """``i`` of ``soak-i`` (-1 for the warm-up's orders)."""
    prefix, _, number = order_id.rpartition("-")
    return int(number) if prefix == "soak" else -1


# -- the services ------------------------------------------------------------------------------


class Records:
    """What a service answered successfully, appended to a file at once (it survives SIGKILL)."""

    def __init__(self, log_fd: int) -> None:
        self._fd = log_fd
        self.charge_failed_once: set[str] = set()

    def add(self, order_id: str, what: str) -> None:
        os.write(self._fd, f"{what} {order_id}\n".encode())


class Inventory(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """Reserve (and Confirm, a Reserve of sku ``confirm``) and Release, with the faults."""

    def __init__(self, records: Records) -> None:
        self._records = records

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        i = order_number(request.order_id)
        if request.sku == "confirm":
            if i % 25 == 2:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "soak: confirm refused")
            self._records.add(request.order_id, "confirm")
            return inventory_pb2.Reservation(id=f"cnf-{request.order_id}", sku="confirm", qty=1)
        if i % 20 == 3:
            await asyncio.sleep(0.15)
        self._records.add(request.order_id, "reserve")
        return inventory_pb2.Reservation(
            id=f"res-{request.order_id}", sku=request.sku, qty=request.qty
        )

    async def Release(
        self, request: inventory_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.ReleaseResponse:
        self._records.add(request.reservation_id.removeprefix("res-"), "release")
        return inventory_pb2.ReleaseResponse(released=True)


class Payments(payments_pb2_grpc.PaymentsServicer):  # type: ignore[misc]
    """Charge and Refund, with the faults."""

    def __init__(self, records: Records) -> None:
        self._records = records

    async def Charge(
        self, request: payments_pb2.ChargeRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.Payment:
        i = order_number(request.order_id)
        if i % 10 == 1 and request.order_id not in self._records.charge_failed_once:
            self._records.charge_failed_once.add(request.order_id)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "soak: try again")
        if i % 40 == 4:
            await asyncio.sleep(0.3)
        self._records.add(request.order_id, "charge")
        return payments_pb2.Payment(
            id=f"pay-{request.order_id}",
            amount=request.amount,
            currency=request.currency,
            status=payments_pb2.PAYMENT_STATUS_CAPTURED,
        )

    async def Refund(
        self, request: payments_pb2.RefundRequest, context: grpc.aio.ServicerContext
    ) -> payments_pb2.RefundResponse:
        self._records.add(request.payment_id.removeprefix("pay-"), "refund")
        return payments_pb2.RefundResponse(refund_id=f"ref-{request.payment_id}")


class Shipping(shipping_pb2_grpc.ShippingServicer):  # type: ignore[misc]
    """Idempotent per order (the shipment id is the order's)."""

    def __init__(self, records: Records) -> None:
        self._records = records

    async def CreateShipment(
        self, request: shipping_pb2.CreateShipmentRequest, context: grpc.aio.ServicerContext
    ) -> shipping_pb2.Shipment:
        if order_number(request.order_id) % 7 == 5:
            await asyncio.sleep(0.05)
        self._records.add(request.order_id, "ship")
        return shipping_pb2.Shipment(
            id=f"shp-{request.order_id}", tracking_number=f"TRK-{request.order_id}", carrier="soak"
        )

    async def CancelShipment(
        self, request: shipping_pb2.CancelShipmentRequest, context: grpc.aio.ServicerContext
    ) -> shipping_pb2.CancelShipmentResponse:
        self._records.add(request.shipment_id.removeprefix("shp-"), "cancel")
        return shipping_pb2.CancelShipmentResponse(cancelled=True)


async def serve(which: str, port: int, log: Path) -> None:
    """A services child (``shop``: Inventory and Payments; ``shipping``): serve until SIGTERM
    (or until killed), appending what it answered to ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    records = Records(fd)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    if which == "shop":
        inventory_pb2_grpc.add_InventoryServicer_to_server(Inventory(records), server)
        payments_pb2_grpc.add_PaymentsServicer_to_server(Payments(records), server)
        add_reflection(server, ("shop.v1.Inventory", "shop.v1.Payments"))
    else:
        shipping_pb2_grpc.add_ShippingServicer_to_server(Shipping(records), server)
        add_reflection(server, ("shop.v1.Shipping",))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"soak-{which} grpc=127.0.0.1:{bound} pid={os.getpid()}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1)
    os.close(fd)


def read_records(*logs: Path) -> dict[str, collections.Counter[str]]:
    """What the services answered, per order, from their logs."""
    out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for log in logs:
        for line in log.read_text().splitlines():
            what, _, order_id = line.partition(" ")
            out[order_id][what] += 1
    return out


# -- the run ---------------------------------------------------------------------------------


def gateway_argv(workflows: Path, journal: Path) -> list[str]:
    return [
        *(PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflows)),
        *("--journal", str(journal), "--host", "127.0.0.1", "--port", "0"),
    ]


async def bounded(n: int, width: int, one: Callable[[int], Awaitable[None]]) -> None:
    """Run ``one(0..n-1)`` with at most ``width`` in flight."""
    numbers = iter(range(n))

    async def worker() -> None:
        for i in numbers:
            await one(i)

    await asyncio.gather(*(worker() for _ in range(width)))


async def soak(n: int, width: int) -> dict[str, Any]:
    from google.protobuf import struct_pb2
    from maestro.v1 import gateway_pb2 as pb
    from maestro.v1 import gateway_pb2_grpc

    log_dir = BENCH / "results" / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, Children(log_dir) as children:
        scratch = Path(tmp)
        shop_log, ship_log = scratch / "shop.log", scratch / "shipping.log"

        def start(which: str, port: int, log: Path) -> tuple[Any, str]:
            argv = [PY, "-m", "bench.soak", "serve", which, "--port", str(port), "--log", str(log)]
            child = children.start(f"soak-{which}", argv)
            return child, child.wait_for(rf"soak-{which} grpc=(\S+)", 30).group(1)

        _, shop_target = start("shop", 0, shop_log)
        shipping, ship_target = start("shipping", 0, ship_log)
        ship_port = int(ship_target.rsplit(":", 1)[1])
        workflows = scratch / "workflows"
        workflows.mkdir()
        text = string.Template((BENCH / "workflows" / "soak.yaml").read_text())
        (workflows / "soak.yaml").write_text(text.substitute(SHOP=shop_target, SHIP=ship_target))
        gateway = children.start("soak-gateway", gateway_argv(workflows, scratch / "j.db"))
        target = gateway.wait_for(READY, 60).group(1)
        pid = gateway.pid

        async with grpc.aio.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            rpc_errors: collections.Counter[str] = collections.Counter()
            finished = 0
            outage = asyncio.Event()

            def request(order_id: str) -> Any:
                value = struct_pb2.Struct()
                value.update({**INPUT, "order_id": order_id})
                return pb.ExecuteRequest(workflow="soak", input=value, execution_id=order_id)

            plain_failed: collections.Counter[str] = collections.Counter()

            def plain(prefix: str) -> Callable[[int], Awaitable[None]]:
                async def run(i: int) -> None:
                    try:
                        await stub.Run(request(f"{prefix}-{i}"), timeout=RUN_TIMEOUT_S)
                    except grpc.aio.AioRpcError as exc:
                        # The first calls after the outage may meet the breaker still open.
                        plain_failed[f"{prefix} {exc.code().name}"] += 1

                return run

            async def one(i: int) -> None:
                nonlocal finished
                call = stub.Run(request(f"soak-{i}"), timeout=RUN_TIMEOUT_S)
                try:
                    if i % 40 == 4:
                        await asyncio.sleep(CANCEL_AFTER_S)
                        call.cancel()
                    await call
                except asyncio.CancelledError:
                    if i % 40 != 4:
                        raise
                except grpc.aio.AioRpcError as exc:
                    # Run answers a failed execution with its error's code.
                    if exc.code() not in EXPLAINED_CODES:
                        rpc_errors[exc.code().name] += 1
                finished += 1
                if finished >= n * OUTAGE_AT and not outage.is_set():
                    outage.set()

            async def kill_shipping() -> float:
                await outage.wait()
                killed = time.monotonic()
                shipping.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(shipping.proc.wait, 10)
                await asyncio.sleep(OUTAGE_S)
                await asyncio.to_thread(start, "shipping", ship_port, ship_log)
                return time.monotonic() - killed

            await bounded(WARMUP, width, plain("warm"))
            rss_start = rss_bytes(pid)
            peak = rss_start
            sampling = True

            async def sample() -> None:
                nonlocal peak
                while sampling:
                    peak = max(peak, rss_bytes(pid))
                    await asyncio.sleep(0.25)

            sampler = asyncio.create_task(sample())
            killer = asyncio.create_task(kill_shipping())
            started = time.monotonic()
            await bounded(n, width, one)
            elapsed = time.monotonic() - started
            outage_s = await asyncio.wait_for(killer, 60)
            # Cancelled executions finish their compensations without their callers.
            left = await unfinished(stub)
            deadline = time.monotonic() + 120
            while left and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                left = await unfinished(stub)
            await asyncio.sleep(SETTLE_S)
            sampling = False
            await sampler
            rss_end = rss_bytes(pid)
            states = await final_states(stub, n)
            # As many again without faults: memory that keeps growing is a leak, memory that
            # stays where the first round left it is caches and the allocator.
            rss_again = []
            for round_ in range(AGAIN_ROUNDS):
                await bounded(n, width, plain(f"again{round_}"))
                await asyncio.sleep(SETTLE_S)
                rss_again.append(rss_bytes(pid))
        records = read_records(shop_log, ship_log)
    report = check(n, states, records)
    report.update(
        executions=n,
        concurrency=width,
        elapsed_s=elapsed,
        workflows_per_s=n / elapsed,
        rpc_errors=dict(rpc_errors),
        unfinished_left=left,
        outage_s=outage_s,
        rss_start_mib=rss_start / 2**20,
        rss_peak_mib=peak / 2**20,
        rss_end_mib=rss_end / 2**20,
        rss_end_ratio=rss_end / rss_start,
        rss_again_mib=[rss / 2**20 for rss in rss_again],
        warm_and_again_failed=dict(plain_failed),
    )
    report["ok"] = (
        not report["unexpected"]
        and not report["lost_compensations"]
        and not report["twice"]
        and not rpc_errors
        and not left
    )
    return report


async def unfinished(stub: Any) -> int:
    from maestro.v1 import gateway_pb2 as pb

    page = await stub.ListExecutions(
        pb.ListExecutionsRequest(
            statuses=[pb.EXECUTION_STATUS_RUNNING, pb.EXECUTION_STATUS_COMPENSATING],
            page_size=1,
        ),
        timeout=30,
    )
    return len(page.executions)


State = tuple[str, str, str, dict[str, str]]
"""An execution's status, the step and code of its error, and each step's status."""


async def final_states(stub: Any, n: int) -> dict[int, State]:
    """``i`` → the final state of every soak execution."""
    from maestro.v1 import gateway_pb2 as pb

    out: dict[int, State] = {}

    async def get(i: int) -> None:
        try:
            found = await stub.GetExecution(
                pb.GetExecutionRequest(execution_id=f"soak-{i}"), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.NOT_FOUND:
                raise
            out[i] = ("NOT_STARTED", "", "", {})  # a caller that cancelled before it started
            return
        error = found.result.error
        steps = {s.step_id: pb.StepStatus.Name(s.status) for s in found.result.steps}
        out[i] = (pb.ExecutionStatus.Name(found.status), error.step_id, error.code, steps)

    await bounded(n, 64, get)
    return out


def check(
    n: int,
    states: dict[int, State],
    records: dict[str, collections.Counter[str]],
) -> dict[str, Any]:
    """Each execution's end against its faults, and the services' records against its end."""
    outcomes: collections.Counter[str] = collections.Counter()
    unexpected: list[str] = []
    lost: list[str] = []
    twice: list[str] = []
    compensation_failed = 0
    compensation_failed_at: list[str] = []
    raced = 0
    undo = {"reserve": "release", "charge": "refund", "ship": "cancel"}
    for i in range(n):
        order = f"soak-{i}"
        status, step, code, steps = states[i]
        calls = records.get(order, collections.Counter())
        for what, count in calls.items():
            if count > 1:
                twice.append(f"{order}: {what} ×{count}")
        if status == "NOT_STARTED":
            outcomes["cancelled before it started"] += 1
            if i % 40 != 4 or calls:
                unexpected.append(f"{order}: not in the journal, services saw {dict(calls)}")
            continue
        if status == "EXECUTION_STATUS_SUCCEEDED":
            outcomes["succeeded"] += 1
            done = {"reserve", "charge", "ship", "confirm"}
            if {what for what in calls if calls[what]} != done:
                unexpected.append(f"{order}: succeeded, services saw {dict(calls)}")
            continue
        if i % 40 == 4 and code == "CANCELLED":
            outcomes["cancelled by the caller"] += 1
        elif i % 25 == 2 and (step, code) == ("confirm", "FAILED_PRECONDITION"):
            outcomes["refused by confirm"] += 1
        elif step == "ship" and code == "UNAVAILABLE":
            outcomes["shipping down"] += 1
        else:
            outcomes[f"other: {status} {step} {code}"] += 1
            unexpected.append(f"{order}: {status} at {step!r} with {code}")
        if status == "EXECUTION_STATUS_COMPENSATION_FAILED":
            compensation_failed += 1
            failed_steps = sorted(k for k, v in steps.items() if v != "STEP_STATUS_COMPENSATED")
            compensation_failed_at.append(f"{order}: {status} ({', '.join(failed_steps)})")
            continue
        for did, undone in undo.items():
            if not calls[did] or calls[undone]:
                continue
            if steps.get(did) in ("STEP_STATUS_CANCELLED", "STEP_STATUS_FAILED"):
                # The gateway cancelled the call (a sibling had failed, DESIGN §4) and the
                # service finished it anyway: an interrupted call, never reported as done.
                raced += 1
            else:
                lost.append(f"{order}: {did} ({steps.get(did)}) without {undone} ({status})")
    return {
        "outcomes": dict(outcomes),
        "unexpected": unexpected[:20],
        "unexpected_count": len(unexpected),
        "lost_compensations": lost[:20],
        "lost_count": len(lost),
        "twice": twice[:20],
        "twice_count": len(twice),
        "compensation_failed": compensation_failed,
        "compensation_failed_at": compensation_failed_at[:20],
        "done_after_cancel": raced,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or, with ``shipping``, be its shipping service)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("serve", help="a services child process")
    child.add_argument("which", choices=["shop", "shipping"])
    child.add_argument("--port", type=int, default=0)
    child.add_argument("--log", type=Path, required=True)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.which, args.port, args.log))
        return 0
    out = asyncio.run(soak(args.executions, args.concurrency))
    print(
        f"soak: {out['executions']} executions at {out['concurrency']} in flight in "
        f"{out['elapsed_s']:.1f} s ({out['workflows_per_s']:.0f}/s), shipping down "
        f"{out['outage_s']:.1f} s; outcomes {out['outcomes']}; unexpected "
        f"{out['unexpected_count']}, lost compensations {out['lost_count']}, twice "
        f"{out['twice_count']}, compensation failed {out['compensation_failed']}, done by the "
        f"service after the gateway cancelled them {out['done_after_cancel']}, other RPC errors "
        f"{out['rpc_errors'] or 0}; gateway RSS {out['rss_start_mib']:.1f} MiB after the warm-up, "
        f"peak {out['rss_peak_mib']:.1f}, {out['rss_end_mib']:.1f} at the end "
        f"({out['rss_end_ratio']:.2f}×), then "
        f"{', '.join(f'{mib:.1f}' for mib in out['rss_again_mib'])} after each round of as many "
        "again without faults"
    )
    for key in ("unexpected", "lost_compensations", "twice"):
        for line in out[key]:
            print(f"  {key}: {line}")
    if args.json:
        print(json.dumps(out))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
