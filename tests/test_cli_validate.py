"""``maestro validate`` and ``maestro graph``: output format and exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maestro_gateway.cli import main

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "workflows"
EXAMPLES = sorted(str(p) for p in (ROOT / "workflows").glob("*.yaml"))


def test_valid_files_exit_0_and_print_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """Every example validates: exit 0, empty stdout, a summary on stderr."""
    assert main(["validate", *EXAMPLES]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "valid" in err


def test_invalid_file_prints_every_problem_with_position(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each problem is file:line:col: message, in order, and the exit status is 1."""
    path = str(FIXTURES / "many-problems.fail.yaml")
    assert main(["validate", path]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = (FIXTURES / "many-problems.fail.txt").read_text().splitlines()
    assert out == [f"{path}:{line}" for line in expected]


def test_problems_of_several_files_are_sorted_and_keep_paths_as_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths appear exactly as given; an unreadable file is a problem, not a crash."""
    monkeypatch.chdir(FIXTURES)
    assert main(["validate", "when.fail.yaml", "minimal.pass.yaml", "no/such.yaml"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("no/such.yaml:1:1: cannot read: ")
    assert [line.split(":")[0] for line in out[1:]] == ["when.fail.yaml"] * 3
    assert out[1:] == sorted(out[1:], key=lambda s: tuple(int(x) for x in s.split(":")[1:3]))


def test_no_files_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a file, validate exits 2 with a message on stderr."""
    assert main(["validate"]) == 2
    assert "at least one" in capsys.readouterr().err


def test_connect_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """--connect-timeout 0 is a usage error (exit 2); --connect itself is tested in test_validate_connect."""
    assert main(["validate", "--connect", "--connect-timeout", "0", *EXAMPLES]) == 2
    assert "--connect-timeout" in capsys.readouterr().err


def test_graph_prints_mermaid_or_problems(capsys: pytest.CaptureFixture[str]) -> None:
    """graph prints the diagram for a valid file (exit 0) and the problems for an invalid one (1)."""
    assert main(["graph", str(FIXTURES / "minimal.pass.yaml")]) == 0
    assert capsys.readouterr().out.startswith("flowchart TD\n")
    assert main(["graph", str(FIXTURES / "when.fail.yaml")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "when.fail.yaml:6:48:" in err


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m maestro_gateway`` as a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "maestro_gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )


def test_python_dash_m_validate_exit_codes() -> None:
    """python -m maestro_gateway validate: 0 for the examples, 1 for a broken file."""
    ok = run_module("validate", "workflows/checkout.yaml")
    assert (ok.returncode, ok.stdout) == (0, "")
    bad = run_module("validate", "tests/fixtures/workflows/unknown-key-top.fail.yaml")
    assert bad.returncode == 1
    assert bad.stdout == (
        "tests/fixtures/workflows/unknown-key-top.fail.yaml:5:1: "
        "workflow: unknown key 'timout' (did you mean 'timeout'?)\n"
    )


def test_python_dash_m_graph() -> None:
    """python -m maestro_gateway graph prints a flowchart."""
    result = run_module("graph", "workflows/maestro-go-style.yaml")
    assert result.returncode == 0
    assert result.stdout.startswith("flowchart TD\n")
