"""Measure HTTP client stacks against a local aiohttp JSON server.

Contenders: httpx with its default transport, httpx with ``httpx_aiohttp.AiohttpTransport``
(what ``HttpTransport`` uses), ``HttpTransport`` itself, and aiohttp's own client. Each runs for
a few seconds at 1 and at 64 requests in flight; the server runs in a separate process so the
client's CPU time per request is measured on its own.

Usage::

    .venv/bin/python bench/http_transport.py [--seconds 2] [--concurrency 1 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import httpx
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from maestro_gateway.model.types import Service
from maestro_gateway.transports.http import HttpTransport

BODY = {"order_id": "o-1", "items": [{"sku": "a", "qty": 2}], "express": True}


async def _serve() -> None:
    """Serve ``POST /echo`` (echoes the JSON body) on 127.0.0.1:0; print the port; run until stdin closes."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(await request.json())

    app = web.Application()
    app.router.add_post("/echo", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await runner.cleanup()


@dataclass
class Result:
    """One contender at one concurrency."""

    name: str
    concurrency: int
    requests: int
    seconds: float
    cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / max(1, self.requests) * 1e6


async def _drive(
    call: Callable[[], Awaitable[object]], concurrency: int, seconds: float
) -> tuple[int, float, float]:
    for _ in range(20):  # warm the pool
        await call()
    count = 0
    stop_at = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal count
        while time.monotonic() < stop_at:
            await call()
            count += 1

    cpu0, t0 = time.process_time(), time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(worker())
    return count, time.monotonic() - t0, time.process_time() - cpu0


async def _run(port: int, seconds: float, levels: list[int]) -> list[Result]:
    url = f"http://127.0.0.1:{port}/echo"
    results: list[Result] = []
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    for level in levels:
        async with httpx.AsyncClient(limits=limits) as client:

            async def httpx_default() -> object:
                r = await client.post(url, json=BODY)
                return r.json()

            results.append(
                Result("httpx default", level, *await _drive(httpx_default, level, seconds))
            )
        async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits)) as client2:

            async def httpx_aiohttp() -> object:
                r = await client2.post(url, json=BODY)
                return r.json()

            results.append(
                Result(
                    "httpx + aiohttp transport", level, *await _drive(httpx_aiohttp, level, seconds)
                )
            )
        transport = HttpTransport(
            Service(name="bench", type="http", endpoint=f"http://127.0.0.1:{port}")
        )
        try:

            async def ours() -> object:
                return await transport.call("POST /echo", BODY, timeout=5.0, metadata=())  # noqa: B023

            results.append(Result("HttpTransport", level, *await _drive(ours, level, seconds)))
        finally:
            await transport.close()
        async with aiohttp.ClientSession() as session:

            async def raw() -> object:
                async with session.post(url, json=BODY) as r:
                    return await r.json()

            results.append(Result("raw aiohttp", level, *await _drive(raw, level, seconds)))
    return results


def main() -> int:
    """Start the server process, run every contender, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return 0
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        results = asyncio.run(_run(port, args.seconds, args.concurrency))
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if args.json:
        print(
            json.dumps([r.__dict__ | {"rps": r.rps, "cpu_us": r.cpu_us} for r in results], indent=2)
        )
        return 0
    print(f"{'client':28} {'in flight':>9} {'req/s':>9} {'CPU µs/req':>11}")
    for r in results:
        print(f"{r.name:28} {r.concurrency:9d} {r.rps:9.0f} {r.cpu_us:11.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
