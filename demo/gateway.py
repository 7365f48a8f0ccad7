"""Run ``maestro serve`` as a subprocess next to the demo services (for the showcase and tests).

::

    async with running_services() as demo:
        directory = write_workflows(tmp_path, demo)  # checkout.yaml pointed at demo's ports
        async with running_gateway(directory) as gateway:
            ...  # call gateway.address with any gRPC client

The gateway is started with ``--port 0`` unless told otherwise and announces the port it bound on
stdout (``maestro-gateway listening on HOST:PORT (N workflows)``), so there is no race between
picking a free port and binding it. Its stderr (one ``key=value`` line per event) is kept in
:attr:`GatewayProcess.log`. It is stopped at exit: SIGTERM, then SIGKILL after a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from demo.harness import DEFAULT_PORTS, ROOT, DemoServices

READY = re.compile(r"maestro-gateway listening on (\S+):(\d+) \((\d+) workflows\)")
ADMIN = re.compile(r"maestro-gateway admin on (http://\S+)")
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
WORKFLOWS = ROOT / "workflows"


@dataclass
class GatewayProcess:
    """A running ``maestro serve``."""

    process: asyncio.subprocess.Process
    host: str
    port: int
    workflows: int
    log: list[str] = field(default_factory=list)
    scratch: str | None = None
    """A temporary directory holding the journal, removed once the gateway has stopped."""
    admin_url: str | None = None
    """``http://host:port`` of the admin port (``--admin-port``), if it has one."""
    _readers: list[asyncio.Task[None]] = field(default_factory=list, repr=False)

    @property
    def address(self) -> str:
        """``host:port``, a gRPC target."""
        return f"{self.host}:{self.port}"

    async def wait_log(self, text: str, within: float = 10.0) -> str:
        """Return the first log line containing ``text``; raise TimeoutError after ``within`` s."""
        async with asyncio.timeout(within):
            while True:
                for line in self.log:
                    if text in line:
                        return line
                await asyncio.sleep(0.02)

    async def stop(self, kill_after: float = STOP_TIMEOUT) -> int:
        """SIGTERM the gateway, SIGKILL it after ``kill_after`` seconds; return its exit status."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), kill_after)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None
        return self.process.returncode if self.process.returncode is not None else -1


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    async for line in stream:
        into.append(line.decode(errors="replace").rstrip("\n"))  # noqa: PERF401  (read live)


async def start_gateway(
    workflows: Path,
    port: int = 0,
    host: str = "127.0.0.1",
    extra: Sequence[str] = (),
    *,
    ready_timeout: float = READY_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> GatewayProcess:
    """Start ``maestro serve --workflows DIR --port N --host H`` and wait (bounded) until ready.

    Unless ``extra`` names a ``--journal``, the gateway journals into a file of a temporary
    directory of its own (removed by :meth:`GatewayProcess.stop`), never into the checkout.

    Raises:
        RuntimeError: The gateway exited or did not print its ready line within
            ``ready_timeout`` seconds (the message ends with its last log lines).
    """
    scratch: str | None = None
    if "--journal" not in extra:
        scratch = tempfile.mkdtemp(prefix="maestro-journal-")
        extra = [*extra, "--journal", os.path.join(scratch, "journal.db")]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "maestro_gateway",
        "serve",
        "--workflows",
        str(workflows),
        "--port",
        str(port),
        "--host",
        host,
        *extra,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Own session: a terminal's Ctrl-C reaches only the caller, which stops it in order.
        start_new_session=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    log: list[str] = []
    gateway = GatewayProcess(process, host, port, 0, log, scratch=scratch)
    gateway._readers.append(asyncio.create_task(_collect(process.stderr, log)))
    try:
        async with asyncio.timeout(ready_timeout):
            while True:
                line = await process.stdout.readline()
                if not line:
                    code = await process.wait()
                    raise RuntimeError(f"maestro serve exited with status {code} before ready")
                text = line.decode(errors="replace")
                admin = ADMIN.search(text)
                if admin:
                    gateway.admin_url = admin.group(1)
                match = READY.search(text)
                if match:
                    gateway.host, gateway.port = match.group(1), int(match.group(2))
                    gateway.workflows = int(match.group(3))
                    break
    except BaseException as exc:
        await gateway.stop(kill_after=1.0)
        if isinstance(exc, TimeoutError | RuntimeError):
            reason = "not ready" if isinstance(exc, TimeoutError) else str(exc)
            tail = "\n".join(log[-15:])
            raise RuntimeError(f"maestro serve: {reason}\n{tail}") from None
        raise
    gateway._readers.append(asyncio.create_task(_collect(process.stdout, [])))
    return gateway


@contextlib.asynccontextmanager
async def running_gateway(
    workflows: Path, port: int = 0, host: str = "127.0.0.1", extra: Sequence[str] = ()
) -> AsyncIterator[GatewayProcess]:
    """Run ``maestro serve`` on ``workflows`` for the duration of the block."""
    gateway = await start_gateway(workflows, port, host, extra)
    try:
        yield gateway
    finally:
        await gateway.stop()


def retarget(text: str, addresses: Mapping[str, str]) -> str:
    """Point a workflow written for the default demo ports at other addresses.

    Args:
        text: Workflow YAML naming ``127.0.0.1:<default port>`` endpoints.
        addresses: ``host:port`` per demo service name.
    """
    for name, port in DEFAULT_PORTS.items():
        if name in addresses:
            text = text.replace(f"127.0.0.1:{port}", addresses[name])
    return text


def write_workflows(directory: Path, services: DemoServices, source: Path = WORKFLOWS) -> Path:
    """Copy every workflow of ``source`` into ``directory/workflows``, retargeted at ``services``.

    Returns:
        The directory to pass to ``maestro serve --workflows``.
    """
    target = directory / "workflows"
    target.mkdir(parents=True, exist_ok=True)
    addresses = {endpoint.name: endpoint.address for endpoint in services.all()}
    for path in sorted(source.glob("*.y*ml")):
        (target / path.name).write_text(retarget(path.read_text(), addresses))
    return target
