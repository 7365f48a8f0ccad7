"""Step kinds are dispatched by type, and step paths are built in one place (DESIGN §12)."""

from __future__ import annotations

import typing

from maestro_gateway.engine import kinds
from maestro_gateway.engine.paths import child_prefix, item_prefix, step_path
from maestro_gateway.model import graph
from maestro_gateway.model.types import Step


def test_every_step_kind_has_an_executor_and_a_drawer() -> None:
    """Each class of the ``Step`` union is registered with the engine and with the graph."""
    for cls in typing.get_args(Step):
        assert cls in kinds._KINDS
        assert cls in graph._DRAWERS


def test_step_paths_are_ids_at_the_top_level_and_prefixed_inside_kinds() -> None:
    """A top-level path is the step id; iterations and children prefix it."""
    assert step_path("", "reserve") == "reserve"
    assert step_path(item_prefix("lines", 2), "reserve") == "lines[2].reserve"
    assert step_path(child_prefix("pay"), "charge") == "pay.charge"
    assert step_path(child_prefix(step_path(item_prefix("lines", 0), "pay")), "charge") == (
        "lines[0].pay.charge"
    )
