"""Workflows loaded together: linking ``workflow`` steps to the workflows they run (DESIGN §12).

The loader reads one file, so a :class:`~maestro_gateway.model.types.WorkflowStep` leaves it with
``child`` None. Once every workflow loaded together is known (``maestro serve``'s directory; for
``maestro validate`` and ``maestro execute`` the files of the given file's directory, or of
``--workflows DIR``), :func:`link` sets every ``child`` and reports, at the step's ``workflow:``
value in the parent's file:

* a name no workflow has (with a did-you-mean), or one whose file does not load (followed by
  that file's own problems);
* a cycle (``a → b → a``), at the step of each workflow of the cycle that leads into it;
* a chain of sub-workflows deeper than ``MAX_NESTING``;
* a workflow whose sub-workflow cannot run for one of these reasons (followed by the child's
  problems), since it could not run either.

:func:`load_together` (``maestro validate``) and :func:`load_linked` (``maestro execute``) load
files with the workflows they need from a directory. A workflow's name is inside its file, so a
directory's files are first scanned for their ``name:`` line and only the files a workflow needs
are loaded (every file whose name cannot be read that way too); a file of the directory that does
not load is a problem only when a workflow given needs it.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

from maestro_gateway.errors import DefinitionError, Diagnostic
from maestro_gateway.model.context import EnvPolicy, did_you_mean
from maestro_gateway.model.loader import load_file
from maestro_gateway.model.names import WORKFLOW_NAME
from maestro_gateway.model.types import MAX_NESTING, Workflow, WorkflowStep, walk
from maestro_gateway.model.yamlnodes import YamlLimits, default_limits

WORKFLOW_SUFFIXES = (".yaml", ".yml")
"""The files of a directory that hold workflows."""

_NAME = f"({WORKFLOW_NAME.pattern})"
_NAME_LINE = re.compile(
    rf"""^name[ \t]*:[ \t]*(?:"{_NAME}"|'{_NAME}'|{_NAME})[ \t]*(?:#[^\r\n]*)?\r?$""",
    re.MULTILINE,
)
_LISTED = 20


def link(
    workflows: Mapping[str, Workflow],
    unloadable: Mapping[str, Sequence[Diagnostic]] | None = None,
    *,
    known: Collection[str] | None = None,
) -> dict[str, list[Diagnostic]]:
    """Link every ``workflow`` step of ``workflows`` (at any nesting level) to its child.

    ``child`` is set with ``object.__setattr__`` (the steps are frozen) on the steps of every
    workflow that can run, and reset to None on the others.

    Args:
        workflows: the workflows loaded together, by name.
        unloadable: names known to be those of files that do not load, with their problems
            (reported, after the step's own problem, when a workflow needs one of them).
        known: every name an unknown one may have been meant as (default: the names of
            ``workflows`` and ``unloadable``), listed in its problem with a did-you-mean.

    Returns:
        By workflow name, the problems that keep it from running, in order (a workflow that
        can run has no entry). Each list starts with problems in that workflow's file and may
        go on with problems of the files it needs.
    """
    unloadable = unloadable or {}
    edges: dict[str, list[tuple[WorkflowStep, str]]] = {}
    problems: dict[str, list[Diagnostic]] = {}
    reasons: dict[str, str] = {}
    names = sorted(workflows)
    suggestions = sorted(set(known) if known is not None else {*workflows, *unloadable})

    def report(name: str, step: WorkflowStep, message: str, *more: Diagnostic) -> None:
        at = Diagnostic(
            workflows[name].path,
            step.position.line,
            step.position.column,
            f"steps.{step.id}.workflow: {message}",
        )
        problems.setdefault(name, []).extend((at, *more))

    for name in names:
        out = edges[name] = []
        for step in _workflow_steps(workflows[name]):
            object.__setattr__(step, "child", None)
            target = step.workflow
            if target in workflows:
                out.append((step, target))
            elif target in unloadable:
                failed = unloadable[target]
                where = f" ({failed[0].file})" if failed else ""
                report(name, step, f"sub-workflow '{target}' does not load{where}", *failed)
                reasons.setdefault(name, f"its sub-workflow '{target}' does not load")
            else:
                report(name, step, f"unknown workflow '{target}'{_known(target, suggestions)}")
                reasons.setdefault(name, f"its step '{step.id}' names unknown workflow '{target}'")

    cyclic: set[str] = set()
    for component in _cycles(names, edges):
        members = set(component)
        cyclic |= members
        for name in component:
            step, target = next((s, t) for s, t in edges[name] if t in members)
            cycle = " → ".join([name, *_path(edges, target, name, members)])
            report(name, step, f"sub-workflows form a cycle: {cycle}")
            reasons[name] = f"it is part of the cycle {cycle}"

    heights: dict[str, int] = {}
    deepest: dict[str, str] = {}
    for name in _post_order(names, edges):
        if name in cyclic:
            continue
        height = 0
        chain_step: WorkflowStep | None = None
        for step, target in edges[name]:
            if target in reasons:
                report(
                    name,
                    step,
                    f"sub-workflow '{target}' cannot run: {reasons[target]}",
                    *problems[target],
                )
                reasons.setdefault(name, f"its sub-workflow '{target}' cannot run")
            elif 1 + heights[target] > height:
                height, chain_step, deepest[name] = 1 + heights[target], step, target
        if name in reasons:
            continue
        heights[name] = height
        if height > MAX_NESTING and chain_step is not None:
            chain = [name]
            while chain[-1] in deepest:
                chain.append(deepest[chain[-1]])
            report(
                name,
                chain_step,
                f"sub-workflows nest deeper than {MAX_NESTING} levels: {' → '.join(chain)}",
            )
            reasons[name] = f"its sub-workflows nest deeper than {MAX_NESTING} levels"

    for name in names:
        if name not in problems:
            for step, target in edges[name]:
                object.__setattr__(step, "child", workflows[target])
    return {name: _unique(problems[name]) for name in names if name in problems}


def workflow_name(text: str) -> str | None:
    """The workflow name a file's text gives on a top-level ``name:`` line, or None."""
    match = _NAME_LINE.search(text)
    if match is None:
        return None
    return next(g for g in match.groups() if g is not None)


def file_workflow_name(path: str, limits: YamlLimits | None = None) -> str | None:
    """:func:`workflow_name` of the file at ``path`` (None when it cannot be read)."""
    limit = (limits or default_limits()).max_bytes
    try:
        with open(path, "rb") as handle:
            text = handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None
    return workflow_name(text)


def workflow_files(directory: str) -> list[str]:
    """The ``*.yaml``/``*.yml`` files directly in ``directory`` (``""``: the current one), sorted
    by name, as paths joined to ``directory`` as given. Raises OSError when it cannot be listed."""
    with os.scandir(directory or ".") as entries:
        names = sorted(
            e.name for e in entries if e.name.endswith(WORKFLOW_SUFFIXES) and e.is_file()
        )
    return [os.path.join(directory, name) for name in names]


@dataclass(frozen=True, slots=True)
class Loaded:
    """One file given to :func:`load_together`.

    Attributes:
        path: the file, as given.
        workflow: its workflow, linked to its sub-workflows; None when it does not load or
            cannot run (a sub-workflow unknown, cyclic, too deep or not loading).
        diagnostics: its problems, those of the files it needs that keep it from running, and
            its warnings.
    """

    path: str
    workflow: Workflow | None
    diagnostics: tuple[Diagnostic, ...]


def load_together(
    paths: Sequence[str],
    *,
    directory: str | None = None,
    env: EnvPolicy = "require",
    environ: Mapping[str, str] | None = None,
    limits: YamlLimits | None = None,
) -> list[Loaded]:
    """Load each file of ``paths`` with the sub-workflows it needs, linked.

    Names resolve among the given file itself and the workflow files of ``directory``, or of the
    file's own directory when ``directory`` is None. Files are loaded at most once per call
    (``maestro validate a.yaml b.yaml`` in one directory shares them); ``env``, ``environ`` and
    ``limits`` are as for :func:`~maestro_gateway.model.loader.load_file`, for every file.

    Returns:
        One entry per path, in order.
    """
    files = _Files(env, environ, limits)
    # The given files first, so that a file both given and needed shows the path as given.
    own = [files.load(path) for path in paths]
    results: list[Loaded] = []
    for path, (workflow, problems) in zip(paths, own, strict=True):
        if workflow is None:
            results.append(Loaded(path, None, tuple(problems)))
            continue
        broken: dict[str, list[Diagnostic]] = {}
        if _workflow_steps_in(workflow):
            where = directory if directory is not None else os.path.dirname(path)
            together, unloadable = files.closure(workflow, path, where)
            known = {workflow.name, *files.names(where), *together}
            broken = link(together, unloadable, known=known)
        found = broken.get(workflow.name, [])
        diagnostics = _unique([*found, *workflow.warnings])
        results.append(Loaded(path, None if found else workflow, tuple(diagnostics)))
    return results


def load_linked(
    path: str,
    *,
    directory: str | None = None,
    env: EnvPolicy = "require",
    environ: Mapping[str, str] | None = None,
    limits: YamlLimits | None = None,
) -> Workflow:
    """Load the file at ``path`` with its sub-workflows linked (see :func:`load_together`).

    Raises:
        DefinitionError: the file's problems, or those that keep it from running (its
            sub-workflows' problems included).
    """
    (loaded,) = load_together([path], directory=directory, env=env, environ=environ, limits=limits)
    if loaded.workflow is None:
        raise DefinitionError(list(loaded.diagnostics))
    return loaded.workflow


class _Files:
    """The files one :func:`load_together` call reads: each loaded once, each directory scanned once."""

    def __init__(
        self, env: EnvPolicy, environ: Mapping[str, str] | None, limits: YamlLimits | None
    ) -> None:
        self._env: EnvPolicy = env
        self._environ = environ
        self._limits = limits
        self._loaded: dict[str, tuple[Workflow | None, list[Diagnostic]]] = {}
        self._scanned: dict[str, list[tuple[str, str | None]]] = {}

    def load(self, path: str) -> tuple[Workflow | None, list[Diagnostic]]:
        key = os.path.realpath(path)
        if key not in self._loaded:
            try:
                workflow = load_file(
                    path, env=self._env, environ=self._environ, limits=self._limits
                )
            except DefinitionError as exc:
                self._loaded[key] = (None, list(exc.diagnostics))
            else:
                self._loaded[key] = (workflow, [])
        return self._loaded[key]

    def scan(self, directory: str) -> list[tuple[str, str | None]]:
        """The workflow files of ``directory`` with the name each gives (None: unknown)."""
        key = os.path.realpath(directory)
        if key not in self._scanned:
            try:
                paths = workflow_files(directory)
            except OSError:
                paths = []
            self._scanned[key] = [(p, file_workflow_name(p, self._limits)) for p in paths]
        return self._scanned[key]

    def names(self, directory: str) -> set[str]:
        """The names the workflow files of ``directory`` give (as far as they can be read)."""
        return {name for _, name in self.scan(directory) if name is not None}

    def closure(
        self, workflow: Workflow, path: str, directory: str
    ) -> tuple[dict[str, Workflow], dict[str, list[Diagnostic]]]:
        """``workflow`` and every workflow of ``directory`` it reaches, by name; and the names
        of files it needs that do not load, with their problems."""
        together: dict[str, Workflow] = {workflow.name: workflow}
        unloadable: dict[str, list[Diagnostic]] = {}
        own = os.path.realpath(path)
        pending = deque(_needed(workflow))
        tried: set[str] = set()
        while pending:
            name = pending.popleft()
            if name in together:
                continue
            for candidate, guessed in self.scan(directory):
                if candidate in tried or guessed not in (name, None):
                    continue
                if os.path.realpath(candidate) == own:
                    continue
                tried.add(candidate)
                child, problems = self.load(candidate)
                if child is None:
                    if guessed is not None:
                        unloadable.setdefault(guessed, problems)
                elif child.name not in together:
                    together[child.name] = child
                    pending.extend(_needed(child))
        for name in together:
            unloadable.pop(name, None)
        return together, unloadable


def _workflow_steps(workflow: Workflow) -> Iterator[WorkflowStep]:
    return (s for s in walk(workflow.steps) if isinstance(s, WorkflowStep))


def _workflow_steps_in(workflow: Workflow) -> bool:
    return next(_workflow_steps(workflow), None) is not None


def _needed(workflow: Workflow) -> list[str]:
    return [s.workflow for s in _workflow_steps(workflow)]


def _known(name: str, names: Sequence[str]) -> str:
    """`` (did you mean 'x'?) (workflows: a, b)``: what an unknown name could have been."""
    if not names:
        return " (no other workflow is known)"
    listed = ", ".join(names[:_LISTED]) + (", …" if len(names) > _LISTED else "")
    return f"{did_you_mean(name, names)} (known workflows: {listed})"


def _cycles(
    names: Sequence[str], edges: Mapping[str, list[tuple[WorkflowStep, str]]]
) -> list[list[str]]:
    """The strongly connected components that hold a cycle (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in names:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i][1]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or any(t == node for _, t in targets):
                    found.append(sorted(component))
    return found


def _path(
    edges: Mapping[str, list[tuple[WorkflowStep, str]]], start: str, goal: str, members: set[str]
) -> list[str]:
    """The names from ``start`` to ``goal`` along edges between ``members`` (breadth first)."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for _, target in edges[node]:
            if target in members and target not in previous:
                previous[target] = node
                queue.append(target)
    path = [goal]
    back = previous.get(goal)
    while back is not None:
        path.append(back)
        back = previous.get(back)
    return path[::-1]


def _post_order(
    names: Sequence[str], edges: Mapping[str, list[tuple[WorkflowStep, str]]]
) -> list[str]:
    """Every name after the names it leads to (cycles aside), depth first, iteratively."""
    done: set[str] = set()
    order: list[str] = []
    for root in names:
        if root in done:
            continue
        done.add(root)
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            targets = edges[node]
            if i < len(targets):
                work.append((node, i + 1))
                target = targets[i][1]
                if target not in done:
                    done.add(target)
                    work.append((target, 0))
                continue
            order.append(node)
    return order


def _unique(diagnostics: Sequence[Diagnostic]) -> list[Diagnostic]:
    return list(dict.fromkeys(diagnostics))
