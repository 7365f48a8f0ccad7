"""Signals (issue 11): SendSignal throughput with one trigger each, and signal → first call latency.

Starts ``maestro serve`` (a child process, the default SQLite journal with ``--journal-sync
normal``, in a temp dir) over one workflow with one trigger: each ``bench.tick`` signal starts
an execution (id ``bench_signal:<signal id>``) whose one step calls ``shop.v1.Inventory/Reserve``
on a downstream served by this process (grpc.aio with reflection) that records when each order's
first call arrives. Every signal has an id of its own, so each starts one execution. Figures,
each printed and returned in the JSON summary:

- ``throughput``: at concurrency 1 and 64 (that many SendSignals in flight from this process),
  ``send_per_s`` — SendSignal answers per second (each answered once the signal is journaled
  and its execution created and started) — and ``end_to_end_per_s`` — signals per second until
  the last triggered execution's call arrived; the SendSignal p50/p99 and the gateway's CPU per
  signal (``/proc``, the whole execution included, its journal writer thread too);
- ``latency``: one signal at a time, each after the previous execution finished: the time from
  sending SendSignal to the triggered execution's first call arriving at the downstream
  (``to_call``), and SendSignal's own round trip (``rpc``); p50, p90, p99.

The client and the recording downstream share this process (its CPU is reported too); the
gateway runs apart, as in ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from bench.procs import Children, cpu_seconds
from bench.services import add_reflection

BENCH = Path(__file__).resolve().parent
PY = sys.executable
READY = r"maestro-gateway listening on (\S+)"
WAIT_WITHIN = 120.0
SIGNAL = "bench.tick"

WORKFLOW = """\
name: bench_signal
triggers:
  - signal: bench.tick
    input: {{order_id: "{{{{ signal.params.order_id }}}}"}}
services:
  inventory: {{type: grpc, endpoint: "{target}", timeout: 5s}}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: sku-1, qty: 1}}
"""


class Recorder(inventory_pb2_grpc.InventoryServicer):  # type: ignore[misc]
    """Reserve answers at once and records when each order's first call arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.calls = 0
        self._waiting: dict[str, asyncio.Future[float]] = {}

    async def Reserve(
        self, request: inventory_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> inventory_pb2.Reservation:
        """Record the arrival; return a reservation for the line."""
        now = time.perf_counter()
        self.calls += 1
        self.arrived.setdefault(request.order_id, now)
        waiting = self._waiting.pop(request.order_id, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(now)
        return inventory_pb2.Reservation(id=f"res-{self.calls}", sku=request.sku, qty=request.qty)

    async def first_call(self, order_id: str) -> float:
        """When the first call for ``order_id`` arrived (waiting for it if need be)."""
        if order_id in self.arrived:
            return self.arrived[order_id]
        future = self._waiting.setdefault(order_id, asyncio.get_running_loop().create_future())
        return await asyncio.wait_for(future, WAIT_WITHIN)

    async def all_arrived(self, order_ids: list[str]) -> float:
        """When the last of ``order_ids`` arrived (waiting for them if need be)."""
        return max([await self.first_call(order_id) for order_id in order_ids])


async def start_downstream(recorder: Recorder) -> tuple[grpc.aio.Server, str]:
    """Serve ``recorder`` with reflection on 127.0.0.1:0; return the server and its address."""
    server = grpc.aio.server()
    inventory_pb2_grpc.add_InventoryServicer_to_server(recorder, server)
    add_reflection(server, ("shop.v1.Inventory",))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, f"127.0.0.1:{port}"


def tick(signal_id: str) -> pb.SendSignalRequest:
    """A ``bench.tick`` signal whose id is also its order id."""
    params = struct_pb2.Struct()
    params.update({"order_id": signal_id})
    return pb.SendSignalRequest(name=SIGNAL, params=params, signal_id=signal_id)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0–1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def send_checked(stub: Any, signal_id: str) -> None:
    """SendSignal; raise unless it was processed and started one execution."""
    answer = await stub.SendSignal(tick(signal_id), timeout=30)
    if answer.duplicate or list(answer.signal.triggered) != [f"bench_signal:{signal_id}"]:
        raise RuntimeError(f"{signal_id}: unexpected answer {answer}")


async def settled(stub: Any) -> None:
    """Wait until no execution is running."""
    deadline = time.monotonic() + WAIT_WITHIN
    while time.monotonic() < deadline:
        page = await stub.ListExecutions(
            pb.ListExecutionsRequest(statuses=[pb.EXECUTION_STATUS_RUNNING], page_size=1),
            timeout=30,
        )
        if not page.executions:
            return
        await asyncio.sleep(0.01)
    raise RuntimeError("executions still running")


async def throughput(
    stub: Any, recorder: Recorder, gateway_pid: int, prefix: str, n: int, concurrency: int
) -> dict[str, Any]:
    """``n`` signals sent by ``concurrency`` workers, as fast as SendSignal answers."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    pending = iter(ids)
    rpcs: list[float] = []

    async def worker() -> None:
        for signal_id in pending:
            began = time.perf_counter()
            await send_checked(stub, signal_id)
            rpcs.append(time.perf_counter() - began)

    gateway_cpu0, own_cpu0 = cpu_seconds(gateway_pid), time.process_time()
    began = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    sent = time.perf_counter()
    last = await recorder.all_arrived(ids)
    await settled(stub)
    gateway_cpu = cpu_seconds(gateway_pid) - gateway_cpu0
    own_cpu = time.process_time() - own_cpu0
    return {
        "signals": n,
        "concurrency": concurrency,
        "send_per_s": n / (sent - began),
        "end_to_end_per_s": n / (max(sent, last) - began),
        "send_p50_ms": percentile(rpcs, 0.5) * 1000,
        "send_p99_ms": percentile(rpcs, 0.99) * 1000,
        "gateway_cpu_ms_per_signal": gateway_cpu / n * 1000,
        "client_and_downstream_cpu_ms_per_signal": own_cpu / n * 1000,
    }


async def latency(stub: Any, recorder: Recorder, n: int) -> dict[str, Any]:
    """One signal at a time: SendSignal → the triggered execution's first call."""
    to_call: list[float] = []
    rpc: list[float] = []
    for i in range(n):
        signal_id = f"lat-{i}"
        began = time.perf_counter()
        await send_checked(stub, signal_id)
        answered = time.perf_counter()
        arrived = await recorder.first_call(signal_id)
        to_call.append(arrived - began)
        rpc.append(answered - began)
        await settled(stub)
    return {
        "signals": n,
        "to_call_ms": {
            "p50": percentile(to_call, 0.5) * 1000,
            "p90": percentile(to_call, 0.9) * 1000,
            "p99": percentile(to_call, 0.99) * 1000,
            "mean": statistics.fmean(to_call) * 1000,
        },
        "rpc_ms": {
            "p50": percentile(rpc, 0.5) * 1000,
            "p90": percentile(rpc, 0.9) * 1000,
            "p99": percentile(rpc, 0.99) * 1000,
        },
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Start the downstream and the gateway, warm up, then take the figures."""
    recorder = Recorder()
    downstream, target = await start_downstream(recorder)
    out: dict[str, Any] = {"journal": "sqlite (default, --journal-sync normal)"}
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            Children(BENCH / "results" / "logs") as children,
        ):
            workflows = Path(tmp) / "workflows"
            workflows.mkdir()
            (workflows / "bench_signal.yaml").write_text(WORKFLOW.format(target=target))
            argv = [PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflows)]
            argv += ["--journal", str(Path(tmp) / "journal.db"), "--max-concurrent", "100000"]
            argv += ["--host", "127.0.0.1", "--port", "0"]
            gateway = children.start("signals-gateway", argv)
            address = gateway.wait_for(READY, 60).group(1)
            async with grpc.aio.insecure_channel(address) as channel:
                stub = gateway_pb2_grpc.GatewayStub(channel)
                await throughput(stub, recorder, gateway.pid, "warm", args.warmup, 16)
                out["throughput"] = [
                    await throughput(stub, recorder, gateway.pid, "c1", args.signals_1, 1),
                    await throughput(stub, recorder, gateway.pid, "c64", args.signals_64, 64),
                ]
                out["latency"] = await latency(stub, recorder, args.latency)
    finally:
        await downstream.stop(0)
    expected = args.warmup + args.signals_1 + args.signals_64 + args.latency
    out["downstream_calls"] = recorder.calls
    out["complete"] = recorder.calls == expected
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals-1", type=int, default=500, help="signals at concurrency 1")
    parser.add_argument("--signals-64", type=int, default=3000, help="signals at concurrency 64")
    parser.add_argument("--latency", type=int, default=300, help="signals, one at a time")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args))
    print(f"signals, one trigger each, journal {out['journal']}:")
    for t in out["throughput"]:
        print(
            f"  concurrency {t['concurrency']:>2}: SendSignal {t['send_per_s']:6.0f}/s "
            f"(p50 {t['send_p50_ms']:.2f} ms, p99 {t['send_p99_ms']:.2f} ms), until the last "
            f"triggered call {t['end_to_end_per_s']:6.0f}/s; gateway CPU "
            f"{t['gateway_cpu_ms_per_signal']:.2f} ms/signal"
        )
    lat = out["latency"]
    print(
        f"  SendSignal → the triggered execution's first call: p50 {lat['to_call_ms']['p50']:.2f} "
        f"ms, p90 {lat['to_call_ms']['p90']:.2f}, p99 {lat['to_call_ms']['p99']:.2f} "
        f"(SendSignal itself p50 {lat['rpc_ms']['p50']:.2f} ms)"
    )
    if not out["complete"]:
        print(f"  the downstream received {out['downstream_calls']} calls, not one per signal")
    if args.json:
        print(json.dumps(out))
    return 0 if out["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
