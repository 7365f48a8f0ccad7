"""The live view's HTTP side on the admin port: its files, its JSON API and its event streams.

A real gateway runs in this process (the real loader, engine, transports and SQLite journal)
over the demo services (subprocesses for the module), with its admin port on 127.0.0.1:0
(:mod:`demo.live_view`). Executions are real ``Run``/``Start`` calls; one stays running (a
``fulfil`` waiting for its parcel.packed signal), another is held in flight by a delay rule on
the demo shipping service. Everything is read over real HTTP with aiohttp's client;
the page itself is tested in Chromium by ``test_admin_view_browser``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from pg_support import Cluster
from yarl import URL

from demo.harness import DemoServices
from demo.live_view import ORDER, ViewStack, examples, execute_request, run, running_view_stack
from maestro_gateway.admin import AdminServer
from maestro_gateway.admin.view import KEEPALIVE
from maestro_gateway.journal import PostgresJournal, SqliteJournal
from maestro_gateway.server.metrics import GatewayMetrics

pytestmark = pytest.mark.asyncio(loop_scope="module")

LIMIT = 30.0
STREAMS = 4
"""The stream limit of the module's admin port (small, to reach it)."""
XSS_ADDRESS = "<script>window.__xss=1</script>"
XSS_EMAIL = '<img src=x onerror="window.__xss=2">'


@dataclass
class Views:
    """The gateway with two admin ports: payloads shown, and ``view_payloads=False``."""

    stack: ViewStack
    hidden: AdminServer
    ids: dict[str, str]
    http: aiohttp.ClientSession

    async def get(self, path: str, base: str | None = None, **kwargs: Any) -> tuple[int, Any]:
        """GET ``path``: status and body (JSON when the answer is JSON, else text)."""
        url = URL((base or self.stack.url) + path, encoded=True)
        async with self.http.get(url, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def views(
    demo: DemoServices, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Views]:
    """The stack, its example executions (one waiting for minutes) and a client."""
    await demo.reset()
    scratch = tmp_path_factory.mktemp("view")
    async with running_view_stack(demo, scratch, max_streams=STREAMS) as stack:
        ids = await examples(stack)
        escaped = "X-1"
        await run(
            stack,
            execute_request(
                "checkout",
                escaped,
                {**ORDER, "order_id": escaped, "address": XSS_ADDRESS, "email": XSS_EMAIL},
                {"note": "<b>not bold</b>"},
            ),
        )
        ids["escaped"] = escaped
        hidden = AdminServer(stack.server, GatewayMetrics(), view_payloads=False)
        await hidden.start()
        try:
            # No pooled connection: each one the test closes is gone, at once, for the server.
            connector = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=connector) as http:
                yield Views(stack, hidden, ids, http)
        finally:
            await hidden.close()
            await demo.reset()


@dataclass
class Stream:
    """What an event stream sent: its messages and comments, in order."""

    messages: list[dict[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False

    @property
    def ids(self) -> list[int]:
        return [int(m["id"]) for m in self.messages]

    def data(self) -> list[dict[str, Any]]:
        return [json.loads(m["data"]) for m in self.messages]


async def read_stream(
    response: aiohttp.ClientResponse,
    until: int | None = None,
    comment: bool = False,
) -> Stream:
    """Parse server-sent events from ``response`` until it ends, ``until`` messages came, or
    (``comment``) a comment came; bounded by ``LIMIT``."""
    out = Stream()
    fields: dict[str, str] = {}
    async with asyncio.timeout(LIMIT):
        while True:
            raw = await response.content.readline()
            if not raw:
                out.ended = True
                return out
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                out.comments.append(line[1:].strip())
                if comment:
                    return out
            elif line == "":
                if "retry" in fields:
                    out.retry = int(fields.pop("retry"))
                if fields:
                    out.messages.append(fields)
                    fields = {}
                    if until is not None and len(out.messages) >= until:
                        return out
            else:
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value


@contextlib.asynccontextmanager
async def stream(
    views: Views, execution_id: str, *, base: str | None = None, **kwargs: Any
) -> AsyncIterator[aiohttp.ClientResponse]:
    """An open event stream of ``execution_id`` (closed, i.e. the client disconnects, at exit)."""
    url = (base or views.stack.url) + f"/api/executions/{execution_id}/events"
    async with views.http.get(url, **kwargs) as response:
        yield response


async def wait_until(predicate: Any, what: str) -> None:
    """Poll ``predicate`` (bounded) until it holds."""
    try:
        async with asyncio.timeout(LIMIT):
            while not predicate():  # noqa: ASYNC110  (server state without an event)
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"not within {LIMIT}s: {what}") from None


def waiters(views: Views) -> int:
    """Parked ``wait_events`` calls in the SQLite journal, over every execution."""
    journal = views.stack.journal
    assert isinstance(journal, SqliteJournal)
    return sum(len(w) for w in journal._waiters.values())


# -- the page and its files ----------------------------------------------------------------


async def test_the_page_and_its_files_are_served_with_a_strict_policy(views: Views) -> None:
    """/ is the HTML page (no inline script, CSP forbids any); its three files have their types."""
    async with views.http.get(views.stack.url + "/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "default-src 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert '<script src="/static/app.js" defer></script>' in page
    assert page.count("<script") == 1
    assert "http://" not in page  # no CDN
    assert "https://" not in page
    for name, kind in (
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ):
        async with views.http.get(f"{views.stack.url}/static/{name}") as response:
            assert (response.status, response.content_type) == (200, kind), name
            assert len(await response.read()) > 100
    _, script = await views.get("/static/app.js")
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script


@pytest.mark.parametrize(
    "path",
    [
        "/static/../server.py",
        "/static/%2e%2e/server.py",
        "/static/..%2fserver.py",
        "/static/%2e%2e%2fview.py",
        "/static/..%5cview.py",
        "/static/%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/index.html",
        "/static/",
        "/static",
        "/static/app.js/",
        "/static/app.js/..",
        "/static/.%2e/.%2e/__init__.py",
        "/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/index.html",
        "/app.js",
        "/api",
        "/api/",
        "/api/workflows",
        "/api/executions/A-2001/attempts",
        "/api/executions/A-2001/events/1",
        "/debug/pprof",
    ],
)
async def test_no_other_path_is_served(views: Views, path: str) -> None:
    """Anything but the listed paths is 404: no file outside the fixed list can be reached."""
    status, body = await views.get(path)
    assert status == 404, (path, body)
    assert "import" not in str(body)
    assert "root:" not in str(body)


async def test_the_view_is_read_only(views: Views) -> None:
    """Other methods on the view's paths are 405."""
    for method, path in (
        ("POST", "/api/executions"),
        ("DELETE", "/api/executions/A-2001"),
        ("PUT", "/"),
        ("POST", "/api/executions/A-2005/events"),
    ):
        async with views.http.request(method, views.stack.url + path) as response:
            assert response.status == 405, (method, path)


# -- the JSON API --------------------------------------------------------------------------


async def test_the_list_is_newest_first_with_payloads_and_results(views: Views) -> None:
    """Every execution, newest first; each with its status, times, labels, input and result."""
    status, body = await views.get("/api/executions")
    assert status == 200
    ids = [e["execution_id"] for e in body["executions"]]
    assert ids == ["X-1", "A-2005", "A-2004", "A-2003", "A-2002", "A-2001"]
    assert body["next_page_token"] == ""
    by_id = {e["execution_id"]: e for e in body["executions"]}
    ok = by_id["A-2001"]
    assert ok["status"] == "SUCCEEDED"
    assert ok["workflow"] == "checkout"
    assert ok["labels"] == {"channel": "web"}
    assert ok["input"]["order_id"] == "A-2001"
    assert ok["end_time"] > ok["start_time"] > 0
    assert ok["result"]["status"] == "SUCCEEDED"
    assert ok["result"]["output"]["order_id"] == "A-2001"
    assert {s["step_id"] for s in ok["result"]["steps"]} == {"reserve", "charge", "notify", "ship"}
    running = by_id["A-2005"]
    assert (running["status"], running["end_time"], running["result"]) == ("RUNNING", None, None)
    assert by_id["A-2002"]["status"] == "COMPENSATED"
    assert by_id["A-2002"]["result"]["error"]["code"] == "FAILED_PRECONDITION"


async def test_the_list_filters_by_workflow_and_status_and_pages(views: Views) -> None:
    """workflow AND any of the statuses (repeated or comma-separated, any case); page tokens."""

    async def ids(query: str) -> list[str]:
        status, body = await views.get("/api/executions?" + query)
        assert status == 200, body
        return [e["execution_id"] for e in body["executions"]]

    assert await ids("workflow=order_lines") == ["A-2004", "A-2003"]
    assert await ids("status=compensated") == ["A-2004", "A-2002"]
    assert await ids("status=RUNNING&status=Compensated") == ["A-2005", "A-2004", "A-2002"]
    assert await ids("status=running,compensating") == ["A-2005"]
    assert await ids("workflow=checkout&status=succeeded") == ["X-1", "A-2001"]
    assert await ids("workflow=nothing") == []
    _, first = await views.get("/api/executions?page_size=4")
    assert [e["execution_id"] for e in first["executions"]] == ["X-1", "A-2005", "A-2004", "A-2003"]
    token = first["next_page_token"]
    assert token
    assert await ids(f"page_size=4&page_token={token}") == ["A-2002", "A-2001"]


@pytest.mark.parametrize(
    ("query", "parameter", "words"),
    [
        ("status=bogus", "status", "'bogus' is not an execution status"),
        ("status=running,nope", "status", "'nope'"),
        ("page_size=0", "page_size", "from 1 to 1000"),
        ("page_size=1001", "page_size", "from 1 to 1000"),
        ("page_size=ten", "page_size", "whole number"),
        ("page_size=-1", "page_size", "whole number"),
        ("page_size=%C2%B2", "page_size", "whole number"),
        ("page_size=" + "9" * 5000, "page_size", "whole number"),
        ("page_token=not-a-token", "page_token", "page_token"),
        ("workflow=" + "w" * 257, "workflow", "longer than 256"),
        ("sort=asc", "sort", "unknown parameter 'sort'"),
    ],
)
async def test_bad_filter_values_are_400_naming_the_parameter(
    views: Views, query: str, parameter: str, words: str
) -> None:
    """A 400 JSON answer: ``parameter`` says which, ``error`` says why."""
    status, body = await views.get("/api/executions?" + query)
    assert status == 400
    assert body["parameter"] == parameter
    assert words in body["error"]


async def test_one_execution_and_an_unknown_or_malformed_id(views: Views) -> None:
    """The record of an id; an unknown id is 404 JSON naming it; a malformed one 400."""
    status, body = await views.get("/api/executions/A-2004")
    assert status == 200
    assert (body["execution_id"], body["status"], body["view_payloads"]) == (
        "A-2004",
        "COMPENSATED",
        True,
    )
    assert body["last_sequence"] > 10
    for path in ("/api/executions/nope-1", "/api/executions/nope-1/events"):
        status, body = await views.get(path)
        assert status == 404, path
        assert body == {
            "error": "no execution 'nope-1' (unknown, or past its retention)",
            "execution_id": "nope-1",
        }
    for path in ("/api/executions/a%20b", "/api/executions/%3Cscript%3E/events"):
        status, body = await views.get(path)
        assert status == 400, path
        assert body["parameter"] == "execution_id"
    status, body = await views.get("/api/executions/" + "a" * 1025)
    assert (status, body["parameter"]) == (400, "execution_id")


async def test_payloads_are_left_out_server_side_with_view_payloads_false(views: Views) -> None:
    """No input, output or step output in the list, the record or the events; the rest is there."""
    base = views.hidden.url
    status, listing = await views.get("/api/executions", base=base)
    assert status == 200
    status, record = await views.get("/api/executions/A-2001", base=base)
    assert status == 200
    async with stream(views, "A-2001", base=base, params={"last_event_id": "0"}) as response:
        events = await read_stream(response)
    assert events.ended
    text = json.dumps([listing, record, events.data()])
    for secret in ("ada@example.com", "Main Street", "reservation_id", "tracking"):
        assert secret not in text, secret
    assert record["view_payloads"] is False
    assert "input" not in record
    assert "output" not in record["result"]
    assert all("output" not in s for s in record["result"]["steps"])
    assert [s["status"] for s in record["result"]["steps"]] == ["SUCCEEDED"] * 4
    kinds = [e["kind"] for e in events.data()]
    assert kinds[0] == "started"
    assert kinds[-1] == "finished"
    assert all("output" not in e for e in events.data())
    # The page with payloads shows them.
    status, shown = await views.get("/api/executions/A-2001")
    assert shown["input"]["email"] == "ada@example.com"


# -- the event streams ---------------------------------------------------------------------


async def test_a_stream_replays_every_event_then_ends_after_finished(views: Views) -> None:
    """From sequence 1 to ``finished``, ``id:`` each journal sequence, the data as journaled."""
    journaled = await views.stack.journal.events("A-2004")
    async with stream(views, "A-2004") as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        got = await read_stream(response)
    assert got.ended
    assert got.retry == 2000
    assert got.ids == [e.sequence for e in journaled] == list(range(1, len(journaled) + 1))
    assert [m["event"] for m in got.messages] == [e.kind for e in journaled]
    data = got.data()
    assert data[-1]["kind"] == "finished"
    assert data[-1]["result"]["status"] == "COMPENSATED"
    assert [d["sequence"] for d in data] == got.ids
    paths = {d.get("step_id") for d in data}
    assert {"lines[0].reserve", "lines[1].reserve", "lines[2].reserve", "pay.charge"} <= paths
    kinds = {d["kind"] for d in data}
    assert {"step_retrying", "compensation_started", "compensation_succeeded"} <= kinds


async def test_a_stream_resumes_after_last_event_id_and_204_once_all_was_sent(views: Views) -> None:
    """The header wins over the query parameter; a reconnect at the end is 204 (EventSource
    stops); a bad value is 400 naming which one."""
    last = (await views.stack.journal.get("A-2003")).last_sequence  # type: ignore[union-attr]
    async with stream(views, "A-2003", params={"last_event_id": "5"}) as response:
        tail = await read_stream(response)
    assert tail.ids == list(range(6, last + 1))
    async with stream(
        views, "A-2003", params={"last_event_id": "1"}, headers={"Last-Event-ID": "20"}
    ) as response:
        tail = await read_stream(response)
    assert tail.ids == list(range(21, last + 1))
    async with stream(views, "A-2003", headers={"Last-Event-ID": str(last)}) as response:
        assert response.status == 204
    for kwargs, parameter in (
        ({"headers": {"Last-Event-ID": "x"}}, "Last-Event-ID"),
        ({"params": {"last_event_id": "-3"}}, "last_event_id"),
        ({"params": {"last_event_id": "\u00b2"}}, "last_event_id"),
        ({"params": {"last_event_id": "1" * 19}}, "last_event_id"),
    ):
        async with stream(views, "A-2003", **kwargs) as response:
            assert response.status == 400
            assert (await response.json())["parameter"] == parameter


async def test_a_live_stream_resumes_with_no_loss_and_no_duplicates(views: Views) -> None:
    """A running checkout: read part, disconnect, let it finish, reconnect with the last id:
    the two parts are every event once, ``finished`` last."""
    shipping = views.stack.demo.shipping.control
    execution_id = "L-1"
    await shipping.add_fault(method="CreateShipment", delay_ms=1500, times=1)
    before = len(await shipping.calls())
    await views.stack.stub.Start(
        execute_request("checkout", execution_id, {**ORDER, "order_id": execution_id}),
        timeout=LIMIT,
    )
    await shipping.wait_for(lambda calls: len(calls) > before, within=LIMIT)
    async with stream(views, execution_id) as response:
        first = await read_stream(response, until=3)
    assert first.ids == [1, 2, 3]
    async with stream(views, execution_id, headers={"Last-Event-ID": "3"}) as response:
        rest = await read_stream(response)
    assert rest.ended
    assert rest.messages[-1]["event"] == "finished"
    record = await views.stack.journal.get(execution_id)
    assert record is not None
    assert record.state.finished
    assert first.ids + rest.ids == list(range(1, record.last_sequence + 1))


async def test_a_quiet_stream_sends_keep_alive_comments(views: Views) -> None:
    """Nothing happens to the waiting execution: the stream still sends a comment line."""
    views.hidden.view.keepalive = 0.05
    try:
        async with stream(views, views.ids["running"], base=views.hidden.url) as response:
            got = await read_stream(response, comment=True)
    finally:
        views.hidden.view.keepalive = KEEPALIVE
    assert got.comments == ["keep-alive"]
    assert got.ids == list(range(1, len(got.ids) + 1))
    assert got.messages[-1]["event"] == "step_started"  # packed: waits for its signal


async def test_streams_are_bounded_and_disconnects_leave_nothing_behind(views: Views) -> None:
    """Up to the limit at once, one more is 503; after many connects and disconnects the
    gateway has no stream, no parked journal waiter and no task more than before."""
    view = views.stack.admin.view
    view.keepalive = 3600.0  # no write would notice a gone client: only the cancel cleans up
    held = views.ids["running"]
    await wait_until(lambda: view.streams == views.hidden.view.streams == 0, "no stream open")
    baseline_waiters = waiters(views)
    baseline_tasks = len(asyncio.all_tasks())
    for _ in range(10):
        async with contextlib.AsyncExitStack() as opened:
            for _ in range(STREAMS):
                response = await opened.enter_async_context(stream(views, held))
                assert response.status == 200
                await read_stream(response, until=1)
            await wait_until(lambda: view.streams == STREAMS, "every stream counted")
            async with stream(views, held) as refused:
                assert refused.status == 503
                assert f"the limit is {STREAMS}" in (await refused.json())["error"]
            await wait_until(lambda: waiters(views) >= baseline_waiters + 1, "streams parked")
        # Leaving the block closed every connection: the client went away mid-stream.
    await wait_until(lambda: view.streams == 0, "every stream ended")
    await wait_until(
        lambda: waiters(views) == baseline_waiters,
        f"no journal waiter left ({baseline_waiters} before)",
    )
    await wait_until(lambda: len(asyncio.all_tasks()) <= baseline_tasks, "no task left")
    async with stream(views, held) as response:  # and streams open again
        assert response.status == 200
    view.keepalive = KEEPALIVE


async def test_the_stream_of_a_finished_execution_needs_no_slot(views: Views) -> None:
    """A replay that ends at once still counts while it runs, and frees its slot after."""
    view = views.stack.admin.view
    for _ in range(STREAMS * 3):
        async with stream(views, "A-2001") as response:
            assert (await read_stream(response)).ended
    await wait_until(lambda: view.streams == 0, "every replay ended")


async def test_the_static_files_ship_in_the_package() -> None:
    """pyproject's package data names the folder, so a non-editable install has the page."""
    import tomllib

    import maestro_gateway.admin

    def look() -> tuple[set[str], list[str]]:
        folder = Path(maestro_gateway.admin.__file__).parent / "static"
        config = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
        data = config["tool"]["setuptools"]["package-data"]["maestro_gateway"]
        return {p.name for p in folder.iterdir()}, data

    files, data = await asyncio.to_thread(look)
    assert files == {"index.html", "app.js", "app.css", "favicon.svg"}
    assert "admin/static/*" in data


async def test_the_view_of_one_replica_streams_an_execution_another_runs(
    demo: DemoServices, tmp_path: Path, pg_cluster: Cluster, pg_database: str
) -> None:
    """Two gateways on one PostgreSQL journal: a fulfil started on the first, waiting for its
    parcel, is listed by the second's view and streamed by it live through to ``finished``."""
    dsn = pg_cluster.dsn(pg_database)
    first_journal, second_journal = PostgresJournal(dsn), PostgresJournal(dsn)
    await first_journal.open()
    await second_journal.open()
    async with (
        running_view_stack(demo, tmp_path / "one", journal=first_journal) as first,
        running_view_stack(demo, tmp_path / "two", journal=second_journal) as second,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http,
    ):
        fulfil = {"order_id": "P-1", "sku": "sku-1", "qty": 1, "address": "1 Main Street"}
        await first.stub.Start(execute_request("fulfil", "P-1", fulfil), timeout=LIMIT)
        base = second.url + "/api/executions"
        async with http.get(base, params={"status": "running"}) as response:
            listed = await response.json()
        assert [e["execution_id"] for e in listed["executions"]] == ["P-1"]
        assert first.server.service.runs.task("P-1") is not None
        assert second.server.service.runs.task("P-1") is None  # the second does not run it
        async with http.get(f"{base}/P-1/events") as response:
            head = await read_stream(response, until=4)  # started, reserve ×2, packed started
            assert head.messages[-1]["event"] == "step_started"
            params = struct_pb2.Struct()
            params.update({"order_id": "P-1", "station": "packing-1"})
            await first.stub.SendSignal(
                pb.SendSignalRequest(name="parcel.packed", params=params), timeout=LIMIT
            )
            rest = await read_stream(response)
        assert rest.ended
        assert rest.messages[-1]["event"] == "finished"
        assert json.loads(rest.messages[-1]["data"])["result"]["status"] == "SUCCEEDED"
        assert head.ids + rest.ids == list(range(1, rest.ids[-1] + 1))


async def test_a_journal_that_cannot_be_read_is_503_json(tmp_path: Path) -> None:
    """The list and one execution answer 503 JSON, never a bare 500, when the journal fails."""
    from types import SimpleNamespace

    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from maestro_gateway.admin.view import LiveView

    journal = SqliteJournal(tmp_path / "closed.db")
    await journal.open()
    await journal.close()  # every read now raises JournalError
    gateway: Any = SimpleNamespace(journal=journal)
    app = web.Application()
    LiveView(gateway).add_routes(app)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        for path in ("/api/executions", "/api/executions/e-1"):
            async with http.get(server.make_url(path)) as response:
                assert response.status == 503, path
                assert await response.json() == {
                    "error": "the journal cannot be read right now; retry later"
                }
