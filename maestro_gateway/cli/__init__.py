"""The ``maestro`` command line (also ``python -m maestro_gateway``).

Each sub-command lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``maestro validate``
does not pay for grpc start-up.

Exit codes: 0 success; 1 invalid workflow, failed execution, or a server that cannot start;
2 usage or definition error (``execute``); 3 compensation failed (``execute``); 130 after
Ctrl-C (``execute``, once the execution is cancelled and compensated).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("maestro_gateway.cli.validate", "check workflow files; print every problem"),
    "graph": ("maestro_gateway.cli.graph", "print a workflow as a Mermaid diagram"),
    "execute": ("maestro_gateway.cli.execute", "run a workflow in-process, without a server"),
    "serve": ("maestro_gateway.cli.serve", "serve the gateway gRPC API"),
    "executions": (
        "maestro_gateway.cli.executions",
        "list, show, watch or cancel the executions of a running gateway",
    ),
    "signals": (
        "maestro_gateway.cli.signals",
        "send, list or show the signals of a running gateway",
    ),
}

USAGE_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return its exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="maestro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    command = next((a for a in args_list if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            importlib.import_module(module_name).add_arguments(p)
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.run(args))
