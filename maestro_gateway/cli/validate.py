"""``maestro validate FILE…``: check workflow files and print every problem.

Each problem is printed on stdout as ``file:line:col: message`` (the path as given), sorted by
file, line and column. A file that cannot be read is a problem of that file
(``file:1:1: cannot read: …``), not a usage error, so one bad path does not hide the others.
Exit status: 0 when every file is valid, 1 when any is not, 2 on a usage error (no file given).
A one-line summary goes to stderr.

An ``env.NAME`` whose variable is not set here is a warning, ``file:line:col: warning:
environment variable NAME is not set``, which does not make the file invalid: secrets are often
absent where files are checked (DESIGN §9). The variable is then checked as an empty string.

With ``--connect`` every file that loads is also checked against the live schemas of its gRPC
services (``maestro_gateway.cli.connect``): methods, request fields and value types, and field
selections on gRPC outputs; loading one service's descriptors is bounded by
``--connect-timeout`` seconds (default 5), and a service that cannot be reached is a problem of
the file at its ``endpoint``.

Parsing is bounded (``--max-yaml-bytes``, ``--max-yaml-nodes``, ``--max-yaml-depth``; README
"Limits"): a file over a limit is one problem at the offending position naming the limit.

Sub-workflows (``workflow:`` steps, DESIGN §12) resolve among the workflow files of the given
file's directory, or of ``--workflows DIR`` (``maestro_gateway.model.bundle``): an unknown name,
a cycle or too deep a chain is a problem of the file at the step, and so is a sub-workflow whose
file does not load (whose own problems are printed too). Other files of that directory are not
checked unless given.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys

from maestro_gateway.cli import USAGE_ERROR
from maestro_gateway.cli.limits import add_yaml_arguments, apply_yaml_limits
from maestro_gateway.errors import Diagnostic
from maestro_gateway.model.bundle import load_together
from maestro_gateway.model.types import Workflow


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``FILE…`` and ``--connect``."""
    parser.add_argument("files", nargs="*", metavar="FILE", help="workflow files to check")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="also resolve every gRPC method against the live services",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="bound of loading one service's descriptors with --connect (default 5)",
    )
    parser.add_argument(
        "--workflows",
        metavar="DIR",
        help="resolve sub-workflow names among the files of DIR (default: each file's directory)",
    )
    add_yaml_arguments(parser)


def validate_files(
    paths: list[str],
    *,
    connect: bool = False,
    connect_timeout: float = 5.0,
    workflows: str | None = None,
) -> list[Diagnostic]:
    """Every problem of every file in ``paths``, sorted.

    Sub-workflows resolve among the files of ``workflows``, or of each file's own directory.
    With ``connect``, the files that load (and the sub-workflows they run) are also checked
    against their services' live schemas, each descriptor load bounded by ``connect_timeout``
    seconds.
    """
    problems: list[Diagnostic] = []
    loaded: list[Workflow] = []
    for result in load_together(paths, directory=workflows, env="warn"):
        problems.extend(result.diagnostics)
        if result.workflow is not None:
            loaded.append(result.workflow)
    if connect and loaded:
        from maestro_gateway.cli.connect import check_workflows

        problems.extend(asyncio.run(check_workflows(loaded, load_timeout=connect_timeout)))
    return sorted(dict.fromkeys(problems))


def run(args: argparse.Namespace) -> int:
    """Validate ``args.files``; return the exit status."""
    if not args.files:
        print("maestro validate: give at least one workflow file", file=sys.stderr)
        return USAGE_ERROR
    apply_yaml_limits(args)
    timeout = args.connect_timeout
    if not (math.isfinite(timeout) and timeout > 0):
        print("maestro validate: --connect-timeout must be a positive number", file=sys.stderr)
        return USAGE_ERROR
    if args.workflows is not None and not os.path.isdir(args.workflows):
        print(f"maestro validate: --workflows: not a directory: {args.workflows}", file=sys.stderr)
        return USAGE_ERROR
    problems = validate_files(
        args.files, connect=args.connect, connect_timeout=timeout, workflows=args.workflows
    )
    for problem in problems:
        print(problem)
    errors = [p for p in problems if p.severity != "warning"]
    warnings = len(problems) - len(errors)
    noted = f", {warnings} warning(s)" if warnings else ""
    # A sub-workflow's problems are printed with it, but only the files given are counted.
    invalid = len({p.file for p in errors} & set(args.files)) or len({p.file for p in errors})
    total = len(args.files)
    if errors:
        print(
            f"{invalid} of {total} file(s) invalid, {len(errors)} problem(s){noted}",
            file=sys.stderr,
        )
        return 1
    print(f"{total} file(s) valid{noted}", file=sys.stderr)
    return 0
