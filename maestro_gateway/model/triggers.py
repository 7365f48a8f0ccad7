"""Reading the ``triggers`` section: the signals that start executions (DESIGN §13).

```yaml
triggers:
  - signal: order.paid
    when: "{{ signal.params.amount > 0 }}"             # optional
    input: {order_id: "{{ signal.params.order_id }}"}   # default: the params
    dedup: "{{ signal.params.order_id }}"              # optional: one execution per value
```

Every template of a trigger sees ``signal`` (``signal_id``, ``name``, ``params``, ``time``) and
``env`` only: a trigger is evaluated before any execution exists.
"""

from __future__ import annotations

import re

from maestro_gateway import expr
from maestro_gateway.model.context import LoadContext
from maestro_gateway.model.types import SIGNAL_NAME, Trigger
from maestro_gateway.model.yamlnodes import Node, position

TRIGGER_KEYS = ("signal", "when", "input", "dedup")
_SIGNAL = re.compile(SIGNAL_NAME)
_NOT_HERE = "a trigger runs before its execution exists: it sees only 'signal' (and 'env')"
SCOPE = expr.Scope(
    frozenset({"signal", "env"}),
    frozenset(),
    {"input": _NOT_HERE, "workflow": _NOT_HERE, "steps": _NOT_HERE, "error": _NOT_HERE},
)
"""What a trigger's templates may read."""


def read_triggers(ctx: LoadContext, node: Node) -> tuple[Trigger, ...] | None:
    """The triggers of ``node`` (a list); None when any problem was reported."""
    elements = ctx.items(node, "triggers")
    if elements is None:
        return None
    triggers: list[Trigger] = []
    ok = True
    for index, element in enumerate(elements):
        trigger = _trigger(ctx, element, f"triggers[{index}]")
        if trigger is None:
            ok = False
        else:
            triggers.append(trigger)
    return tuple(triggers) if ok else None


def _trigger(ctx: LoadContext, node: Node, where: str) -> Trigger | None:
    fields = ctx.fields(node, where, TRIGGER_KEYS, required=("signal",))
    if fields is None:
        return None
    signal = signal_name(ctx, fields["signal"], f"{where}.signal") if "signal" in fields else None
    ok = True
    when = None
    if "when" in fields:
        when = ctx.condition(fields["when"], SCOPE, f"{where}.when")
        ok = ok and when is not None
    input = None
    if "input" in fields:
        input = ctx.template(fields["input"], SCOPE, f"{where}.input")
        ok = ok and input is not None
    dedup = None
    if "dedup" in fields:
        dedup = ctx.template(fields["dedup"], SCOPE, f"{where}.dedup")
        ok = ok and dedup is not None
    if not ok or signal is None:
        return None
    return Trigger(signal, when, input, dedup, position(node))


def signal_name(ctx: LoadContext, node: Node, where: str) -> str | None:
    """Read a signal name (a trigger's, a wait's or an emit's); None (reported) when invalid."""
    name = ctx.string(node, where)
    if name is not None and not _SIGNAL.fullmatch(name):
        ctx.error(node, f"{where}: '{name}' may hold only letters, digits, '_', '.', '-' and '/'")
        return None
    return name
