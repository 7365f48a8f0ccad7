"""A slow Execute reader never makes the gateway buffer without bound (issue 14, item 3).

A foreach of 300 items produces 600+ events; the stream buffers 8 and the client reads only
after the execution has finished: it still receives every event once, in sequence order,
read back from the journal.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import FakeTransports, Harness, ok

from maestro_gateway.journal import MemoryJournal, SqliteJournal
from maestro_gateway.journal.base import Journal
from maestro_gateway.server import service
from maestro_gateway.server.app import create_gateway
from maestro_gateway.server.feed import EventFeed

FANOUT = """\
name: fanout
services:
  shop: {type: grpc, endpoint: "127.0.0.1:9"}
steps:
  - id: lines
    foreach: "{{ input.items }}"
    concurrency: 16
    steps:
      - {id: reserve, service: shop, method: Reserve, input: {n: "{{ item }}"}}
"""


@pytest.fixture(params=["memory", "sqlite"])
async def gw(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    journal: Journal = (
        MemoryJournal() if request.param == "memory" else SqliteJournal(tmp_path / "j.db")
    )
    await journal.open()
    directory = tmp_path / "workflows"
    directory.mkdir()
    (directory / "fanout.yaml").write_text(FANOUT)
    server, problems = create_gateway(
        directory, transports=FakeTransports({"Reserve": ok}), journal=journal
    )
    assert problems == []
    server.service.stream_buffer = 8
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{server.port}",
        # A small window, so the gateway's writes block on the reader as a slow client's do.
        options=[
            ("grpc.http2.lookahead_bytes", 1024),
            ("grpc.max_receive_message_length", 1 << 20),
        ],
    )
    yield Harness(server, FakeTransports(), gateway_pb2_grpc.GatewayStub(channel), channel)
    await channel.close()
    await server.shutdown(0)


async def test_a_reader_that_waits_gets_every_event_once_in_order(
    gw: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    feeds: list[EventFeed] = []

    class Recorded(EventFeed):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            feeds.append(self)

    monkeypatch.setattr(service, "EventFeed", Recorded)
    items = struct_pb2.Struct()
    items.update({"items": list(range(300))})
    call = gw.stub.Execute(pb.ExecuteRequest(workflow="fanout", input=items, execution_id="f-1"))
    async with asyncio.timeout(30):
        while True:  # the execution finishes while nobody reads the stream
            try:
                execution = await gw.stub.GetExecution(pb.GetExecutionRequest(execution_id="f-1"))
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            else:
                if execution.HasField("end_time"):
                    break
            await asyncio.sleep(0.05)
        sequences = [event.sequence async for event in call]
    assert sequences == list(range(1, execution.last_sequence + 1))
    assert execution.last_sequence > 600
    [feed] = feeds
    assert feed.overflows >= 1  # the buffer of 8 overflowed; the journal supplied the rest
