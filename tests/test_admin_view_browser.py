"""The live view in a real headless Chromium (Debian's ``chromium``), over the DevTools protocol.

The gateway runs in this process over the demo services (:mod:`demo.live_view`); Chromium loads
the admin port's page and the test polls the DOM (``Runtime.evaluate``) until the expected text
is there: the executions by id, a timeline's steps, attempts and compensations, a running
execution turning into a finished one without a reload, and untrusted input shown as text with
no script run. Skipped only when ``/usr/bin/chromium`` is absent (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from demo.browser import CHROMIUM, Page, headless_chromium
from demo.harness import DemoServices
from demo.live_view import ORDER, ViewStack, examples, execute_request, run, running_view_stack
from maestro_gateway.admin import AdminServer
from maestro_gateway.server.metrics import GatewayMetrics

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM),
        reason=f"{CHROMIUM} is absent (Debian's chromium package; .ci/run installs it)",
    ),
]

XSS_ADDRESS = "<script>window.__xss=1</script>"
XSS_EMAIL = '<img src=x onerror="window.__xss=2">'
XSS_LABEL = '<b onmouseover="window.__xss=3">not bold</b>'


@dataclass
class Browsing:
    """The stack, its example executions and one Chromium tab."""

    stack: ViewStack
    ids: dict[str, str]
    page: Page

    async def open(self, execution_id: str = "") -> None:
        """Show the list (or one execution) in the tab; return once it is the one shown."""
        if not execution_id:
            await self.page.navigate(f"{self.stack.url}/#/")
            await self.page.wait_for("!document.getElementById('list-view').hidden")
            return
        await self.page.navigate(f"{self.stack.url}/#/executions/{execution_id}")
        await self.page.wait_for(
            "(() => { const h = document.querySelector('#summary h1');"
            f" return h !== null && h.textContent === {js(execution_id)}; }})()"
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browsing(
    demo: DemoServices, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Browsing]:
    await demo.reset()
    scratch = tmp_path_factory.mktemp("view-browser")
    async with running_view_stack(demo, scratch) as stack, headless_chromium() as browser:
        ids = await examples(stack)
        await run(
            stack,
            execute_request(
                "checkout",
                "X-1",
                {**ORDER, "order_id": "X-1", "address": XSS_ADDRESS, "email": XSS_EMAIL},
                {"note": XSS_LABEL},
            ),
        )
        ids["escaped"] = "X-1"
        page = await browser.page()
        await page.set_size(1440, 900)
        yield Browsing(stack, ids, page)
    await demo.reset()


def js(value: Any) -> str:
    """``value`` as a JavaScript literal."""
    return json.dumps(value)


async def test_the_list_shows_the_executions_running_first(browsing: Browsing) -> None:
    """Running in its own table first, then the finished ones newest first, each with its badge."""
    await browsing.open()
    rows = await browsing.page.wait_for(
        """(() => {
          const rows = (id) => [...document.querySelectorAll(`#${id} tr`)].map(
            (tr) => [tr.dataset.id, tr.querySelector('.badge').textContent]);
          const running = rows('running-rows'), recent = rows('recent-rows');
          return running.length >= 1 && recent.length >= 5 ? {running, recent} : null;
        })()"""
    )
    assert rows["running"] == [["A-2005", "running"]]
    assert rows["recent"] == [
        ["X-1", "succeeded"],
        ["A-2004", "compensated"],
        ["A-2003", "succeeded"],
        ["A-2002", "compensated"],
        ["A-2001", "succeeded"],
    ]
    text = await browsing.page.evaluate("document.querySelector('#recent-rows').innerText")
    assert "order_lines" in text
    assert "checkout" in text
    assert browsing.page.errors == []


async def test_the_list_filters_and_refreshes_by_itself(browsing: Browsing) -> None:
    """A status chip narrows the list; an execution started meanwhile appears without reload."""
    await browsing.open()
    await browsing.page.wait_for("document.querySelectorAll('#recent-rows tr').length >= 5")
    await browsing.page.evaluate(
        "document.querySelector('#filter-status [data-state=\"COMPENSATED\"]').click()"
    )
    shown = await browsing.page.wait_for(
        """(() => {
          const ids = [...document.querySelectorAll('#recent-rows tr')].map((tr) => tr.dataset.id);
          return ids.length === 2 ? ids : null;
        })()"""
    )
    assert shown == ["A-2004", "A-2002"]
    assert await browsing.page.evaluate("document.getElementById('running-panel').hidden")
    await browsing.page.evaluate(
        "document.querySelector('#filter-status [data-state=\"COMPENSATED\"]').click()"
    )
    await run(browsing.stack, execute_request("checkout", "N-1", {**ORDER, "order_id": "N-1"}))
    first = await browsing.page.wait_for(
        "(() => { const tr = document.querySelector('#recent-rows tr');"
        " return tr && tr.dataset.id === 'N-1' ? tr.innerText : null; })()"
    )
    assert "succeeded" in first.lower()


async def test_an_execution_is_a_timeline_of_its_steps_attempts_and_compensations(
    browsing: Browsing,
) -> None:
    """order_lines, compensated: a row per step path (lines[i].reserve), every attempt a bar,
    a compensation row under each undone step, the error, the event log and the input."""
    await browsing.open(browsing.ids["undone"])
    page = browsing.page
    await page.wait_for("document.querySelector('#log-rows tr.k-finished') !== null")
    steps = await page.evaluate(
        "[...document.querySelectorAll('.tl-row:not(.tl-comp)[data-step]')]"
        ".map((row) => row.dataset.step)"
    )
    assert {"lines", "lines[0].reserve", "lines[1].reserve", "lines[2].reserve"} <= set(steps)
    assert {"pay", "pay.charge", "pay.receipt", "route", "review"} <= set(steps)
    labels = await page.evaluate(
        "[...document.querySelectorAll('.tl-row:not(.tl-comp) .tl-label')].map((l) => l.textContent)"
    )
    assert any(label.startswith("lines[1].reserve") for label in labels)
    bars = await page.evaluate(
        "[...document.querySelectorAll('.tl-row:not(.tl-comp) .bar[data-attempt]')]"
        ".map((b) => [b.dataset.step, b.dataset.attempt, b.dataset.state])"
    )
    retried = [step for step, attempt, _ in bars if attempt == "2"]
    assert len(retried) == 1  # the one UNAVAILABLE of the inventory, then attempt 2 succeeded
    assert retried[0].startswith("lines[")
    assert [retried[0], "1", "failed"] in bars
    assert [retried[0], "2", "ok"] in bars
    assert ["review", "1", "failed"] in bars
    undone = await page.evaluate(
        "[...document.querySelectorAll('.tl-comp')].map((row) => [row.dataset.step,"
        " [...row.querySelectorAll('.bar')].map((b) => b.className)])"
    )
    assert {step for step, _ in undone} >= {
        "lines[0].reserve",
        "lines[1].reserve",
        "lines[2].reserve",
        "pay.charge",
        "pay.receipt",
    }
    assert all(classes == ["bar comp"] for _, classes in undone)
    banner = await page.evaluate("document.getElementById('error-banner').innerText")
    assert "FAILED_PRECONDITION" in banner
    assert "needs a reviewer's approval" in banner
    record = browsing.stack.journal
    last = (await record.get(browsing.ids["undone"])).last_sequence  # type: ignore[union-attr]
    logged = await page.evaluate("document.querySelectorAll('#log-rows tr').length")
    assert logged == last
    shown_input = await page.evaluate(
        "document.querySelector('pre[data-payload=input]').textContent"
    )
    assert json.loads(shown_input)["order_id"] == browsing.ids["undone"]
    png = await page.screenshot()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert page.errors == []


async def test_a_running_execution_updates_live_until_it_finishes(browsing: Browsing) -> None:
    """Opened while its shipment is held: a running bar; then, with no reload, finished."""
    shipping = browsing.stack.demo.shipping.control
    await shipping.add_fault(method="CreateShipment", delay_ms=1500, times=1)
    before = len(await shipping.calls())
    await browsing.stack.stub.Start(
        execute_request("checkout", "R-1", {**ORDER, "order_id": "R-1"}), timeout=30
    )
    await shipping.wait_for(lambda calls: len(calls) > before, within=30)
    await browsing.open("R-1")
    page = browsing.page
    await page.wait_for("document.querySelector('.bar.running[data-step=\"ship\"]') !== null")
    assert await page.evaluate("document.querySelector('#summary .badge').textContent") == "running"
    await page.evaluate("window.__marker = 'same page'")
    await page.wait_for("document.querySelector('#log-rows tr.k-finished') !== null", within=30)
    badge = await page.wait_for(
        "(() => { const b = document.querySelector('#summary .badge').textContent;"
        " return b === 'succeeded' ? b : null; })()"
    )
    assert badge == "succeeded"
    assert await page.evaluate("window.__marker") == "same page"  # no reload happened
    states = await page.evaluate(
        "[...document.querySelectorAll('.bar[data-step=\"ship\"]')].map((b) => b.dataset.state)"
    )
    assert states == ["ok"]
    output = await page.evaluate("document.querySelector('pre[data-payload=output]').textContent")
    assert json.loads(output)["order_id"] == "R-1"
    assert page.errors == []


async def test_untrusted_input_is_shown_as_text_and_never_run(
    browsing: Browsing, tmp_path: Path
) -> None:
    """<script>, <img onerror> and a label with markup appear literally; no element is made
    of them and the flag they would set stays unset."""
    await browsing.open("X-1")
    page = browsing.page
    shown = await page.wait_for(
        "(() => { const pre = document.querySelector('pre[data-payload=input]');"
        " return pre ? pre.textContent : null; })()"
    )
    assert json.loads(shown)["address"] == XSS_ADDRESS
    assert json.loads(shown)["email"] == XSS_EMAIL
    text = await page.evaluate("document.body.innerText")
    assert XSS_ADDRESS in text
    assert XSS_LABEL in text
    made = await page.evaluate(
        "document.querySelectorAll('main img, main script, .labels b, [onmouseover], [onerror]')"
        ".length"
    )
    assert made == 0
    await browsing.open()  # the list shows the label too
    await page.wait_for("document.querySelector('#recent-rows tr[data-id=\"X-1\"]') !== null")
    label = await page.evaluate(
        "document.querySelector('#recent-rows tr[data-id=\"X-1\"] .label .v').textContent"
    )
    assert label == XSS_LABEL
    assert await page.evaluate("document.querySelectorAll('.labels b, [onmouseover]').length") == 0
    assert await page.evaluate("typeof window.__xss") == "undefined"
    (tmp_path / "escaped.png").write_bytes(await page.screenshot())
    assert page.errors == []


async def test_a_refused_stream_is_retried_until_a_slot_frees(browsing: Browsing) -> None:
    """An admin port allowing one stream, held by another client: the page says it was refused
    (503), then, once the slot is free, streams the execution (each event once)."""
    page = browsing.page
    waiting = browsing.ids["running"]
    narrow = AdminServer(browsing.stack.server, GatewayMetrics(), max_streams=1)
    await narrow.start()
    try:
        events = f"{narrow.url}/api/executions/{waiting}/events"
        async with aiohttp.ClientSession() as http, http.get(events) as held:
            assert held.status == 200
            await held.content.readline()
            await page.navigate(f"{narrow.url}/#/executions/{waiting}")
            await page.wait_for(
                "document.getElementById('conn-text').textContent.startsWith('stream refused')"
            )
            assert await page.evaluate("document.querySelectorAll('#log-rows tr').length") == 0
        await page.wait_for("document.getElementById('conn').dataset.state === 'live'")
        logged = await page.wait_for(
            "(() => { const n = document.querySelectorAll('#log-rows tr').length;"
            " return n >= 4 ? n : 0; })()"
        )
        record = await browsing.stack.journal.get(waiting)
        assert record is not None
        assert logged == record.last_sequence
        assert page.errors == []
    finally:
        await page.navigate("about:blank")
        await narrow.close()
