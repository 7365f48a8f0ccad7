"""The load client of ``make bench``: drives any ``maestro.v1.Gateway`` in its own process.

It runs apart from the measured processes so its CPU is not charged to them. It reads one JSON
command per line on stdin and answers one JSON line on stdout:

- ``{"cmd": "prepare", "target": "127.0.0.1:P", "rpc": "Run"|"Execute", "workflow": W,
  "concurrency": C, "warmup": S}`` → runs ``C`` workers for ``S`` seconds without recording,
  then answers ``{"ready": true}``; ``"targets": [T1, T2, …]`` in place of ``"target"`` spreads
  the calls round-robin over several gateways (one channel each: the replicas phase);
- ``{"cmd": "go", "duration": D}`` → runs the prepared load for ``D`` seconds (workers stop
  starting calls at the deadline; the calls in flight finish and count), then answers with the
  count, errors, elapsed seconds, latency percentiles and the client's own CPU seconds;
- ``{"cmd": "quit"}``.

The split lets the driver read the server's CPU counters between ``prepare`` and ``go``, so they
cover exactly the measured window. A call counts as a success only if it returned a SUCCEEDED
result (``Run``) or a stream ending with ``finished`` SUCCEEDED (``Execute``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import grpc
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2, gateway_pb2_grpc

INPUT = {
    "order_id": "o-1001",
    "sku": "sku-42",
    "qty": 2,
    "amount": 1999,
    "address": "1 Main Street",
    "email": "buyer@example.com",
}
SUCCEEDED = gateway_pb2.EXECUTION_STATUS_SUCCEEDED


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


class Load:
    """Workers calling one RPC of one target in a closed loop."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.stubs: list[Any] = []
        self._next = 0
        self.rpc = "Run"
        self.concurrency = 1
        self.request = gateway_pb2.ExecuteRequest()
        self.errors: dict[str, int] = {}

    def configure(self, targets: list[str], rpc: str, workflow: str, concurrency: int) -> None:
        """Select what the next runs call: one target, or several taken in turn."""
        self.stubs = []
        for target in targets:
            if target not in self._channels:
                self._channels[target] = grpc.aio.insecure_channel(target)
            self.stubs.append(gateway_pb2_grpc.GatewayStub(self._channels[target]))
        self._next = 0
        self.rpc = rpc
        self.concurrency = concurrency
        request_input = struct_pb2.Struct()
        request_input.update(INPUT)
        self.request = gateway_pb2.ExecuteRequest(workflow=workflow, input=request_input)

    def _stub(self) -> Any:
        """The next target's stub, round-robin."""
        if len(self.stubs) == 1:
            return self.stubs[0]
        stub = self.stubs[self._next % len(self.stubs)]
        self._next += 1
        return stub

    async def _once(self) -> None:
        stub = self._stub()
        if self.rpc == "Run":
            result = await stub.Run(self.request, timeout=30.0)
            if result.status != SUCCEEDED:
                raise RuntimeError(f"status {result.status}")
            return
        last = None
        async for event in stub.Execute(self.request, timeout=30.0):
            last = event
        if last is None or last.WhichOneof("event") != "finished":
            raise RuntimeError("stream did not end with finished")
        if last.finished.result.status != SUCCEEDED:
            raise RuntimeError(f"status {last.finished.result.status}")

    async def _worker(self, deadline: float, latencies: list[float] | None) -> None:
        clock = time.perf_counter
        while clock() < deadline:
            start = clock()
            try:
                await self._once()
            except (grpc.aio.AioRpcError, RuntimeError) as exc:
                key = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
                self.errors[key] = self.errors.get(key, 0) + 1
                # Back off a little so a failing target cannot spin the client at 100% CPU.
                await asyncio.sleep(0.01)
                continue
            if latencies is not None:
                latencies.append(clock() - start)

    async def run(self, duration: float, record: bool) -> dict[str, Any]:
        """Run the workers for ``duration`` seconds; summarise when ``record``."""
        self.errors = {}
        latencies: list[float] = []
        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline = t0 + duration
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.concurrency):
                tg.create_task(self._worker(deadline, latencies if record else None))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        latencies.sort()
        return {
            "count": len(latencies),
            "errors": self.errors,
            "elapsed": elapsed,
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "client_cpu": cpu,
        }

    async def close(self) -> None:
        """Close every channel."""
        for channel in self._channels.values():
            await channel.close()


async def main() -> int:
    """Serve commands from stdin until ``quit`` or end of input."""
    load = Load()
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            if command["cmd"] == "prepare":
                targets = command.get("targets") or [command["target"]]
                load.configure(targets, command["rpc"], command["workflow"], command["concurrency"])
                warm = await load.run(float(command.get("warmup", 0.5)), record=True)
                answer: dict[str, Any] = {"ready": True, "warmup_count": warm["count"]}
                answer["errors"] = warm["errors"]
            elif command["cmd"] == "go":
                answer = await load.run(float(command["duration"]), record=True)
            elif command["cmd"] == "quit":
                break
            else:
                answer = {"error": f"unknown command {command['cmd']!r}"}
            print(json.dumps(answer), flush=True)
    finally:
        await load.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
