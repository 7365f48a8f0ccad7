"""A headless Chromium driven over the DevTools protocol (the live view's tests and screenshots).

::

    async with headless_chromium() as browser:
        page = await browser.page()
        await page.navigate("http://127.0.0.1:9464/")
        text = await page.wait_for("document.body.innerText.includes('checkout')", within=20)
        png = await page.screenshot()

Debian's ``chromium`` (``/usr/bin/chromium``) is started with ``--headless --no-sandbox`` (it
runs as root here), a fresh ``--user-data-dir`` and ``--remote-debugging-port=0``: it prints the
WebSocket URL it bound (on 127.0.0.1) on stderr, and the page is driven over a WebSocket with
aiohttp's client, so nothing new is needed. Every wait is bounded; the browser is stopped
(SIGTERM, then SIGKILL) and its profile removed at exit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

CHROMIUM = "/usr/bin/chromium"
START_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
_LISTENING = re.compile(r"DevTools listening on (ws://127\.0\.0\.1:(\d+)/\S+)")


class BrowserError(Exception):
    """Chromium did not start, or a DevTools call failed (the message says which)."""


@dataclass
class Page:
    """One tab, over its own DevTools WebSocket."""

    socket: aiohttp.ClientWebSocketResponse
    errors: list[str] = field(default_factory=list)
    """Uncaught exceptions and console errors of the page's scripts, as they happened."""
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _waiting: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read())
        await self.call("Page.enable")
        await self.call("Runtime.enable")

    async def close(self) -> None:
        await self.socket.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader

    async def _read(self) -> None:
        async for message in self.socket:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            waiter = self._waiting.pop(data.get("id", -1), None)
            if waiter is not None and not waiter.done():
                if "error" in data:
                    waiter.set_exception(BrowserError(json.dumps(data["error"])))
                else:
                    waiter.set_result(data.get("result", {}))
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(str(details.get("exception", {}).get("description", details)))
            elif (
                data.get("method") == "Runtime.consoleAPICalled"
                and data["params"].get("type") == "error"
            ):
                args = data["params"].get("args", [])
                self.errors.append(" ".join(str(a.get("value", a)) for a in args))
        for waiter in self._waiting.values():
            if not waiter.done():
                waiter.set_exception(BrowserError("the DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> Any:
        """Send one DevTools command and return its result (bounded by ``CALL_TIMEOUT``)."""
        ident = next(self._ids)
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = waiter
        await self.socket.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        try:
            return await asyncio.wait_for(waiter, CALL_TIMEOUT)
        finally:
            self._waiting.pop(ident, None)

    async def set_size(self, width: int, height: int) -> None:
        """Make the viewport ``width`` × ``height`` CSS pixels."""
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    async def navigate(self, url: str) -> None:
        """Load ``url`` (returns once navigation started; poll with :meth:`wait_for`)."""
        await self.call("Page.navigate", url=url)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, within: float = 20.0) -> Any:
        """Poll ``expression`` until it is truthy; return its value.

        Raises:
            TimeoutError: still falsy after ``within`` seconds.
        """
        async with asyncio.timeout(within):
            while True:
                with contextlib.suppress(BrowserError):  # the page may be navigating
                    value = await self.evaluate(expression)
                    if value:
                        return value
                await asyncio.sleep(0.1)

    async def screenshot(self) -> bytes:
        """The viewport as a PNG."""
        result = await self.call("Page.captureScreenshot", format="png")
        return base64.b64decode(result["data"])


@dataclass
class Browser:
    """A running headless Chromium."""

    process: asyncio.subprocess.Process
    port: int
    http: aiohttp.ClientSession
    pages: list[Page] = field(default_factory=list)

    async def page(self) -> Page:
        """Open a new tab (about:blank) and connect to it."""
        base = f"http://127.0.0.1:{self.port}"
        async with self.http.put(f"{base}/json/new?about:blank") as response:
            if response.status != 200:
                raise BrowserError(f"cannot open a tab: HTTP {response.status}")
            target = await response.json(content_type=None)
        socket = await self.http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(socket)
        await page.start()
        self.pages.append(page)
        return page


async def _listening(stderr: asyncio.StreamReader, seen: list[str]) -> int:
    async for raw in stderr:
        line = raw.decode(errors="replace").rstrip()
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            return int(match.group(2))
    raise BrowserError("chromium exited before DevTools listened:\n" + "\n".join(seen[-10:]))


async def _drain(stderr: asyncio.StreamReader) -> None:
    async for _ in stderr:
        pass


@contextlib.asynccontextmanager
async def headless_chromium(executable: str = CHROMIUM) -> AsyncIterator[Browser]:
    """Run a headless Chromium for the duration of the block."""
    profile = tempfile.mkdtemp(prefix="maestro-chromium-")
    process = await asyncio.create_subprocess_exec(
        executable,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    assert process.stderr is not None
    drain: asyncio.Task[None] | None = None
    http = aiohttp.ClientSession()
    browser: Browser | None = None
    try:
        seen: list[str] = []
        try:
            port = await asyncio.wait_for(_listening(process.stderr, seen), START_TIMEOUT)
        except TimeoutError:
            raise BrowserError(
                "chromium did not start DevTools in time:\n" + "\n".join(seen[-10:])
            ) from None
        drain = asyncio.create_task(_drain(process.stderr))
        browser = Browser(process, port, http)
        yield browser
    finally:
        if browser is not None:
            for page in browser.pages:
                with contextlib.suppress(Exception):
                    await page.close()
        await http.close()
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if drain is not None:
            drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await drain
        shutil.rmtree(profile, ignore_errors=True)
