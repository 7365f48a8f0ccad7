"""Sub-workflows loaded together (DESIGN §12): linking, unknown names, cycles, depth, the files
of a directory, and the ``--workflows`` option of ``maestro validate`` and ``maestro execute``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from maestro_gateway.cli import main
from maestro_gateway.errors import DefinitionError
from maestro_gateway.model.bundle import (
    link,
    load_linked,
    load_together,
    workflow_name,
)
from maestro_gateway.model.loader import load_string
from maestro_gateway.model.types import MAX_NESTING, ForeachStep, SwitchStep, Workflow, WorkflowStep
from maestro_gateway.server.registry import WorkflowRegistry, load_directory

SERVICES = 'services: {s: {type: http, endpoint: "http://127.0.0.1:9"}}\n'


def text(name: str, *steps: str) -> str:
    """A workflow called ``name`` with ``steps`` (YAML flow mappings, one per step)."""
    body = "".join(f"  - {step}\n" for step in steps) or "  - {id: leaf, service: s, method: /x}\n"
    return f"name: {name}\n{SERVICES}steps:\n{body}"


def calls(name: str, target: str, step: str = "sub") -> str:
    """A workflow ``name`` whose one step runs ``target``."""
    return text(name, f"{{id: {step}, workflow: {target}}}")


def loaded(*texts: str) -> dict[str, Workflow]:
    """The workflows of ``texts`` by name, each loaded from ``<name>.yaml``."""
    out = {}
    for source in texts:
        name = workflow_name(source)
        assert name is not None
        out[name] = load_string(source, f"{name}.yaml")
    return out


def messages(problems: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {name: [str(d) for d in found] for name, found in problems.items()}


def test_link_sets_the_child_of_every_workflow_step_at_any_level() -> None:
    """Workflow steps inside a foreach and a switch are linked too; nothing is reported."""
    parent = text(
        "parent",
        "{id: top, workflow: child}",
        "{id: fan, foreach: [1], steps: [{id: inner, workflow: child}]}",
        "{id: pick, switch: [{steps: [{id: branch, workflow: other}]}]}",
    )
    workflows = loaded(parent, text("child"), text("other"))
    assert link(workflows) == {}
    top, fan, pick = workflows["parent"].steps
    assert isinstance(top, WorkflowStep)
    assert top.child is workflows["child"]
    assert isinstance(fan, ForeachStep)
    assert isinstance(pick, SwitchStep)
    inner, branch = fan.steps[0], pick.branches[0].steps[0]
    assert isinstance(inner, WorkflowStep)
    assert inner.child is workflows["child"]
    assert isinstance(branch, WorkflowStep)
    assert branch.child is workflows["other"]


def test_an_unknown_name_is_reported_at_the_workflow_value_with_a_suggestion() -> None:
    """The problem is in the parent's file, at the name, with a did-you-mean and the names."""
    workflows = loaded(calls("parent", "paymnt"), text("payment"))
    assert messages(link(workflows)) == {
        "parent": [
            "parent.yaml:4:25: steps.sub.workflow: unknown workflow 'paymnt' (did you mean "
            "'payment'?) (known workflows: parent, payment)"
        ]
    }
    step = workflows["parent"].steps[0]
    assert isinstance(step, WorkflowStep)
    assert step.child is None


def test_a_cycle_fails_each_member_and_every_workflow_that_runs_one() -> None:
    """a → b → a is reported at both; c running a fails with a's problem; a → a is a cycle."""
    workflows = loaded(
        calls("a", "b", "to_b"), calls("b", "a", "to_a"), calls("c", "a"), calls("d", "d", "me")
    )
    assert messages(link(workflows)) == {
        "a": ["a.yaml:4:26: steps.to_b.workflow: sub-workflows form a cycle: a → b → a"],
        "b": ["b.yaml:4:26: steps.to_a.workflow: sub-workflows form a cycle: b → a → b"],
        "c": [
            "c.yaml:4:25: steps.sub.workflow: sub-workflow 'a' cannot run: it is part of the "
            "cycle a → b → a",
            "a.yaml:4:26: steps.to_b.workflow: sub-workflows form a cycle: a → b → a",
        ],
        "d": ["d.yaml:4:24: steps.me.workflow: sub-workflows form a cycle: d → d"],
    }
    assert all(
        s.child is None for w in workflows.values() for s in w.steps if isinstance(s, WorkflowStep)
    )


def test_a_chain_deeper_than_the_limit_fails_where_it_becomes_too_deep() -> None:
    """MAX_NESTING sub-workflow levels run; the workflow starting one more level fails."""
    count = MAX_NESTING + 2  # w0 → … → w9: w1 starts MAX_NESTING levels, w0 one more
    texts = [calls(f"w{i}", f"w{i + 1}") for i in range(count - 1)] + [text(f"w{count - 1}")]
    workflows = loaded(*texts)
    found = messages(link(workflows))
    chain = " → ".join(f"w{i}" for i in range(count))
    assert found == {
        "w0": [
            f"w0.yaml:4:25: steps.sub.workflow: sub-workflows nest deeper than {MAX_NESTING} "
            f"levels: {chain}"
        ]
    }
    first = workflows["w1"].steps[0]
    assert isinstance(first, WorkflowStep)
    assert first.child is workflows["w2"]


def test_a_child_that_does_not_load_is_reported_with_its_own_problems() -> None:
    """A name known to be a failing file's is reported with that file's diagnostics."""
    with pytest.raises(DefinitionError) as info:
        load_string(text("broken", "{id: x, service: nosuch, method: /x}"), "broken.yaml")
    workflows = loaded(calls("parent", "broken"))
    found = messages(link(workflows, {"broken": info.value.diagnostics}))
    assert found == {
        "parent": [
            "parent.yaml:4:25: steps.sub.workflow: sub-workflow 'broken' does not load "
            "(broken.yaml)",
            "broken.yaml:4:22: steps.x.service: unknown service 'nosuch' (services: s)",
        ]
    }


def test_workflow_name_reads_the_top_level_name_line() -> None:
    """Plain and quoted names are read; a nested or missing name is not."""
    assert workflow_name("# c\nname: pay-1.0\n") == "pay-1.0"
    assert workflow_name("name: crlf # x\r\nsteps: []\r\n") == "crlf"
    assert workflow_name("name: 'quoted'  # why\n") == "quoted"
    assert workflow_name('services: {}\nname: "double"\n') == "double"
    assert workflow_name("steps:\n  name: nested\n") is None
    assert workflow_name("{name: flow}\n") is None


def write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        (directory / name).write_text(source)


def test_names_resolve_among_the_files_of_the_given_files_directory(tmp_path: Path) -> None:
    """Children come from the file's directory; a broken file nobody needs is no problem."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "child"),
            "child.yml": calls("child", "grandchild"),
            "grandchild.yaml": text("grandchild"),
            "unrelated.yaml": "name: unrelated\nsteps: [oops\n",
            "notes.txt": "name: child\n",
        },
    )
    (result,) = load_together([str(tmp_path / "parent.yaml")])
    assert result.diagnostics == ()
    assert result.workflow is not None
    child = result.workflow.steps[0]
    assert isinstance(child, WorkflowStep)
    assert child.child is not None
    assert child.child.path == str(tmp_path / "child.yml")
    grandchild = child.child.steps[0]
    assert isinstance(grandchild, WorkflowStep)
    assert grandchild.child is not None
    assert grandchild.child.name == "grandchild"


def test_a_needed_file_that_does_not_load_is_reported_with_its_problems(tmp_path: Path) -> None:
    """The parent cannot run; its problem names the child's file, whose problems follow."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "child"),
            "child.yaml": text("child", "{id: x, service: nosuch, method: /x}"),
        },
    )
    parent, child = str(tmp_path / "parent.yaml"), str(tmp_path / "child.yaml")
    (result,) = load_together([parent])
    assert result.workflow is None
    assert [str(d) for d in result.diagnostics] == [
        f"{parent}:4:25: steps.sub.workflow: sub-workflow 'child' does not load ({child})",
        f"{child}:4:22: steps.x.service: unknown service 'nosuch' (services: s)",
    ]
    with pytest.raises(DefinitionError) as info:
        load_linked(parent)
    assert len(info.value.diagnostics) == 2


def test_a_file_whose_name_line_cannot_be_read_is_still_found(tmp_path: Path) -> None:
    """A workflow written as one flow mapping is loaded when a needed name is looked for."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "flow"),
            "flow.yaml": "{name: flow, "
            + SERVICES.strip()
            + ", steps: [{id: a, service: s, method: /a}]}\n",
        },
    )
    workflow = load_linked(str(tmp_path / "parent.yaml"))
    step = workflow.steps[0]
    assert isinstance(step, WorkflowStep)
    assert step.child is not None
    assert step.child.name == "flow"


def test_the_workflows_directory_replaces_the_files_own(tmp_path: Path) -> None:
    """With a directory given, names resolve there (and the given file itself stays known)."""
    write(tmp_path / "here", {"parent.yaml": calls("parent", "child"), "child.yaml": text("x")})
    write(tmp_path / "lib", {"c.yaml": text("child")})
    parent = str(tmp_path / "here" / "parent.yaml")
    (here,) = load_together([parent])
    assert [d.message.split(" (")[0] for d in here.diagnostics] == [
        "steps.sub.workflow: unknown workflow 'child'"
    ]
    workflow = load_linked(parent, directory=str(tmp_path / "lib"))
    step = workflow.steps[0]
    assert isinstance(step, WorkflowStep)
    assert step.child is not None
    assert step.child.path == str(tmp_path / "lib" / "c.yaml")


def test_a_file_given_and_needed_keeps_the_path_as_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validating a parent and its broken child prints the child's problems once, as given."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "child"),
            "child.yaml": text("child", "{id: x, service: nosuch, method: /x}"),
        },
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "parent.yaml", "./child.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "./child.yaml:4:22: steps.x.service: unknown service 'nosuch' (services: s)",
        "parent.yaml:4:25: steps.sub.workflow: sub-workflow 'child' does not load (./child.yaml)",
    ]
    assert "2 of 2 file(s) invalid" in err


def test_validate_reports_sub_workflow_problems_and_counts_only_given_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``maestro validate`` prints the parent's and the child's problems; one file is invalid."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "child"),
            "child.yaml": text("child", "{id: x, service: nosuch, method: /x}"),
            "fine.yaml": calls("fine", "leaf"),
            "leaf.yaml": text("leaf"),
        },
    )
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "parent.yaml", "fine.yaml"]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "child.yaml:4:22: steps.x.service: unknown service 'nosuch' (services: s)",
        "parent.yaml:4:25: steps.sub.workflow: sub-workflow 'child' does not load (child.yaml)",
    ]
    assert "1 of 2 file(s) invalid" in err
    assert main(["validate", "fine.yaml"]) == 0


def test_validate_and_execute_take_a_workflows_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--workflows DIR is where names resolve; a missing directory is a usage error."""
    write(tmp_path / "here", {"parent.yaml": calls("parent", "child")})
    write(tmp_path / "lib", {"child.yaml": text("child")})
    parent = str(tmp_path / "here" / "parent.yaml")
    assert main(["validate", parent]) == 1
    assert "unknown workflow 'child'" in capsys.readouterr().out
    assert main(["validate", "--workflows", str(tmp_path / "lib"), parent]) == 0
    assert main(["validate", "--workflows", str(tmp_path / "nope"), parent]) == 2
    assert "--workflows: not a directory" in capsys.readouterr().err
    assert main(["execute", parent, "--input", "{}"]) == 2
    assert "unknown workflow 'child'" in capsys.readouterr().err
    assert main(["execute", parent, "--workflows", str(tmp_path / "nope"), "--input", "{}"]) == 2


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        data = json.dumps({"path": self.path, "got": body}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def echo() -> Iterator[str]:
    """An HTTP service on 127.0.0.1 answering every POST with its path and body."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_execute_runs_a_sub_workflow_found_in_the_workflows_directory(
    tmp_path: Path, echo: str
) -> None:
    """``maestro execute FILE --workflows DIR`` runs the child from DIR inside the execution."""
    services = f'services: {{api: {{type: http, endpoint: "{echo}"}}}}\n'
    write(
        tmp_path / "here",
        {
            "parent.yaml": "name: parent\n" + services + "steps:\n"
            "  - {id: pay, workflow: child, input: {amount: 5}, output: paid}\n",
        },
    )
    write(
        tmp_path / "lib",
        {
            "child.yaml": "name: child\n" + services + "steps:\n"
            "  - {id: charge, service: api, method: /charge, input: {n: '{{ input.amount }}'}}\n"
            "output: {charged: '{{ charge.got.n }}'}\n",
        },
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "maestro_gateway",
            "execute",
            str(tmp_path / "here" / "parent.yaml"),
            "--workflows",
            str(tmp_path / "lib"),
            "--input",
            "{}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "SUCCEEDED"
    assert result["output"]["paid"] == {"charged": 5}


def test_serve_registry_links_its_directory_and_refuses_unknown_or_cyclic(tmp_path: Path) -> None:
    """Loaded together: linked children; an unknown or cyclic sub-workflow fails its file."""
    write(
        tmp_path,
        {
            "parent.yaml": calls("parent", "child"),
            "child.yaml": text("child"),
            "lost.yaml": calls("lost", "nowhere"),
            "a.yaml": calls("a", "b"),
            "b.yaml": calls("b", "a"),
        },
    )
    workflows, problems = load_directory(tmp_path)
    assert sorted(workflows) == ["child", "parent"]
    step = workflows["parent"].steps[0]
    assert isinstance(step, WorkflowStep)
    assert step.child is workflows["child"]
    assert [(Path(p.file).name, p.message.split(":")[1].strip()) for p in problems] == [
        ("a.yaml", "sub-workflows form a cycle"),
        ("b.yaml", "sub-workflows form a cycle"),
        ("lost.yaml", "unknown workflow 'nowhere' (known workflows"),
    ]


def test_registry_reload_links_the_new_set(tmp_path: Path) -> None:
    """After an edit, a reload serves new objects linked to each other; a broken edit is refused."""
    write(tmp_path, {"parent.yaml": calls("parent", "child"), "child.yaml": text("child")})
    registry = WorkflowRegistry(tmp_path)
    assert registry.load() == []
    old_child = registry.get("child")
    (tmp_path / "child.yaml").write_text(text("child", "{id: other, service: s, method: /o}"))
    assert registry.reload() == []
    parent, child = registry.get("parent"), registry.get("child")
    assert parent is not None
    assert child is not None
    assert child is not old_child
    step = parent.steps[0]
    assert isinstance(step, WorkflowStep)
    assert step.child is child
    (tmp_path / "child.yaml").write_text(calls("child", "parent"))
    assert [p.message.split(":")[1].strip() for p in registry.reload()] == [
        "sub-workflows form a cycle",
        "sub-workflows form a cycle",
    ]
    assert registry.get("child") is child
