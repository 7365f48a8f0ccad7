"""Run the five demo services in the foreground: ``python -m demo.run`` (``make demo-services``).

Ports default to inventory 50051, payments 50052, shipping 50053, mailer 8081 and loyalty 50054;
``--base-port N`` uses N, N+1, N+2, N+3, N+4 instead, and ``--<service>-port`` sets one (0 = any
free port). Prints one line per service once all are ready, then waits: SIGINT (Ctrl-C) or SIGTERM
stops them all and exits 0; a service that dies stops the others and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from demo.harness import DEFAULT_PORTS, SERVICES, ServiceProcess, start_all, stop_all


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the runner's command line."""
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address every service binds")
    parser.add_argument(
        "--base-port",
        type=int,
        help="inventory on N, payments N+1, shipping N+2, mailer N+3, loyalty N+4",
    )
    for name in SERVICES:
        parser.add_argument(
            f"--{name}-port", type=int, help=f"port of {name} (default {DEFAULT_PORTS[name]})"
        )
    args = parser.parse_args(argv)
    if args.base_port is not None and not 1 <= args.base_port <= 65535 - len(SERVICES):
        parser.error(f"--base-port must be between 1 and {65535 - len(SERVICES)}")
    return args


def ports_from(args: argparse.Namespace) -> dict[str, int]:
    """The port of each service: explicit flag, else ``--base-port`` offset, else the default."""
    ports = {}
    for offset, name in enumerate(SERVICES):
        explicit = getattr(args, f"{name}_port")
        if explicit is not None:
            ports[name] = explicit
        elif args.base_port is not None:
            ports[name] = args.base_port + offset
        else:
            ports[name] = DEFAULT_PORTS[name]
    return ports


def describe(service: ServiceProcess) -> str:
    """The line printed for a running service."""
    kind = {
        "mailer": "http",
        "shipping": "grpc (node)",
        "payments": "grpc (grpclib)",
        "loyalty": "grpc (grpcio, Maestro.go envelope)",
    }
    target = service.url if service.name == "mailer" else service.address
    return f"{service.name:<10} {target:<28} {kind.get(service.name, 'grpc (grpcio)')}"


async def run(args: argparse.Namespace) -> int:
    """Start the services, wait for a signal or a dead service, stop them all."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        services = await start_all(args.host, ports_from(args))
    except (RuntimeError, OSError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    try:
        for service in services:
            print(describe(service), flush=True)
        print("demo services ready; Ctrl-C stops them", file=sys.stderr, flush=True)
        waits = [asyncio.create_task(s.process.wait()) for s in services]
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stopper, *waits], return_when=asyncio.FIRST_COMPLETED)
        for task in [stopper, *waits]:
            task.cancel()
        if stopper in done:
            return 0
        dead = [s for s in services if s.process.returncode is not None]
        for service in dead:
            print(
                f"demo: {service.name} exited with status {service.process.returncode}",
                file=sys.stderr,
            )
        return 1
    finally:
        await stop_all(services)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m demo.run``."""
    sys.exit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
