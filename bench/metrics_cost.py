"""What the Prometheus metrics cost per workflow (DESIGN §14), measured through the gateway.

Two in-process gateways serve the benchmark workflow (``bench/workflows/bench_grpc.yaml``: four
call steps, two in parallel) over ``bench.engine_cpu``'s canned transports (no I/O
downstream), one without metrics and one with ``GatewayMetrics`` (the interceptor, the event
observer, the journal hook; what ``--admin-port`` turns on). A gRPC client in the same process
calls ``Run`` (unary) and ``Execute`` (a stream of 11 events) on each in turn, sequentially
and 64 at a time; the figure is process CPU (``time.process_time``) per execution, so the
difference between the two gateways is what the metrics add. On a shared 2-core machine that
difference is within the noise of a ~1 ms execution, so the two parts are also measured alone:

- ``observer``: the engine alone (as ``bench/engine_cpu.py``), its events going to a list, or
  through the metrics' per-execution tracker to the same list: the execution, step and
  compensation metrics per execution;
- ``interceptor``: one trivial unary handler called directly, bare or wrapped by the metrics
  interceptor: the gRPC server metrics per RPC.

Also measured: one scrape (``/metrics`` rendered) after the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import string
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from bench.engine_cpu import INPUT, WORKFLOW, CannedTransports, load_workflow
from maestro_gateway.engine.events import Event
from maestro_gateway.engine.executor import Engine, new_record
from maestro_gateway.journal import MemoryJournal
from maestro_gateway.server.app import GatewayServer, create_gateway
from maestro_gateway.server.metrics import GatewayMetrics

Case = Callable[[gateway_pb2_grpc.GatewayStub, int], Coroutine[Any, Any, None]]


def request() -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update(INPUT)
    return pb.ExecuteRequest(workflow="bench_grpc", input=data)


async def run_sequential(stub: gateway_pb2_grpc.GatewayStub, n: int) -> None:
    req = request()
    for _ in range(n):
        result = await stub.Run(req, timeout=30)
        if result.status != pb.EXECUTION_STATUS_SUCCEEDED:
            raise RuntimeError(f"execution failed: {result}")


async def execute_sequential(stub: gateway_pb2_grpc.GatewayStub, n: int) -> None:
    req = request()
    for _ in range(n):
        async for _event in stub.Execute(req, timeout=30):
            pass


async def run_concurrent(stub: gateway_pb2_grpc.GatewayStub, n: int) -> None:
    req = request()
    width = 64
    for _ in range(n // width):
        await asyncio.gather(*(stub.Run(req, timeout=30) for _ in range(width)))


CASES: dict[str, Case] = {
    "run": run_sequential,
    "execute": execute_sequential,
    "run_x64": run_concurrent,
}


async def gateway(directory: Path, **options: Any) -> GatewayServer:
    """A started in-process gateway over canned downstreams (``options`` for create_gateway)."""
    server, problems = create_gateway(
        directory, transports=CannedTransports(), journal=MemoryJournal(), **options
    )
    if problems:
        raise RuntimeError(f"the benchmark workflow does not load: {problems}")
    await server.start()
    return server


Samples = dict[str, dict[str, list[float]]]
"""case → "off"/"on" → µs of process CPU per execution, one per repeat."""


async def off_and_on(
    n: int,
    repeats: int,
    on: dict[str, Any],
    *,
    wrap: Callable[[Any], Any] = lambda stub: stub,
    after_on: Callable[[], None] | None = None,
) -> Samples:
    """Two in-process gateways over canned downstreams, the second with ``on`` (create_gateway
    options): each case ``repeats`` times on each in turn, ``n`` executions a time.

    ``wrap`` wraps each gateway's stub (extra call metadata, say); ``after_on`` runs inside the
    measured window of the second gateway (work it leaves to another thread).
    """
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        text = string.Template(WORKFLOW.read_text()).safe_substitute(GRPC="127.0.0.1:1")
        (directory / "bench_grpc.yaml").write_text(text)
        servers = {"off": await gateway(directory), "on": await gateway(directory, **on)}
        channels = {k: grpc.aio.insecure_channel(f"127.0.0.1:{s.port}") for k, s in servers.items()}
        stubs = {k: wrap(gateway_pb2_grpc.GatewayStub(c)) for k, c in channels.items()}
        try:
            for stub in stubs.values():  # warm caches, channels and the allocator
                await run_sequential(stub, 200)
                await execute_sequential(stub, 50)
            samples: Samples = {case: {"off": [], "on": []} for case in CASES}
            for _ in range(repeats):
                for case, body in CASES.items():
                    for which in ("off", "on"):
                        cpu = time.process_time()
                        await body(stubs[which], n)
                        if which == "on" and after_on is not None:
                            after_on()
                        samples[case][which].append((time.process_time() - cpu) / n * 1e6)
        finally:
            for channel in channels.values():
                await channel.close()
            for server in servers.values():
                await server.shutdown(0)
    return samples


def medians(samples: Samples) -> dict[str, dict[str, float]]:
    """Per case: the median µs off and on, and what ``on`` adds."""
    out: dict[str, dict[str, float]] = {}
    for case, runs in samples.items():
        off = sorted(runs["off"])[len(runs["off"]) // 2]
        on = sorted(runs["on"])[len(runs["on"]) // 2]
        out[case] = {
            "us_per_execution_off": off,
            "us_per_execution_on": on,
            "us_added": on - off,
            "percent_added": (on - off) / off * 100,
        }
    return out


async def measure(n: int, repeats: int) -> dict[str, Any]:
    """µs of process CPU per execution for each case, metrics off and on (median of repeats)."""
    metrics = GatewayMetrics()
    samples = await off_and_on(n, repeats, {"metrics": metrics})
    started = time.perf_counter()
    exposition = metrics.exposition()
    scrape_ms = (time.perf_counter() - started) * 1000
    out: dict[str, Any] = {"executions": n, "repeats": repeats, "steps_per_execution": 4}
    out.update(medians(samples))
    series = sum(1 for line in exposition.decode().splitlines() if not line.startswith("#"))
    out["scrape"] = {"ms": scrape_ms, "series": series, "bytes": len(exposition)}
    return out


async def observer(n: int, repeats: int) -> dict[str, float]:
    """µs of CPU per execution of the engine alone, events to a list, bare or through a tracker."""
    workflow = load_workflow()
    engine = Engine(CannedTransports())
    metrics = GatewayMetrics(process=False)
    sink: list[Event] = []

    async def once(tracked: bool, i: int) -> None:
        record = new_record(workflow, INPUT, f"e-{i}", clock=engine.clock)
        on_event = metrics.watch(workflow, record, sink.append) if tracked else sink.append
        await engine.execute(workflow, INPUT, record=record, on_event=on_event)
        if tracked:
            metrics.done(record.execution_id)
        sink.clear()

    for i in range(200):
        await once(True, i)
        await once(False, i)
    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for tracked in (False, True):
            cpu = time.process_time()
            for i in range(n):
                await once(tracked, i)
            runs[tracked].append((time.process_time() - cpu) / n * 1e6)
    off, on = (sorted(runs[k])[repeats // 2] for k in (False, True))
    return {"us_per_execution_off": off, "us_per_execution_on": on, "us_added": on - off}


class _Context:
    """Just what the interceptor's wrapper asks of a servicer context."""

    def code(self) -> None:
        return None

    def time_remaining(self) -> float:
        return 10.0


async def interceptor(n: int, repeats: int) -> dict[str, float]:
    """µs of CPU per call of a trivial unary handler, bare or wrapped by the interceptor."""
    metrics = GatewayMetrics(process=False)

    async def behavior(request: Any, context: Any) -> Any:
        return request

    handler = grpc.unary_unary_rpc_method_handler(behavior)

    async def continuation(details: Any) -> grpc.RpcMethodHandler:
        return handler  # as grpcio's registered and generic handlers do: the same each time

    class Details:
        method = "/maestro.v1.Gateway/Run"
        invocation_metadata = ()

    (interceptor,) = metrics.interceptors()
    context = _Context()

    async def wrapped_call() -> None:
        handler = await interceptor.intercept_service(continuation, Details())
        await handler.unary_unary(None, context)

    async def bare_call() -> None:
        handler = await continuation(Details())
        await handler.unary_unary(None, context)

    runs: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for wrapped in (False, True):
            call = wrapped_call if wrapped else bare_call
            cpu = time.process_time()
            for _ in range(n):
                await call()
            runs[wrapped].append((time.process_time() - cpu) / n * 1e6)
    off, on = (sorted(runs[k])[repeats // 2] for k in (False, True))
    return {"us_per_call_off": off, "us_per_call_on": on, "us_added": on - off}


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args.executions, args.repeats))
    out["observer"] = asyncio.run(observer(args.executions * 4, args.repeats))
    out["interceptor"] = asyncio.run(interceptor(args.executions * 50, args.repeats))
    print(
        f"metrics cost per execution (process CPU, gateway and client in one process; "
        f"{args.executions} executions × {args.repeats} runs, 4-step workflow):"
    )
    for case in CASES:
        row = out[case]
        print(
            f"  {case:<8} off {row['us_per_execution_off']:7.1f} µs   on "
            f"{row['us_per_execution_on']:7.1f} µs   +{row['us_added']:5.1f} µs "
            f"({row['percent_added']:+.1f}%)"
        )
    alone = out["observer"]
    print(
        f"  the event observer alone: engine {alone['us_per_execution_off']:.1f} µs per "
        f"execution, +{alone['us_added']:.1f} µs with the tracker"
    )
    wrap = out["interceptor"]
    print(
        f"  the interceptor alone: +{wrap['us_added']:.1f} µs per RPC "
        f"({wrap['us_per_call_off']:.1f} → {wrap['us_per_call_on']:.1f} µs for a trivial handler)"
    )
    scrape = out["scrape"]
    print(
        f"  one scrape: {scrape['ms']:.2f} ms for {scrape['series']} series "
        f"({scrape['bytes']} bytes)"
    )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
