"""Which names each expression of a workflow may read.

Every expression is compiled against an ``expr.Scope`` listing exactly the names that can hold a
value when it runs, so a reference to a later step or to a parallel sibling is a load error with
a position, and the error explains *why* the name is not visible (``hints``).

Rules (DESIGN §3):

* a step's ``input``, ``when``, ``metadata`` and HTTP path see ``input``, ``workflow``, ``steps``
  and every step before it in file order; a parallel child sees everything before its group, not
  its siblings;
* a compensation sees what its step saw, plus the step's own output and ``error``. Parallel
  siblings are not visible: when a compensation runs a sibling may have failed or been cancelled,
  so its output is not guaranteed to exist;
* the workflow ``output`` sees every step;
* service ``metadata``/``headers`` are shared by every step calling the service, so they see only
  ``input`` and ``workflow``;
* every scope also has ``env``, the gateway's environment, read only as a literal ``env.NAME``
  (DESIGN §9; its values are bound at load, not taken from the execution's context).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from maestro_gateway import expr

RESERVED = frozenset({"input", "workflow", "steps", "error", "env"})
"""Top-level names owned by the gateway; no step output may take them."""

_BASE = frozenset({"input", "workflow", "steps", "env"})


@dataclass(frozen=True, slots=True)
class StepInfo:
    """Where one call step sits: its id, output name, top-level index and parallel group."""

    id: str
    output: str
    index: int
    group: str | None = None


class Scopes:
    """Builds the scope of every place an expression can appear, for one workflow."""

    def __init__(self, steps: Sequence[StepInfo]) -> None:
        self._steps = tuple(steps)

    def step(self, step: StepInfo) -> expr.Scope:
        """The scope of a step's ``input``, ``when``, ``metadata`` and HTTP path."""
        visible = [s for s in self._steps if s.index < step.index]
        return self._scope(step, visible, _BASE, compensation=False)

    def compensation(self, step: StepInfo) -> expr.Scope:
        """The scope of a step's compensation: the step's own scope, its output and ``error``."""
        visible = [s for s in self._steps if s.index < step.index or s is step]
        return self._scope(step, visible, _BASE | {"error"}, compensation=True)

    def workflow_output(self) -> expr.Scope:
        """The scope of the workflow ``output``: every step."""
        return self._scope(None, list(self._steps), _BASE, compensation=False)

    def service(self) -> expr.Scope:
        """The scope of service ``metadata``/``headers``: only ``input``, ``workflow`` and ``env``."""
        hints = {
            s.output: f"service metadata and headers can read only 'input', 'workflow' and 'env', "
            f"not step outputs such as '{s.output}'; set metadata on the step instead"
            for s in self._steps
        }
        hints["steps"] = "service metadata and headers can read only 'input', 'workflow' and 'env'"
        hints["error"] = "'error' is only defined inside compensations"
        return expr.Scope(frozenset({"input", "workflow", "env"}), frozenset(), hints)

    def _scope(
        self,
        here: StepInfo | None,
        visible: list[StepInfo],
        base: frozenset[str],
        *,
        compensation: bool,
    ) -> expr.Scope:
        names = set(base) | {s.output for s in visible}
        ids = frozenset(s.id for s in visible)
        hints: dict[str, str] = {}
        if "error" not in base:
            hints["error"] = "'error' is only defined inside compensations"
        # By identity: comparing the dataclasses made every scope quadratic in the steps.
        seen = {id(s) for s in visible}
        for other in self._steps:
            if id(other) in seen or here is None:
                continue
            reason = _reason(here, other, compensation=compensation)
            out_msg = (
                f"'{other.output}' is the output of step '{other.id}', which cannot have "
                f"run before this point ({reason})"
            )
            if other.output != other.id:
                hints.setdefault(
                    other.id, f"step '{other.id}' cannot have run before this point ({reason})"
                )
            hints[other.output] = out_msg
        return expr.Scope(frozenset(names), ids, hints)


def _reason(here: StepInfo, other: StepInfo, *, compensation: bool) -> str:
    if other is here:
        return "it is this step"
    if here.group is not None and other.group == here.group:
        if compensation:
            return "a parallel sibling, which may have failed or been cancelled"
        return "a parallel sibling"
    return "a later step"
