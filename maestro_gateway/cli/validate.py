"""``maestro validate FILE…``: check workflow files and print every problem.

Each problem is printed on stdout as ``file:line:col: message`` (the path as given), sorted by
file, line and column. A file that cannot be read is a problem of that file
(``file:1:1: cannot read: …``), not a usage error, so one bad path does not hide the others.
Exit status: 0 when every file is valid, 1 when any is not, 2 on a usage error (no file given).
A one-line summary goes to stderr.
"""

from __future__ import annotations

import argparse
import sys

from maestro_gateway.errors import DefinitionError, Diagnostic
from maestro_gateway.model.loader import load_file

USAGE_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``FILE…`` and ``--connect``."""
    parser.add_argument("files", nargs="*", metavar="FILE", help="workflow files to check")
    parser.add_argument(
        "--connect",
        action="store_true",
        help="also resolve every gRPC method against the live services",
    )


def validate_files(paths: list[str]) -> list[Diagnostic]:
    """Every problem of every file in ``paths``, sorted."""
    problems: list[Diagnostic] = []
    for path in paths:
        try:
            load_file(path)
        except DefinitionError as exc:
            problems.extend(exc.diagnostics)
    return sorted(problems)


def run(args: argparse.Namespace) -> int:
    """Validate ``args.files``; return the exit status."""
    if not args.files:
        print("maestro validate: give at least one workflow file", file=sys.stderr)
        return USAGE_ERROR
    if args.connect:
        print("maestro validate: --connect is not implemented yet", file=sys.stderr)
        return USAGE_ERROR
    problems = validate_files(args.files)
    for problem in problems:
        print(problem)
    invalid = len({p.file for p in problems})
    total = len(args.files)
    if problems:
        print(f"{invalid} of {total} file(s) invalid, {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"{total} file(s) valid", file=sys.stderr)
    return 0
