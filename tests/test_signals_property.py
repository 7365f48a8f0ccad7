"""Property: each matching (signal, trigger) pair starts exactly one execution (DESIGN §13).

Hypothesis draws up to eight signals — a name (``s.x`` or ``s.y``), an id from a small pool or
none (then the id is the hash of the name and params, so equal signals collide), a dedup key
from a small pool and a number ``v`` — and delivers each one to three times, in a random order,
in batches sent concurrently. The gateway is the real one in-process (engine, loader, journal
on a SQLite file or in memory) over a fake transport, serving four workflows whose triggers
cover the cases: one execution per signal (``each``), dedup keys that collide (``per_key``, and
``both``, triggered by either name onto one key space), ``when``s that are false for some
signals, and a trigger whose input fails its workflow's schema for some (``checked``).

The expectations come from DESIGN §13, not the implementation: of the deliveries of one id,
exactly one is processed and the others are answered ``duplicate`` with the stored signal; the
signals processed determine which executions must exist (``<workflow>:<signal_id>``, or
``<workflow>:<dedup value>``), and exactly those exist, each run once (one downstream call),
started by one of the signals deriving it (``triggered_by``) with the input its trigger renders
from it; every processed signal lists under ``triggered`` exactly the executions its matching
triggers derive and under ``not_matched`` exactly the workflows that did not match.

``MAESTRO_PROPERTY_EXAMPLES`` raises the number of plans (25 per journal, about 3 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import HealthCheck, Phase, example, given, note, settings
from hypothesis import strategies as st
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc
from test_server import FakeTransports, Harness, ok

from maestro_gateway.journal import MemoryJournal, SqliteJournal
from maestro_gateway.journal.base import Journal
from maestro_gateway.server.app import create_gateway

EXAMPLES = int(os.environ.get("MAESTRO_PROPERTY_EXAMPLES", "25"))
MARK = {"id": "{{ workflow.execution_id }}", "input": "{{ input }}"}
WORKFLOWS = {
    "each": {"triggers": [{"signal": "s.x"}]},
    "per_key": {
        "triggers": [
            {
                "signal": "s.x",
                "when": "{{ signal.params.v > 0 }}",
                "input": {"k": "{{ signal.params.k }}", "v": "{{ signal.params.v }}"},
                "dedup": "{{ signal.params.k }}",
            }
        ]
    },
    "both": {
        "triggers": [
            {
                "signal": "s.x",
                "when": "{{ signal.params.v >= 2 }}",
                "dedup": "{{ signal.params.k }}",
            },
            {"signal": "s.y", "dedup": "{{ signal.params.k }}"},
        ]
    },
    "checked": {
        "input": {
            "type": "object",
            "required": ["v"],
            "properties": {"v": {"type": "number", "minimum": 0}},
        },
        "triggers": [{"signal": "s.y", "input": {"v": "{{ signal.params.v }}"}}],
    },
}
"""The served workflows (each with one step, ``mark``, that calls the fake once)."""


@dataclass(frozen=True)
class Sent:
    """One signal as its producer sends it (each delivery of it is the same request)."""

    name: str
    signal_id: str
    k: str
    v: int

    @property
    def params(self) -> dict[str, Any]:
        return {"k": self.k, "v": self.v}

    @property
    def key(self) -> str:
        """What makes deliveries the same signal: the id, or without one its name and params
        (whose hash the gateway derives the id from)."""
        return self.signal_id or f"(derived from {self.name} {self.k} {self.v})"

    def request(self) -> pb.SendSignalRequest:
        params = struct_pb2.Struct()
        params.update(self.params)
        return pb.SendSignalRequest(name=self.name, params=params, signal_id=self.signal_id)


@dataclass(frozen=True)
class Stored:
    """A signal as processed: its id, name and params (those of its first delivery)."""

    signal_id: str
    name: str
    params: dict[str, Any]


def expected(signal: Stored) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """What ``signal`` must start: execution id → its input, and the workflows not matched."""
    name, k, v = signal.name, signal.params["k"], signal.params["v"]
    started: dict[str, dict[str, Any]] = {}
    not_matched: set[str] = set()
    if name == "s.x":
        started[f"each:{signal.signal_id}"] = signal.params
        if v > 0:
            started[f"per_key:{k}"] = {"k": k, "v": v}
        else:
            not_matched.add("per_key")
        if v >= 2:
            started[f"both:{k}"] = signal.params
        else:
            not_matched.add("both")
    else:
        started[f"both:{k}"] = signal.params
        if v >= 0:
            started[f"checked:{signal.signal_id}"] = {"v": v}
        else:
            not_matched.add("checked")  # the input fails the schema: recorded, never started
    return started, not_matched


@dataclass(frozen=True)
class Plan:
    """Signals, and the order and grouping in which their deliveries are sent."""

    signals: tuple[Sent, ...]
    batches: tuple[tuple[int, ...], ...]
    """Indices into ``signals``; each batch is sent concurrently, the batches one after the
    other."""


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    count = draw(st.integers(1, 8))
    signals = tuple(
        Sent(
            name=draw(st.sampled_from(["s.x", "s.y"])),
            signal_id=draw(st.sampled_from(["", "", "id-a", "id-b", "id-c"])),
            k=draw(st.sampled_from(["k0", "k1", "k2"])),
            v=draw(st.integers(-1, 3)),
        )
        for _ in range(count)
    )
    deliveries = [i for i, _ in enumerate(signals) for _ in range(draw(st.integers(1, 3)))]
    order = draw(st.permutations(deliveries))
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(order) - 1)), max_size=3)))
    bounds = [0, *(c for c in cuts if c < len(order)), len(order)]
    batches = tuple(tuple(order[a:b]) for a, b in itertools.pairwise(bounds) if b > a)
    return Plan(signals, batches)


def workflow_text(name: str, spec: dict[str, Any]) -> str:
    document = {
        "name": name,
        **spec,
        "services": {"shop": {"type": "grpc", "endpoint": "127.0.0.1:9"}},
        "steps": [{"id": "mark", "service": "shop", "method": "Mark", "input": MARK}],
    }
    return json.dumps(document)  # JSON is YAML


@contextlib.asynccontextmanager
async def gateway(journal_kind: str) -> AsyncIterator[Harness]:
    """A fresh gateway on a fresh journal, serving ``WORKFLOWS`` over a fake ``Mark``."""
    with tempfile.TemporaryDirectory(prefix="signals-property-") as tmp:
        directory = Path(tmp) / "workflows"
        directory.mkdir()
        for name, spec in WORKFLOWS.items():
            (directory / f"{name}.yaml").write_text(workflow_text(name, spec))
        journal: Journal = (
            MemoryJournal() if journal_kind == "memory" else SqliteJournal(Path(tmp) / "j.db")
        )
        await journal.open()
        fakes = FakeTransports({"Mark": ok})
        server, problems = create_gateway(directory, transports=fakes, journal=journal)
        assert problems == []
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        try:
            yield Harness(server, fakes, gateway_pb2_grpc.GatewayStub(channel), channel)
        finally:
            await channel.close()
            await server.shutdown(0)
            await journal.close()


async def all_executions(stub: Any) -> dict[str, pb.Execution]:
    found: dict[str, pb.Execution] = {}
    token = ""
    while True:
        page = await stub.ListExecutions(
            pb.ListExecutionsRequest(page_size=1000, page_token=token), timeout=10
        )
        found.update((e.execution_id, e) for e in page.executions)
        token = page.next_page_token
        if not token:
            return found


async def run_plan(gw: Harness, plan: Plan) -> dict[str, list[pb.SendSignalResponse]]:
    """Send every delivery of ``plan``; the answers, by :attr:`Sent.key`."""
    answers: dict[str, list[pb.SendSignalResponse]] = {}
    for batch in plan.batches:
        sent = [plan.signals[i] for i in batch]
        got = await asyncio.gather(*(gw.stub.SendSignal(s.request(), timeout=10) for s in sent))
        for signal, answer in zip(sent, got, strict=True):
            answers.setdefault(signal.key, []).append(answer)
    return answers


def processed(answers: dict[str, list[pb.SendSignalResponse]]) -> list[Stored]:
    """The signals processed, checking that of the deliveries of each exactly one was and the
    others were answered ``duplicate`` with the stored signal."""
    out: dict[str, Stored] = {}
    for key, replies in answers.items():
        firsts = [r for r in replies if not r.duplicate]
        assert len(firsts) == 1, f"{key}: {len(firsts)} deliveries processed"
        first = firsts[0].signal
        stored = Stored(first.signal_id, first.name, json_format.MessageToDict(first.params))
        for reply in replies:
            got = Stored(
                reply.signal.signal_id,
                reply.signal.name,
                json_format.MessageToDict(reply.signal.params),
            )
            assert got == stored, key
        assert stored.signal_id not in out, f"{key} and another signal share an id"
        out[stored.signal_id] = stored
    return list(out.values())


@pytest.mark.timeout(60 + 5 * EXAMPLES)
@pytest.mark.parametrize("journal_kind", ["sqlite", "memory"])
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(plan=plans())
# Always in the run: one id reused for another name and other params, concurrently, with
# dedup keys colliding across names and a false `when`.
@example(
    plan=Plan(
        (Sent("s.x", "id-a", "k0", 3), Sent("s.y", "id-a", "k1", -1), Sent("s.y", "", "k0", 0)),
        ((0, 1, 2, 0, 2), (1, 2)),
    )
)
async def test_each_matching_signal_and_trigger_start_exactly_one_execution(
    journal_kind: str, plan: Plan
) -> None:
    """Whatever the signals, their duplicates and their order, the executions are exactly those
    the processed signals' matching triggers derive, each started once by one of them."""
    note(str(plan))
    async with gateway(journal_kind) as gw:
        answers = await run_plan(gw, plan)
        must: dict[str, list[tuple[Stored, dict[str, Any]]]] = {}
        for signal in processed(answers):
            started, not_matched = expected(signal)
            for execution_id, input in started.items():
                must.setdefault(execution_id, []).append((signal, input))
            got = await gw.stub.GetSignal(pb.GetSignalRequest(signal_id=signal.signal_id))
            assert sorted(got.triggered) == sorted(started), signal
            assert sorted(got.not_matched) == sorted(not_matched), signal
            assert list(got.woke) == []

        async with asyncio.timeout(10):
            while True:
                executions = await all_executions(gw.stub)
                if all(e.HasField("end_time") for e in executions.values()) and len(
                    gw.fakes.seen
                ) >= len(executions):
                    break
                await asyncio.sleep(0.01)
        assert sorted(executions) == sorted(must)
        calls = sorted(s.request["id"] for s in gw.fakes.seen)
        assert calls == sorted(must), "each execution calls Mark once"
        for execution_id, execution in executions.items():
            assert execution.status == pb.EXECUTION_STATUS_SUCCEEDED
            starters = {signal.signal_id: input for signal, input in must[execution_id]}
            assert execution.triggered_by in starters, execution_id
            assert json_format.MessageToDict(execution.input) == starters[execution.triggered_by]
