"""Recovery after a crash (DESIGN §8: 1,000 unfinished executions resumed within 5 s).

Starts ``bench/services.py`` with calls of ``slow…`` orders held, and ``maestro serve`` on a
SQLite journal; starts ``--executions`` executions with ``Start`` (each then waits inside its
first call), kills the gateway with SIGKILL once the services hold every call, lets the
services answer at once from then on, and starts a new gateway on the same journal. Reports:

- ``ready_s``: from starting the new process to its ready line; recovery (every unfinished
  execution claimed, rebuilt from its events and resumed) happens before it, so this is the
  time to resume them all — compared with ``empty_ready_s``, the same start on an empty journal;
- ``finished_s``: from starting the new process until every execution has finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.memory import BENCH, INPUT, PY, ramp, workflow_text
from bench.procs import Children

READY = r"maestro-gateway listening on (\S+)"


def gateway_argv(workflows: Path, journal: Path) -> list[str]:
    return [
        *(PY, "-m", "maestro_gateway", "serve", "--workflows", str(workflows)),
        *("--journal", str(journal), "--host", "127.0.0.1", "--port", "0"),
        *("--max-concurrent", "100000"),
    ]


async def wait_held(stats_url: str, n: int, within: float = 120.0) -> int:
    """Poll the services until they hold ``n`` calls (or ``within`` s passed); return how many."""
    deadline = time.monotonic() + within
    async with httpx.AsyncClient() as client:
        while True:
            held: int = (await client.get(stats_url)).json()["inflight"]
            if held >= n or time.monotonic() > deadline:
                return held
            await asyncio.sleep(0.1)


async def running(stub: Any) -> int:
    """How many executions of the journal are still unfinished."""
    from maestro.v1 import gateway_pb2 as pb

    count, token = 0, ""
    while True:
        page = await stub.ListExecutions(
            pb.ListExecutionsRequest(
                statuses=[pb.EXECUTION_STATUS_RUNNING, pb.EXECUTION_STATUS_COMPENSATING],
                page_size=1000,
                page_token=token,
            ),
            timeout=30,
        )
        count += len(page.executions)
        token = page.next_page_token
        if not token:
            return count


async def measure(n: int) -> dict[str, Any]:
    """Fill a journal with ``n`` executions in flight, crash, restart, time the recovery."""
    import grpc
    from google.protobuf import struct_pb2
    from maestro.v1 import gateway_pb2 as pb
    from maestro.v1 import gateway_pb2_grpc

    with tempfile.TemporaryDirectory() as tmp, Children(BENCH / "results" / "logs") as children:
        scratch = Path(tmp)
        services = children.start(
            "recovery-services", [PY, str(BENCH / "services.py"), "--delay-ms", "600000"]
        )
        m = services.wait_for(r"grpc=(\S+) http=(\S+)", 30)
        grpc_target, http_url = m.group(1), m.group(2)
        workflows = scratch / "workflows"
        workflows.mkdir()
        (workflows / "bench_grpc.yaml").write_text(workflow_text(grpc_target))

        started = time.monotonic()
        empty = children.start("recovery-empty", gateway_argv(workflows, scratch / "empty.db"))
        empty.wait_for(READY, 60)
        empty_ready = time.monotonic() - started
        empty.stop()

        first = children.start("recovery-first", gateway_argv(workflows, scratch / "j.db"))
        target = first.wait_for(READY, 60).group(1)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)

            def start(i: int) -> Any:
                value = struct_pb2.Struct()
                value.update({**INPUT, "order_id": f"slow-{i}"})
                request = pb.ExecuteRequest(
                    workflow="bench_grpc", input=value, execution_id=f"recover-{i}"
                )
                return stub.Start(request, timeout=60)

            await ramp(f"{http_url}/stats", n, start)
            held = await wait_held(f"{http_url}/stats", n)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
        async with httpx.AsyncClient() as client:
            await client.post(f"{http_url}/delay", json={"ms": 0})

        started = time.monotonic()
        second = children.start("recovery-second", gateway_argv(workflows, scratch / "j.db"))
        target = second.wait_for(READY, 120).group(1)
        ready = time.monotonic() - started
        async with grpc.aio.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            left = await running(stub)
            while left > 0 and time.monotonic() - started < 300:
                await asyncio.sleep(0.05)
                left = await running(stub)
        finished = time.monotonic() - started
    return {
        "executions": n,
        "held_at_kill": held,
        "empty_ready_s": empty_ready,
        "ready_s": ready,
        "finished_s": finished,
        "unfinished_left": left,
        "complete": held >= n and left == 0,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure and print; with ``--json`` the last line is the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="end with one JSON line")
    args = parser.parse_args(argv)
    out = asyncio.run(measure(args.executions))
    print(
        f"recovery: {out['executions']} executions in flight at the kill "
        f"(services held {out['held_at_kill']}); the new gateway was ready (all resumed) after "
        f"{out['ready_s']:.2f} s (an empty journal: {out['empty_ready_s']:.2f} s), all finished "
        f"after {out['finished_s']:.2f} s"
    )
    if args.json:
        print(json.dumps(out))
    return 0 if out["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
