"""``maestro serve`` with ``--admin-port`` and ``--log-format json``, as a subprocess.

The downstream is ``test_env_process``'s local HTTP service, which fails quoting the secret it was
sent, so one run covers the metrics of a failure with a failed compensation and the redaction
of JSON log lines (httpx's request lines, at debug level, hold the secret in the URL).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from test_env_process import SECRET, Echo, environment, workflow

READY = re.compile(r"maestro-gateway listening on 127\.0\.0\.1:(\d+) \((\d+) workflows\)")
ADMIN = re.compile(
    r"maestro-gateway admin on (http://127\.0\.0\.1:(\d+)) \(/metrics /healthz /readyz\)"
)
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on, read from /proc (its sockets' inodes)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_serve_with_json_logs_and_the_admin_port(tmp_path: Path, echo: Echo) -> None:
    """The admin and live view URLs are printed before the ready line; /metrics counts the
    failed run; with --view-payloads false the view's API has no input; every stderr line is
    one JSON object with time, level, logger and message, the logfmt fields as fields, and no
    secret (httpx's debug line shows ***)."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "echo.yaml").write_text(workflow(echo.server_address[1]))
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
        *("--port", "0", "--journal", "none", "--log-level", "debug"),
        *("--log-format", "json", "--admin-port", "0", "--view-payloads", "false"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(MAESTRO_TEST_TOKEN=SECRET),
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    stderr = asyncio.ensure_future(process.stderr.read())
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        admin = ADMIN.fullmatch(first)
        assert admin, first
        url = admin.group(1)
        view = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert view == f"maestro-gateway live view on {url}/"
        second = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        ready = READY.fullmatch(second)
        assert ready, second
        async with grpc.aio.insecure_channel(f"127.0.0.1:{ready.group(1)}") as channel:
            stub = gateway_pb2_grpc.GatewayStub(channel)
            call = stub.Execute(pb.ExecuteRequest(workflow="echo", input=struct_pb2.Struct()))
            with pytest.raises(grpc.aio.AioRpcError):
                async for _ in call:
                    pass
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/readyz") as response:
                assert response.status == 200
            async with http.get(url + "/metrics") as response:
                assert response.status == 200
                metrics = scrape(await response.text())
            async with http.get(url + "/") as response:
                assert response.status == 200
                assert response.content_type == "text/html"
            async with http.get(url + "/api/executions") as response:
                listed = await response.json()
        # --view-payloads false: the live view's API leaves the input and outputs out.
        assert listed["view_payloads"] is False
        [execution] = listed["executions"]
        assert execution["workflow"] == "echo"
        assert "input" not in execution
        assert "output" not in execution["result"]
        assert listening_ports(process.pid) == {int(ready.group(1)), int(admin.group(2))}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0

    def value(name: str, **labels: str) -> float:
        return metrics.get((name, frozenset(labels.items())), 0.0)

    wf = {"workflow": "echo"}
    assert value("maestro_executions_started_total", **wf) == 1
    assert value("maestro_executions_finished_total", **wf, status="COMPENSATION_FAILED") == 1
    assert value("maestro_step_attempts_total", **wf, step="b", code="UNAVAILABLE") == 2
    assert value("maestro_compensations_total", **wf, step="a", status="FAILED") == 1
    execute = {"grpc_type": "server_stream", "grpc_service": "maestro.v1.Gateway"}
    assert (
        value(
            "grpc_server_handled_total", **execute, grpc_method="Execute", grpc_code="Unavailable"
        )
        == 1
    )
    assert value("process_cpu_seconds_total") > 0

    log = (await stderr).decode()
    assert SECRET not in log
    records = [json.loads(line) for line in log.splitlines()]
    assert records
    for record in records:
        assert list(record)[:4] == ["time", "level", "logger", "message"], record
        assert TIME.fullmatch(record["time"]), record
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"}
    by_message = {r["message"]: r for r in records}
    finished = by_message["execution"]
    assert finished["logger"] == "maestro_gateway.server"
    assert (finished["workflow"], finished["status"]) == ("echo", "COMPENSATION_FAILED")
    assert isinstance(finished["duration_ms"], int)
    assert by_message["admin_listening"]["url"] == url
    assert (by_message["journal"]["sync"], by_message["journal"]["level"]) == ("normal", "INFO")
    error = by_message["execution_error"]
    assert error["level"] == "DEBUG"
    assert "***" in error["_message"]  # the field "message" moved aside
    httpx = [r for r in records if r["logger"] == "httpx"]
    assert any("/fail/***?key=***" in r["message"] for r in httpx), httpx
    assert by_message["stopped"]["level"] == "INFO"


async def test_the_admin_port_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Without --admin-port: no admin line, and the gRPC port is the only one that listens."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
        *("--port", "0", "--journal", "none"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environment(),
        cwd=tmp_path,
    )
    assert process.stdout is not None
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        ready = READY.fullmatch(first)
        assert ready, first
        assert listening_ports(process.pid) == {int(ready.group(1))}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    assert "admin" not in err.decode()
    assert "level=INFO" in err.decode()  # the text format stays the default


async def test_an_admin_port_in_use_stops_serve_before_anything_listens(tmp_path: Path) -> None:
    """Status 1 and a message naming --admin-port; the gRPC port is never bound."""
    directory = tmp_path / "workflows"
    directory.mkdir()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "maestro_gateway", "serve", "--workflows", str(directory)),
            *("--port", "0", "--journal", "none", "--admin-port", str(port)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment(),
            cwd=tmp_path,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert out == b""
    refused = [line for line in err.decode().splitlines() if line.startswith("maestro serve:")]
    assert len(refused) == 1
    assert refused[0].startswith(
        f"maestro serve: --admin-port: [Errno 98] error while attempting to bind on address ('127.0.0.1', {port})"
    )
