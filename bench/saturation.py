"""Health under saturation: how fast ``grpc.health.v1.Health/Check`` answers a busy gateway.

The health service is served by the gateway's own ``grpc.aio`` server, so its handler runs on
the same event loop as every execution: whatever holds the loop delays it. This starts
``bench/services.py --delay-ms`` (orders named ``slow…`` wait) and one ``maestro serve
--journal none --max-concurrent N``, then measures Check's latency from a prober process of its
own (``--probe``: one connection, one Check every 20 ms, so load generation does not distort
it) in four states:

- ``idle``: nothing else runs;
- ``slots_full``: ``--max-concurrent`` executions in flight, each waiting on the slow service
  (the loop is mostly idle; what is measured is the cost of a thousand suspended executions),
  plus how long an Execute beyond the limit takes to be refused (RESOURCE_EXHAUSTED);
- ``busy``: 64 clients running the benchmark workflow back to back (the loop busy with
  ordinary work);
- ``cel``: 4 clients running a workflow whose one step evaluates ``input.xs.map(x, x)`` over
  9999 items (inside CEL's 9,999-iteration budget; CEL builds the list by copying it at every
  step), which holds the loop for the whole evaluation: CEL runs in C++ without releasing the
  interpreter, so no Python thread (a health servicer on grpc's thread pool, a second server)
  could answer meanwhile.

For each: Check latency p50, p99 and max in ms over the window, and how many Checks ran. With
``--json`` the last line is the figures as JSON (``make bench`` collects it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from bench.procs import Children

BENCH = Path(__file__).resolve().parent
PY = sys.executable
PROBE_INTERVAL = 0.02
MAX_CONCURRENT = 1000
CEL_ITEMS = 9999

SLOW = """\
name: slow
services:
  inventory: {{type: grpc, endpoint: "{grpc}", timeout: 600s}}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {{order_id: "{{{{ input.order_id }}}}", sku: sku-1, qty: 1}}
"""

CEL = """\
name: cel
services:
  inventory: {{type: grpc, endpoint: "{grpc}", timeout: 60s}}
steps:
  - id: reserve
    service: inventory
    method: shop.v1.Inventory/Reserve
    input: {{order_id: cel, sku: "{{{{ string(input.xs.map(x, x).size()) }}}}", qty: 1}}
"""

FAST_INPUT = {
    "sku": "sku-42",
    "qty": 2,
    "amount": 1999,
    "address": "1 Main Street",
    "email": "buyer@example.com",
}


def _request(workflow: str, value: dict[str, Any]) -> pb.ExecuteRequest:
    data = struct_pb2.Struct()
    data.update(value)
    return pb.ExecuteRequest(workflow=workflow, input=data)


def _summary(latencies: list[float]) -> dict[str, Any]:
    ordered = sorted(latencies)
    if not ordered:
        return {"checks": 0}
    return {
        "checks": len(ordered),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "over_100ms": sum(1 for x in ordered if x > 0.1),
    }


async def probe(target: str, seconds: float) -> dict[str, Any]:
    """Check every PROBE_INTERVAL for ``seconds`` on one connection; the latency figures."""
    latencies: list[float] = []
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
                if answer.status != health_pb2.HealthCheckResponse.SERVING:
                    failures += 1
            except grpc.aio.AioRpcError:
                failures += 1
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(PROBE_INTERVAL)
    return {**_summary(latencies), "not_serving": failures}


def run_probe(target: str, seconds: float) -> subprocess.Popen[str]:
    """Start the prober as a process of its own (its JSON on stdout)."""
    return subprocess.Popen(
        [PY, "-m", "bench.saturation", "--probe", target, "--seconds", str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )


async def probe_result(process: subprocess.Popen[str], limit: float) -> dict[str, Any]:
    """Wait (bounded) for a prober and read its figures."""
    out, _ = await asyncio.to_thread(process.communicate, timeout=limit)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


async def wait_inflight(stats_url: str, n: int, limit: float) -> int:
    """Poll the services until ``n`` calls wait there (bounded)."""
    seen = 0
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            seen = (await client.get(stats_url)).json()["inflight"]
            if seen >= n:
                break
            await asyncio.sleep(0.2)
    return seen


async def measure(target: str, stats_url: str, seconds: float) -> dict[str, Any]:
    """The four states, one after the other, against a running gateway."""
    out: dict[str, Any] = {}
    out["idle"] = await probe_result(run_probe(target, seconds), seconds + 60)

    # Several connections (own subchannel pools): thousands of calls on one channel lose some.
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(4)
    ]
    stubs = [gateway_pb2_grpc.GatewayStub(c) for c in channels]
    try:
        held: list[asyncio.Future[Any]] = []
        for batch in range(MAX_CONCURRENT // 250):
            held += [
                asyncio.ensure_future(
                    stubs[i % 4].Run(
                        _request("slow", {"order_id": f"slow-{batch}-{i}"}), timeout=600
                    )
                )
                for i in range(250)
            ]
            await wait_inflight(stats_url, len(held), 60)
        inflight = await wait_inflight(stats_url, MAX_CONCURRENT, 60)
        prober = run_probe(target, seconds)
        refusals: list[float] = []
        for _ in range(20):
            started = time.perf_counter()
            try:
                await stubs[0].Run(_request("slow", {"order_id": "slow-refused"}), timeout=30)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refusals.append(time.perf_counter() - started)
            await asyncio.sleep(seconds / 20)
        out["slots_full"] = {
            **await probe_result(prober, seconds + 60),
            "in_flight": inflight,
            "refused": len(refusals),
            "refusal_p50_ms": round(statistics.median(refusals) * 1000, 2) if refusals else None,
            "refusal_max_ms": round(max(refusals) * 1000, 2) if refusals else None,
        }
        for call in held:
            call.cancel()
        await asyncio.gather(*held, return_exceptions=True)

        out["busy"] = await _loaded(target, stubs, seconds, 64, "bench_grpc", FAST_INPUT)
        xs = list(range(CEL_ITEMS))
        out["cel"] = await _loaded(target, stubs, seconds, 4, "cel", {"xs": xs})
    finally:
        for channel in channels:
            await channel.close()
    return out


async def _loaded(
    target: str,
    stubs: list[gateway_pb2_grpc.GatewayStub],
    seconds: float,
    clients: int,
    workflow: str,
    value: dict[str, Any],
) -> dict[str, Any]:
    """Health latency while ``clients`` run ``workflow`` back to back."""
    stop = asyncio.Event()
    done = 0
    evaluation: list[float] = []

    async def client(i: int) -> None:
        nonlocal done
        request = _request(workflow, {**value, "order_id": f"load-{i}"})
        while not stop.is_set():
            started = time.perf_counter()
            result = await stubs[i % len(stubs)].Run(request, timeout=120)
            if result.status != pb.EXECUTION_STATUS_SUCCEEDED:
                raise RuntimeError(f"{workflow} failed: {result.error}")
            evaluation.append(time.perf_counter() - started)
            done += 1

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    await asyncio.sleep(0.5)
    figures = await probe_result(run_probe(target, seconds), seconds + 120)
    stop.set()
    await asyncio.gather(*tasks)
    return {
        **figures,
        "clients": clients,
        "executions": done,
        "execution_p50_ms": round(statistics.median(evaluation) * 1000, 1) if evaluation else None,
    }


async def run(seconds: float) -> dict[str, Any]:
    """Start the services and the gateway, measure, stop them."""
    with (
        tempfile.TemporaryDirectory(prefix="maestro-saturation-") as scratch,
        Children(Path(scratch) / "logs") as children,
    ):
        services = children.start(
            "services", [PY, str(BENCH / "services.py"), "--delay-ms", "600000"]
        )
        m = services.wait_for(r"grpc=(\S+) http=(\S+)", 30)
        grpc_target, http_url = m.group(1), m.group(2)
        workflows = Path(scratch) / "workflows"
        workflows.mkdir()
        (workflows / "slow.yaml").write_text(SLOW.format(grpc=grpc_target))
        (workflows / "cel.yaml").write_text(CEL.format(grpc=grpc_target))
        bench_grpc = (BENCH / "workflows" / "bench_grpc.yaml").read_text()
        (workflows / "bench_grpc.yaml").write_text(bench_grpc.replace("${GRPC}", grpc_target))
        gateway = children.start(
            "gateway",
            [
                PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflows),
                "--port", "0", "--journal", "none", "--max-concurrent", str(MAX_CONCURRENT),
            ],
        )  # fmt: skip
        target = gateway.wait_for(r"maestro-gateway listening on (\S+)", 60).group(1)
        figures = await measure(target, f"{http_url}/stats", seconds)
    return {"max_concurrent": MAX_CONCURRENT, "window_s": seconds, **figures}


def report(figures: dict[str, Any]) -> None:
    """Print the figures as a table."""
    print(f"health Check latency, {figures['window_s']:g} s per state (ms)")
    print(f"{'state':<12} {'checks':>6} {'p50':>9} {'p99':>9} {'max':>9} {'>100ms':>7}")
    for state in ("idle", "slots_full", "busy", "cel"):
        row = figures[state]
        print(
            f"{state:<12} {row['checks']:>6} {row['p50_ms']:>9} {row['p99_ms']:>9} "
            f"{row['max_ms']:>9} {row['over_100ms']:>7}"
        )
    full = figures["slots_full"]
    print(
        f"slots_full: {full['in_flight']} executions in flight; {full['refused']} Runs beyond "
        f"the limit refused RESOURCE_EXHAUSTED, p50 {full['refusal_p50_ms']} ms, max "
        f"{full['refusal_max_ms']} ms"
    )
    for state in ("busy", "cel"):
        row = figures[state]
        print(
            f"{state}: {row['clients']} clients, {row['executions']} executions, "
            f"p50 {row['execution_p50_ms']} ms each"
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.saturation [--seconds S] [--json]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per state")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON last")
    parser.add_argument("--probe", metavar="TARGET", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(asyncio.run(probe(args.probe, args.seconds))))
        return 0
    figures = asyncio.run(run(args.seconds))
    report(figures)
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
