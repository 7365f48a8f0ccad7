"""A workflow as a Mermaid flowchart (``maestro graph``, and the ``graph`` of ``GetWorkflow``).

Shape: ``start`` → the steps in file order → ``end``. A parallel group is a subgraph whose
children all start from the node before the group (fork) and all lead to the node after it
(join). A ``when`` is a decision node: ``yes`` runs the step, ``no`` goes straight to what
follows; a ``when`` on a parallel child labels the edge into it. A compensation is a dashed
edge from the step back to the node before it, labelled ``compensate: Method``.

The kinds of DESIGN §12: a foreach and a loop are subgraphs holding their body (a loop's body
also has a dashed ``repeat`` edge back to its start); a switch is a decision node whose edges,
labelled with each branch's condition (``default`` for the default branch), lead into the
branches' steps, and an edge ``no branch`` leads past them when there is no default; a
workflow step is a subroutine box naming the child; a fail step is a box after which nothing
follows.

Node ids are generated (``s1``, ``d2``, ``p3`` …), so step ids never meet Mermaid's grammar, and
every label is quoted with Mermaid's entity codes for the characters that would end or change
it. Edges drawn while inside a subgraph are written after the outermost subgraph closes (an edge
inside a subgraph block would move nodes it names into it). Each step kind has one drawer,
found by the step's class in ``_DRAWERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maestro_gateway.model.types import (
    Call,
    CallStep,
    EmitStep,
    FailStep,
    ForeachStep,
    GrpcMethod,
    LoopStep,
    ParallelStep,
    Step,
    SwitchStep,
    WaitStep,
    Workflow,
    WorkflowStep,
)

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
        self.depth = 0
        self.pending: list[str] = []

    def build(self) -> str:
        self.lines.append(f'    start(["{escape(self.workflow.name)}"])')
        for index, trigger in enumerate(self.workflow.triggers):
            # A signal that starts the workflow, with its condition on the edge.
            node = f"trigger{index + 1}"
            self.lines.append(f'    {node}>"signal {escape(trigger.signal)}"]')
            if trigger.when is None:
                self.lines.append(f"    {node} -.-> start")
            else:
                self.lines.append(f'    {node} -.->|"{escape(trigger.when.expression)}"| start')
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

    def _sequence(self, steps: tuple[Step, ...], exits: list[Exit]) -> list[Exit]:
        for step in steps:
            exits = self._draw(step, exits)
        return exits

    def _new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    @property
    def _indent(self) -> str:
        return "    " * (self.depth + 1)

    def _emit_edge(self, line: str) -> None:
        (self.pending if self.depth else self.lines).append(line)

    def _edge(self, source: str, target: str, label: str | None) -> None:
        if label:
            self._emit_edge(f'    {source} -->|"{escape(label)}"| {target}')
        else:
            self._emit_edge(f"    {source} --> {target}")

    def _connect(self, exits: list[Exit], target: str, extra: str | None = None) -> None:
        for source, label in exits:
            self._edge(source, target, " · ".join(x for x in (label, extra) if x))

    def _open(self, prefix: str, title: str) -> None:
        subgraph = self._new_id(prefix)
        self.lines.append(f'{self._indent}subgraph {subgraph}["{escape(title)}"]')
        self.depth += 1

    def _close(self) -> None:
        self.depth -= 1
        self.lines.append(f"{self._indent}end")
        if not self.depth:
            self.lines.extend(self.pending)
            self.pending = []

    def _node(self, label: str, shape: str = "[]") -> str:
        node = self._new_id("s")
        opening, closing = shape[: len(shape) // 2], shape[len(shape) // 2 :]
        self.lines.append(f'{self._indent}{node}{opening}"{label}"{closing}')
        return node

    def _box(self, step: CallStep, indent: str | None = None) -> str:
        node = self._new_id("s")
        detail = escape(f"{step.call.service.name}: {method_text(step.call)}")
        if step.continue_on_error:
            detail += " · continue on error"
        self.lines.append(f'{indent or self._indent}{node}["{escape(step.id)}<br/>{detail}"]')
        return node

    def _compensation(self, step: CallStep, node: str, exits: list[Exit]) -> None:
        if step.compensate is not None:
            back_to = exits[0][0] if len(exits) == 1 else "start"
            label = escape(f"compensate: {method_text(step.compensate)}")
            self._emit_edge(f'    {node} -.->|"{label}"| {back_to}')

    def _decision(self, label: str, exits: list[Exit]) -> str:
        """A decision node labelled ``label`` (already escaped), after ``exits``."""
        decision = self._new_id("d")
        self.lines.append(f'{self._indent}{decision}{{"{label}"}}')
        self._connect(exits, decision)
        return decision

    def _guarded(
        self, step: Step, exits: list[Exit], body: Callable[[list[Exit]], list[Exit]]
    ) -> list[Exit]:
        """Draw ``body`` after ``exits``, behind a decision when ``step`` has a ``when``."""
        when = getattr(step, "when", None)
        if when is None:
            return body(exits)
        decision = self._decision(f"when {escape(when.expression)}", exits)
        return [*body([(decision, "yes")]), (decision, "no")]

    def _step(self, step: CallStep, exits: list[Exit]) -> list[Exit]:
        if step.when is None:
            node = self._box(step)
            self._connect(exits, node)
            self._compensation(step, node, exits)
            return [(node, None)]
        decision = self._decision(f"when {escape(step.when.expression)}", exits)
        node = self._box(step)
        self._edge(decision, node, "yes")
        self._compensation(step, node, [(decision, None)])
        return [(node, None), (decision, "no")]

    def _parallel(self, group: ParallelStep, exits: list[Exit]) -> list[Exit]:
        self._open("p", f"parallel: {group.id}")
        out: list[Exit] = []
        for child in group.steps:
            if isinstance(child, CallStep):
                node = self._box(child)
                when = f"when {child.when.expression}" if child.when else None
                self._connect(exits, node, when)
                self._compensation(child, node, exits)
                out.append((node, None))
            else:
                out.extend(self._draw(child, exits))
        self._close()
        return out

    def _foreach(self, step: ForeachStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            title = f"foreach: {step.id} ({step.item_name} in {_source(step.items)})"
            self._open("f", title)
            out = self._sequence(step.steps, entry)
            self._close()
            return out

        return self._guarded(step, exits, body)

    def _loop(self, step: LoopStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            title = f"loop: {step.id} (at most {step.max_iterations})"
            self._open("l", title)
            first = len(self.lines)
            out = self._sequence(step.steps, entry)
            self._close()
            head = _first_node(self.lines, first)
            if head is not None:
                label = escape(f"repeat unless {step.until.expression}")
                for source, _ in out:
                    self._emit_edge(f'    {source} -.->|"{label}"| {head}')
            return out

        return self._guarded(step, exits, body)

    def _switch(self, step: SwitchStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            decision = self._decision(f"switch: {escape(step.id)}", entry)
            out: list[Exit] = []
            for branch in step.branches:
                label = f"when {branch.when.expression}" if branch.when else "default"
                out.extend(self._sequence(branch.steps, [(decision, label)]))
            if step.branches[-1].when is not None:
                out.append((decision, "no branch"))
            return out

        return self._guarded(step, exits, body)

    def _workflow_step(self, step: WorkflowStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            detail = f"workflow: {step.workflow}"
            if step.continue_on_error:
                detail += " · continue on error"
            node = self._node(f"{escape(step.id)}<br/>{escape(detail)}", "[[]]")
            self._connect(entry, node)
            return [(node, None)]

        return self._guarded(step, exits, body)

    def _fail(self, step: FailStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            node = self._node(f"{escape(step.id)}<br/>fail: {step.code.name}", "[/\\]")
            self._connect(entry, node)
            return []

        return self._guarded(step, exits, body)

    def _wait(self, step: WaitStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            detail = f"wait for {step.signal} · {step.timeout:g}s"
            if step.match is not None:
                detail += f" · {step.match.expression}"
            node = self._node(f"{escape(step.id)}<br/>{escape(detail)}", "{{}}")
            self._connect(entry, node)
            return [(node, None)]

        return self._guarded(step, exits, body)

    def _emit(self, step: EmitStep, exits: list[Exit]) -> list[Exit]:
        def body(entry: list[Exit]) -> list[Exit]:
            node = self._node(f"{escape(step.id)}<br/>emit {escape(step.signal)}", ">]")
            self._connect(entry, node)
            return [(node, None)]

        return self._guarded(step, exits, body)


def _source(template: Any) -> str:
    """A template's text for a title: its expressions, or ``a list`` for a literal."""
    expressions = getattr(template, "expressions", ())
    return " ".join(expressions) if expressions else "a list"


def _first_node(lines: list[str], start: int) -> str | None:
    """The first node declared in ``lines`` from ``start`` on (a body's entry)."""
    for line in lines[start:]:
        head = line.strip()
        if head.startswith("subgraph") or head == "end":
            continue
        return head.split("[", 1)[0].split("{", 1)[0]
    return None


_DRAWERS: dict[type[Any], Callable[[_Builder, Any, list[Exit]], list[Exit]]] = {
    CallStep: _Builder._step,
    ParallelStep: _Builder._parallel,
    ForeachStep: _Builder._foreach,
    LoopStep: _Builder._loop,
    SwitchStep: _Builder._switch,
    WorkflowStep: _Builder._workflow_step,
    FailStep: _Builder._fail,
    WaitStep: _Builder._wait,
    EmitStep: _Builder._emit,
}
"""The drawer of each step kind: draws one step after the given exits and returns its exits."""
