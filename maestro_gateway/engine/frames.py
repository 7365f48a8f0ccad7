"""The contexts steps run in, inside the kinds that give their bodies one (DESIGN §12).

A foreach iteration and a loop iteration run their body in a copy of the context of the kind's
step, plus the item and its index (or the iteration number); a sub-workflow runs its steps in a
context of its own (its ``input``, its ``workflow``, its ``steps``). Each is built here, by the
kind's executor when it runs (``maestro_gateway.engine.kinds``) and by :func:`locate` when an
execution is rebuilt from its journal (``maestro_gateway.engine.recovery``): the same function
both times, so a resumed body sees what it saw before the restart.

The copy is shallow and taken when the iteration starts: everything a body may read
(``maestro_gateway.model.scopes``) is in the kind's context by then, and what the body writes
(its steps' outputs, ``steps.<id>``) stays in its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from maestro_gateway.codes import Code
from maestro_gateway.engine.calls import evaluation_failure
from maestro_gateway.engine.context import Execution, StepState
from maestro_gateway.engine.events import ErrorInfo
from maestro_gateway.engine.paths import StepPath, child_prefix, item_prefix
from maestro_gateway.errors import EvaluationError, ExecutionError
from maestro_gateway.model.schema import check_input
from maestro_gateway.model.types import (
    ForeachStep,
    LoopStep,
    ParallelStep,
    Workflow,
    WorkflowStep,
    level,
)


class KindError(Exception):
    """A kind cannot run its body: ``error`` (INVALID_ARGUMENT …) names the step path."""

    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(error.message)
        self.error = error


def iteration_ctx(
    parent: dict[str, Any],
    index_name: str,
    index: int,
    item_name: str | None = None,
    item: Any = None,
) -> dict[str, Any]:
    """The context of one iteration: ``parent``'s names, the index (and item), its own ``steps``."""
    ctx = dict(parent)
    ctx["steps"] = dict(parent["steps"])
    ctx[index_name] = index
    if item_name is not None:
        ctx[item_name] = item
    return ctx


def foreach_items(step: ForeachStep, ctx: dict[str, Any], path: StepPath) -> list[Any]:
    """The list a foreach runs over, checked against ``max_items``."""
    try:
        items = step.items.render(ctx)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "foreach")) from exc
    if not isinstance(items, list):
        raise KindError(
            ErrorInfo(
                path,
                Code.INVALID_ARGUMENT,
                f"step '{path}': foreach: expected a list, got {_kind_of(items)}",
            )
        )
    if len(items) > step.max_items:
        raise KindError(
            ErrorInfo(
                path,
                Code.INVALID_ARGUMENT,
                f"step '{path}': foreach: {len(items)} items, more than max_items ({step.max_items})",
            )
        )
    return items


def child_ctx(
    step: WorkflowStep, child: Workflow, ctx: dict[str, Any], execution_id: str, path: StepPath
) -> dict[str, Any]:
    """The context of a sub-workflow: its input (rendered and checked), its name, no steps yet."""
    try:
        value = step.input.render(ctx)
    except EvaluationError as exc:
        raise KindError(evaluation_failure(path, exc, "input")) from exc
    try:
        check_input(child, value)
    except ExecutionError as exc:
        message = f"step '{path}': workflow '{child.name}': {exc.message}"
        raise KindError(ErrorInfo(path, Code.INVALID_ARGUMENT, message)) from exc
    return {
        "input": value,
        "workflow": {"name": child.name, "version": child.version, "execution_id": execution_id},
        "steps": {},
    }


def locate(execution: Execution, path: StepPath) -> StepState:
    """The state of the step run at ``path``, made with its context when first seen.

    For a journal's events in order: the foreach, loop or workflow step enclosing a path has
    started (and its context has the outputs it saw) before any of its body's events. Raises
    ``LookupError`` when the definition has no such step.
    """
    state = execution.states.get(path)
    if state is not None:
        return state
    return _locate(execution, execution.workflow, "", path, execution.ctx, None)


def _locate(
    execution: Execution,
    workflow: Workflow,
    prefix: str,
    rest: str,
    ctx: dict[str, Any],
    parent: StepState | None,
) -> StepState:
    frames = execution.frames
    for i, char in enumerate(rest):
        if char == "[":
            kind = workflow.step(rest[:i])
            close = rest.find("].", i)
            if not isinstance(kind, (ForeachStep, LoopStep)) or close < 0:
                continue
            owner = locate(execution, prefix + rest[:i])
            index = int(rest[i + 1 : close])
            inner = item_prefix(owner.path, index)
            frame = frames.get(inner)
            if frame is None:
                if isinstance(kind, ForeachStep):
                    items = frames.get(owner.path)
                    if items is None:
                        items = foreach_items(kind, owner.ctx, owner.path)
                        frames[owner.path] = items
                    frame = iteration_ctx(
                        owner.ctx, kind.index_name, index, kind.item_name, items[index]
                    )
                else:
                    frame = iteration_ctx(owner.ctx, kind.index_name, index)
                    frames[owner.path] = max(index, frames.get(owner.path, index))
                frames[inner] = frame
            return _locate(execution, workflow, inner, rest[close + 2 :], frame, owner)
        if char == ".":
            kind = workflow.step(rest[:i])
            if not isinstance(kind, WorkflowStep) or kind.child is None:
                continue
            owner = locate(execution, prefix + rest[:i])
            inner = child_prefix(owner.path)
            frame = frames.get(inner)
            if frame is None:
                frame = child_ctx(kind, kind.child, owner.ctx, execution.execution_id, owner.path)
                frames[inner] = frame
            return _locate(execution, kind.child, inner, rest[i + 1 :], frame, owner)
    step = workflow.step(rest)
    if step is None or isinstance(step, ParallelStep):
        raise LookupError(f"the journal names step '{prefix}{rest}', which the definition lacks")
    return execution.state(step, prefix + rest, ctx, parent)


def last_iteration(execution: Execution, loop: StepState) -> dict[str, Any] | None:
    """The context of the last iteration of ``loop`` seen in the journal, if any."""
    last = execution.frames.get(loop.path)
    if not isinstance(last, int):
        return None
    frame: dict[str, Any] | None = execution.frames.get(item_prefix(loop.path, last))
    return frame


def publish_last_iteration(
    step: LoopStep, ctx: dict[str, Any], output: Mapping[str, Any], frame: dict[str, Any] | None
) -> None:
    """After a loop, its body's outputs in ``ctx`` are ``output`` (its last iteration's map),
    and its body's ``steps.<id>`` those of that iteration's context ``frame`` (DESIGN §12)."""
    for name in step.body_outputs:
        ctx[name] = output.get(name)
    if frame is not None:
        steps, inner_steps = ctx["steps"], frame["steps"]
        for inner in level(step.steps):
            if inner.id in inner_steps:
                steps[inner.id] = inner_steps[inner.id]


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__
