"""The workflow-language test table: every ``*.pass.yaml`` loads, every ``*.fail.yaml`` fails
with exactly the diagnostics listed beside it in ``*.fail.txt`` (``line:col: message``).

The table runs with the environment ``FIXTURE_ENV`` (``env.NAME`` in the fixtures), and with no
variable whose name starts with ``MAESTRO_FIXTURE_UNSET``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maestro_gateway.errors import DefinitionError
from maestro_gateway.model.loader import load_file, load_string
from maestro_gateway.model.types import Workflow

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"
PASS = sorted(FIXTURES.glob("*.pass.yaml"))
FAIL = sorted(FIXTURES.glob("*.fail.yaml"))
FIXTURE_ENV = {
    "CRM_TOKEN": "fixture-crm-token-4f1c",
    "LEGAL_API_KEY": "fixture-legal-key-77aa",
    "TENANT_ID": "fixture-tenant-19",
    "REGION": "fixture-region-eu",
    "FEATURE_RESERVE": "on",
}


@pytest.fixture(autouse=True)
def fixture_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables the fixtures read are set; the ``MAESTRO_FIXTURE_UNSET*`` ones are not."""
    for name, value in FIXTURE_ENV.items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("MAESTRO_FIXTURE_UNSET")]:
        monkeypatch.delenv(name)


def test_the_table_is_large_enough() -> None:
    """The table covers the language with many small fixtures, each failure with its expectation."""
    assert len(PASS) >= 10
    assert len(FAIL) >= 40
    for path in FAIL:
        assert path.with_suffix(".txt").is_file(), f"missing expectation for {path.name}"


@pytest.mark.parametrize("path", PASS, ids=[p.name for p in PASS])
def test_pass_fixture_loads(path: Path) -> None:
    """A pass fixture loads into a workflow that keeps its source and path."""
    workflow = load_file(str(path))
    assert isinstance(workflow, Workflow)
    assert workflow.path == str(path)
    assert workflow.source == path.read_text()
    assert workflow.steps


@pytest.mark.parametrize("path", FAIL, ids=[p.name for p in FAIL])
def test_fail_fixture_reports_exactly_the_expected_diagnostics(path: Path) -> None:
    """A fail fixture raises DefinitionError with exactly the expected problems, in order."""
    expected = path.with_suffix(".txt").read_text().splitlines()
    with pytest.raises(DefinitionError) as info:
        load_file(str(path))
    diagnostics = info.value.diagnostics
    assert [f"{d.line}:{d.column}: {d.message}" for d in diagnostics] == expected
    assert all(d.file == str(path) for d in diagnostics)


def test_load_string_uses_the_given_path_in_diagnostics() -> None:
    """load_string names the problems with the path it is given, defaulting to <string>."""
    with pytest.raises(DefinitionError) as info:
        load_string("name: x\n")
    assert {d.file for d in info.value.diagnostics} == {"<string>"}
    with pytest.raises(DefinitionError) as info:
        load_string("name: x\n", path="some/where.yaml")
    assert (
        str(info.value.diagnostics[0])
        == "some/where.yaml:1:1: workflow: missing required key 'services'"
    )


def test_unreadable_file_is_a_positioned_problem(tmp_path: Path) -> None:
    """A missing file is reported as file:1:1: cannot read: …, not as an exception."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DefinitionError) as info:
        load_file(str(missing))
    (problem,) = info.value.diagnostics
    assert (problem.file, problem.line, problem.column) == (str(missing), 1, 1)
    assert problem.message.startswith("cannot read: ")


def test_non_utf8_file_is_a_problem(tmp_path: Path) -> None:
    """A file that is not UTF-8 is reported, not raised as UnicodeDecodeError."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DefinitionError) as info:
        load_file(str(path))
    assert info.value.diagnostics[0].message.startswith("cannot read: ")


def test_load_string_does_not_require_referenced_files() -> None:
    """Validating text away from its machine does not check TLS/descriptor files exist."""
    text = (FIXTURES / "tls-missing-file.fail.yaml").read_text()
    workflow = load_string(text, path="elsewhere/tls.yaml")
    tls = workflow.services["a"].tls
    assert tls is not None
    assert tls.ca is not None
    assert tls.ca.endswith("elsewhere/files/nosuch.pem")
