"""A workflow as a Mermaid flowchart (``maestro graph``, and the ``graph`` of ``GetWorkflow``).

Shape: ``start`` → the steps in file order → ``end``. A parallel group is a subgraph whose
children all start from the node before the group (fork) and all lead to the node after it
(join). A top-level ``when`` is a decision node: ``yes`` runs the step, ``no`` goes straight to
what follows; a ``when`` on a parallel child labels the edge into it. A compensation is a dashed
edge from the step back to the node before it, labelled ``compensate: Method``. Node ids are
generated (``s1``, ``d2``, ``p3`` …), so step ids never meet Mermaid's grammar, and every label
is quoted with Mermaid's entity codes for the characters that would end or change it. Each step
kind has one drawer, found by the step's class in ``_DRAWERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maestro_gateway.model.types import Call, CallStep, GrpcMethod, ParallelStep, Step, Workflow

_ESCAPES = {
    "&": "#amp;",
    '"': "#quot;",
    "<": "#lt;",
    ">": "#gt;",
    "{": "#123;",
    "}": "#125;",
    "[": "#91;",
    "]": "#93;",
    "(": "#40;",
    ")": "#41;",
    "|": "#124;",
    "#": "#35;",
    "`": "#96;",
    ";": "#59;",
}
_MAX_LABEL = 80

Exit = tuple[str, str | None]
"""A node the next element connects from, and the label of that edge (``no`` after a decision)."""


def escape(text: str) -> str:
    """Make ``text`` safe inside a double-quoted Mermaid label: one line, entity-coded."""
    flat = " ".join(text.split())
    if len(flat) > _MAX_LABEL:
        flat = flat[: _MAX_LABEL - 1] + "…"
    return "".join(_ESCAPES.get(ch, ch) for ch in flat)


def method_text(call: Call) -> str:
    """A call's method as written: ``Reserve``, ``pkg.Svc/Method`` or ``POST /path``."""
    method = call.method
    if isinstance(method, GrpcMethod):
        return method.text
    return f"{method.verb} {method.source}"


def to_mermaid(workflow: Workflow) -> str:
    """Render ``workflow`` as Mermaid ``flowchart TD`` source, ending with a newline."""
    return _Builder(workflow).build()


class _Builder:
    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.lines = ["flowchart TD"]
        self.counter = 0

    def build(self) -> str:
        self.lines.append(f'    start(["{escape(self.workflow.name)}"])')
        exits: list[Exit] = [("start", None)]
        for step in self.workflow.steps:
            exits = self._draw(step, exits)
        self.lines.append('    finish(["end"])')
        self._connect(exits, "finish")
        return "\n".join(self.lines) + "\n"

    def _draw(self, step: Step, exits: list[Exit]) -> list[Exit]:
        """Draw ``step`` after ``exits`` with the drawer of its kind; return its exits."""
        draw: Callable[[_Builder, Any, list[Exit]], list[Exit]] = _DRAWERS[type(step)]
        return draw(self, step, exits)

    def _new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _edge(self, source: str, target: str, label: str | None) -> None:
        if label:
            self.lines.append(f'    {source} -->|"{escape(label)}"| {target}')
        else:
            self.lines.append(f"    {source} --> {target}")

    def _connect(self, exits: list[Exit], target: str, extra: str | None = None) -> None:
        for source, label in exits:
            self._edge(source, target, " · ".join(x for x in (label, extra) if x))

    def _box(self, step: CallStep, indent: str) -> str:
        node = self._new_id("s")
        detail = escape(f"{step.call.service.name}: {method_text(step.call)}")
        self.lines.append(f'{indent}{node}["{escape(step.id)}<br/>{detail}"]')
        return node

    def _compensation(self, step: CallStep, node: str, exits: list[Exit]) -> None:
        if step.compensate is not None:
            back_to = exits[0][0] if len(exits) == 1 else "start"
            label = escape(f"compensate: {method_text(step.compensate)}")
            self.lines.append(f'    {node} -.->|"{label}"| {back_to}')

    def _step(self, step: CallStep, exits: list[Exit]) -> list[Exit]:
        if step.when is None:
            node = self._box(step, "    ")
            self._connect(exits, node)
            self._compensation(step, node, exits)
            return [(node, None)]
        decision = self._new_id("d")
        self.lines.append(f'    {decision}{{"when {escape(step.when.expression)}"}}')
        self._connect(exits, decision)
        node = self._box(step, "    ")
        self._edge(decision, node, "yes")
        self._compensation(step, node, [(decision, None)])
        return [(node, None), (decision, "no")]

    def _parallel(self, group: ParallelStep, exits: list[Exit]) -> list[Exit]:
        subgraph = self._new_id("p")
        self.lines.append(f'    subgraph {subgraph}["parallel: {escape(group.id)}"]')
        nodes = [(child, self._box(child, "        ")) for child in group.steps]
        self.lines.append("    end")
        for child, node in nodes:
            when = f"when {child.when.expression}" if child.when else None
            self._connect(exits, node, when)
            self._compensation(child, node, exits)
        return [(node, None) for _, node in nodes]


_DRAWERS: dict[type[Any], Callable[[_Builder, Any, list[Exit]], list[Exit]]] = {
    CallStep: _Builder._step,
    ParallelStep: _Builder._parallel,
}
"""The drawer of each step kind: draws one step after the given exits and returns its exits."""
