"""Reading the ``steps`` section: every step kind, at every nesting level (DESIGN §3, §12).

A step's kind is chosen by the key it holds: ``parallel``, ``foreach``, ``workflow``,
``switch``, ``loop`` or ``fail``; a step with none of them is a call step (``service`` and
``method``). Kinds nest (a foreach body may hold a switch holding a parallel group …) up to
``MAX_NESTING`` levels; a parallel group directly inside another is refused, as nothing would
differ from one group.

Two passes: ``StepReader.structure`` reads the tree of steps (ids, output names, the names a body
defines, the nested lists: everything the scopes depend on) and checks the names are unique in
the whole file; ``StepReader.build`` then compiles every expression with the scope of its place
(``maestro_gateway.model.scopes``) and builds the immutable steps. Calls themselves (services,
methods, compensations) are read by ``maestro_gateway.model.calls``, and the rules for ids and
names by ``maestro_gateway.model.names``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from maestro_gateway import expr
from maestro_gateway.codes import Code
from maestro_gateway.expr.scan import split_template
from maestro_gateway.model.calls import CallReader
from maestro_gateway.model.context import LoadContext, did_you_mean
from maestro_gateway.model.names import WORKFLOW_NAME, StepNames, named_where
from maestro_gateway.model.scopes import Kind, Scopes, StepInfo
from maestro_gateway.model.triggers import signal_name
from maestro_gateway.model.types import (
    DEFAULT_MAX_ITEMS,
    MAX_NESTING,
    CallStep,
    EmitStep,
    FailStep,
    ForeachStep,
    LoopStep,
    ParallelStep,
    Service,
    Step,
    SwitchBranch,
    SwitchStep,
    WaitStep,
    WorkflowStep,
)
from maestro_gateway.model.yamlnodes import (
    INT,
    STR,
    MappingNode,
    Node,
    ScalarNode,
    SequenceNode,
    kind,
    pairs,
    position,
)

STEP_KEYS = (
    "id",
    "service",
    "method",
    "input",
    "output",
    "when",
    "timeout",
    "retry",
    "metadata",
    "headers",
    "compensate",
    "continue_on_error",
)
"""The keys of a call step."""

KIND_KEYS: tuple[Kind, ...] = (
    "parallel",
    "foreach",
    "workflow",
    "switch",
    "loop",
    "fail",
    "wait",
    "emit",
)
"""The keys that choose a step's kind (a step without any is a call step)."""

_KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "parallel": (("id", "parallel"), ()),
    "foreach": (
        (
            "id",
            "foreach",
            "as",
            "index_as",
            "concurrency",
            "max_items",
            "steps",
            "output",
            "when",
            "continue_on_error",
        ),
        ("id", "foreach", "steps"),
    ),
    "workflow": (
        ("id", "workflow", "input", "output", "when", "continue_on_error"),
        ("id", "workflow"),
    ),
    "switch": (("id", "switch", "output", "when"), ("id", "switch")),
    "loop": (("id", "loop", "output", "when"), ("id", "loop")),
    "fail": (("id", "fail", "when"), ("id", "fail")),
    "wait": (("id", "wait", "output", "when"), ("id", "wait")),
    "emit": (("id", "emit", "output", "when"), ("id", "emit")),
}
"""The keys each kind allows, and those it requires."""

BRANCH_KEYS = ("when", "steps")
LOOP_KEYS = ("steps", "until", "max_iterations", "delay", "index_as")
FAIL_KEYS = ("code", "message")
WAIT_KEYS = ("signal", "when", "timeout")
EMIT_KEYS = ("signal", "params", "signal_id")
_INNER: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fail": (FAIL_KEYS, FAIL_KEYS),
    "wait": (WAIT_KEYS, ("signal", "timeout")),
    "emit": (EMIT_KEYS, ("signal",)),
}
"""The keys of the mapping under ``fail``, ``wait`` and ``emit``, and those it requires."""
_CONTAINERS = ("parallel", "foreach", "switch", "loop")

_FAIL_CODES = tuple(c.name for c in Code if c is not Code.OK)


@dataclass(eq=False)
class _Draft:
    """A step after the structural pass.

    ``fields`` are the step's keys; ``inner`` those of a ``loop``/``fail`` mapping;
    ``branches`` a switch's entries (entry node and keys), one per list of ``lists``.
    """

    info: StepInfo
    node: Node
    fields: dict[str, Node]
    valid: bool
    where: str
    lists: list[list[_Draft]] = field(default_factory=list)
    inner: dict[str, Node] = field(default_factory=dict)
    branches: list[tuple[Node, dict[str, Node] | None]] = field(default_factory=list)
    body_names: list[tuple[str, Node | None, str]] = field(default_factory=list)
    """The names a foreach or loop defines: (name, the node giving it or None, its path)."""

    @property
    def kind(self) -> Kind:
        return self.info.kind


class StepReader:
    """Reads the ``steps`` list of one workflow."""

    def __init__(self, ctx: LoadContext, services: Mapping[str, Service | None]) -> None:
        self.ctx = ctx
        self.services = services
        self.items: list[_Draft] = []
        self.names = StepNames(ctx)
        self._groups = 0
        self._named: list[_Draft] = []

    # -- pass 1: structure -------------------------------------------------------------------

    def structure(self, node: Node) -> list[StepInfo]:
        """Read the tree of steps; return the top-level steps' infos (nested ones linked)."""
        elements = self.ctx.items(node, "steps")
        if elements is None:
            return []
        if not elements:
            self.ctx.error(node, "steps: list at least one step")
        self.items = self._list(elements, None, 0, "steps")
        for draft in self._named:
            self._check_body_names(draft)
        return [d.info for d in self.items]

    def _list(
        self, elements: Sequence[Node], parent: _Draft | None, branch: int, where: str
    ) -> list[_Draft]:
        """Read one list of steps (``where`` is the list's path) nested in ``parent``."""
        drafts: list[_Draft] = []
        for i, element in enumerate(elements):
            keys = _kind_keys(element)
            if (
                parent is not None
                and parent.kind == "parallel"
                and any(k.value == "parallel" for k in keys)
            ):
                self.ctx.error(element, f"{where}[{i}]: parallel groups cannot be nested")
                continue
            draft = self._draft(element, keys, f"{where}[{i}]", parent, branch, len(drafts))
            drafts.append(draft)
        if parent is not None:
            parent.info.lists.append([d.info for d in drafts])
            parent.lists.append(drafts)
        return drafts

    def _draft(
        self,
        node: Node,
        keys: list[ScalarNode],
        fallback: str,
        parent: _Draft | None,
        branch: int,
        index: int,
    ) -> _Draft:
        """Read one step; ``keys`` are its kind keys (:func:`_kind_keys`)."""
        step_kind: Kind = keys[0].value if keys else "call"
        info = StepInfo("", None, step_kind, parent.info if parent else None, branch, index)
        where = named_where(node, fallback)
        others = tuple(k.value for k in keys[1:])
        for extra in keys[1:]:
            self.ctx.error(
                extra,
                f"{where}: a step has one kind, but '{step_kind}' and '{extra.value}' are both given",
            )
        if step_kind == "parallel":
            draft = self._group(node, where, info, others)
        elif step_kind == "call":
            return self._call_draft(node, where, info)
        else:
            draft = self._kind_draft(node, where, info, others)
        if others:
            draft.valid = False
        return draft

    def _kind_draft(
        self, node: Node, where: str, info: StepInfo, others: tuple[str, ...]
    ) -> _Draft:
        """Read a step of a kind other than call and parallel."""
        step_kind = info.kind
        allowed, required = _KIND_FIELDS[step_kind]
        fields = self.ctx.fields(node, where, (*allowed, *others), required=required)
        valid = fields is not None
        fields = fields or {}
        step_id = self.names.step_id(fields["id"], where) if "id" in fields else None
        draft = _Draft(info, node, fields, valid, where)
        if step_id is None:
            draft.valid = info.visible = False
        else:
            info.id = step_id
            draft.where = f"steps.{step_id}"
            if step_kind != "fail":
                output_node = fields.get("output", fields["id"])
                info.output = self.names.output(output_node, step_id, explicit="output" in fields)
                if info.output is None:
                    draft.valid = info.visible = False
        if not self._deep_enough(draft):
            return draft
        if step_kind == "foreach":
            self._foreach(draft)
        elif step_kind == "switch":
            self._switch(draft)
        elif step_kind == "loop":
            self._loop(draft)
        elif step_kind in _INNER and step_kind in fields:
            allowed_inner, required_inner = _INNER[step_kind]
            inner = self.ctx.fields(
                fields[step_kind],
                f"{draft.where}.{step_kind}",
                allowed_inner,
                required=required_inner,
            )
            draft.inner = inner or {}
            draft.valid = draft.valid and inner is not None
        return draft

    def _deep_enough(self, draft: _Draft) -> bool:
        """False (and reported) when ``draft`` is a kind nested deeper than ``MAX_NESTING``."""
        if draft.kind not in _CONTAINERS:
            return True
        depth, info = 1, draft.info
        while info.parent is not None:
            depth, info = depth + 1, info.parent
        if depth <= MAX_NESTING:
            return True
        self.ctx.error(
            draft.node,
            f"{draft.where}: steps nest at most {MAX_NESTING} levels deep (foreach, loop, switch "
            f"and parallel); this {draft.kind} would be level {depth}",
        )
        draft.valid = False
        return False

    def _group(self, node: Node, where: str, info: StepInfo, others: tuple[str, ...]) -> _Draft:
        fields = self.ctx.fields(node, where, ("id", "parallel", *others)) or {}
        self._groups += 1
        number = self._groups
        group_id = f"parallel-{number}"
        while group_id in self.names.ids:
            number += 1
            group_id = f"parallel-{number}"
        if "id" in fields:
            given = self.names.step_id(fields["id"], where)
            if given is not None:
                group_id = given
        else:
            self.names.ids[group_id] = node
        info.id = group_id
        draft = _Draft(info, node, fields, True, f"steps.{group_id}")
        if not self._deep_enough(draft):
            return draft
        where = draft.where
        children = (
            self.ctx.items(fields["parallel"], f"{where}.parallel")
            if "parallel" in fields
            else None
        )
        if children is not None and not children:
            self.ctx.error(fields["parallel"], f"{where}.parallel: list at least one step")
        self._list(children or [], draft, 0, f"{where}.parallel")
        return draft

    def _call_draft(self, node: Node, where: str, info: StepInfo) -> _Draft:
        fields = self.ctx.fields(node, where, STEP_KEYS, required=("id", "service", "method"))
        valid = fields is not None
        fields = fields or {}
        step_id = self.names.step_id(fields["id"], where) if "id" in fields else None
        if step_id is None:
            info.visible = False
            return _Draft(info, node, fields, False, where)
        output_node = fields.get("output", fields["id"])
        output = self.names.output(output_node, step_id, explicit="output" in fields)
        info.id, info.output = step_id, output
        info.visible = valid and output is not None
        return _Draft(info, node, fields, info.visible, f"steps.{step_id}")

    def _foreach(self, draft: _Draft) -> None:
        fields, where = draft.fields, draft.where
        for key, default in (("as", "item"), ("index_as", "index")):
            self._body_name(draft, key, default, fields, where)
        names = [n for n, _, _ in draft.body_names]
        if len(names) == 2 and names[0] == names[1]:
            if "index_as" in fields:
                self.ctx.error(
                    fields["index_as"],
                    f"{where}.index_as: '{names[1]}' is already the item's name (as); give the "
                    "index another name",
                )
            else:
                self.ctx.error(
                    fields["as"],
                    f"{where}.as: '{names[0]}' is also the default index name; set index_as: "
                    "to another name",
                )
            draft.valid = False
            draft.body_names.pop()
        draft.info.names = tuple(n for n, _, _ in draft.body_names)
        self._body(draft, fields.get("steps"), f"{where}.steps")
        self._named.append(draft)

    def _loop(self, draft: _Draft) -> None:
        where = f"{draft.where}.loop"
        if "loop" not in draft.fields:
            return
        inner = self.ctx.fields(
            draft.fields["loop"], where, LOOP_KEYS, required=("steps", "until", "max_iterations")
        )
        if inner is None:
            draft.valid = False
            return
        draft.inner = inner
        self._body_name(draft, "index_as", "iteration", inner, where)
        draft.info.names = tuple(n for n, _, _ in draft.body_names)
        self._body(draft, inner.get("steps"), f"{where}.steps")
        self._named.append(draft)

    def _body(self, draft: _Draft, node: Node | None, where: str) -> None:
        """Read the body of a foreach or loop: a non-empty list of steps."""
        elements = None
        if node is not None:
            elements = self.ctx.items(node, where)
            if elements is not None and not elements:
                self.ctx.error(node, f"{where}: list at least one step")
        if not elements:
            draft.valid = False
        self._list(elements or [], draft, 0, where)

    def _switch(self, draft: _Draft) -> None:
        where = f"{draft.where}.switch"
        if "switch" not in draft.fields:
            return
        entries = self.ctx.items(draft.fields["switch"], where)
        if entries is None:
            draft.valid = False
            return
        if not entries:
            self.ctx.error(draft.fields["switch"], f"{where}: list at least one branch")
            draft.valid = False
        default: int | None = None
        for b, entry in enumerate(entries):
            branch_where = f"{where}[{b}]"
            entry_fields = self.ctx.fields(entry, branch_where, BRANCH_KEYS)
            draft.branches.append((entry, entry_fields))
            if entry_fields is None:
                draft.valid = False
                self._list([], draft, b, f"{branch_where}.steps")
                continue
            if not entry_fields:
                self.ctx.error(
                    entry,
                    f"{branch_where}: a branch needs when, steps or both (a branch without "
                    "when is the default)",
                )
                draft.valid = False
            elif "when" not in entry_fields:
                if default is not None:
                    self.ctx.error(
                        entry,
                        f"{branch_where}: only one branch may be the default (without when); "
                        f"{where}[{default}] already is",
                    )
                    draft.valid = False
                else:
                    default = b
                    if b != len(entries) - 1:
                        self.ctx.error(
                            entry,
                            f"{branch_where}: the default branch (without when) must be the "
                            "last one",
                        )
                        draft.valid = False
            elements: list[Node] | None = []
            if "steps" in entry_fields:
                elements = self.ctx.items(entry_fields["steps"], f"{branch_where}.steps")
                if elements is None:
                    draft.valid = False
            self._list(elements or [], draft, b, f"{branch_where}.steps")

    def _body_name(
        self, draft: _Draft, key: str, default: str, fields: dict[str, Node], where: str
    ) -> None:
        """Read the name ``key`` (``as``, ``index_as``) a foreach or loop gives its body."""
        node = fields.get(key)
        step = (draft.where, draft.node)
        name = self.names.body_name(draft.info, node, f"{where}.{key}", default, step)
        if name is None:
            draft.valid = False
        else:
            draft.body_names.append((name, node, f"{where}.{key}"))

    def _check_body_names(self, draft: _Draft) -> None:
        """A name a body defines must not be a step output of the file (it would hide it)."""
        for name, node, where in draft.body_names:
            if self.names.hides_output(name, node, where, (draft.where, draft.node)):
                draft.valid = False

    # -- pass 2: build -----------------------------------------------------------------------

    def build(self, scopes: Scopes) -> tuple[Step, ...] | None:
        """Compile every step; None when any problem was found (all of them reported)."""
        self._calls = CallReader(self.ctx, self.services)
        self._scopes = scopes
        self._builders: dict[Kind, Callable[[_Draft], Step | None]] = {
            "call": self._call_step,
            "parallel": self._parallel_step,
            "foreach": self._foreach_step,
            "workflow": self._workflow_step,
            "switch": self._switch_step,
            "loop": self._loop_step,
            "fail": self._fail_step,
            "wait": self._wait_step,
            "emit": self._emit_step,
        }
        return self._build_list(self.items)

    def _build_list(self, drafts: Sequence[_Draft]) -> tuple[Step, ...] | None:
        built = [self._builders[d.kind](d) for d in drafts]
        steps = [s for s in built if s is not None]
        return tuple(steps) if len(steps) == len(built) else None

    def _common(self, draft: _Draft, scope: expr.Scope) -> tuple[bool, expr.Condition | None]:
        """Read ``when`` and check ``valid``: (whether they are fine, the condition)."""
        when = None
        ok = draft.valid
        if "when" in draft.fields:
            when = self.ctx.condition(draft.fields["when"], scope, f"{draft.where}.when")
            ok = ok and when is not None
        return ok, when

    def _flag(self, draft: _Draft) -> bool | None:
        """``continue_on_error`` (false when absent, None when invalid)."""
        node = draft.fields.get("continue_on_error")
        if node is None:
            return False
        return self.ctx.boolean(node, f"{draft.where}.continue_on_error")

    def _call_step(self, draft: _Draft) -> CallStep | None:
        info, fields = draft.info, draft.fields
        where = draft.where
        scope = self._scopes.step(info)
        service = self._calls.service(fields.get("service"), f"{where}.service")
        call = self._calls.call(fields, where, service, scope, None)
        ok, when = self._common(draft, scope)
        compensate = None
        if "compensate" in fields:
            compensate = self._calls.compensate(
                fields["compensate"],
                f"{where}.compensate",
                service,
                call,
                self._scopes.compensation(info),
            )
        flag = self._flag(draft)
        if not ok or call is None or flag is None or info.output is None:
            return None
        if "compensate" in fields and compensate is None:
            return None
        return CallStep(info.id, call, info.output, when, compensate, position(draft.node), flag)

    def _parallel_step(self, draft: _Draft) -> ParallelStep | None:
        children = self._build_list(draft.lists[0] if draft.lists else [])
        if not draft.valid or not children:
            return None
        return ParallelStep(draft.info.id, children, position(draft.node))

    def _foreach_step(self, draft: _Draft) -> ForeachStep | None:
        info, fields, where = draft.info, draft.fields, draft.where
        scope = self._scopes.step(info)
        items = None
        if "foreach" in fields:
            items = self._items(fields["foreach"], scope, f"{where}.foreach")
        concurrency: expr.Template | None = None
        concurrency_ok = True
        if "concurrency" in fields:
            concurrency = self._concurrency(fields["concurrency"], scope, f"{where}.concurrency")
            concurrency_ok = concurrency is not None
        max_items: int | None = DEFAULT_MAX_ITEMS
        if "max_items" in fields:
            max_items = self.ctx.integer(fields["max_items"], f"{where}.max_items", 1)
        ok, when = self._common(draft, scope)
        flag = self._flag(draft)
        body = self._build_list(draft.lists[0] if draft.lists else [])
        if (
            not ok
            or items is None
            or not concurrency_ok
            or max_items is None
            or flag is None
            or not body
            or info.output is None
        ):
            return None
        item_name, index_name = info.names
        return ForeachStep(
            id=info.id,
            items=items,
            steps=body,
            output=info.output,
            item_name=item_name,
            index_name=index_name,
            concurrency=concurrency,
            max_items=max_items,
            when=when,
            continue_on_error=flag,
            position=position(draft.node),
        )

    def _items(self, node: Node, scope: expr.Scope, where: str) -> expr.Template | None:
        """A foreach's list: a literal list, or one ``{{ expression }}`` evaluated when it starts."""
        if isinstance(node, ScalarNode) and node.tag == STR and _one_expression(node.value):
            return self.ctx.template(node, scope, where)
        if isinstance(node, SequenceNode):
            return self.ctx.template(node, scope, where)
        got = f"'{node.value}'" if isinstance(node, ScalarNode) and node.tag == STR else kind(node)
        self.ctx.error(
            node, f"{where}: expected a list or one {{{{ expression }}}} yielding a list, got {got}"
        )
        return None

    def _concurrency(self, node: Node, scope: expr.Scope, where: str) -> expr.Template | None:
        """A positive integer, or one ``{{ expression }}`` evaluated when the foreach starts."""
        if isinstance(node, ScalarNode) and node.tag == INT:
            value = self.ctx.integer(node, where, 1)
            return None if value is None else expr.constant(value)
        if isinstance(node, ScalarNode) and node.tag == STR and _one_expression(node.value):
            return self.ctx.template(node, scope, where)
        got = f"'{node.value}'" if isinstance(node, ScalarNode) and node.tag == STR else kind(node)
        self.ctx.error(
            node, f"{where}: expected an integer ≥ 1 or one {{{{ expression }}}}, got {got}"
        )
        return None

    def _workflow_step(self, draft: _Draft) -> WorkflowStep | None:
        info, fields, where = draft.info, draft.fields, draft.where
        scope = self._scopes.step(info)
        name = None
        if "workflow" in fields:
            name = self.ctx.string(fields["workflow"], f"{where}.workflow")
            if name is not None and not WORKFLOW_NAME.fullmatch(name):
                self.ctx.error(
                    fields["workflow"],
                    f"{where}.workflow: '{name}' is not a workflow name (letters, digits, '_', '.' "
                    "and '-')",
                )
                name = None
        request: expr.Template | None = expr.constant({})
        if "input" in fields:
            request = self.ctx.template(fields["input"], scope, f"{where}.input")
        ok, when = self._common(draft, scope)
        flag = self._flag(draft)
        if not ok or name is None or request is None or flag is None or info.output is None:
            return None
        # The position is the name's: problems found when linking (maestro_gateway.model.bundle)
        # are about it.
        return WorkflowStep(
            info.id, name, request, info.output, when, flag, position(fields["workflow"])
        )

    def _switch_step(self, draft: _Draft) -> SwitchStep | None:
        info, where = draft.info, draft.where
        scope = self._scopes.step(info)
        ok, when = self._common(draft, scope)
        branches: list[SwitchBranch] = []
        for b, ((entry, entry_fields), drafts) in enumerate(
            zip(draft.branches, draft.lists, strict=True)
        ):
            condition = None
            if entry_fields and "when" in entry_fields:
                condition = self.ctx.condition(
                    entry_fields["when"], scope, f"{where}.switch[{b}].when"
                )
                ok = ok and condition is not None
            steps = self._build_list(drafts)
            if steps is None:
                ok = False
                continue
            branches.append(SwitchBranch(condition, steps, position(entry)))
        if not ok or not branches or info.output is None:
            return None
        return SwitchStep(info.id, tuple(branches), info.output, when, position(draft.node))

    def _loop_step(self, draft: _Draft) -> LoopStep | None:
        info, inner = draft.info, draft.inner
        where = f"{draft.where}.loop"
        ok, when = self._common(draft, self._scopes.step(info))
        until = None
        if "until" in inner:
            until = self.ctx.condition(inner["until"], self._scopes.until(info), f"{where}.until")
        iterations = None
        if "max_iterations" in inner:
            iterations = self.ctx.integer(inner["max_iterations"], f"{where}.max_iterations", 1)
        delay: float | None = 0.0
        if "delay" in inner:
            delay = self.ctx.duration(inner["delay"], f"{where}.delay", positive=False)
        body = self._build_list(draft.lists[0] if draft.lists else [])
        if (
            not ok
            or until is None
            or iterations is None
            or delay is None
            or not body
            or info.output is None
        ):
            return None
        return LoopStep(
            id=info.id,
            steps=body,
            until=until,
            max_iterations=iterations,
            output=info.output,
            delay=delay,
            index_name=info.names[0],
            when=when,
            position=position(draft.node),
        )

    def _fail_step(self, draft: _Draft) -> FailStep | None:
        info, inner = draft.info, draft.inner
        where = f"{draft.where}.fail"
        scope = self._scopes.step(info)
        ok, when = self._common(draft, scope)
        code = self._code(inner["code"], f"{where}.code") if "code" in inner else None
        message = None
        if "message" in inner:
            node = inner["message"]
            if isinstance(node, ScalarNode) and node.tag == STR:
                message = self.ctx.template(node, scope, f"{where}.message")
            else:
                self.ctx.error(node, f"{where}.message: expected a string, got {kind(node)}")
        if not ok or code is None or message is None:
            return None
        return FailStep(info.id, code, message, when, position(draft.node))

    def _wait_step(self, draft: _Draft) -> WaitStep | None:
        info, inner = draft.info, draft.inner
        where = f"{draft.where}.wait"
        scope = self._scopes.step(info)
        ok, when = self._common(draft, scope)
        signal = (
            signal_name(self.ctx, inner["signal"], f"{where}.signal") if "signal" in inner else None
        )
        match = None
        if "when" in inner:
            match = self.ctx.condition(inner["when"], self._scopes.wait(info), f"{where}.when")
            ok = ok and match is not None
        timeout = (
            self.ctx.duration(inner["timeout"], f"{where}.timeout") if "timeout" in inner else None
        )
        if not ok or signal is None or timeout is None or info.output is None:
            return None
        return WaitStep(info.id, signal, timeout, info.output, match, when, position(draft.node))

    def _emit_step(self, draft: _Draft) -> EmitStep | None:
        info, inner = draft.info, draft.inner
        where = f"{draft.where}.emit"
        scope = self._scopes.step(info)
        ok, when = self._common(draft, scope)
        signal = (
            signal_name(self.ctx, inner["signal"], f"{where}.signal") if "signal" in inner else None
        )
        params: expr.Template | None = expr.constant({})
        if "params" in inner:
            params = self.ctx.template(inner["params"], scope, f"{where}.params")
        signal_id = None
        if "signal_id" in inner:
            signal_id = self.ctx.template(inner["signal_id"], scope, f"{where}.signal_id")
            ok = ok and signal_id is not None
        if not ok or signal is None or params is None or info.output is None:
            return None
        return EmitStep(info.id, signal, params, info.output, signal_id, when, position(draft.node))

    def _code(self, node: Node, where: str) -> Code | None:
        text = self.ctx.string(node, where)
        if text is None:
            return None
        try:
            code = Code.from_name(text)
        except KeyError:
            self.ctx.error(
                node,
                f"{where}: unknown gRPC code '{text}'{did_you_mean(text.upper(), _FAIL_CODES)}",
            )
            return None
        if code is Code.OK:
            self.ctx.error(
                node, f"{where}: OK is not a failure; give the code to fail with, e.g. ABORTED"
            )
            return None
        return code


def _kind_keys(node: Node) -> list[ScalarNode]:
    """The keys of ``node`` that choose a kind, in file order."""
    if not isinstance(node, MappingNode):
        return []
    return [k for k, _ in pairs(node) if isinstance(k, ScalarNode) and k.value in KIND_KEYS]


def _one_expression(text: str) -> bool:
    """Whether ``text`` is exactly one ``{{ … }}`` (which keeps its value's type)."""
    segments, problems = split_template(text)
    if problems:
        return "{{" in text  # let the compiler report the problem
    return len(segments) == 1 and segments[0].is_expr
