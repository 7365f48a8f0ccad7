"""Process plumbing shared by the demo services: arguments, the ready line, stopping on signals.

Every demo service (Python or Node.js) prints exactly one line on stdout once it accepts calls::

    ready <service> <host>:<port>

with the port it actually bound (so ``--port 0`` works across processes without races), logs to
stderr only, and exits with status 0 on SIGTERM or SIGINT after a short graceful stop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

READY_PREFIX = "ready"


def parse_args(
    service: str, default_port: int, argv: list[str] | None = None
) -> argparse.Namespace:
    """Parse ``--host`` and ``--port`` for one demo service."""
    parser = argparse.ArgumentParser(
        prog=f"python -m demo.{service}", description=f"Demo {service} service."
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        default=default_port,
        help=f"port to bind, 0 for any (default {default_port})",
    )
    return parser.parse_args(argv)


def ready_line(service: str, host: str, port: int) -> str:
    """The line a service prints on stdout once it is ready."""
    return f"{READY_PREFIX} {service} {host}:{port}"


def announce_ready(service: str, host: str, port: int) -> None:
    """Print the ready line and flush it at once (stdout is a pipe under the harness)."""
    sys.stdout.write(ready_line(service, host, port) + "\n")
    sys.stdout.flush()


def parse_ready_line(line: str) -> tuple[str, str, int] | None:
    """Return ``(service, host, port)`` from a ready line, or None for any other line."""
    parts = line.split()
    if len(parts) != 3 or parts[0] != READY_PREFIX:
        return None
    host, _, port = parts[2].rpartition(":")
    if not host or not port.isdigit():
        return None
    return parts[1], host, int(port)


async def wait_for_stop_signal() -> None:
    """Return when the process receives SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
