"""Step paths: the name of one run of a step within an execution (DESIGN §12).

A path is the step's id, prefixed by the kinds that may run it more than once or on behalf of
another workflow: ``reserve``, ``lines[2].reserve`` (a ``foreach`` body), ``pay.charge`` (a
sub-workflow). Steps of ``parallel`` groups and ``switch`` branches add nothing. The path is the
key of step states and results, the ``step_id`` of events and errors, and the step of journal
intents and outcomes; it is built here only, by :func:`step_path`, from the prefix of the scope
the step runs in ("" at the top level, where a path is the step id).
"""

from __future__ import annotations

StepPath = str
"""A step path, such as ``lines[2].reserve`` (a plain string: it travels in events and journals)."""


def step_path(prefix: str, step_id: str) -> StepPath:
    """The path of step ``step_id`` run in the scope whose prefix is ``prefix``."""
    return prefix + step_id if prefix else step_id


def item_prefix(path: StepPath, index: int) -> str:
    """The prefix of the steps of run ``index`` of the step at ``path`` (``lines[2].``)."""
    return f"{path}[{index}]."


def child_prefix(path: StepPath) -> str:
    """The prefix of the steps nested once in the step at ``path`` (``pay.``)."""
    return f"{path}."
