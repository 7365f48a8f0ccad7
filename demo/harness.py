"""Start the five demo services as subprocesses and drive their control planes (for tests).

::

    async with running_services() as demo:
        await demo.payments.control.add_fault(method="Charge", code="UNAVAILABLE", times=2)
        ...  # call demo.payments.address with any gRPC client
        calls = await demo.payments.control.calls()

Each service is started with port 0 (unless ``ports`` says otherwise) and announces the port it
bound on stdout (``ready <service> <host>:<port>``, see :mod:`demo.process`), so there is no race
between picking a free port and binding it. Every process is stopped at exit: SIGTERM, then
SIGKILL after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demo.control_client import ControlClient, GrpcControlClient, HttpControlClient
from demo.process import parse_ready_line

ROOT = Path(__file__).resolve().parent.parent
SERVICES: tuple[str, ...] = ("inventory", "payments", "shipping", "mailer", "loyalty")
DEFAULT_PORTS: dict[str, int] = {
    "inventory": 50051,
    "payments": 50052,
    "shipping": 50053,
    "mailer": 8081,
    "loyalty": 50054,
}
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


def command(service: str, host: str, port: int, extra: Sequence[str] = ()) -> list[str]:
    """The command line that starts ``service`` (``extra``: more arguments, e.g.
    ``--no-reflection`` for the loyalty service)."""
    if service not in SERVICES:
        raise ValueError(f"unknown demo service {service!r}; expected one of {SERVICES}")
    args = ["--host", host, "--port", str(port), *extra]
    if service == "shipping":
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH: the shipping demo service needs Node.js")
        return [node, str(ROOT / "demo" / "node" / "shipping.js"), *args]
    return [sys.executable, "-m", f"demo.{service}", *args]


@dataclass
class ServiceProcess:
    """One running demo service process."""

    name: str
    host: str
    port: int
    process: asyncio.subprocess.Process
    _drain: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port``, a gRPC target."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://host:port``, the base URL of the HTTP service."""
        return f"http://{self.address}"

    async def stop(self, kill_after: float = STOP_TIMEOUT) -> int:
        """SIGTERM the process, SIGKILL it after ``kill_after`` seconds; return its exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), kill_after)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        return self.process.returncode if self.process.returncode is not None else -1


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def start_service(
    name: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ready_timeout: float = READY_TIMEOUT,
    extra: Sequence[str] = (),
) -> ServiceProcess:
    """Start one demo service and wait (bounded) for its ready line.

    ``extra`` is passed on to the service's command line.

    Raises:
        RuntimeError: The process exited or did not become ready within ``ready_timeout``.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Own session: a terminal's Ctrl-C reaches only the runner, which stops the services in order.
    process = await asyncio.create_subprocess_exec(
        *command(name, host, port, extra),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    service = ServiceProcess(name, host, port, process)
    assert process.stdout is not None
    try:
        async with asyncio.timeout(ready_timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise RuntimeError(
                        f"demo service {name} exited with status {code} before ready"
                    )
                ready = parse_ready_line(line.decode(errors="replace"))
                if ready is not None and ready[0] == name:
                    service.port = ready[2]
                    break
    except BaseException as exc:
        await service.stop(kill_after=1.0)
        if isinstance(exc, TimeoutError):
            raise RuntimeError(f"demo service {name} not ready after {ready_timeout}s") from None
        raise
    service._drain = asyncio.create_task(_discard(process.stdout))
    return service


async def start_all(
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    services: Iterable[str] = SERVICES,
) -> list[ServiceProcess]:
    """Start ``services`` concurrently; on any failure stop those that started and re-raise."""
    ports = ports or {}
    tasks = [
        asyncio.create_task(start_service(name, host, ports.get(name, 0))) for name in services
    ]
    await asyncio.wait(tasks)
    started = [t.result() for t in tasks if not t.cancelled() and t.exception() is None]
    failures = [t.exception() for t in tasks if not t.cancelled() and t.exception() is not None]
    if failures:
        await stop_all(started)
        raise failures[0]  # type: ignore[misc]
    return started


async def stop_all(services: Iterable[ServiceProcess], kill_after: float = STOP_TIMEOUT) -> None:
    """Stop every service concurrently (SIGTERM, SIGKILL after ``kill_after`` seconds)."""
    await asyncio.gather(*(s.stop(kill_after) for s in services))


@dataclass
class ServiceEndpoint:
    """A running demo service as tests see it: where it listens and its control client."""

    name: str
    address: str
    control: ControlClient
    process: ServiceProcess

    @property
    def port(self) -> int:
        """The port the service bound."""
        return self.process.port

    @property
    def url(self) -> str:
        """``http://host:port`` (meaningful for the mailer)."""
        return self.process.url


@dataclass
class DemoServices:
    """The five running demo services."""

    inventory: ServiceEndpoint
    payments: ServiceEndpoint
    shipping: ServiceEndpoint
    mailer: ServiceEndpoint
    loyalty: ServiceEndpoint

    def __getitem__(self, name: str) -> ServiceEndpoint:
        """The endpoint of the service called ``name``."""
        if name not in SERVICES:
            raise KeyError(name)
        endpoint: ServiceEndpoint = getattr(self, name)
        return endpoint

    def all(self) -> list[ServiceEndpoint]:
        """Every endpoint, in :data:`SERVICES` order."""
        return [self[name] for name in SERVICES]

    async def reset(self) -> None:
        """Reset every service's control plane and demo data."""
        await asyncio.gather(*(e.control.reset() for e in self.all()))


@contextlib.asynccontextmanager
async def running_services(
    ports: Mapping[str, int] | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[DemoServices]:
    """Run the five demo services for the duration of the block.

    Args:
        ports: Port per service name; missing services (all, when None) bind a free port.
        host: Address every service binds.

    Yields:
        The endpoints and control clients of the running services.
    """
    processes = {p.name: p for p in await start_all(host, ports)}
    endpoints: dict[str, ServiceEndpoint] = {}
    try:
        for name, process in processes.items():
            control: ControlClient = (
                HttpControlClient(process.url)
                if name == "mailer"
                else GrpcControlClient(process.address)
            )
            endpoints[name] = ServiceEndpoint(name, process.address, control, process)
        yield DemoServices(**endpoints)
    finally:
        for endpoint in endpoints.values():
            await endpoint.control.close()
        await stop_all(processes.values())
