"""The names a workflow's steps define: step ids, output names and the names of bodies.

Step ids are unique in the whole file (nested steps included) and output names too; an output
name and a name a foreach or loop gives its body (``as``, ``index_as``) must be a CEL
identifier, not a CEL reserved word and not one of the gateway's own names (``RESERVED``). A
body's names must not hide a name it could otherwise read: the item or index of an enclosing
foreach or loop, or any step output of the file.
"""

from __future__ import annotations

import re

from maestro_gateway.model.context import LoadContext
from maestro_gateway.model.scopes import RESERVED, StepInfo
from maestro_gateway.model.yamlnodes import MappingNode, Node, ScalarNode, pairs, position

STEP_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
WORKFLOW_NAME = re.compile(r"[A-Za-z0-9_.-]+")
"""A workflow's ``name``, and what a ``workflow`` step calls."""
# CEL reserved words cannot be variable names.
CEL_RESERVED = frozenset(
    [
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ]
)


class StepNames:
    """The ids and output names of one file's steps, checked as they are read."""

    def __init__(self, ctx: LoadContext) -> None:
        self.ctx = ctx
        self.ids: dict[str, Node] = {}
        """Each step id, with the node defining it."""
        self.outputs: dict[str, tuple[str, Node]] = {}
        """Each output name, with the id of its step and the node defining it."""

    def step_id(self, node: Node, where: str) -> str | None:
        """Read a step's ``id``; None (reported) when invalid or already taken."""
        step_id = self.ctx.string(node, f"{where}.id", scalars=True)
        if step_id is None:
            return None
        if not STEP_ID.fullmatch(step_id):
            self.ctx.error(
                node, f"{where}.id: '{step_id}' may hold only letters, digits, '_', '.' and '-'"
            )
            return None
        if step_id in self.ids:
            first = position(self.ids[step_id])
            self.ctx.error(
                node,
                f"{where}.id: duplicate step id '{step_id}' (first defined at line {first.line})",
            )
            return None
        self.ids[step_id] = node
        return step_id

    def output(self, node: Node, step_id: str, *, explicit: bool) -> str | None:
        """Read a step's output name (``explicit``: from ``output``, else from its id)."""
        where = f"steps.{step_id}.output"
        name = self.ctx.string(node, where, scalars=not explicit)
        if name is None:
            return None
        invalid = None
        if not explicit:
            invalid = f"steps.{step_id}: the step id '{name}' cannot be used as its output name; add output: with a name made of letters, digits and '_'"
        if not self._usable(node, where, name, invalid):
            return None
        if name in self.outputs:
            other, first = self.outputs[name]
            self.ctx.error(
                node,
                f"{where}: output name '{name}' is already used by step '{other}' (line {position(first).line})",
            )
            return None
        self.outputs[name] = (step_id, node)
        return name

    def body_name(
        self,
        info: StepInfo,
        node: Node | None,
        where: str,
        default: str,
        step: tuple[str, Node],
    ) -> str | None:
        """Read the name (``as``, ``index_as`` at ``where``) a foreach or loop gives its body.

        ``node`` is None for the default; ``step`` is the step's path and node, where a problem
        with the default is reported. None (reported) when the name is invalid or would hide the
        item or index of an enclosing body.
        """
        key = where.rsplit(".", 1)[1]
        name: str | None = default
        if node is not None:
            name = self.ctx.string(node, where)
            if name is not None and not self._usable(node, where, name):
                return None
        if name is None:
            return None
        enclosing = _enclosing(info, name)
        if enclosing is None:
            return name
        if node is not None:
            self.ctx.error(node, f"{where}: '{name}' is already {enclosing}, which it would hide")
        else:
            self.ctx.error(
                step[1],
                f"{step[0]}: the default {key} name '{name}' is already {enclosing}, which it "
                f"would hide; set {key}: to another name",
            )
        return None

    def _usable(self, node: Node, where: str, name: str, invalid: str | None = None) -> bool:
        """Whether ``name`` (read at ``where``) is a CEL identifier the gateway does not own.

        When it is not, the problem is reported: ``invalid`` replaces the message for a name
        that is not an identifier.
        """
        if not IDENTIFIER.fullmatch(name) or name in CEL_RESERVED:
            self.ctx.error(
                node,
                invalid
                or f"{where}: '{name}' is not a valid name (letters, digits and '_', not starting with a digit)",
            )
            return False
        if name in RESERVED:
            self.ctx.error(
                node,
                f"{where}: '{name}' is reserved (input, workflow, steps, error and env are built-in names)",
            )
            return False
        return True

    def hides_output(
        self, name: str, node: Node | None, where: str, step: tuple[str, Node]
    ) -> bool:
        """Whether the body name ``name`` (read at ``where``) is a step output (reported)."""
        if name not in self.outputs:
            return False
        key = where.rsplit(".", 1)[1]
        other, first = self.outputs[name]
        line = position(first).line
        if node is not None:
            self.ctx.error(
                node,
                f"{where}: '{name}' is also the output name of step '{other}' (line {line}); "
                "choose another name",
            )
        else:
            self.ctx.error(
                step[1],
                f"{where.rsplit('.', 1)[0]}: the default {key} name '{name}' is also the output "
                f"name of step '{other}' (line {line}); set {key}: to another name",
            )
        return True


def named_where(node: Node, fallback: str) -> str:
    """``steps.<id>`` when the step has a usable id, so messages name the step."""
    if isinstance(node, MappingNode):
        for key, value in pairs(node):
            if (
                isinstance(key, ScalarNode)
                and key.value == "id"
                and isinstance(value, ScalarNode)
                and STEP_ID.fullmatch(str(value.value))
            ):
                return f"steps.{value.value}"
    return fallback


def _enclosing(info: StepInfo, name: str) -> str | None:
    """What ``name`` already is in the bodies enclosing ``info`` (``the item of foreach 'x'``)."""
    parent = info.parent
    while parent is not None:
        if name in parent.names:
            if parent.kind == "loop":
                return f"the iteration number of the enclosing loop '{parent.id}'"
            role = "item" if parent.names.index(name) == 0 else "index"
            return f"the {role} of the enclosing foreach '{parent.id}'"
        parent = parent.parent
    return None
