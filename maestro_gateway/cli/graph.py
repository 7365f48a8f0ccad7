"""``maestro graph FILE``: print a workflow as a Mermaid flowchart.

On an invalid file the problems are printed on stderr (``file:line:col: message``) and the exit
status is 1; otherwise the diagram goes to stdout and the status is 0. The environment is not
read (a diagram shows ``{{ env.NAME }}`` as written, never a value), so an unset variable is no
problem here.
"""

from __future__ import annotations

import argparse
import sys

from maestro_gateway.errors import DefinitionError
from maestro_gateway.model.graph import to_mermaid
from maestro_gateway.model.loader import load_file


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``FILE``."""
    parser.add_argument("file", metavar="FILE", help="workflow file to draw")


def run(args: argparse.Namespace) -> int:
    """Print the diagram of ``args.file``; return the exit status."""
    try:
        workflow = load_file(args.file, env="skip")
    except DefinitionError as exc:
        for problem in exc.diagnostics:
            print(problem, file=sys.stderr)
        return 1
    sys.stdout.write(to_mermaid(workflow))
    return 0
