"""A foreach's cost (issue 10): orchestration CPU per iteration, the whole against glue, memory.

Three figures, each printed and returned in the JSON summary:

- ``orchestration``: the real ``Engine`` runs a foreach of 1,000 items (one call each) at
  concurrency 64 over an in-memory transport that answers at once, so what is measured is the
  engine's own CPU per iteration (target < 100 µs), with events collected, with no journal and
  with the SQLite journal;
- ``whole``: the same foreach against the real gRPC service of ``bench/services.py`` (started
  as a child process), run by the engine with its real transports, beside hand-written asyncio
  glue doing the same 1,000 calls through a generated stub under an ``asyncio.Semaphore(64)``,
  in the same process one after the other: wall time, process CPU and the gateway/glue ratios;
- ``memory``: a foreach of 10,000 items with events streamed to a sink that keeps nothing; the
  growth of the process's peak RSS (target < 200 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from shop.v1 import inventory_pb2, inventory_pb2_grpc

from bench.engine_cpu import CannedTransports
from bench.procs import Children
from maestro_gateway.engine.events import Event, ExecutionStatus
from maestro_gateway.engine.executor import Engine
from maestro_gateway.journal import Journal, SqliteJournal
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Workflow
from maestro_gateway.transports.factory import Transports

BENCH = Path(__file__).resolve().parent
PY = sys.executable
TARGET_US = 100.0
TARGET_RSS_MIB = 200.0

WORKFLOW = """
name: bench_foreach
services:
  inventory: {{type: grpc, endpoint: "{target}", timeout: 5s}}
steps:
  - id: lines
    foreach: "{{{{ input.lines }}}}"
    as: line
    concurrency: {concurrency}
    max_items: 20000
    steps:
      - id: reserve
        service: inventory
        method: shop.v1.Inventory/Reserve
        input: {{order_id: "{{{{ input.order_id }}}}", sku: "{{{{ line.sku }}}}", qty: "{{{{ line.qty }}}}"}}
    output: reservations
"""


def workflow(target: str = "127.0.0.1:1", concurrency: int = 64) -> Workflow:
    """The benchmark foreach, calling ``target``."""
    return load_string(WORKFLOW.format(target=target, concurrency=concurrency))


def items(n: int) -> dict[str, Any]:
    """An order of ``n`` lines."""
    return {"order_id": "o-1", "lines": [{"sku": f"sku-{k}", "qty": 1 + k % 3} for k in range(n)]}


async def _run(engine: Engine, wf: Workflow, input: dict[str, Any], sink: Any) -> None:
    result = await engine.execute(wf, input, on_event=sink)
    if result.status is not ExecutionStatus.SUCCEEDED:
        raise RuntimeError(f"execution failed: {result.error}")


async def orchestration(n_items: int, runs: int, journal: Journal | None) -> dict[str, Any]:
    """Engine CPU per iteration over the canned transport (median of ``runs``)."""
    engine = Engine(CannedTransports(), journal=journal)
    wf = workflow()
    input = items(n_items)
    sink: list[Event] = []
    await _run(engine, wf, items(100), sink.append)  # warm caches
    samples = []
    for _ in range(runs):
        sink.clear()
        cpu0 = time.process_time()
        await _run(engine, wf, input, sink.append)
        samples.append((time.process_time() - cpu0) / n_items * 1e6)
    samples.sort()
    return {
        "items": n_items,
        "us_per_iteration": samples[len(samples) // 2],
        "min": samples[0],
        "max": samples[-1],
    }


async def glue(target: str, input: dict[str, Any], width: int) -> None:
    """Hand-written fan-out: one Reserve per line, ``width`` at a time, results in order."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inventory_pb2_grpc.InventoryStub(channel)
        slots = asyncio.Semaphore(width)

        async def one(line: dict[str, Any]) -> Any:
            async with slots:
                return await stub.Reserve(
                    inventory_pb2.ReserveRequest(
                        order_id=input["order_id"], sku=line["sku"], qty=line["qty"]
                    ),
                    timeout=5,
                )

        await asyncio.gather(*(one(line) for line in input["lines"]))


async def whole(target: str, n_items: int, runs: int) -> dict[str, Any]:
    """Wall time and CPU of the engine's foreach and of the glue, alternating, medians."""
    transports = Transports()
    engine = Engine(transports)
    wf = workflow(target)
    engine.prepare(wf)
    input = items(n_items)
    await _run(engine, wf, items(64), None)
    await glue(target, items(64), 64)
    figures: dict[str, list[tuple[float, float]]] = {"gateway": [], "glue": []}
    for _ in range(runs):
        for name in ("glue", "gateway"):
            wall0, cpu0 = time.perf_counter(), time.process_time()
            if name == "glue":
                await glue(target, input, 64)
            else:
                await _run(engine, wf, input, None)
            figures[name].append((time.perf_counter() - wall0, time.process_time() - cpu0))
    await transports.close()
    out: dict[str, Any] = {"items": n_items}
    for name, samples in figures.items():
        walls = sorted(w for w, _ in samples)
        cpus = sorted(c for _, c in samples)
        out[name] = {
            "wall_ms": walls[len(walls) // 2] * 1000,
            "cpu_us_per_item": cpus[len(cpus) // 2] / n_items * 1e6,
        }
    out["wall_ratio"] = out["gateway"]["wall_ms"] / out["glue"]["wall_ms"]
    out["cpu_ratio"] = out["gateway"]["cpu_us_per_item"] / out["glue"]["cpu_us_per_item"]
    return out


async def memory(n_items: int) -> dict[str, Any]:
    """Peak RSS growth of one foreach of ``n_items`` streamed to a sink that keeps nothing."""
    engine = Engine(CannedTransports())
    wf = workflow()
    count = 0

    def sink(event: Event) -> None:
        nonlocal count
        count += 1

    await _run(engine, wf, items(100), sink)
    input = items(n_items)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    await _run(engine, wf, input, sink)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"items": n_items, "events": count, "rss_growth_mib": (after - before) / 1024}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["orchestration"] = {"none": await orchestration(args.items, args.runs, None)}
    with tempfile.TemporaryDirectory() as tmp:
        journal = SqliteJournal(Path(tmp) / "journal.db")
        await journal.open()
        try:
            out["orchestration"]["sqlite"] = await orchestration(args.items, args.runs, journal)
        finally:
            await journal.close()
    with tempfile.TemporaryDirectory() as tmp:
        children = Children(Path(tmp))
        try:
            services = children.start("services", [PY, str(BENCH / "services.py")])
            target = services.wait_for(r"grpc=(\S+) http=(\S+)", 30).group(1)
            out["whole"] = await whole(target, args.items, args.runs)
        finally:
            children.stop_all()
    out["memory"] = await memory(args.memory_items)
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-items", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    out = asyncio.run(main_async(args))
    print(f"foreach of {args.items} items at concurrency 64:")
    for journal, case in out["orchestration"].items():
        print(
            f"  orchestration CPU, journal {journal:<6} {case['us_per_iteration']:6.1f} µs/iteration "
            f"({case['min']:.1f}–{case['max']:.1f}; target < {TARGET_US:g})"
        )
    w = out["whole"]
    print(
        f"  against the gRPC service: gateway {w['gateway']['wall_ms']:.0f} ms "
        f"({w['gateway']['cpu_us_per_item']:.0f} µs CPU/item), glue {w['glue']['wall_ms']:.0f} ms "
        f"({w['glue']['cpu_us_per_item']:.0f} µs CPU/item): wall ×{w['wall_ratio']:.2f}, "
        f"CPU ×{w['cpu_ratio']:.2f}"
    )
    m = out["memory"]
    print(
        f"  {m['items']} items, {m['events']} events streamed: peak RSS +{m['rss_growth_mib']:.0f} MiB "
        f"(target < {TARGET_RSS_MIB:g})"
    )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
