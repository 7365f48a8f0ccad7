"""The definition a journal keeps: a workflow with its sub-workflows, loaded back linked."""

from __future__ import annotations

from pathlib import Path

import pytest

from maestro_gateway.errors import DefinitionError
from maestro_gateway.model.bundle import load_linked
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.stored import MARKER, load_stored, stored_source
from maestro_gateway.model.types import WorkflowStep, walk

PARENT = """name: checkout
services:
  shop: {type: http, endpoint: "http://127.0.0.1:1"}
steps:
  - id: pay
    workflow: payment
    input: {amount: "{{ input.amount }}"}
  - {id: done, service: shop, method: "POST /done", input: {p: "{{ pay }}"}}
"""
PAYMENT = """name: payment
input: {type: object, required: [amount]}
services:
  bank: {type: http, endpoint: "http://127.0.0.1:2"}
steps:
  - id: fraud
    workflow: fraud
  - {id: charge, service: bank, method: "POST /charge", input: {amount: "{{ input.amount }}"}}
"""
FRAUD = """name: fraud
services:
  risk: {type: http, endpoint: "http://127.0.0.1:3"}
steps:
  - {id: score, service: risk, method: "POST /score"}
"""


def children(workflow: object) -> dict[str, object]:
    return {
        s.workflow: s.child
        for s in walk(workflow.steps)  # type: ignore[attr-defined]
        if isinstance(s, WorkflowStep)
    }


def test_a_workflow_without_sub_workflows_is_stored_as_its_source() -> None:
    workflow = load_string(FRAUD)
    assert stored_source(workflow) == FRAUD
    assert load_stored(FRAUD, "<string>").name == "fraud"


def test_sub_workflows_are_stored_with_the_parent_and_linked_when_loaded(tmp_path: Path) -> None:
    for name, text in (("checkout", PARENT), ("payment", PAYMENT), ("fraud", FRAUD)):
        (tmp_path / f"{name}.yaml").write_text(text)
    parent = load_linked(str(tmp_path / "checkout.yaml"))
    stored = stored_source(parent)
    assert stored.startswith(PARENT)
    assert stored.count(MARKER) == 1
    # The files may change or go: the stored text is enough.
    for path in tmp_path.iterdir():
        path.unlink()
    again = load_stored(stored, parent.path)
    assert again.source == PARENT
    payment = children(again)["payment"]
    assert payment is not None
    assert payment.name == "payment"  # type: ignore[attr-defined]
    assert children(payment)["fraud"].name == "fraud"  # type: ignore[union-attr]


def test_a_stored_text_whose_sub_workflows_are_unreadable_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="unreadable"):
        load_stored(PARENT + MARKER + "{not json\n", "<string>")
