"""The ``make demo`` walk-through: the demo services, ``maestro serve``, checkouts and rewards.

``python -m demo.showcase [--port 50050] [--free-ports] [--keep]`` starts the five demo services
(inventory 50051, payments 50052, shipping 50053, mailer 8081, loyalty 50054) and ``maestro serve
--workflows workflows --port 50050``, waits until they are ready, then executes the ``checkout``
workflow through the gateway's streaming ``Execute`` with the generated Python stubs, printing
every event as it arrives:

1. a checkout that succeeds;
2. a checkout whose last step fails (the shipping service rejects an empty address): the steps
   already done are compensated in reverse order, the status is COMPENSATED and the call ends
   with INVALID_ARGUMENT and a google.rpc.ErrorInfo detail;
3. a checkout through flaky services (UNAVAILABLE injected through the control planes): the
   gateway retries and the checkout succeeds;
4. a crash: a checkout is started, the gateway is killed with ``kill -9`` while the shipping
   service holds its call, a new gateway is started on the same journal, and the checkout is
   watched as it resumes and finishes; ``maestro executions show`` prints its record;
5. Maestro.go compatibility: ``order_rewards``, a workflow in pure Maestro.go format, against the
   loyalty service, written for Maestro.go's envelope protocol (``maestro.v1.MaestroService``):
   once succeeding, once refused by the service (``success: false``) and compensated through
   ``Compensate``; then what the service received (RPC, method, correlation id);
6. more step kinds: ``order_lines`` (``workflows/order-lines.yaml``, checked first with
   ``maestro validate --connect``) reserves each order line through a ``foreach``, pays through
   the ``payment`` sub-workflow, routes on the amount with a ``switch``, ships and notifies
   (``continue_on_error``); the events name the steps by path (``lines[1].reserve``,
   ``pay.charge``);
7. the same order while shipping refuses the parcel (a fault injected through its control
   plane): the gift, the payment's receipt and charge, and every line's reservation are undone,
   newest first; then which reservations inventory released and what payments received;
8. signals, between two teams' workflows: ``pay_order`` (``workflows/pay-order.yaml``, the
   payments team's) charges an order and emits ``order.paid``; ``fulfil``
   (``workflows/fulfil.yaml``, the warehouse team's) is started by it (a trigger with ``dedup``
   on the order id), reserves the stock and waits for the signal ``parcel.packed``, which the
   demo sends with ``maestro signals send``, then ships and emits ``order.shipped``; the payment
   announced again (the same id, then another id for the same order) starts nothing;
   ``maestro signals show`` draws the lineage: pay_order → order.paid → fulfil → order.shipped.

It then prints the grpcurl command that does the same by hand. Every process it started is
stopped at the end, on Ctrl-C/SIGTERM and on failure. Exit status: 0 when every run behaved as
expected, 1 otherwise, 2 when the demo could not start (e.g. a port in use).
``--free-ports`` runs everything on free ports (with a retargeted copy of ``workflows/``);
``--keep`` leaves everything running after the runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from demo.gateway import WORKFLOWS, GatewayProcess, start_gateway, write_workflows
from demo.harness import DEFAULT_PORTS, ROOT, DemoServices, running_services
from demo.showcase_view import (
    STEP_WIDTH,
    Outcome,
    SignalsRun,
    check_compensated,
    check_lines_compensated,
    check_lines_succeeded,
    check_loyalty_calls,
    check_recovered,
    check_retried,
    check_rewarded,
    check_rewards_compensated,
    check_signals,
    check_succeeded,
    event_line,
    result_lines,
    status_lines,
)

DEFAULT_GATEWAY_PORT = 50050
DEFAULT_ADMIN_PORT = 9464
"""The gateway's admin port (/metrics /healthz /readyz, and the live view at /)."""
CALL_TIMEOUT = 60.0
EXIT_OK, EXIT_UNEXPECTED, EXIT_START = 0, 1, 2

ORDER: dict[str, Any] = {
    "order_id": "A-1001",
    "sku": "sku-1",
    "qty": 2,
    "amount": 4999,
    "currency": "EUR",
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}

LINES: dict[str, Any] = {
    "order_id": "A-1007",
    "lines": [{"sku": "sku-1", "qty": 2}, {"sku": "sku-2", "qty": 1}, {"sku": "sku-3", "qty": 1}],
    "amount": 7499,
    "currency": "EUR",
    "address": "1 Main Street, Springfield",
    "email": "ada@example.com",
}
"""An input of ``order_lines``: three lines, reserved at most two at a time."""
PATH_WIDTH = 18
"""The step column's width in the order-lines scenes, wide enough for ``lines[0].reserve``."""

PAID: dict[str, Any] = {
    "order_id": "A-2001",
    "sku": "sku-1",
    "qty": 1,
    "amount": 2599,
    "address": "1 Main St",
}
"""An input of ``pay_order`` (scene 8)."""

REWARDS: dict[str, Any] = {
    "order_id": "A-1005",
    "email": "grace@example.com",
    "name": "Grace Hopper",
    "points": 1200,
    "tier": "gold",
}
REFUSED_REWARDS: dict[str, Any] = {
    "order_id": "A-1006",
    "email": "alan@example.com",
    "name": "Alan Turing",
    "tier": "platinum",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the showcase's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m demo.showcase", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_GATEWAY_PORT,
        help=f"gateway port (default {DEFAULT_GATEWAY_PORT})",
    )
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="services and gateway on free ports (workflows retargeted in a temporary copy)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep everything running after the runs, until Ctrl-C"
    )
    return parser.parse_args(argv)


def busy_ports(ports: list[int], host: str = "127.0.0.1") -> list[int]:
    """The ports of ``ports`` that something already listens on."""
    busy = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                busy.append(port)
    return busy


def grpcurl_command(address: str, order: dict[str, Any], workflow: str = "checkout") -> str:
    """The grpcurl command line that streams ``workflow`` from the gateway at ``address``."""
    request = json.dumps({"workflow": workflow, "input": order}, separators=(",", ":"))
    return " ".join(
        [
            ".venv/bin/grpcurl",
            "-plaintext",
            "-d",
            shlex.quote(request),
            address,
            "maestro.v1.Gateway/Execute",
        ]
    )


def say(text: str = "") -> None:
    """Print one line at once (make pipes nothing, but a CI log might)."""
    print(text, flush=True)


async def execute(
    stub: gateway_pb2_grpc.GatewayStub,
    order: dict[str, Any],
    workflow: str = "checkout",
    width: int = STEP_WIDTH,
    execution_id: str = "",
) -> Outcome:
    """Execute ``workflow`` with ``order``, printing each event as it arrives.

    ``width`` is that of the printed step column; ``execution_id`` empty lets the gateway
    choose one.
    """
    request = pb.ExecuteRequest(
        workflow=workflow, input=struct_pb2.Struct(), execution_id=execution_id
    )
    request.input.update(order)
    outcome = Outcome()
    loop = asyncio.get_running_loop()
    started = loop.time()
    call = stub.Execute(request, timeout=CALL_TIMEOUT)
    try:
        async for event in call:
            outcome.events.append(event)
            say(event_line(event, loop.time() - started, width))
    except grpc.aio.AioRpcError as error:
        outcome.error = error
    for line in result_lines(outcome):
        say(line)
    for line in status_lines(outcome):
        say(line)
    return outcome


class Gateways:
    """The gateway of the demo, which scene 4 kills and starts again on the same journal."""

    def __init__(self, workflows: Path, port: int, journal: Path, admin_port: int = 0) -> None:
        self.workflows = workflows
        self.port = port
        self.admin_port = admin_port
        self.extra = ["--journal", str(journal)]
        self.current: GatewayProcess | None = None

    async def start(self) -> GatewayProcess:
        extra = [*self.extra, "--admin-port", str(self.admin_port)]
        self.current = await start_gateway(self.workflows, self.port, extra=extra)
        self.port = self.current.port  # a restart binds the same ports
        if self.current.admin_url:
            self.admin_port = int(self.current.admin_url.rsplit(":", 1)[1])
        return self.current

    async def kill(self) -> int:
        """``kill -9`` the gateway; return its pid."""
        assert self.current is not None
        pid = self.current.process.pid
        self.current.process.send_signal(signal.SIGKILL)
        await self.current.stop()
        return pid

    async def stop(self) -> None:
        if self.current is not None:
            await self.current.stop()


async def watch(
    stub: gateway_pb2_grpc.GatewayStub, execution_id: str, outcome: Outcome, started: float
) -> None:
    """Print the events of ``execution_id`` after those in ``outcome``, until it finishes."""
    after = outcome.events[-1].sequence if outcome.events else 0
    request = pb.WatchExecutionRequest(execution_id=execution_id, after_sequence=after)
    loop = asyncio.get_running_loop()
    async for event in stub.WatchExecution(request, timeout=CALL_TIMEOUT):
        outcome.events.append(event)
        say(event_line(event, loop.time() - started))


async def crash_scene(gateways: Gateways, demo: DemoServices) -> list[str]:
    """Scene 4: kill -9 in the middle of a call, restart, watch the checkout resume."""
    say("━━ 4. the gateway is killed (kill -9) while shipping holds its call ━━")
    say("     every step is journaled before it is sent; a new gateway resumes the checkout")
    await demo.shipping.control.add_fault(method="CreateShipment", delay_ms=1500, times=1)
    order = {**ORDER, "order_id": "A-1004"}
    request = pb.ExecuteRequest(
        workflow="checkout", input=struct_pb2.Struct(), execution_id="A-1004"
    )
    request.input.update(order)
    outcome = Outcome()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert gateways.current is not None
    async with grpc.aio.insecure_channel(gateways.current.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        await stub.Start(request, timeout=CALL_TIMEOUT)
        say("  Start → RUNNING; watching it:")
        watching = asyncio.ensure_future(watch(stub, "A-1004", outcome, started))
        await demo.shipping.control.wait_for(
            lambda calls: any(c.method == "CreateShipment" and not c.outcome for c in calls),
            within=CALL_TIMEOUT,
        )
        pid = await gateways.kill()
        say(f"  kill -9 {pid}   ← the gateway dies while CreateShipment is in flight")
        with contextlib.suppress(grpc.aio.AioRpcError):
            await watching
    gateway = await gateways.start()
    say(f"  maestro serve started again on the same journal ({gateway.address}); watching:")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        await watch(gateway_pb2_grpc.GatewayStub(channel), "A-1004", outcome, started)
    received = sum(1 for c in await demo.shipping.control.calls() if c.method == "CreateShipment")
    say(f"  shipping received CreateShipment {received}× (the first call was cut off)")
    code, text = await maestro("executions", "show", "A-1004", "--target", gateway.address)
    await demo.reset()
    return check_recovered(outcome, "run 4", received, text, code)


async def scenarios(gateway: GatewayProcess, demo: DemoServices) -> list[str]:
    """Run the three checkouts; return what did not behave as expected (empty: all did)."""
    problems: list[str] = []
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)

        say("━━ 1. checkout: reserve → (charge ‖ notify) → ship ━━")
        say(f"input: {json.dumps(ORDER)}")
        problems += check_succeeded(await execute(stub, ORDER), "run 1")

        say()
        say("━━ 2. the last step fails: shipping rejects an empty address ━━")
        say("     the steps already done are undone, most recent first")
        order = {**ORDER, "order_id": "A-1002", "address": ""}
        problems += check_compensated(await execute(stub, order), "run 2")

        say()
        say("━━ 3. flaky services: inventory UNAVAILABLE ×2, payments UNAVAILABLE ×1 ━━")
        say("     (faults injected through the services' control planes; the gateway retries)")
        await demo.inventory.control.add_fault(
            method="Reserve", code="UNAVAILABLE", message="injected by the demo", times=2
        )
        await demo.payments.control.add_fault(
            method="Charge", code="UNAVAILABLE", message="injected by the demo", times=1
        )
        order = {**ORDER, "order_id": "A-1003"}
        problems += check_retried(await execute(stub, order), "run 3", reserve=2, charge=1)
        await demo.reset()
    return problems


async def rewards_scene(gateway: GatewayProcess, demo: DemoServices, workflows: Path) -> list[str]:
    """Scene 5: a Maestro.go workflow against a service on Maestro.go's envelope, unchanged."""
    say("━━ 5. from Maestro.go, unchanged: order_rewards against an envelope service ━━")
    say("     loyalty offers one maestro.v1.MaestroService whose Execute dispatches on the method")
    say("     name, as Maestro.go's services do; inventory is called by its own methods")
    problems: list[str] = []
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        say(f"input: {json.dumps(REWARDS)}")
        outcome = await execute(stub, REWARDS, "order_rewards")
        problems += check_rewarded(outcome, "run 5")
        say()
        say("  again with tier 'platinum': loyalty answers success: false → FAILED_PRECONDITION,")
        say("  and the steps done are undone (loyalty's through Compensate)")
        refused = {**REWARDS, **REFUSED_REWARDS}
        outcome = await execute(stub, refused, "order_rewards")
        problems += check_rewards_compensated(outcome, "run 6")
    calls = await demo.loyalty.control.calls()
    say("  what loyalty received (rpc, method, correlation_id → outcome):")
    for call in calls:
        request = call.request if isinstance(call.request, dict) else {}
        say(
            f"    {call.rpc:<10} {call.method:<16} {request.get('correlation_id', '')}"
            f"  → {call.outcome}"
        )
    problems += check_loyalty_calls(calls, "run 6")
    await demo.reset()
    path = workflows / "order-rewards.yaml"
    say(f"  $ maestro validate --connect {path}   (which protocol each service gets)")
    code, text = await validate_connect(path)
    if code != 0 or "protocol maestro-go" not in text:
        problems.append(f"run 6: maestro validate --connect exited {code}: {text}")
    return problems


async def maestro(*args: str, echo: bool = True, target: str = "") -> tuple[int, str]:
    """Run the real ``maestro ARGS`` (``python -m maestro_gateway``) and print what it says,
    indented, after the command line when ``echo``; return its exit status and output.

    ``target`` is passed as ``$MAESTRO_TARGET`` (the gateway the command talks to by default).
    """
    if echo:
        say(f"  $ {shlex.join(['maestro', *args])}")
    done = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro_gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", **({"MAESTRO_TARGET": target} if target else {})},
    )
    text = (await asyncio.wait_for(done.communicate(), CALL_TIMEOUT))[0].decode()
    for line in text.rstrip().splitlines():
        say(f"    {line}")
    return done.returncode or 0, text


async def validate_connect(path: Path) -> tuple[int, str]:
    """Run ``maestro validate --connect PATH``, print what it says; return its status and text."""
    return await maestro("validate", "--connect", str(path), echo=False)


async def lines_scenes(gateway: GatewayProcess, demo: DemoServices, workflows: Path) -> list[str]:
    """Scenes 6 and 7: foreach, a sub-workflow, switch and continue_on_error; then a rollback."""
    say("━━ 6. one reservation per order line: foreach, a payment sub-workflow, a switch ━━")
    say("     order_lines: lines (foreach over the order's lines, 2 at a time) → pay (workflow:")
    say("     payment, i.e. charge → receipt) → route (switch on the amount) → ship → notify")
    path = workflows / "order-lines.yaml"
    say(f"  $ maestro validate --connect {path}   (its sub-workflow payment.yaml too)")
    problems: list[str] = []
    code, text = await validate_connect(path)
    if code != 0 or "payment.yaml" not in text:
        problems.append(f"run 7: maestro validate --connect exited {code}: {text}")
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        say(f"input: {json.dumps(LINES)}")
        outcome = await execute(stub, LINES, "order_lines", PATH_WIDTH)
        problems += check_lines_succeeded(outcome, "run 7")
        await demo.reset()

        say()
        say(
            "━━ 7. shipping refuses the parcel: every line's reservation is undone, the payment refunded ━━"
        )
        say(
            "     (FAILED_PRECONDITION injected on CreateShipment through shipping's control plane);"
        )
        say("     the rollback runs newest first, into the payment sub-workflow and back out")
        await demo.shipping.control.add_fault(
            method="CreateShipment",
            code="FAILED_PRECONDITION",
            message="no carrier serves this address today",
            times=1,
        )
        order = {**LINES, "order_id": "A-1008"}
        outcome = await execute(stub, order, "order_lines", PATH_WIDTH)
    inventory = await demo.inventory.control.calls()
    payments = await demo.payments.control.calls()
    reserved_by = {
        output.get("id"): e.step_succeeded.step_id
        for e in outcome.events
        if e.HasField("step_succeeded")
        and isinstance(output := json_format.MessageToDict(e.step_succeeded.output), dict)
    }
    released = [
        f"{rid} ({reserved_by.get(rid, '?').removesuffix('.reserve')})"
        for c in inventory
        if c.method == "Release" and isinstance(c.request, dict)
        for rid in [c.request.get("reservation_id")]
    ]
    say(f"  inventory released {', '.join(released)}")
    for call in payments:
        request = call.request if isinstance(call.request, dict) else {}
        details = request.get("payment_id") or request.get("order_id", "")
        reason = f"  reason: {request['reason']!r}" if request.get("reason") else ""
        say(f"  payments received {call.method} {details}{reason}")
    problems += check_lines_compensated(outcome, "run 8", inventory, payments)
    await demo.reset()
    return problems


async def signals_scene(gateway: GatewayProcess, demo: DemoServices) -> list[str]:
    """Scene 8: one team's workflow emits order.paid, another team's is started by it."""
    say("━━ 8. signals: pay_order emits order.paid; another team's fulfil is started by it ━━")
    say("     pay_order (the payments team's): charge → emit order.paid. fulfil (the warehouse's):")
    say("     a trigger on order.paid, dedup on the order id → reserve → wait for parcel.packed →")
    say("     ship → emit order.shipped. Neither workflow names the other.")
    order_id = PAID["order_id"]
    fulfilment = f"fulfil:{order_id}"
    target = gateway.address
    run = SignalsRun(order_id)
    async with grpc.aio.insecure_channel(gateway.address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        say(f"input: {json.dumps(PAID)}")
        run.paid = await execute(stub, PAID, "pay_order", PATH_WIDTH, f"pay-{order_id}")
        run.signal_id = str(run.output().get("signal", ""))
        if not run.signal_id:
            return [f"run 9: pay_order did not succeed ({run.paid.code.name}): no signal to follow"]
        started = await stub.GetExecution(
            pb.GetExecutionRequest(execution_id=fulfilment), timeout=CALL_TIMEOUT
        )
        run.triggered_by = started.triggered_by
        say(
            f"  order.paid {run.signal_id} started {started.execution_id} "
            f"(triggered_by {started.triggered_by}); watching it:"
        )
        began = asyncio.get_running_loop().time()
        watching = asyncio.ensure_future(watch(stub, fulfilment, run.fulfilment, began))
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                while "step_started" not in run.fulfilment.kinds("packed"):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
        finally:
            watching.cancel()
        say("  it waits for its parcel, holding no call; the packing station scans it:")
        packed = json.dumps({"order_id": order_id, "station": "packing-3"})
        say(f"  $ export MAESTRO_TARGET={target}   # the gateway the maestro commands below call")
        _, run.sent = await maestro(
            *("signals", "send", "parcel.packed", "--params", packed, "--id", f"packed-{order_id}"),
            target=target,
        )
        say("  fulfil goes on:")
        await watch(stub, fulfilment, run.fulfilment, began)
        say("  the payment is announced again, under the same id (a producer retrying blindly) …")
        params = json.dumps(run.emitted(), sort_keys=True)
        again = ("signals", "send", "order.paid", "--params", params)
        _, run.duplicate = await maestro(*again, "--id", run.signal_id, target=target)
        say("  … and under an id of its own (the payment webhook delivered twice): the trigger's")
        say(f"  dedup on the order id derives {fulfilment} again, which exists: nothing starts")
        _, run.webhook = await maestro(*again, "--id", "webhook-7781", target=target)
        listed = await stub.ListExecutions(
            pb.ListExecutionsRequest(workflow="fulfil"), timeout=CALL_TIMEOUT
        )
    run.executions = [e.execution_id for e in listed.executions]
    run.reserved = sum(
        1
        for c in await demo.inventory.control.calls()
        if c.method == "Reserve"
        and isinstance(c.request, dict)
        and c.request.get("order_id") == order_id
    )
    say(
        f"  inventory received Reserve {run.reserved}× for {order_id}; executions of fulfil: "
        f"{', '.join(run.executions)}"
    )
    say("  the lineage, from the payment to the shipment:")
    run.lineage_code, run.lineage = await maestro("signals", "show", run.signal_id, target=target)
    await demo.reset()
    return check_signals(run, "run 9")


def print_try_it(gateway: GatewayProcess, keep: bool) -> None:
    """Tell the user how to call the gateway by hand."""
    say()
    say("━━ try it yourself ━━")
    address = gateway.address
    if not keep:
        address = f"127.0.0.1:{DEFAULT_GATEWAY_PORT}"
        say("  make demo-services                                              # terminal 1")
        say(
            f"  .venv/bin/maestro serve --workflows workflows --port {DEFAULT_GATEWAY_PORT}"
            f" --admin-port {DEFAULT_ADMIN_PORT}   # terminal 2"
        )
        say("  (or `make demo SHOWCASE_ARGS=--keep`, which leaves this demo running)")
    say(f"  {grpcurl_command(address, ORDER)}")
    say(f"  {grpcurl_command(address, LINES, 'order_lines')}")
    paid = json.dumps({**PAID, "order_id": "A-9"}, separators=(",", ":"))
    packed = json.dumps({"order_id": "A-9", "station": "packing-1"}, separators=(",", ":"))
    say(
        f"  .venv/bin/maestro signals send order.paid --params {shlex.quote(paid)} --target {address}"
    )
    say(
        f"  .venv/bin/maestro signals send parcel.packed --params {shlex.quote(packed)} --target {address}"
    )
    say(f"  .venv/bin/maestro signals list --target {address}")
    say(f"  .venv/bin/grpcurl -plaintext {address} describe maestro.v1.Gateway")
    admin = gateway.admin_url if keep else f"http://127.0.0.1:{DEFAULT_ADMIN_PORT}"
    say(f"  curl -s {admin}/metrics | grep ^maestro_executions   # README: Operations")
    say(f"  open {admin}/ in a browser: the live view of every execution (README: Live view)")
    say("  docs/calling.md has more, and a Node.js client.")


async def showcase(args: argparse.Namespace, stop: asyncio.Event, keeping: asyncio.Event) -> int:
    """Start everything, run the checkouts, stop everything; return the exit status."""
    ports: dict[str, int] | None = None
    if not args.free_ports:
        ports = dict(DEFAULT_PORTS)
        busy = busy_ports([*ports.values(), args.port, DEFAULT_ADMIN_PORT])
        if busy:
            print(
                f"demo: port(s) {', '.join(map(str, busy))} already in use (is `make demo-services`"
                " or another demo running?); stop it, or run with SHOWCASE_ARGS=--free-ports",
                file=sys.stderr,
            )
            return EXIT_START
    say("starting the demo services (inventory: grpcio, payments: grpclib, shipping: Node.js,")
    say("mailer: HTTP, loyalty: Maestro.go's envelope on sync grpcio) and the gateway …")
    with tempfile.TemporaryDirectory(prefix="maestro-demo-") as scratch:
        try:
            async with contextlib.AsyncExitStack() as stack:
                demo = await stack.enter_async_context(running_services(ports))
                if args.free_ports:
                    workflows = write_workflows(Path(scratch), demo)
                    port = 0
                else:
                    workflows, port = WORKFLOWS.relative_to(ROOT), args.port
                admin_port = 0 if args.free_ports else DEFAULT_ADMIN_PORT
                gateways = Gateways(workflows, port, Path(scratch) / "journal.db", admin_port)
                stack.push_async_callback(gateways.stop)
                gateway = await gateways.start()
                for endpoint in demo.all():
                    say(f"  {endpoint.name:<10} {endpoint.address}")
                say(
                    f"  {'gateway':<10} {gateway.address}   "
                    f"(maestro serve --workflows {workflows}, {gateway.workflows} workflows)"
                )
                say(f"  {'admin':<10} {gateway.admin_url}   (/metrics /healthz /readyz)")
                say(f"  {'live view':<10} {gateway.admin_url}/   (open it in a browser)")
                say()
                problems = await scenarios(gateway, demo)
                say()
                problems += await crash_scene(gateways, demo)
                gateway = gateways.current or gateway
                say()
                problems += await rewards_scene(gateway, demo, Path(workflows))
                say()
                problems += await lines_scenes(gateway, demo, Path(workflows))
                say()
                problems += await signals_scene(gateway, demo)
                print_try_it(gateway, args.keep)
                if args.keep and not problems:
                    say()
                    say("everything keeps running; Ctrl-C stops it")
                    keeping.set()
                    await stop.wait()
                say()
                say("stopping the gateway and the demo services …")
        except RuntimeError as exc:
            print(f"demo: could not start: {exc}", file=sys.stderr)
            return EXIT_START
    if problems:
        say("demo: FAILED — not as expected:")
        for problem in problems:
            say(f"  - {problem}")
        return EXIT_UNEXPECTED
    say("demo: every run behaved as expected")
    return EXIT_OK


async def _main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    stop, keeping = asyncio.Event(), asyncio.Event()
    task = asyncio.current_task()
    assert task is not None

    def interrupt() -> None:
        # Once the runs are over (--keep) a signal is the expected way out; before, it aborts.
        if keeping.is_set() and not stop.is_set():
            stop.set()
        else:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    return await showcase(args, stop, keeping)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.showcase``."""
    args = parse_args(argv)
    try:
        code = asyncio.run(_main(args))
    except asyncio.CancelledError:
        print("demo: interrupted; every process was stopped", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
