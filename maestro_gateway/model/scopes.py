"""Which names each expression of a workflow may read.

Every expression is compiled against an ``expr.Scope`` listing exactly the names that can hold a
value when it runs, so a reference to a later step, a parallel sibling, a step of another switch
branch or a step inside a foreach is a load error with a position, and the error explains *why*
the name is not visible (``hints``).

Rules (DESIGN §3 and §12). Steps form a tree: a list of steps (the top level, the body of a
foreach or loop, a switch branch, the children of a parallel group) holds steps that may hold
lists of their own. Then:

* a step's expressions (``input``, ``when``, ``metadata``, HTTP path; a foreach's ``foreach``
  and ``concurrency``, a workflow step's ``input``, a fail step's ``message``, a switch's
  branch conditions) see ``input``, ``workflow``, ``steps``, ``env``, what the step enclosing
  its list saw, the earlier steps of its own list, and inside a foreach or loop body the item
  and index names. A parallel child does not see its siblings;
* what a step leaves to the steps after it: its own output (and ``steps.<id>``); for a parallel
  group its children's; for a switch also every branch step's (null when skipped); for a loop
  also its body's (those of the last iteration); for a foreach or workflow step only its own;
* a loop's ``until`` sees the loop's scope, its iteration name and its whole body;
* a compensation sees what its step saw, plus the step's own output and ``error``. Parallel
  siblings are not visible: when a compensation runs a sibling may have failed or been
  cancelled, so its output is not guaranteed to exist;
* the workflow ``output`` sees what the last top-level step leaves;
* service ``metadata``/``headers`` are shared by every step calling the service, so they see only
  ``input``, ``workflow`` and ``env``;
* every scope also has ``env``, the gateway's environment, read only as a literal ``env.NAME``
  (DESIGN §9; its values are bound at load, not taken from the execution's context).

Scopes are built in one walk of the tree: each step keeps a link to a chain of layers (the names
added by each earlier step). A scope is never materialised: the layers are numbered in the
order of the walk, so the layers below a layer (the later steps of its list, and what they nest)
are a contiguous range of numbers, and a name is visible at a layer when one of the (at most a
few) layers adding it has the layer in its range; the item and index names of a foreach or loop
come from the step's enclosing kinds. Asking whether a name is visible costs the same early or
late in a long workflow (materialising every scope made loading quadratic in the number of
steps: 10,000 steps took 15 s). The explanations are computed on demand, for the names an
expression actually gets wrong, so the cost of loading stays proportional to what is visible,
not to every pair of steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from maestro_gateway import expr

_S = TypeVar("_S")

RESERVED = frozenset({"input", "workflow", "steps", "error", "env"})
"""Top-level names owned by the gateway; no step output may take them."""

_BASE = frozenset({"input", "workflow", "steps", "env"})
_ERROR_HINT = "'error' is only defined inside compensations"
_SIGNAL_HINT = "'signal' is only defined in triggers and in the 'when' of a wait step"

Kind = Literal["call", "parallel", "foreach", "workflow", "switch", "loop", "fail", "wait", "emit"]
"""The kind of a step, as the step reader names it (the key that chose it)."""

_Mode = Literal["step", "compensation", "until", "output"]


@dataclass(frozen=True, slots=True, eq=False)
class _Layer:
    """The names one step adds for the steps after it, over the layers before it.

    ``serial`` numbers the layers in the order of the walk that creates them.
    """

    parent: _Layer | None
    names: tuple[str, ...]
    ids: tuple[str, ...]
    serial: int


@dataclass(eq=False, slots=True)
class StepInfo:
    """Where one step sits in the tree of steps, as far as scopes are concerned.

    Attributes:
        id: the step id.
        output: the output name; None for parallel groups and fail steps.
        kind: the step's kind.
        parent: the step whose list holds this one (None at the top level).
        branch: for a step of a switch branch, the branch's 0-based index.
        index: the 0-based position of the step in its list.
        lists: the lists of steps nested in this one: the body (foreach, loop), one per branch
            (switch), the children (parallel).
        names: the names this step defines for its body: ``(item, index)`` for a foreach,
            ``(iteration,)`` for a loop.
        visible: whether the id and output are usable (false after a problem with either, so
            that they neither appear in scopes nor explain anything).
    """

    id: str
    output: str | None
    kind: Kind = "call"
    parent: StepInfo | None = None
    branch: int = 0
    index: int = 0
    lists: list[list[StepInfo]] = field(default_factory=list)
    names: tuple[str, ...] = ()
    visible: bool = True
    layer: _Layer | None = field(default=None, repr=False)
    """What the step sees (set by :class:`Scopes`)."""
    end: _Layer | None = field(default=None, repr=False)
    """A loop's: what its ``until`` sees (set by :class:`Scopes`)."""


class Scopes:
    """Builds the scope of every place an expression can appear, for one workflow.

    Args:
        steps: the top-level steps, each with its nested lists filled in.
    """

    def __init__(self, steps: Sequence[StepInfo]) -> None:
        self._outputs: dict[str, StepInfo] = {}
        self._ids: dict[str, StepInfo] = {}
        self._defined: dict[str, tuple[StepInfo, int]] = {}
        self._layers: list[_Layer] = []
        self._adding: tuple[dict[str, list[int]], dict[str, list[int]]] = ({}, {})
        self._end, _, _ = self._level(steps, None)
        # A layer's descendants were created after it and before the walk left its list, so
        # they are numbered serial + 1 … last[serial].
        last = list(range(len(self._layers)))
        for layer in reversed(self._layers):
            if layer.parent is not None:
                up = layer.parent.serial
                last[up] = max(last[up], last[layer.serial])
        self._last = last

    def _layer(self, parent: _Layer | None, names: Sequence[str], ids: Sequence[str]) -> _Layer:
        layer = _Layer(parent, tuple(names), tuple(ids), len(self._layers))
        self._layers.append(layer)
        for index, added in zip(self._adding, (layer.names, layer.ids), strict=True):
            for name in added:
                index.setdefault(name, []).append(layer.serial)
        return layer

    def visible(self, kind: int, name: str, layer: _Layer | None) -> bool:
        """Whether a layer in ``layer``'s chain adds ``name`` (``kind`` 0: a name, 1: an id)."""
        if layer is None:
            return False
        at, last = layer.serial, self._last
        return any(serial <= at <= last[serial] for serial in self._adding[kind].get(name, ()))

    def chain(self, kind: int, layer: _Layer | None) -> Iterator[str]:
        """Every name (``kind`` 0) or id (1) the layers of ``layer``'s chain add."""
        while layer is not None:
            yield from layer.ids if kind else layer.names
            layer = layer.parent

    # -- the walk ----------------------------------------------------------------------------

    def _level(
        self, steps: Sequence[StepInfo], layer: _Layer | None
    ) -> tuple[_Layer | None, list[str], list[str]]:
        """Walk one list of steps; return the layer after it and what it leaves."""
        names: list[str] = []
        ids: list[str] = []
        for info in steps:
            info.layer = layer
            added_names, added_ids = self._step(info, layer)
            if added_names or added_ids:
                layer = self._layer(layer, added_names, added_ids)
                names.extend(added_names)
                ids.extend(added_ids)
        return layer, names, ids

    def _step(self, info: StepInfo, layer: _Layer | None) -> tuple[list[str], list[str]]:
        """Walk what ``info`` nests; return the names and ids it leaves to later steps."""
        names: list[str] = []
        ids: list[str] = []
        if info.kind == "parallel":
            for children in info.lists:
                for child in children:
                    child.layer = layer
                    added_names, added_ids = self._step(child, layer)
                    names.extend(added_names)
                    ids.extend(added_ids)
        elif info.kind == "switch":
            for branch in info.lists:
                _, added_names, added_ids = self._level(branch, layer)
                names.extend(added_names)
                ids.extend(added_ids)
        elif info.kind in ("foreach", "loop"):
            # The body's item and index names are found through its steps' parents: see
            # _body_names.
            for position, name in enumerate(info.names):
                self._defined.setdefault(name, (info, position))
            end, added_names, added_ids = self._level(info.lists[0] if info.lists else [], layer)
            if info.kind == "loop":
                info.end = end
                names.extend(added_names)
                ids.extend(added_ids)
        if not info.visible:
            return names, ids
        if info.kind != "parallel":
            self._ids.setdefault(info.id, info)
            ids.insert(0, info.id)
        if info.output is not None:
            self._outputs.setdefault(info.output, info)
            names.insert(0, info.output)
        return names, ids

    # -- scopes ------------------------------------------------------------------------------

    def step(self, step: StepInfo) -> expr.Scope:
        """The scope of a step's own expressions (see the module docstring)."""
        return self._scope(step, "step", step.layer)

    def compensation(self, step: StepInfo) -> expr.Scope:
        """The scope of a step's compensation: the step's own scope, its output and ``error``."""
        own = (step.output,) if step.visible and step.output is not None else ()
        ids = (step.id,) if step.visible else ()
        return self._scope(step, "compensation", step.layer, (*own, "error"), ids)

    def wait(self, step: StepInfo) -> expr.Scope:
        """The scope of a wait step's ``when``: the step's own scope and ``signal``."""
        return self._scope(step, "step", step.layer, ("signal",))

    def until(self, loop: StepInfo) -> expr.Scope:
        """The scope of a loop's ``until``: the loop's scope, its iteration name and its body."""
        return self._scope(loop, "until", loop.end)

    def workflow_output(self) -> expr.Scope:
        """The scope of the workflow ``output``: what the last top-level step leaves."""
        return self._scope(None, "output", self._end)

    def service(self) -> expr.Scope:
        """The scope of service ``metadata``/``headers``: only ``input``, ``workflow`` and ``env``."""
        hints = {
            name: f"service metadata and headers can read only 'input', 'workflow' and 'env', "
            f"not step outputs such as '{name}'; set metadata on the step instead"
            for name in self._outputs
        }
        hints["steps"] = "service metadata and headers can read only 'input', 'workflow' and 'env'"
        hints["error"] = _ERROR_HINT
        return expr.Scope(frozenset({"input", "workflow", "env"}), frozenset(), hints)

    def _scope(
        self,
        place: StepInfo | None,
        mode: _Mode,
        layer: _Layer | None,
        names: Iterable[str] = (),
        ids: Iterable[str] = (),
    ) -> expr.Scope:
        """The scope at ``layer`` for ``place``, with ``names`` and ``ids`` added."""
        own = frozenset((*_BASE, *_body_names(place, mode), *names))
        visible_names = _Visible(self, 0, layer, own)
        visible_ids = _Visible(self, 1, layer, frozenset(ids))
        hints = _Hints(self, place, mode, visible_names, visible_ids)
        return expr.Scope(visible_names, visible_ids, hints)

    # -- explanations ------------------------------------------------------------------------

    def hint(
        self,
        place: StepInfo | None,
        mode: _Mode,
        name: str,
        names: AbstractSet[str],
        ids: AbstractSet[str],
    ) -> str | None:
        """Why ``name`` (a top-level name or a ``steps.<id>``) is not visible; None if unknown."""
        if name == "error" and "error" not in names:
            return _ERROR_HINT
        if name == "signal" and "signal" not in names and name not in self._outputs:
            return _SIGNAL_HINT
        other = self._outputs.get(name)
        if other is not None and name not in names:
            return self._output_hint(place, mode, other, name)
        defined = self._defined.get(name)
        if defined is not None and name not in names:
            owner, position = defined
            where = "its steps and until" if owner.kind == "loop" else "its steps"
            return f"'{name}' is {_role(owner, position)}, defined only inside {where}"
        other = self._ids.get(name)
        if other is not None and name not in ids:
            hidden = self._hiding_foreach(place, mode, other)
            if hidden is not None:
                return (
                    f"step '{other.id}' is inside foreach '{hidden.id}', which is not visible "
                    f"outside it{_through(hidden)}"
                )
            reason = self._reason(place, mode, other)
            return f"step '{other.id}' cannot have run before this point ({reason})"
        return None

    def candidates(self) -> Iterator[str]:
        """Every name a hint may explain."""
        yield "error"
        yield "signal"
        yield from self._outputs
        yield from self._defined
        yield from self._ids

    def _output_hint(self, place: StepInfo | None, mode: _Mode, other: StepInfo, name: str) -> str:
        hidden = self._hiding_foreach(place, mode, other)
        if hidden is not None:
            return (
                f"'{name}' is the output of step '{other.id}' inside foreach '{hidden.id}', which "
                f"is not visible outside it{_through(hidden)}"
            )
        reason = self._reason(place, mode, other)
        return (
            f"'{name}' is the output of step '{other.id}', which cannot have run before this "
            f"point ({reason})"
        )

    def _hiding_foreach(
        self, place: StepInfo | None, mode: _Mode, other: StepInfo
    ) -> StepInfo | None:
        """The outermost foreach holding ``other`` but not ``place``, when that is the reason.

        It is the reason when ``other`` ran before ``place`` (or ``place`` is a loop's ``until``
        and ``other`` is in its body) but inside a foreach whose body ``place`` is not in.
        """
        path_other = _path(other)
        if place is None:
            return _first_foreach(path_other[:-1])
        path_place = _path(place)
        common = _common(path_place, path_other)
        if common == len(path_other):  # other is place or encloses it
            return None
        if common == len(path_place):  # place encloses other
            if mode != "until":
                return None
            return _first_foreach(path_other[common:-1])
        mine, theirs = path_place[common], path_other[common]
        parent = mine.parent
        if parent is not None and (
            parent.kind == "parallel" or (parent.kind == "switch" and mine.branch != theirs.branch)
        ):
            return None
        if theirs.index >= mine.index:
            return None
        return _first_foreach(path_other[common:-1])

    def _reason(self, place: StepInfo | None, mode: _Mode, other: StepInfo) -> str:
        if place is None:
            return "it is not visible at the end of the workflow"
        if other is place:
            return "it is this step"
        path_place, path_other = _path(place), _path(other)
        common = _common(path_place, path_other)
        if common == len(path_other):
            return "this step is inside it"
        if common == len(path_place):
            return "a step nested in this one"
        mine, theirs = path_place[common], path_other[common]
        parent = mine.parent
        if parent is not None and parent.kind == "parallel":
            if mode == "compensation":
                return "a parallel sibling, which may have failed or been cancelled"
            return "a parallel sibling"
        if parent is not None and parent.kind == "switch" and mine.branch != theirs.branch:
            return "a step of another switch branch"
        return "a later step"


class _Visible(AbstractSet[str]):
    """The names (or step ids) visible at one layer: a set answering membership without
    listing every name of the layers before it (iterating it does list them)."""

    __slots__ = ("_kind", "_layer", "_own", "_scopes")

    def __init__(
        self, scopes: Scopes, kind: int, layer: _Layer | None, own: frozenset[str]
    ) -> None:
        self._scopes = scopes
        self._kind = kind
        self._layer = layer
        self._own = own

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (
            name in self._own or self._scopes.visible(self._kind, name, self._layer)
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._own.union(self._scopes.chain(self._kind, self._layer)))

    def __len__(self) -> int:
        return len(self._own.union(self._scopes.chain(self._kind, self._layer)))

    @classmethod
    def _from_iterable(cls, it: Iterable[_S]) -> frozenset[_S]:
        return frozenset(it)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({sorted(self)!r})"


class _Hints(Mapping[str, str]):
    """The explanations of one scope, computed for the names asked about."""

    def __init__(
        self,
        scopes: Scopes,
        place: StepInfo | None,
        mode: _Mode,
        names: AbstractSet[str],
        ids: AbstractSet[str],
    ) -> None:
        self._scopes = scopes
        self._place = place
        self._mode = mode
        self._names = names
        self._ids = ids

    def __getitem__(self, name: str) -> str:
        message = self._scopes.hint(self._place, self._mode, name, self._names, self._ids)
        if message is None:
            raise KeyError(name)
        return message

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for name in self._scopes.candidates():
            if name not in seen and name in self:
                seen.add(name)
                yield name

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _body_names(place: StepInfo | None, mode: _Mode) -> Iterator[str]:
    """The item and index names ``place`` sees: those of the foreach and loop steps whose body
    holds it (and, for a loop's ``until``, the loop's own)."""
    if place is None:
        return
    if mode == "until":
        yield from place.names
    parent = place.parent
    while parent is not None:
        if parent.kind in ("foreach", "loop"):  # its only list is its body
            yield from parent.names
        parent = parent.parent


def _path(info: StepInfo) -> list[StepInfo]:
    """``info``'s enclosing steps from the top level down, ``info`` last."""
    path = [info]
    parent = info.parent
    while parent is not None:
        path.append(parent)
        parent = parent.parent
    path.reverse()
    return path


def _common(a: list[StepInfo], b: list[StepInfo]) -> int:
    """How many leading steps the paths ``a`` and ``b`` share."""
    n = 0
    while n < len(a) and n < len(b) and a[n] is b[n]:
        n += 1
    return n


def _first_foreach(path: Sequence[StepInfo]) -> StepInfo | None:
    return next((s for s in path if s.kind == "foreach"), None)


def _through(foreach: StepInfo) -> str:
    if not foreach.visible or foreach.output is None:
        return ""
    return f"; read it through '{foreach.id}' output '{foreach.output}'"


def _role(owner: StepInfo, position: int) -> str:
    """What a name ``owner`` defines for its body is: ``the item of foreach 'lines'``."""
    if owner.kind == "loop":
        return f"the iteration number of loop '{owner.id}'"
    return f"the {'item' if position == 0 else 'index'} of foreach '{owner.id}'"
