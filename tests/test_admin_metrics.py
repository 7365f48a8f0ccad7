"""The admin port and the Prometheus metrics in-process (DESIGN §14).

Real gateways on 127.0.0.1:0 (the engine, loader and journal of ``maestro serve``) over
``test_server``'s scripted fake downstreams, each with its own ``GatewayMetrics`` and an
``AdminServer`` on 127.0.0.1:0; ``/metrics``, ``/healthz`` and ``/readyz`` are read over real
HTTP with aiohttp's client, and the text is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from pg_support import Cluster
from prometheus_client.parser import text_string_to_metric_families
from test_server import CHECKOUT, PING, FakeTransports, collect, declined, ok, request, reserve
from test_server_executions import Gate, execution_request

from maestro_gateway.admin import AdminServer
from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.journal import Journal, PostgresJournal, SqliteJournal
from maestro_gateway.server.app import GatewayServer, create_gateway
from maestro_gateway.server.metrics import (
    MAX_SIGNAL_NAMES,
    GatewayMetrics,
    endpoint_label,
    step_label,
)

FLAKY = """\
name: flaky
services:
  shop:
    type: grpc
    endpoint: "127.0.0.1:9"
    retry: {attempts: 3, codes: [UNAVAILABLE], initial: 1ms, max: 2ms}
    circuit_breaker: {failures: 3, reset: 60s}
steps:
  - id: ping
    service: shop
    method: Flaky
    input: {}
"""

LINES = """\
name: lines
input:
  type: object
  properties:
    skus: {type: array}
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: each
    foreach: "{{ input.skus }}"
    as: sku
    steps:
      - id: reserve
        service: shop
        method: Reserve
        input: {sku: "{{ sku }}", qty: 1}
  - id: sub
    workflow: ping
    input: {}
"""

PAID = """\
name: paid
triggers:
  - signal: order.paid
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: ping
    service: shop
    method: Ping
    input: {}
"""

WORKFLOWS = {
    "checkout.yaml": CHECKOUT,
    "ping.yaml": PING,
    "flaky.yaml": FLAKY,
    "lines.yaml": LINES,
    "paid.yaml": PAID,
}


@dataclass
class Admin:
    """A gateway with metrics and its admin port."""

    server: GatewayServer
    admin: AdminServer
    fakes: FakeTransports
    stub: gateway_pb2_grpc.GatewayStub
    channel: grpc.aio.Channel
    http: aiohttp.ClientSession

    async def get(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the admin port: status and body."""
        async with self.http.get(self.admin.url + path) as response:
            return response.status, await response.text()

    async def scrape(self) -> Metrics:
        status, text = await self.get("/metrics")
        assert status == 200
        return Metrics(text)


class Metrics:
    """A scrape of ``/metrics``, parsed."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]

    def value(self, name: str, /, **labels: str) -> float:
        """The sample ``name`` with exactly these labels (``le`` too, for a bucket); 0 if absent."""
        found = [v for n, ls, v in self.samples if n == name and ls == labels]
        assert len(found) <= 1, (name, labels)
        return found[0] if found else 0.0

    def labels(self, name: str, label: str, /) -> set[str]:
        """Every value ``label`` takes among the samples of ``name``."""
        return {ls[label] for n, ls, _ in self.samples if n == name and label in ls}


Launch = Callable[..., Awaitable[Admin]]


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Launch]:
    """Gateways with metrics and an admin port, both on 127.0.0.1:0; all stopped afterwards."""
    started: list[Admin] = []
    http = aiohttp.ClientSession()

    async def make(journal: Journal | None = None, *, start: bool = True) -> Admin:
        directory = tmp_path / f"workflows{len(started)}"
        directory.mkdir()
        for name, text in WORKFLOWS.items():
            (directory / name).write_text(text)
        fakes = FakeTransports({"Reserve": reserve, "Release": ok, "Charge": ok, "Ping": ok})
        metrics = GatewayMetrics()
        server, problems = create_gateway(
            directory, transports=fakes, journal=journal, metrics=metrics
        )
        assert problems == []
        admin = AdminServer(server, metrics)
        await admin.start()
        if start:
            await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        gateway = Admin(server, admin, fakes, gateway_pb2_grpc.GatewayStub(channel), channel, http)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.channel.close()
        await gateway.server.shutdown(0)
        await gateway.admin.close()
    await http.close()


@pytest.fixture
async def gw(launch: Launch) -> Admin:
    return await launch()


async def wait_until(predicate: Callable[[], Any], what: str, limit: float = 10.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110  (polls server state that has no event)
            await asyncio.sleep(0.01)


# -- the port ------------------------------------------------------------------------------


async def test_the_admin_port_serves_its_three_paths_and_nothing_else(gw: Admin) -> None:
    """/metrics, /healthz and /readyz answer; any other path but the live view's (/, tested in
    test_admin_view) is 404, a POST is 405."""
    status, text = await gw.get("/metrics")
    assert status == 200
    assert "# TYPE grpc_server_started_total counter" in text
    assert "# TYPE maestro_executions_started_total counter" in text
    assert await gw.get("/healthz") == (200, "ok\n")
    assert await gw.get("/readyz") == (200, "recovery: done\njournal: writable\ndraining: no\n")
    for path in ("/index.html", "/metrics/x", "/debug/vars", "/../etc/passwd", "/favicon.ico"):
        assert (await gw.get(path))[0] == 404, path
    async with gw.http.post(gw.admin.url + "/metrics") as response:
        assert response.status == 405


async def test_metrics_are_gzipped_for_a_scraper_that_accepts_it(gw: Admin) -> None:
    """Prometheus asks for gzip; the body comes back compressed and reads the same."""
    async with gw.http.get(
        gw.admin.url + "/metrics", headers={"Accept-Encoding": "gzip"}
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Content-Type"].startswith("text/plain")
        assert "maestro_executions_in_flight" in await response.text()


async def test_readyz_is_false_before_recovery_and_true_once_serving(launch: Launch) -> None:
    """The admin port answers before the gateway has recovered: live, but not ready."""
    gw = await launch(start=False)
    assert await gw.get("/healthz") == (200, "ok\n")
    status, body = await gw.get("/readyz")
    assert (status, body.splitlines()[0]) == (503, "recovery: in progress")
    await gw.server.start()
    assert (await gw.get("/readyz"))[0] == 200


async def test_readyz_is_false_while_the_journal_cannot_be_written(
    launch: Launch, tmp_path: Path
) -> None:
    """A full disk (SQLITE_FULL for real): 503 naming the journal; 200 again once it is lifted."""
    journal = SqliteJournal(tmp_path / "full.db")
    await journal.open()
    gw = await launch(journal)
    assert (await gw.get("/readyz"))[0] == 200
    await journal._writer_pragma("PRAGMA max_page_count = 1")  # = the pages it has now
    # Its record needs pages the file no longer has: the commit fails and is retried.
    starting = asyncio.ensure_future(
        gw.stub.Start(execution_request("full-1", "ping", blob="x" * 20_000), timeout=20)
    )
    await wait_until(lambda: not journal.writable, "a commit failed")
    status, body = await gw.get("/readyz")
    assert status == 503
    assert "journal: cannot be written" in body.splitlines()
    assert "recovery: done" in body.splitlines()
    await journal._writer_pragma("PRAGMA max_page_count = 1073741823")
    await wait_until(lambda: journal.writable, "the commit went through")
    assert (await gw.get("/readyz"))[0] == 200
    assert (await starting).execution_id == "full-1"


async def test_readyz_is_false_while_draining_and_healthz_still_answers(gw: Admin) -> None:
    """During a graceful shutdown the port says draining (503) while executions finish."""
    hold = Gate()
    gw.fakes.handlers["Ping"] = hold
    await gw.stub.Start(execution_request("held-1", "ping"), timeout=10)
    await hold.wait_entered()
    metrics = await gw.scrape()
    assert metrics.value("maestro_executions_in_flight", workflow="ping") == 1
    stopping = asyncio.ensure_future(gw.server.shutdown(10))
    await wait_until(lambda: gw.server.service.draining, "draining")
    status, body = await gw.get("/readyz")
    assert (status, body.splitlines()[-1]) == (503, "draining: yes")
    assert await gw.get("/healthz") == (200, "ok\n")
    hold.opened.set()
    await stopping
    metrics = await gw.scrape()
    assert metrics.value("maestro_executions_in_flight", workflow="ping") == 0
    assert (
        metrics.value("maestro_executions_finished_total", workflow="ping", status="SUCCEEDED") == 1
    )


# -- what the metrics count ----------------------------------------------------------------


async def test_executions_steps_and_compensations_are_counted_as_they_ran(gw: Admin) -> None:
    """Three checkouts succeed, one is compensated: every counter and histogram says so."""
    for _ in range(3):
        assert (await gw.stub.Run(request(), timeout=10)).status == pb.EXECUTION_STATUS_SUCCEEDED
    gw.fakes.handlers["Charge"] = declined
    _, err = await collect(gw.stub.Execute(request(), timeout=10))
    assert err is not None
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION

    m = await gw.scrape()
    wf = {"workflow": "checkout"}
    assert m.value("maestro_executions_started_total", **wf) == 4
    assert m.value("maestro_executions_finished_total", **wf, status="SUCCEEDED") == 3
    assert m.value("maestro_executions_finished_total", **wf, status="COMPENSATED") == 1
    assert m.value("maestro_execution_duration_seconds_count", **wf, status="SUCCEEDED") == 3
    assert m.value("maestro_execution_duration_seconds_count", **wf, status="COMPENSATED") == 1
    assert (
        m.value("maestro_execution_duration_seconds_bucket", **wf, status="SUCCEEDED", le="+Inf")
        == 3
    )
    assert m.value("maestro_executions_in_flight", **wf) == 0
    assert m.value("maestro_step_attempts_total", **wf, step="reserve", code="OK") == 4
    assert m.value("maestro_step_attempts_total", **wf, step="charge", code="OK") == 3
    assert (
        m.value("maestro_step_attempts_total", **wf, step="charge", code="FAILED_PRECONDITION") == 1
    )
    assert m.value("maestro_step_duration_seconds_count", **wf, step="reserve") == 4
    assert m.value("maestro_step_duration_seconds_count", **wf, step="charge") == 4
    assert m.value("maestro_compensations_total", **wf, step="reserve", status="SUCCEEDED") == 1
    assert m.labels("maestro_compensations_total", "step") == {"reserve"}


async def test_retries_count_each_attempt_by_code_and_the_breaker_state_is_exported(
    gw: Admin,
) -> None:
    """UNAVAILABLE twice then OK: three attempts; three more failures open the circuit (2)."""
    replies: list[Any] = [
        CallError(Code.UNAVAILABLE, "down"),
        CallError(Code.UNAVAILABLE, "down"),
        {"ok": True},
    ]

    async def flaky(request: Any) -> Any:
        reply = replies.pop(0) if replies else CallError(Code.UNAVAILABLE, "down")
        if isinstance(reply, CallError):
            raise reply
        return reply

    gw.fakes.handlers["Flaky"] = flaky
    assert (await gw.stub.Run(request("flaky"), timeout=10)).status == pb.EXECUTION_STATUS_SUCCEEDED
    m = await gw.scrape()
    wf = {"workflow": "flaky", "step": "ping"}
    assert m.value("maestro_step_attempts_total", **wf, code="UNAVAILABLE") == 2
    assert m.value("maestro_step_attempts_total", **wf, code="OK") == 1
    assert m.value("maestro_step_duration_seconds_count", **wf) == 1
    assert m.value("maestro_circuit_breaker_state", endpoint="127.0.0.1:9") == 0

    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await gw.stub.Run(request("flaky"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    m = await gw.scrape()
    assert m.value("maestro_circuit_breaker_state", endpoint="127.0.0.1:9") == 2
    assert m.value("maestro_executions_finished_total", workflow="flaky", status="FAILED") == 1
    assert m.value("maestro_step_attempts_total", **wf, code="UNAVAILABLE") == 5


async def test_steps_in_a_foreach_and_a_sub_workflow_are_labelled_by_their_step_id(
    gw: Admin,
) -> None:
    """lines[0].reserve … lines[4].reserve count as step="reserve"; sub.ping as step="ping"."""
    req = pb.ExecuteRequest(workflow="lines")
    req.input.update({"skus": ["a", "b", "c", "d", "e"]})
    assert (await gw.stub.Run(req, timeout=10)).status == pb.EXECUTION_STATUS_SUCCEEDED
    m = await gw.scrape()
    wf = {"workflow": "lines"}
    assert m.value("maestro_step_attempts_total", **wf, step="reserve", code="OK") == 5
    assert m.value("maestro_step_attempts_total", **wf, step="each", code="OK") == 1
    assert m.value("maestro_step_attempts_total", **wf, step="ping", code="OK") == 1
    assert m.value("maestro_step_duration_seconds_count", **wf, step="reserve") == 5
    assert m.labels("maestro_step_attempts_total", "step") == {"reserve", "each", "sub", "ping"}
    assert "[" not in m.text.split("# HELP maestro_step_attempts_total", 1)[1]


async def test_grpc_server_metrics_have_the_go_grpc_prometheus_names_and_codes(
    gw: Admin,
) -> None:
    """Run (unary) and Execute (server stream) by code; messages sent; health counted too."""
    await gw.stub.Run(request(), timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await gw.stub.Run(request("nope"), timeout=10)
    events, err = await collect(gw.stub.Execute(request(), timeout=10))
    assert err is None
    health = health_pb2_grpc.HealthStub(gw.channel)
    await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    m = await gw.scrape()
    run = {"grpc_type": "unary", "grpc_service": "maestro.v1.Gateway", "grpc_method": "Run"}
    assert m.value("grpc_server_started_total", **run) == 2
    assert m.value("grpc_server_handled_total", **run, grpc_code="OK") == 1
    assert m.value("grpc_server_handled_total", **run, grpc_code="NotFound") == 1
    assert m.value("grpc_server_handling_seconds_count", **run) == 2
    assert m.value("grpc_server_msg_received_total", **run) == 2
    assert m.value("grpc_server_msg_sent_total", **run) == 1
    execute = {**run, "grpc_type": "server_stream", "grpc_method": "Execute"}
    assert m.value("grpc_server_handled_total", **execute, grpc_code="OK") == 1
    assert m.value("grpc_server_msg_sent_total", **execute) == len(events)
    check = {"grpc_type": "unary", "grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}
    assert m.value("grpc_server_handled_total", **check, grpc_code="OK") == 1
    assert m.value("grpc_server_handling_seconds_bucket", **check, le="+Inf") == 1


async def test_a_cancelled_call_is_counted_as_canceled(gw: Admin) -> None:
    """The caller goes away mid-Execute: handled with grpc_code="Canceled"."""
    hold = Gate()
    gw.fakes.handlers["Ping"] = hold
    call = gw.stub.Execute(request("ping"), timeout=10)
    await call.read()
    await hold.wait_entered()
    call.cancel()
    execute = {
        "grpc_type": "server_stream",
        "grpc_service": "maestro.v1.Gateway",
        "grpc_method": "Execute",
    }

    async def canceled() -> float:
        return (await gw.scrape()).value(
            "grpc_server_handled_total", **execute, grpc_code="Canceled"
        )

    async with asyncio.timeout(10):
        while await canceled() != 1:  # noqa: ASYNC110  (polls over HTTP)
            await asyncio.sleep(0.02)


async def test_signals_are_counted_by_name_and_duplicate(gw: Admin) -> None:
    """One signal sent twice: one received, one duplicate; it starts its trigger's workflow."""
    req = pb.SendSignalRequest(name="order.paid", signal_id="pay-1")
    assert not (await gw.stub.SendSignal(req, timeout=10)).duplicate
    assert (await gw.stub.SendSignal(req, timeout=10)).duplicate
    m = await gw.scrape()
    assert m.value("maestro_signals_received_total", name="order.paid", duplicate="false") == 1
    assert m.value("maestro_signals_received_total", name="order.paid", duplicate="true") == 1
    await wait_until(lambda: gw.server.service.in_flight == 0, "the triggered execution ended")
    m = await gw.scrape()
    assert m.value("maestro_executions_started_total", workflow="paid") == 1


def test_signal_names_beyond_the_limit_count_as_other() -> None:
    """Callers choose signal names: past MAX_SIGNAL_NAMES distinct ones, they count as _other."""
    metrics = GatewayMetrics(process=False)
    for i in range(MAX_SIGNAL_NAMES + 50):
        metrics.signal_received(f"name-{i}", False)
    metrics.signal_received("name-0", True)
    m = Metrics(metrics.exposition().decode())
    names = m.labels("maestro_signals_received_total", "name")
    assert len(names) == MAX_SIGNAL_NAMES + 1
    assert m.value("maestro_signals_received_total", name="_other", duplicate="false") == 50
    assert m.value("maestro_signals_received_total", name="name-0", duplicate="true") == 1


async def test_journal_commits_are_timed_on_sqlite(launch: Launch, tmp_path: Path) -> None:
    """Each group commit of the SQLite journal adds one observation."""
    journal = SqliteJournal(tmp_path / "journal.db")
    await journal.open()
    await check_commits_are_timed(launch, journal)


async def test_journal_commits_are_timed_on_postgresql(
    launch: Launch, pg_cluster: Cluster, pg_database: str
) -> None:
    """The PostgreSQL journal reports its group commits the same way."""
    journal = PostgresJournal(pg_cluster.dsn(pg_database))
    await journal.open()
    await check_commits_are_timed(launch, journal)


async def check_commits_are_timed(launch: Launch, journal: Journal) -> None:
    gw = await launch(journal)
    for _ in range(3):
        await gw.stub.Run(request(), timeout=10)
    m = await gw.scrape()
    commits = m.value("maestro_journal_commit_seconds_count")
    assert commits >= 3
    assert 0 < m.value("maestro_journal_commit_seconds_sum") < commits


async def test_two_gateways_in_one_process_count_apart(launch: Launch) -> None:
    """Each gateway has its own registry: what one runs does not show on the other."""
    one, two = await launch(), await launch()
    await one.stub.Run(request("ping"), timeout=10)
    await one.stub.Run(request("ping"), timeout=10)
    await two.stub.Run(request("ping"), timeout=10)
    assert (await one.scrape()).value("maestro_executions_started_total", workflow="ping") == 2
    assert (await two.scrape()).value("maestro_executions_started_total", workflow="ping") == 1


async def test_no_label_holds_an_execution_id_or_a_payload(gw: Admin) -> None:
    """After runs with chosen ids and inputs, neither appears anywhere in /metrics."""
    await gw.stub.Run(execution_request("secret-id-42", sku="PAYLOAD-SKU-7", qty=3), timeout=10)
    text = (await gw.scrape()).text
    assert "secret-id-42" not in text
    assert "PAYLOAD-SKU-7" not in text


def test_an_endpoint_label_never_carries_credentials() -> None:
    """A URL's user and password are dropped; plain gRPC targets are kept as they are."""
    assert (
        endpoint_label("https://bob:s3cret@crm.example:8443/api") == "https://crm.example:8443/api"
    )
    assert endpoint_label("127.0.0.1:50051") == "127.0.0.1:50051"
    assert endpoint_label("dns:///inventory:50051") == "dns:///inventory:50051"


def test_step_label_reads_paths_as_the_engine_builds_them(tmp_path: Path) -> None:
    """Prefixes count only where the definition has a foreach, loop or workflow step."""
    (tmp_path / "ping.yaml").write_text(PING)
    (tmp_path / "lines.yaml").write_text(LINES)
    from maestro_gateway.server.registry import WorkflowRegistry

    registry = WorkflowRegistry(tmp_path)
    assert registry.load() == []
    lines = registry.get("lines")
    assert lines is not None
    assert step_label(lines, "each") == "each"
    assert step_label(lines, "each[12].reserve") == "reserve"
    assert step_label(lines, "sub.ping") == "ping"
    assert step_label(lines, "sub") == "sub"
