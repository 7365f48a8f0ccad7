"""Orchestration CPU per step, the call itself excluded (DESIGN §8: under 100 µs).

Runs the real ``Engine`` on the benchmark workflow (``bench/workflows/bench_grpc.yaml``: four
call steps, two of them in parallel) over an in-memory ``TransportFactory`` whose transport
returns a canned response at once, without I/O. What is left is the engine's own work: template
and expression evaluation, parallel tasks, deadlines, breakers, events and the result. The
figure is process CPU time (``time.process_time``) divided by executions × steps, measured:

- ``no_events``: nobody listens (``on_event=None``), as ``Run`` would call it when the server
  does not stream;
- ``with_events``: events collected in a list, as ``Execute`` consumes them;
- ``concurrent``: 64 executions at a time (``asyncio.gather``), events collected.

``--journal memory|sqlite|sqlite-full`` runs the engine with that journal (write-ahead, as
``maestro serve`` does; a SQLite file in a temporary directory), so the difference from
``--journal none`` is the journal's CPU per step (process CPU: its writer thread included).
``--profile`` prints the top functions by own time under cProfile for the ``with_events`` case.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import pstats
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from maestro_gateway.engine.events import Event, ExecutionStatus
from maestro_gateway.engine.executor import Engine
from maestro_gateway.journal import Journal, MemoryJournal, SqliteJournal
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Service, Workflow
from maestro_gateway.transports.base import CallInfo, Metadata, Transport

WORKFLOW = Path(__file__).resolve().parent / "workflows" / "bench_grpc.yaml"
INPUT = {
    "order_id": "o-1001",
    "sku": "sku-42",
    "qty": 2,
    "amount": 1999,
    "address": "1 Main Street",
    "email": "buyer@example.com",
}
CANNED: dict[str, dict[str, Any]] = {
    "Reserve": {"id": "res-1", "sku": "sku-42", "qty": 2, "expires_at_unix_ms": 1_700_000_600_000},
    "Charge": {
        "id": "pay-1",
        "amount": 1999,
        "currency": "EUR",
        "status": "PAYMENT_STATUS_CAPTURED",
    },
    "CreateShipment": {"id": "shp-1", "tracking_number": "TRK00000001", "carrier": "bench"},
}


class CannedTransport:
    """Answers every call at once with the canned response of its method name."""

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol's signature
        metadata: Metadata,
        info: CallInfo | None = None,
    ) -> Any:
        """Return the canned response for ``method`` (``pkg.Svc/Name`` or ``Name``)."""
        return CANNED[method.rsplit("/", 1)[-1]]

    async def close(self) -> None:
        """Nothing to release."""


class CannedTransports:
    """A ``TransportFactory`` handing out one shared ``CannedTransport``."""

    def __init__(self) -> None:
        self._transport = CannedTransport()

    def transport_for(self, service: Service) -> Transport:
        """The shared canned transport."""
        return self._transport

    async def close(self) -> None:
        """Nothing to release."""


def load_workflow() -> Workflow:
    """The benchmark workflow with placeholder endpoints (never dialled)."""
    text = string.Template(WORKFLOW.read_text()).safe_substitute(
        GRPC="127.0.0.1:1", HTTP="http://127.0.0.1:1"
    )
    return load_string(text, str(WORKFLOW))


async def sequential(engine: Engine, workflow: Workflow, n: int, events: bool) -> float:
    """CPU seconds for ``n`` executions one after the other."""
    sink: list[Event] = []
    cpu0 = time.process_time()
    for _ in range(n):
        result = await engine.execute(workflow, INPUT, on_event=sink.append if events else None)
        if result.status is not ExecutionStatus.SUCCEEDED:
            raise RuntimeError(f"execution failed: {result.error}")
        sink.clear()
    return time.process_time() - cpu0


async def concurrent(engine: Engine, workflow: Workflow, n: int, width: int) -> float:
    """CPU seconds for ``n`` executions, ``width`` at a time."""

    async def one() -> None:
        sink: list[Event] = []
        result = await engine.execute(workflow, INPUT, on_event=sink.append)
        if result.status is not ExecutionStatus.SUCCEEDED:
            raise RuntimeError(f"execution failed: {result.error}")

    cpu0 = time.process_time()
    for _ in range(n // width):
        await asyncio.gather(*(one() for _ in range(width)))
    return time.process_time() - cpu0


@contextlib.asynccontextmanager
async def journal_of(kind: str) -> AsyncIterator[Journal | None]:
    """The journal ``kind`` names, opened (None for ``none``), closed on exit."""
    if kind == "none":
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        journal: Journal = (
            MemoryJournal()
            if kind == "memory"
            else SqliteJournal(
                Path(tmp) / "journal.db", sync="full" if kind == "sqlite-full" else "normal"
            )
        )
        await journal.open()
        try:
            yield journal
        finally:
            await journal.close()


async def measure(n: int, repeats: int, journal: Journal | None) -> dict[str, Any]:
    """Per-step and per-execution CPU in µs for each case: the median of ``repeats`` runs."""
    workflow = load_workflow()
    steps = len(workflow.call_steps())
    engine = Engine(CannedTransports(), journal=journal)
    await sequential(engine, workflow, 200, True)  # warm caches and the allocator
    cases: dict[str, list[float]] = {"no_events": [], "with_events": [], "concurrent": []}
    for _ in range(repeats):
        cases["no_events"].append(await sequential(engine, workflow, n, False))
        cases["with_events"].append(await sequential(engine, workflow, n, True))
        cases["concurrent"].append(await concurrent(engine, workflow, n, 64))
    out: dict[str, Any] = {"executions": n, "steps_per_execution": steps, "repeats": repeats}
    for name, runs in cases.items():
        runs.sort()
        median = runs[len(runs) // 2]
        out[name] = {
            "us_per_step": median / (n * steps) * 1e6,
            "us_per_execution": median / n * 1e6,
            "us_per_step_min": runs[0] / (n * steps) * 1e6,
            "us_per_step_max": runs[-1] / (n * steps) * 1e6,
        }
    return out


async def profile(n: int, top: int, journal: Journal | None) -> str:
    """cProfile of ``n`` sequential executions with events; the top functions by own time."""
    workflow = load_workflow()
    engine = Engine(CannedTransports(), journal=journal)
    await sequential(engine, workflow, 200, True)
    profiler = cProfile.Profile()
    profiler.enable()
    await sequential(engine, workflow, n, True)
    profiler.disable()
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(top)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary")
    parser.add_argument(
        "--journal", default="none", choices=["none", "memory", "sqlite", "sqlite-full"]
    )
    args = parser.parse_args(argv)

    async def run() -> Any:
        async with journal_of(args.journal) as journal:
            if args.profile:
                return await profile(args.executions, 30, journal)
            return await measure(args.executions, args.repeats, journal)

    if args.profile:
        print(asyncio.run(run()))
        return 0
    out = asyncio.run(run())
    out["journal"] = args.journal
    print(
        f"engine CPU per step (excluding the call), {out['steps_per_execution']}-step workflow, "
        f"{out['executions']} executions × {out['repeats']} runs, journal {args.journal} "
        "(target < 100 µs):"
    )
    for name in ("no_events", "with_events", "concurrent"):
        case = out[name]
        print(
            f"  {name:<12} {case['us_per_step']:6.1f} µs/step "
            f"({case['us_per_step_min']:.1f}–{case['us_per_step_max']:.1f}), "
            f"{case['us_per_execution']:7.1f} µs/execution"
        )
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
