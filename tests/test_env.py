"""``env.NAME`` (DESIGN §9): read once at load, only literally, redacted in every report; and
Maestro.go's HTTP methods without a verb. The subprocess runs are in ``test_env_process.py``."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from maestro_gateway.cli import main
from maestro_gateway.codes import Code
from maestro_gateway.engine import (
    CompensationFailed,
    Engine,
    ErrorInfo,
    Event,
    ExecutionStatus,
    StepFailed,
    StepRetrying,
    StepSucceeded,
)
from maestro_gateway.errors import CallError, DefinitionError
from maestro_gateway.expr import Scope, TemplateSyntaxError, compile_condition, compile_string
from maestro_gateway.model.graph import to_mermaid
from maestro_gateway.model.loader import load_file, load_string
from maestro_gateway.model.types import CallStep, HttpMethod, ParallelStep, Service
from maestro_gateway.redaction import MASK, SECRETS, RedactingFormatter, Redactor, redact
from maestro_gateway.resilience import FakeClock
from maestro_gateway.server.registry import load_directory, validate_source
from maestro_gateway.transports.base import Metadata

FIXTURES = Path(__file__).parent / "fixtures" / "workflows"
SECRET = "s3cr3t-token-Zq81"
ENVIRON = {
    "CRM_TOKEN": SECRET,
    "LEGAL_API_KEY": "legal-key-Qm02",
    "TENANT_ID": "tenant-Pz33",
    "REGION": "region-Xk44",
    "FEATURE_RESERVE": "on",
}
SCOPE = Scope(frozenset({"input", "env"}), frozenset())


class CountingEnviron(Mapping[str, str]):
    """An environment that counts how often each variable is read."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = dict(values)
        self.reads: dict[str, int] = {}

    def __getitem__(self, name: str) -> str:
        self.reads[name] = self.reads.get(name, 0) + 1
        return self.values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    """Each test starts and ends with an empty redaction registry."""
    SECRETS.clear()
    yield
    SECRETS.clear()


# -- reading the environment --------------------------------------------------------------------


def test_env_in_every_template_position_renders_the_value_read_at_load() -> None:
    """Service headers and metadata, input, path, when, compensation and output see env values."""
    workflow = load_file(str(FIXTURES / "env.pass.yaml"), environ=ENVIRON)
    crm, inventory = workflow.services["crm"], workflow.services["inventory"]
    assert crm.metadata["Authorization"].render_text({}) == f"Bearer {SECRET}"
    assert inventory.metadata["x-api-key"].render_text({}) == "legal-key-Qm02"
    lookup, reserve, group = workflow.steps
    assert isinstance(lookup, CallStep)
    assert isinstance(reserve, CallStep)
    assert isinstance(group, ParallelStep)
    method = lookup.call.method
    assert isinstance(method, HttpMethod)
    ctx: dict[str, Any] = {"input": {"customer": "c-1", "sku": "A"}, "customer": {"active": True}}
    assert method.path.render_text(ctx) == "/tenants/tenant-Pz33/customers/c-1"
    assert lookup.call.metadata["X-Region"].render_text(ctx) == "region-Xk44"
    assert lookup.call.metadata["Authorization"].render_text(ctx) == f"Bearer {SECRET}"
    assert reserve.when is not None
    assert reserve.when.evaluate(ctx) is True
    assert reserve.when.env_names == {"FEATURE_RESERVE"}
    assert reserve.call.metadata["x-caller"].render_text(ctx) == "gateway-region-Xk44"
    assert reserve.call.input.render(ctx) == {
        "sku": "A",
        "region": "region-Xk44",
        "tags": ["region-Xk44", "fixed"],
        "key_length": len(SECRET),
    }
    assert reserve.compensate is not None
    undo = reserve.compensate.method
    assert isinstance(undo, HttpMethod)
    ctx["reserve"] = {"id": "r-9"}
    ctx["error"] = {"code": "ABORTED"}
    assert undo.path.render_text(ctx) == "/tenants/tenant-Pz33/reservations/r-9"
    assert reserve.compensate.input.render(ctx) == {"reason": "ABORTED in region-Xk44"}
    notify = group.steps[0]
    assert notify.when is not None
    assert notify.when.evaluate(ctx) is True
    assert notify.call.input.render(ctx) == {"token_set": True}
    assert workflow.output is not None
    assert workflow.output.render({**ctx, "customer": {"id": "c-1"}}) == {
        "customer": "c-1",
        "region": "region-Xk44",
    }


def test_each_variable_is_read_once_per_load_and_never_again() -> None:
    """The values are constants of the compiled templates: a later change is not seen."""
    environ = CountingEnviron(ENVIRON)
    workflow = load_file(str(FIXTURES / "env.pass.yaml"), environ=environ)
    assert environ.reads == dict.fromkeys(ENVIRON, 1)
    environ.values["CRM_TOKEN"] = "changed-later"
    assert workflow.services["crm"].metadata["Authorization"].render_text({}) == f"Bearer {SECRET}"
    assert environ.reads["CRM_TOKEN"] == 1


def test_the_execution_context_cannot_supply_or_widen_env() -> None:
    """A context value named env is ignored; a template holds only the variables it names."""
    template = compile_string("{{ env.A }}-{{ input.x }}", SCOPE, {"A": "aaaa", "B": "bbbb"})
    assert template.env_names == {"A"}
    assert template.render({"input": {"x": 1}, "env": {"A": "forged"}}) == "aaaa-1"


@pytest.mark.parametrize(
    ("text", "offset"),
    [
        ("{{ env['A'] }}", 3),
        ("{{ env[input.k] }}", 3),
        ("{{ env }}", 3),
        ("{{ env.exists(k, k == 'A') }}", 3),
        ("{{ input.keys.map(env, env) }}", 18),
        ("{{ size(.env) }}", 9),
    ],
)
def test_dynamic_uses_of_env_are_compile_errors_at_their_offset(text: str, offset: int) -> None:
    """Anything but a literal env.NAME is refused at load, pointing at the misused env."""
    with pytest.raises(TemplateSyntaxError) as info:
        compile_string(text, SCOPE, {"A": "aaaa"})
    first = info.value.problems[0]
    assert first.offset == offset
    assert "only a literal env.NAME can read the environment" in first.message


def test_has_of_env_is_refused_and_env_is_typed_as_strings() -> None:
    """has(env.X) cannot be asked; env.X is a string to the type checker."""
    with pytest.raises(TemplateSyntaxError) as info:
        compile_condition("has(env.A)", SCOPE, {"A": "aaaa"})
    assert info.value.problems[0].message.startswith("has() cannot test an environment variable")
    with pytest.raises(TemplateSyntaxError) as info:
        compile_condition("env.A > 1", SCOPE, {"A": "aaaa"})
    assert "no matching overload" in info.value.problems[0].message
    assert compile_condition("int(env.A) > 1", SCOPE, {"A": "5"}).evaluate({}) is True


def test_an_unset_variable_is_reported_with_its_name() -> None:
    """An unset env.NAME is a problem at its offset that says which variable."""
    with pytest.raises(TemplateSyntaxError) as info:
        compile_string("Bearer {{ .env.NOPE }}", SCOPE, {})
    (problem,) = info.value.problems
    assert (problem.offset, problem.message, problem.unset_env) == (
        11,
        "environment variable NOPE is not set",
        "NOPE",
    )


UNSET = """\
name: unset
services:
  crm:
    type: http
    endpoint: "http://127.0.0.1:9"
    headers: {Authorization: "Bearer {{ env.CRM_TOKEN }}"}
steps:
  - {id: a, service: crm, method: "GET /x/{{ env.TENANT_ID }}"}
"""


def test_policies_require_warn_and_skip() -> None:
    """require: an error; warn: a warning and a workflow; skip: the environment is never read."""
    with pytest.raises(DefinitionError) as info:
        load_string(UNSET, "u.yaml", environ={"TENANT_ID": "t-1234"})
    assert [str(d) for d in info.value.diagnostics] == [
        "u.yaml:6:41: environment variable CRM_TOKEN is not set"
    ]
    workflow = load_string(UNSET, "u.yaml", env="warn", environ={"TENANT_ID": "t-1234"})
    assert [str(d) for d in workflow.warnings] == [
        "u.yaml:6:41: warning: environment variable CRM_TOKEN is not set"
    ]
    assert workflow.services["crm"].metadata["Authorization"].render_text({}) == "Bearer "
    environ = CountingEnviron({"CRM_TOKEN": SECRET})
    skipped = load_string(UNSET, "u.yaml", env="skip", environ=environ)
    assert environ.reads == {}
    assert skipped.warnings == ()
    assert redact(SECRET) == SECRET  # nothing was registered


def test_warnings_and_errors_together_under_warn() -> None:
    """Under warn, a file with errors reports them with its warnings, in position order."""
    text = UNSET + "  - {id: b, service: nosuch, method: /y}\n"
    with pytest.raises(DefinitionError) as info:
        load_string(text, "u.yaml", env="warn", environ={})
    assert [(d.line, d.severity) for d in info.value.diagnostics] == [
        (6, "warning"),
        (8, "warning"),
        (9, "error"),
    ]


def test_validate_source_does_not_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ValidateWorkflow RPC checks the form of env.NAME only: no oracle of the variables."""
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    monkeypatch.setenv("TENANT_ID", SECRET)
    assert validate_source(UNSET) == []
    assert redact(SECRET) == SECRET
    problems = validate_source(UNSET.replace("env.TENANT_ID", "env[input.t]"))
    assert [p.message.split(":")[0] for p in problems] == ["steps.a.method"]


def test_load_directory_skips_only_the_workflow_with_an_unset_variable(tmp_path: Path) -> None:
    """serve's start-up load: the other files are served, the diagnostic names the variable."""
    (tmp_path / "a.yaml").write_text(UNSET)
    (tmp_path / "b.yaml").write_text(UNSET.replace("name: unset", "name: fine"))

    def loader(path: str) -> Any:
        name = Path(path).name
        environ = {"TENANT_ID": "t-1234"} | ({"CRM_TOKEN": SECRET} if name == "b.yaml" else {})
        return load_file(path, environ=environ)

    workflows, problems = load_directory(tmp_path, loader)
    assert list(workflows) == ["fine"]
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'a.yaml'}:6:41: environment variable CRM_TOKEN is not set"
    ]


RESUMED = """\
name: resumed
services:
  crm:
    type: http
    endpoint: "http://127.0.0.1:9"
    headers: {Authorization: "Bearer {{ env.MAESTRO_TEST_RESUME_TOKEN }}"}
steps:
  - {id: a, service: crm, method: /ok}
"""


async def test_recovery_reads_the_environment_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A resumed execution loads its stored definition again: the restarted process's values
    are used, and a variable unset by then leaves it unfinished (recovery_failed names it)."""
    from maestro_gateway.engine.executor import new_record
    from maestro_gateway.journal import MemoryJournal
    from maestro_gateway.server.runs import Runs

    started = load_string(RESUMED, "resumed.yaml", environ={"MAESTRO_TEST_RESUME_TOKEN": "old"})
    clock = FakeClock()
    transports = EchoTransports()

    async def journal_of(*execution_ids: str) -> MemoryJournal:
        journal = MemoryJournal()
        for execution_id in execution_ids:
            await journal.create(new_record(started, {}, execution_id, clock=clock))
        return journal

    journal = await journal_of("e-0")
    monkeypatch.delenv("MAESTRO_TEST_RESUME_TOKEN", raising=False)
    runs = Runs(Engine(transports, clock=clock, journal=journal), journal)
    with caplog.at_level(logging.ERROR, "maestro_gateway.server"):
        assert await runs.recover() == 0
    assert "environment variable MAESTRO_TEST_RESUME_TOKEN is not set" in caplog.text
    record = await journal.get("e-0")
    assert record is not None
    assert record.result is None  # left unfinished for a fixed gateway

    journal = await journal_of("e-1", "e-2")
    monkeypatch.setenv("MAESTRO_TEST_RESUME_TOKEN", "new-token-8812")
    runs = Runs(Engine(transports, clock=clock, journal=journal), journal)
    assert await runs.recover() == 2
    for execution_id in ("e-1", "e-2"):
        task = runs.task(execution_id)
        assert task is not None
        result = await task
        output = result.steps["a"].output
        assert output == {"echo": {"Authorization": "Bearer new-token-8812"}}


# -- maestro validate and graph ----------------------------------------------------------------


def test_validate_prints_a_warning_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset variable is a warning line; the file is valid."""
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    monkeypatch.setenv("TENANT_ID", "t-1234")
    path = tmp_path / "u.yaml"
    path.write_text(UNSET)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}:6:41: warning: environment variable CRM_TOKEN is not set\n"
    assert err == "1 file(s) valid, 1 warning(s)\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(UNSET.replace("GET /x/", "FETCH /x/"))
    assert main(["validate", str(path), str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out.count("warning: environment variable CRM_TOKEN is not set") == 2
    assert "unsupported HTTP verb 'FETCH'" in out
    assert err == "1 of 2 file(s) invalid, 1 problem(s), 2 warning(s)\n"


def test_graph_shows_verbless_methods_and_never_reads_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """graph draws POST /api/<name> and env templates as written, even with variables unset."""
    monkeypatch.delenv("CRM_TOKEN", raising=False)
    monkeypatch.delenv("TENANT_ID", raising=False)
    path = tmp_path / "u.yaml"
    path.write_text(UNSET + "  - {id: b, service: crm, method: SendOrderConfirmation}\n")
    assert main(["graph", str(path)]) == 0
    out = capsys.readouterr().out
    assert "crm: POST /api/sendorderconfirmation" in out
    assert "GET /x/#123;#123; env.TENANT_ID #125;#125;" in out  # Mermaid-escaped braces


# -- HTTP methods without a verb ---------------------------------------------------------------


def test_a_method_without_verb_or_slash_is_post_api_lower_case() -> None:
    """SendOrderConfirmation → POST /api/sendorderconfirmation, in steps and compensations."""
    workflow = load_file(str(FIXTURES / "http-verbless.pass.yaml"))
    calls = {s.id: s for s in workflow.call_steps()}
    expected = {
        "send_confirmation": "/api/sendorderconfirmation",
        "audit": "/api/audit.record-v2",
        "legacy": "/api/notify",
    }
    for step_id, path in expected.items():
        method = calls[step_id].call.method
        assert isinstance(method, HttpMethod)
        assert (method.verb, method.source, method.path.render_text({})) == ("POST", path, path)
    compensate = calls["send_confirmation"].compensate
    assert compensate is not None
    assert isinstance(compensate.method, HttpMethod)
    assert (compensate.method.verb, compensate.method.source) == (
        "POST",
        "/api/cancel_confirmation",
    )
    graph = to_mermaid(workflow)
    assert "notification: POST /api/sendorderconfirmation" in graph
    assert "compensate: POST /api/cancel_confirmation" in graph


# -- redaction ---------------------------------------------------------------------------------


def test_redactor_masks_values_and_their_encoded_forms_longest_first() -> None:
    """Values of 4+ characters are masked raw, JSON-escaped and percent-encoded; shorter are not."""
    r = Redactor()
    r.add(["abc", "tok-1234", "tok-1234-long", 'q"uo/te x'])
    assert r.redact("abc tok-1234 tok-1234-long") == f"abc {MASK} {MASK}"
    assert r.redact('body {"h": "q\\"uo/te x"} path /a/q%22uo/te%20x') == (
        f'body {{"h": "{MASK}"}} path /a/{MASK}'
    )
    assert r.redact("nothing here") == "nothing here"
    assert Redactor().redact("tok-1234") == "tok-1234"


def test_error_info_is_redacted_when_built() -> None:
    """Every reported failure passes through ErrorInfo, which masks the registered values."""
    SECRETS.add([SECRET])
    error = ErrorInfo("a", Code.UNAVAILABLE, f"POST /x/{SECRET}: HTTP 503: {SECRET}")
    assert error.message == f"POST /x/{MASK}: HTTP 503: {MASK}"
    assert error.as_value()["message"] == error.message


def test_redacting_formatter_masks_messages_arguments_and_tracebacks() -> None:
    """Log lines are redacted after formatting: %-arguments and exception text included."""
    SECRETS.add([SECRET])
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.redaction")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        log.debug("url http://h/%s", SECRET)
        try:
            raise RuntimeError(f"bad {SECRET}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert f"DEBUG url http://h/{MASK}" in text
    assert f"RuntimeError: bad {MASK}" in text


ECHO = """\
name: echo
services:
  crm:
    type: http
    endpoint: "http://127.0.0.1:9"
    headers: {Authorization: "Bearer {{ env.CRM_TOKEN }}"}
    retry: {attempts: 2, initial: 10ms, jitter: false}
steps:
  - id: a
    service: crm
    method: "POST /ok"
    compensate: {method: "POST /undo/{{ env.CRM_TOKEN }}"}
  - {id: b, service: crm, method: "POST /fail/{{ env.CRM_TOKEN }}", when: "env.CRM_TOKEN != ''"}
"""


class EchoTransport:
    """Succeeds on /ok answering the headers it got; otherwise fails quoting path and headers."""

    async def call(
        self,
        method: str,
        request: Any,
        *,
        timeout: float | None,  # noqa: ASYNC109 - the Transport protocol
        metadata: Metadata,
        **_: Any,
    ) -> Any:
        if method == "POST /ok":
            return {"echo": dict(metadata)}
        raise CallError(Code.UNAVAILABLE, f"{method}: HTTP 503: got {dict(metadata)}")

    async def close(self) -> None:
        """Nothing to release."""


class EchoTransports:
    def __init__(self) -> None:
        self.transport = EchoTransport()

    def transport_for(self, service: Service) -> EchoTransport:
        return self.transport

    async def close(self) -> None:
        """Nothing to release."""


async def test_an_execution_reports_no_env_value_but_keeps_outputs_as_sent() -> None:
    """Retrying, failed and compensation events and the result mask the secret; outputs do not."""
    workflow = load_string(ECHO, environ={"CRM_TOKEN": SECRET})
    events: list[Event] = []
    engine = Engine(EchoTransports(), clock=FakeClock())
    result = await engine.execute(workflow, {}, on_event=events.append)
    assert result.status is ExecutionStatus.COMPENSATION_FAILED
    reported = [
        e.error.message
        for e in events
        if isinstance(e, StepRetrying | StepFailed | CompensationFailed)
    ]
    assert len(reported) == 3
    assert result.error is not None
    reported.append(result.error.message)
    reported += [
        s.compensation_error.message for s in result.steps.values() if s.compensation_error
    ]
    assert all(SECRET not in m and MASK in m for m in reported), reported
    assert reported[0] == f"POST /fail/{MASK}: HTTP 503: got {{'Authorization': 'Bearer {MASK}'}}"
    (succeeded,) = [e for e in events if isinstance(e, StepSucceeded)]
    assert succeeded.output == {"echo": {"Authorization": f"Bearer {SECRET}"}}
