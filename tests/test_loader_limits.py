"""Bounded YAML parsing: size, nodes after alias expansion and nesting depth, each a positioned
diagnostic naming the limit, counted before anything is expanded."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from maestro_gateway.errors import DefinitionError
from maestro_gateway.model.loader import load_file, load_string
from maestro_gateway.model.yamlnodes import YamlLimits, compose

HEAD = 'name: limits\nservices:\n  s: {type: grpc, endpoint: "x:1"}\n'


def workflow(input_value: str) -> str:
    return HEAD + f"steps:\n  - {{id: a, service: s, method: M, input: {{v: {input_value}}}}}\n"


def billion_laughs(levels: int = 10, width: int = 9) -> str:
    lines = ["name: laughs", "a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    lines.append('services: {s: {type: grpc, endpoint: "x:1"}}')
    lines.append(f"steps: [{{id: a, service: s, method: M, input: *a{levels - 1}}}]")
    return "\n".join(lines) + "\n"


def problem(text: str, limits: YamlLimits) -> str:
    with pytest.raises(DefinitionError) as info:
        load_string(text, limits=limits)
    (diagnostic,) = info.value.diagnostics
    return str(diagnostic)


def test_billion_laughs_is_refused_fast_and_small() -> None:
    """A sub-kilobyte alias bomb is refused in well under a second, with little memory."""
    text = billion_laughs()
    assert len(text) < 1024
    tracemalloc.start()
    started = time.perf_counter()
    message = problem(text, YamlLimits())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "more than 100000 nodes (max_yaml_nodes)" in message
    assert elapsed < 1.0
    assert peak < 20 * 1024 * 1024


def test_node_limit_counts_expanded_aliases_exactly() -> None:
    """Nodes are counted as if every alias were expanded: at the limit loads, one more fails."""
    text = "a: &a [x, y, z]\nb: [*a, *a]\n"
    # mapping, 2 keys, list a (4), list b (1 + 2 * 4) = 1 + 2 + 4 + 9 = 16
    assert compose(text, YamlLimits(max_nodes=16)) is not None
    with pytest.raises(Exception, match=r"more than 15 nodes \(max_yaml_nodes\)"):
        compose(text, YamlLimits(max_nodes=15))


def test_depth_limit_counts_through_aliases() -> None:
    """An alias to a deep node counts its depth where it is used."""
    text = "a: &a [[[x]]]\nb: [*a]\n"
    # b's list (2) + the alias's 4 levels (3 lists and the scalar) = 6 below the mapping
    assert compose(text, YamlLimits(max_depth=6)) is not None
    with pytest.raises(Exception, match=r"deeper than 5 levels \(max_yaml_depth\)"):
        compose(text, YamlLimits(max_depth=5))


def test_depth_limit_is_positioned() -> None:
    """Too deep a document fails at the first node one level too deep (the third list here)."""
    message = problem(workflow("[[[[[]]]]]"), YamlLimits(max_depth=6))
    assert message == "<string>:5:49: nesting deeper than 6 levels (max_yaml_depth)"  # the 3rd [
    assert load_string(workflow("[[]]"), limits=YamlLimits(max_depth=6)).name == "limits"


def test_deep_nesting_beyond_python_recursion_is_a_diagnostic() -> None:
    """Thousands of levels never reach Python's recursion limit: the default depth stops them."""
    message = problem(workflow("[" * 5000 + "]" * 5000), YamlLimits())
    assert "deeper than 64 levels (max_yaml_depth)" in message


def test_size_limit_for_strings_and_files(tmp_path: Path) -> None:
    """Text over max_bytes is one diagnostic at 1:1; text at the limit is parsed."""
    text = workflow("1")
    size = len(text.encode())
    assert load_string(text, limits=YamlLimits(max_bytes=size)).name == "limits"
    assert problem(text, YamlLimits(max_bytes=size - 1)) == (
        f"<string>:1:1: the workflow is {size} bytes, over the limit of {size - 1} bytes "
        "(max_yaml_bytes)"
    )
    path = tmp_path / "w.yaml"
    path.write_text(text)
    assert load_file(str(path), limits=YamlLimits(max_bytes=size)).name == "limits"
    with pytest.raises(DefinitionError) as info:
        load_file(str(path), limits=YamlLimits(max_bytes=size - 1))
    assert str(info.value.diagnostics[0]) == (
        f"{path}:1:1: the workflow is larger than the limit of {size - 1} bytes (max_yaml_bytes)"
    )


def test_maestro_validate_refuses_billion_laughs(tmp_path: Path) -> None:
    """``maestro validate`` on an alias bomb exits 1 quickly with the positioned diagnostic."""
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    maestro = str(Path(sys.executable).parent / "maestro")
    started = time.monotonic()
    done = subprocess.run(
        [maestro, "validate", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert time.monotonic() - started < 15
    assert done.returncode == 1
    assert f"{path}:" in done.stdout
    assert "max_yaml_nodes" in done.stdout


def test_maestro_validate_limit_flags(tmp_path: Path) -> None:
    """--max-yaml-depth and --max-yaml-nodes change the limits (and appear in --help)."""
    path = tmp_path / "w.yaml"
    path.write_text(workflow("[[[]]]"))
    maestro = str(Path(sys.executable).parent / "maestro")

    def validate(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [maestro, "validate", *flags, str(path)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    assert validate().returncode == 0
    tight = validate("--max-yaml-depth", "5")
    assert tight.returncode == 1
    assert "deeper than 5 levels (max_yaml_depth)" in tight.stdout
    assert "max_yaml_nodes" in validate("--max-yaml-nodes", "10").stdout
    assert "max_yaml_bytes" in validate("--max-yaml-bytes", "10").stdout
    helptext = subprocess.run(
        [maestro, "validate", "--help"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    for flag in ("--max-yaml-bytes", "--max-yaml-nodes", "--max-yaml-depth"):
        assert flag in helptext
