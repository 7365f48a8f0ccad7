"""``maestro signals send|list|show``: the signals of a running gateway (DESIGN §13).

Each sub-command calls ``maestro.v1.Gateway`` at ``--target`` (default ``$MAESTRO_TARGET``, else
``127.0.0.1:50050``) over a plaintext channel, as ``maestro executions`` does; ``--json`` prints
the messages as proto3 JSON with the proto field names.

- ``send NAME [--params JSON] [--id ID]``: sends a signal and prints it with what it started
  (``duplicate`` when its id had been received before: nothing was done again).
- ``list [--name N] [--producer EXECUTION]``: signals, newest first.
- ``show ID``: the signal's lineage as a tree: its producer, the signal, the executions it
  triggered or woke, and, under each, the signals those executions emitted, and so on.

Exit status: 0; 1 when an RPC fails (``maestro signals: CODE: message`` on stderr); 2 on a
usage error (``--params`` that is not a JSON object).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2
from maestro.v1 import gateway_pb2 as pb
from maestro.v1 import gateway_pb2_grpc

from maestro_gateway.cli.argtypes import positive
from maestro_gateway.cli.executions import (
    DEFAULT_LIMIT,
    MAX_PAGE_SIZE,
    RPC_FAILED,
    add_target_options,
    rpc_failure,
)
from maestro_gateway.server.convert import from_struct

MAX_TREE = 200
"""Signals and executions a ``show`` tree visits at most (lineage can fan out widely)."""


def _params(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--params is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the sub-commands ``send``, ``list`` and ``show``."""
    common = add_target_options()
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    send = sub.add_parser(
        "send",
        parents=common,
        help="send a signal",
        description="Send a signal: journaled, then it starts the workflows whose triggers "
        "match it. A signal whose id was received before is not processed again.",
    )
    send.add_argument("name", metavar="NAME", help="the signal name (letters, digits, _ . - /)")
    send.add_argument("--params", default={}, type=_params, metavar="JSON", help="an object")
    send.add_argument(
        "--id",
        dest="signal_id",
        default="",
        metavar="ID",
        help="the deduplication key (default: a hash of the name and params)",
    )
    send.add_argument("--json", action="store_true", help="print the SendSignalResponse")
    listing = sub.add_parser("list", parents=common, help="list signals, newest first")
    listing.add_argument("--name", default="", metavar="N", help="only signals called N")
    listing.add_argument(
        "--producer", default="", metavar="EXECUTION", help="only those this execution emitted"
    )
    listing.add_argument(
        "--limit",
        default=DEFAULT_LIMIT,
        type=positive,
        metavar="N",
        help=f"at most N signals (default {DEFAULT_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list of Signal")
    show = sub.add_parser(
        "show",
        parents=common,
        help="show a signal's lineage as a tree",
        description="Show a signal's lineage: producer → signal → executions → the signals "
        "they emitted …",
    )
    show.add_argument("signal_id", metavar="ID", help="the signal id")
    show.add_argument("--json", action="store_true", help="print the Signal")


def run(args: argparse.Namespace) -> int:
    """Run the chosen sub-command against ``args.target``; return the exit status."""
    actions = {"send": _send, "list": _list, "show": _show}
    with grpc.insecure_channel(args.target) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            return actions[args.action](stub, args)
        except grpc.RpcError as exc:
            print(rpc_failure(exc, "signals"), file=sys.stderr)
            return RPC_FAILED


def _json(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return out


def _send(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    params = struct_pb2.Struct()
    params.update(args.params)
    response = stub.SendSignal(
        pb.SendSignalRequest(name=args.name, params=params, signal_id=args.signal_id),
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(_json(response), indent=2))
        return 0
    signal = response.signal
    note = " (duplicate: received before, nothing done again)" if response.duplicate else ""
    print(f"signal {signal.signal_id} {signal.name}{note}")
    _print_lineage(signal, "  ")
    return 0


def _list(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    found: list[pb.Signal] = []
    token = ""
    while len(found) < args.limit:
        page = stub.ListSignals(
            pb.ListSignalsRequest(
                name=args.name,
                producer_execution_id=args.producer,
                page_size=min(args.limit - len(found), MAX_PAGE_SIZE),
                page_token=token,
            ),
            timeout=args.timeout,
        )
        found.extend(page.signals)
        token = page.next_page_token
        if not token:
            break
    if args.json:
        print(json.dumps([_json(s) for s in found[: args.limit]], indent=2))
        return 0
    if not found:
        print("no signals")
        return 0
    print(f"{'TIME':<20} {'NAME':<24} {'TRIGGERED':>9} {'WOKE':>5}  SIGNAL")
    for signal in found[: args.limit]:
        time = signal.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{time:<20} {signal.name:<24} {len(signal.triggered):>9} {len(signal.woke):>5}  "
            f"{signal.signal_id}"
        )
    return 0


def _print_lineage(signal: pb.Signal, indent: str) -> None:
    for execution_id in signal.triggered:
        print(f"{indent}triggered {execution_id}")
    for execution_id in signal.woke:
        print(f"{indent}woke {execution_id}")
    for workflow in signal.not_matched:
        print(f"{indent}not matched by {workflow}")


def _show(stub: gateway_pb2_grpc.GatewayStub, args: argparse.Namespace) -> int:
    signal = stub.GetSignal(pb.GetSignalRequest(signal_id=args.signal_id), timeout=args.timeout)
    if args.json:
        print(json.dumps(_json(signal), indent=2))
        return 0
    if signal.HasField("producer"):
        print(f"execution {signal.producer.execution_id} (step {signal.producer.step_id})")
    else:
        print("external producer")
    budget = [MAX_TREE]
    _tree(stub, args, signal, "└─ ", "   ", set(), budget)
    if budget[0] <= 0:
        print(f"… (more than {MAX_TREE} nodes; use --json and GetSignal for the rest)")
    return 0


def _tree(
    stub: gateway_pb2_grpc.GatewayStub,
    args: argparse.Namespace,
    signal: pb.Signal,
    indent: str,
    pad: str,
    seen: set[str],
    budget: list[int],
) -> None:
    """Print ``signal`` and what followed from it, depth first, each signal once."""
    budget[0] -= 1
    params = json.dumps(from_struct(signal.params), sort_keys=True)
    print(f"{indent}signal {signal.name} {signal.signal_id} {params}")
    seen.add(signal.signal_id)
    children = [("triggered", e) for e in signal.triggered] + [("woke", e) for e in signal.woke]
    for workflow in signal.not_matched:
        print(f"{pad}   · not matched by {workflow}")
    for how, execution_id in children:
        if budget[0] <= 0:
            return
        budget[0] -= 1
        print(f"{pad}└─ {how} execution {execution_id}")
        emitted = stub.ListSignals(
            pb.ListSignalsRequest(producer_execution_id=execution_id, page_size=MAX_PAGE_SIZE),
            timeout=args.timeout,
        ).signals
        for child in reversed(emitted):  # oldest first
            if child.signal_id in seen or budget[0] <= 0:
                continue
            _tree(stub, args, child, f"{pad}   └─ ", f"{pad}      ", seen, budget)
