"""The set of workflows a gateway serves, loaded from a directory and swapped atomically.

A registry holds one immutable snapshot (a name → workflow mapping). Readers take the current
snapshot with one attribute read, so a reload never shows a half-loaded set and executions
already running keep the workflow object they started with.

Two loading policies, as operators expect them:

- :meth:`WorkflowRegistry.load` (start-up) serves every valid file and reports the others;
- :meth:`WorkflowRegistry.reload` (SIGHUP) is all or nothing: when any file is invalid, the old set
  stays in service untouched.

The files of the directory are loaded together: every ``workflow`` step is linked to the workflow
it runs (``maestro_gateway.model.bundle``), and a file whose sub-workflow is unknown, cyclic,
nested too deeply or itself invalid is invalid, with a diagnostic at the step. A reload links the
new set afresh.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from types import MappingProxyType

from maestro_gateway.errors import DefinitionError, Diagnostic
from maestro_gateway.model.context import did_you_mean
from maestro_gateway.model.types import Workflow, WorkflowStep, walk

WORKFLOW_SUFFIXES = (".yaml", ".yml")
_NAME_LINE = re.compile(r"^name\s*:", re.MULTILINE)

Loader = Callable[[str], Workflow]
"""Loads one workflow file (path as given) or raises ``DefinitionError``."""


def _default_loader(path: str) -> Workflow:
    from maestro_gateway.model.loader import load_file

    return load_file(path)


def workflow_files(directory: Path) -> list[Path]:
    """Return every ``*.yaml``/``*.yml`` file directly in ``directory``, sorted by name."""
    return sorted(p for p in directory.iterdir() if p.suffix in WORKFLOW_SUFFIXES and p.is_file())


def load_directory(
    directory: Path, loader: Loader = _default_loader
) -> tuple[dict[str, Workflow], list[Diagnostic]]:
    """Load every workflow file in ``directory``.

    Args:
        directory: the directory to scan (not recursively).
        loader: loads one file; the default is ``maestro_gateway.model.loader.load_file``.

    Returns:
        The valid workflows by name, linked to their sub-workflows, and the diagnostics of every
        invalid file. A file whose workflow name is already taken by an earlier file (in name
        order) is invalid, and so is one whose sub-workflow cannot run.
    """
    from maestro_gateway.model.bundle import file_workflow_name, link

    loaded: dict[str, Workflow] = {}
    problems: list[Diagnostic] = []
    unloadable: dict[str, list[Diagnostic]] = {}
    try:
        files = workflow_files(directory)
    except OSError as exc:
        return {}, [Diagnostic(str(directory), 0, 0, f"cannot read directory: {exc.strerror}")]
    for path in files:
        try:
            workflow = loader(str(path))
        except DefinitionError as exc:
            problems.extend(exc.diagnostics)
            name = file_workflow_name(str(path))
            if name is not None:
                unloadable.setdefault(name, list(exc.diagnostics))
            continue
        except OSError as exc:
            problems.append(Diagnostic(str(path), 0, 0, f"cannot read file: {exc.strerror}"))
            continue
        previous = loaded.get(workflow.name)
        if previous is not None:
            line = _name_line(workflow.source)
            problems.append(
                Diagnostic(
                    str(path),
                    line,
                    1 if line else 0,
                    f"workflow name '{workflow.name}' is already used by {previous.path}",
                )
            )
            continue
        loaded[workflow.name] = workflow
    for name, diagnostics in link(loaded, unloadable).items():
        del loaded[name]
        problems.extend(diagnostics)
    # A child's problems are also listed with each parent that needs it.
    return loaded, list(dict.fromkeys(problems))


def validate_source(source: str, served: Collection[str] = ()) -> list[Diagnostic]:
    """Return every problem of the workflow definition ``source`` (empty when it is valid).

    Files the text refers to (descriptor sets, TLS files) are not required to exist, and the
    gateway's environment is not read (``env.NAME`` is checked for its form only): the text may
    be checked away from the machine that will run it, and a caller must not learn which
    variables this gateway has. Its sub-workflows must be among ``served`` (the names this
    gateway serves), and not the workflow itself.
    """
    from maestro_gateway.model.loader import load_string

    try:
        workflow = load_string(source, env="skip")
    except DefinitionError as exc:
        return list(exc.diagnostics)
    problems = []
    known = sorted(set(served))
    for step in walk(workflow.steps):
        if not isinstance(step, WorkflowStep):
            continue
        at = step.position
        where = f"steps.{step.id}.workflow"
        if step.workflow == workflow.name:
            message = f"{where}: workflow '{step.workflow}' runs itself (a cycle)"
        elif step.workflow not in served:
            message = (
                f"{where}: unknown workflow '{step.workflow}'{did_you_mean(step.workflow, known)}"
                " (not served by this gateway)"
            )
        else:
            continue
        problems.append(Diagnostic(workflow.path, at.line, at.column, message))
    return problems


class WorkflowRegistry:
    """The workflows served, by name, replaced atomically on reload.

    Args:
        directory: where :meth:`load` and :meth:`reload` read files from (None: a fixed set).
        workflows: an initial set (tests and embedding), its sub-workflows linked among
            themselves; loading replaces it.
        loader: loads one file (default ``maestro_gateway.model.loader.load_file``).
    """

    def __init__(
        self,
        directory: Path | None = None,
        workflows: Mapping[str, Workflow] | None = None,
        *,
        loader: Loader = _default_loader,
    ) -> None:
        self.directory = directory
        self._loader = loader
        initial = dict(workflows or {})
        if initial:
            from maestro_gateway.model.bundle import link

            link(initial)
        self._workflows: Mapping[str, Workflow] = MappingProxyType(initial)
        self._graphs: dict[int, str] = {}

    def get(self, name: str) -> Workflow | None:
        """Return the workflow called ``name``, or None."""
        return self._workflows.get(name)

    def names(self) -> frozenset[str]:
        """The names of the workflows served now."""
        return frozenset(self._workflows)

    def all(self) -> list[Workflow]:
        """Return every served workflow, sorted by name."""
        current = self._workflows
        return [current[name] for name in sorted(current)]

    def __len__(self) -> int:
        return len(self._workflows)

    def graph(self, workflow: Workflow) -> str:
        """Return the Mermaid diagram of ``workflow`` (computed once per workflow object)."""
        key = id(workflow)
        cached = self._graphs.get(key)
        if cached is None:
            from maestro_gateway.model.graph import to_mermaid

            cached = to_mermaid(workflow)
            if self._workflows.get(workflow.name) is workflow:
                self._graphs[key] = cached
        return cached

    def load(self) -> list[Diagnostic]:
        """Load the directory, serving every valid file; return the problems of the others."""
        workflows, problems = load_directory(self._require_directory(), self._loader)
        self._swap(workflows)
        return problems

    def reload(self) -> list[Diagnostic]:
        """Reload the directory all or nothing.

        Returns:
            The problems found; when there are any, the served set is left unchanged.
        """
        workflows, problems = load_directory(self._require_directory(), self._loader)
        if not problems:
            self._swap(workflows)
        return problems

    def max_compensation_timeout(self) -> float:
        """The largest ``compensation_timeout`` of the served workflows (0 when none)."""
        return max((w.compensation_timeout for w in self._workflows.values()), default=0.0)

    def _swap(self, workflows: dict[str, Workflow]) -> None:
        self._graphs = {}
        self._workflows = MappingProxyType(workflows)

    def _require_directory(self) -> Path:
        if self.directory is None:
            raise ValueError("this registry has no workflow directory")
        return self.directory


def _name_line(source: str) -> int:
    match = _NAME_LINE.search(source)
    return source.count("\n", 0, match.start()) + 1 if match else 0
