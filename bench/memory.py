"""Memory per in-flight execution (DESIGN §8: 10,000 concurrent executions in one process).

Starts ``bench/services.py --delay-ms`` (calls for orders named ``slow…`` wait, the others answer
at once), then holds ``--executions`` executions of the benchmark workflow
(``bench/workflows/bench_grpc.yaml`` with its per-call timeouts raised so nothing times out)
in flight on their first call, and reports the growth of the resident set size divided by the
number of executions. It waits until the services see every call (``GET /stats``), so each
execution really is suspended inside a live gRPC call. Two modes:

- ``engine`` (default): the engine and the real transports in this process, executions started
  as tasks; the RSS of this process is measured. This is the engine + transport cost alone.
- ``server``: a ``maestro serve`` process, driven by this process with that many concurrent
  ``Run`` calls; the RSS of the gateway process is measured, so the cost includes the gateway's
  per-RPC server state.

The baseline is taken after warm-up executions (channels open, methods resolved, allocator
warm), with the garbage collector run, so the figure is the marginal cost of one more execution.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import string
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from bench.procs import Children, rss_bytes

BENCH = Path(__file__).resolve().parent
PY = sys.executable
RAMP_BATCH = 250
INPUT = {
    "sku": "sku-42",
    "qty": 2,
    "amount": 1999,
    "address": "1 Main Street",
    "email": "buyer@example.com",
}


def workflow_text(grpc_target: str) -> str:
    """The benchmark workflow against ``grpc_target``, with timeouts long enough to wait."""
    text = string.Template((BENCH / "workflows" / "bench_grpc.yaml").read_text())
    return text.safe_substitute(GRPC=grpc_target, HTTP="http://127.0.0.1:1").replace(
        "timeout: 5s", "timeout: 600s"
    )


async def wait_inflight(
    stats_url: str, n: int, wait_s: float, tasks: list[asyncio.Future[Any]]
) -> int:
    """Poll the services until ``n`` calls wait there (or every other task ended early)."""
    seen = 0
    deadline = time.monotonic() + wait_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            seen = (await client.get(stats_url)).json()["inflight"]
            if seen + sum(t.done() for t in tasks) >= n:
                return seen
            await asyncio.sleep(0.25)
    return seen


async def ramp(
    stats_url: str, n: int, start: Callable[[int], Awaitable[Any]]
) -> list[asyncio.Future[Any]]:
    """Start ``n`` executions in batches, each once the previous one has reached the services.

    A burst of thousands of calls started at once on one gRPC channel loses some as CANCELLED
    before they are sent (see the notes); ramping up measures the steady in-flight state.
    """
    tasks: list[asyncio.Future[Any]] = []
    for first in range(0, n, RAMP_BATCH):
        tasks += [asyncio.ensure_future(start(i)) for i in range(first, min(n, first + RAMP_BATCH))]
        await wait_inflight(stats_url, len(tasks), 30, tasks)
    return tasks


def early_failures(tasks: list[asyncio.Future[Any]]) -> dict[str, int]:
    """How the executions that did not stay in flight ended, by kind."""
    kinds: dict[str, int] = {}
    for task in tasks:
        if task.done():
            exc = task.exception()
            if exc is not None:
                kind = f"{type(exc).__name__}: {str(exc)[:80]}"
            else:
                result = task.result()
                error = getattr(result, "error", None)
                kind = f"{getattr(result, 'status', result)} {error}"[:120]
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def settle_rss(pid: int) -> int:
    """RSS after the memory growth has stopped (bounded: at most ~3 s)."""
    last = rss_bytes(pid)
    for _ in range(12):
        time.sleep(0.25)
        now = rss_bytes(pid)
        if abs(now - last) < 64 * 1024:
            return now
        last = now
    return last


async def engine_mode(grpc_target: str, stats_url: str, n: int, warm: int) -> dict[str, Any]:
    """Executions as tasks of this process's engine."""
    from maestro_gateway.engine.executor import Engine
    from maestro_gateway.model.loader import load_string
    from maestro_gateway.transports.factory import Transports

    workflow = load_string(workflow_text(grpc_target), "bench_grpc.yaml")
    transports = Transports()
    engine = Engine(transports)
    try:
        for batch in range(warm // 100):
            await asyncio.gather(
                *(
                    engine.execute(workflow, {**INPUT, "order_id": f"warm-{batch}-{i}"})
                    for i in range(100)
                )
            )
        gc.collect()
        base = settle_rss(os.getpid())
        tasks = await ramp(
            stats_url,
            n,
            lambda i: engine.execute(workflow, {**INPUT, "order_id": f"slow-{i}"}),
        )
        inflight = await wait_inflight(stats_url, n, 120, tasks)
        gc.collect()
        loaded = settle_rss(os.getpid())
        failures = early_failures(tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await transports.close()
    return {
        "mode": "engine",
        "baseline_rss": base,
        "loaded_rss": loaded,
        "inflight_seen": inflight,
        "early_failures": failures,
    }


async def server_mode(
    children: Children, workflows: Path, grpc_target: str, stats_url: str, n: int, warm: int
) -> dict[str, Any]:
    """Executions as concurrent ``Run`` calls to a ``maestro serve`` process."""
    import grpc
    from google.protobuf import struct_pb2
    from maestro.v1 import gateway_pb2, gateway_pb2_grpc

    (workflows / "bench_grpc.yaml").write_text(workflow_text(grpc_target))
    argv = [PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflows)]
    gateway = children.start("memory-gateway", [*argv, "--host", "127.0.0.1", "--port", "0"])
    target = gateway.wait_for(r"maestro-gateway listening on (\S+)", 60).group(1)
    # Several channels: thousands of concurrent calls on one channel lose some (see the notes).
    channels = [grpc.aio.insecure_channel(target) for _ in range(max(1, n // 500))]
    stubs = [gateway_pb2_grpc.GatewayStub(c) for c in channels]

    def request(order_id: str) -> Any:
        value = struct_pb2.Struct()
        value.update({**INPUT, "order_id": order_id})
        return gateway_pb2.ExecuteRequest(workflow="bench_grpc", input=value)

    try:
        for batch in range(warm // 100):
            await asyncio.gather(
                *(stubs[i % len(stubs)].Run(request(f"warm-{batch}-{i}")) for i in range(100))
            )
        base = settle_rss(gateway.pid)
        calls = await ramp(
            stats_url, n, lambda i: stubs[i % len(stubs)].Run(request(f"slow-{i}"), timeout=600)
        )
        inflight = await wait_inflight(stats_url, n, 120, calls)
        loaded = settle_rss(gateway.pid)
        failures = early_failures(calls)
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    return {
        "mode": "server",
        "baseline_rss": base,
        "loaded_rss": loaded,
        "inflight_seen": inflight,
        "early_failures": failures,
    }


async def measure(mode: str, n: int, warm: int, delay_ms: float) -> dict[str, Any]:
    """Start the slow services, measure in ``mode``, stop everything."""
    with tempfile.TemporaryDirectory() as tmp, Children(BENCH / "results" / "logs") as children:
        services = children.start(
            "memory-services", [PY, str(BENCH / "services.py"), "--delay-ms", str(delay_ms)]
        )
        m = services.wait_for(r"grpc=(\S+) http=(\S+)", 30)
        grpc_target, stats_url = m.group(1), m.group(2) + "/stats"
        if mode == "engine":
            out = await engine_mode(grpc_target, stats_url, n, warm)
        else:
            out = await server_mode(children, Path(tmp), grpc_target, stats_url, n, warm)
    out["executions"] = n
    out["complete"] = out["inflight_seen"] >= n
    out["bytes_per_execution"] = (out["loaded_rss"] - out["baseline_rss"]) / n
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--mode", choices=["engine", "server"], default="engine")
    parser.add_argument("--warm", type=int, default=500, help="executions before the baseline")
    parser.add_argument(
        "--delay-ms", type=float, default=300_000.0, help="how long slow calls wait"
    )
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        out = asyncio.run(measure(args.mode, args.executions, args.warm, args.delay_ms))
        print(
            f"memory ({out['mode']} mode): {out['executions']} executions in flight "
            f"(services saw {out['inflight_seen']}): RSS {out['baseline_rss'] / 2**20:.1f} → "
            f"{out['loaded_rss'] / 2**20:.1f} MiB, {out['bytes_per_execution'] / 1024:.1f} KiB "
            "per in-flight execution"
        )
        if args.json:
            print(json.dumps(out))
        return 0 if out["complete"] else 1
    return 130


if __name__ == "__main__":
    sys.exit(main())
