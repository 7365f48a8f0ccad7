"""The definition a journal keeps of an execution: the workflow's text and its sub-workflows'.

An execution resumes with the definition it started with (DESIGN §10), sub-workflows included
(§12): a child edited or removed after the start must not change a running parent. The stored
text is the workflow's own source, unchanged when it has no sub-workflow; otherwise followed by
one line, ``# maestro-sub-workflows: {...}``, holding every workflow it reaches (by name: path
and source) as JSON. The line is a YAML comment, so the stored text is still the workflow's file
(same lines and columns for every diagnostic), and it is split off before loading anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from maestro_gateway.errors import DefinitionError, Diagnostic
from maestro_gateway.model.bundle import link
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import Workflow, WorkflowStep, walk

MARKER = "# maestro-sub-workflows: "


def stored_source(workflow: Workflow) -> str:
    """The text to journal for an execution of ``workflow`` (see the module docstring)."""
    children: dict[str, dict[str, str]] = {}
    for child in _descendants(workflow):
        children.setdefault(child.name, {"path": child.path, "source": child.source})
    if not children:
        return workflow.source
    newline = "" if workflow.source.endswith("\n") else "\n"
    return f"{workflow.source}{newline}{MARKER}{json.dumps(children, sort_keys=True)}\n"


def load_stored(text: str, path: str) -> Workflow:
    """Load a text made by :func:`stored_source`, its sub-workflows linked.

    Raises:
        DefinitionError: the workflow or one of its sub-workflows no longer loads.
    """
    own, children = _split(text, path)
    workflow = load_string(own, path)
    if not children:
        return workflow
    loaded = {name: load_string(c["source"], c["path"]) for name, c in children.items()}
    loaded[workflow.name] = workflow
    problems = link(loaded)
    if workflow.name in problems:
        raise DefinitionError(problems[workflow.name])
    return workflow


def _descendants(workflow: Workflow) -> Iterator[Workflow]:
    seen: set[int] = {id(workflow)}
    pending = [workflow]
    while pending:
        current = pending.pop()
        for step in walk(current.steps):
            child = step.child if isinstance(step, WorkflowStep) else None
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                pending.append(child)
                yield child


def _split(text: str, path: str) -> tuple[str, dict[str, dict[str, str]]]:
    start = text.rfind("\n" + MARKER)
    if start < 0:
        return text, {}
    own = text[: start + 1]
    line = text[start + 1 + len(MARKER) :].strip()
    try:
        children = json.loads(line)
    except ValueError as exc:
        raise DefinitionError(
            [Diagnostic(path, own.count("\n") + 1, 1, "the stored sub-workflows are unreadable")]
        ) from exc
    return own, children
