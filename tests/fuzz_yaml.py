"""Workflow documents for the language fuzzers: drawn from the grammar, mutated, written as YAML.

A document is plain Python (dicts, lists, strings, numbers, booleans, None) plus a few markers
for what plain values cannot say in YAML: :class:`Raw` scalar text (``1e99999``, ``!foo x``,
five thousand digits), :class:`Pairs` (a mapping with duplicate or non-string keys),
:class:`Anchor` and :class:`Alias`, and :class:`Literal` (a ``|`` block scalar). :func:`emit`
writes a document with a ``random.Random`` choosing block or flow style and the quoting of each
string, so the same document reaches the loader in many spellings.

:func:`workflows` draws a document from the language of DESIGN §3, §12 and §13 (services, call
steps, parallel, foreach, switch, loop, fail, wait, emit, workflow steps, triggers, templates
from a small CEL grammar); :func:`mutated` then breaks it (wrong types, unknown and duplicate
keys, broken templates, deep nesting, huge numbers, odd Unicode, anchors and aliases, merges)
and sometimes the text too (a character inserted, a line duplicated or truncated, tabs, other
line breaks, a byte-order mark).
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from yaml.nodes import ScalarNode

from maestro_gateway.model.yamlnodes import STR, _Resolver

# -- the document model --------------------------------------------------------------------------


@dataclass
class Raw:
    """A scalar written exactly as ``text``."""

    text: str


@dataclass
class Literal:
    """A string written as a literal block scalar (``|-``) when in block context."""

    text: str


@dataclass
class Pairs:
    """A mapping as a list of pairs: keys may repeat and need not be strings."""

    items: list[tuple[Any, Any]]


@dataclass
class Anchor:
    """``&name value``."""

    name: str
    value: Any


@dataclass
class Alias:
    """``*name``."""

    name: str


# -- writing YAML --------------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_RESOLVER = _Resolver()


def _plain_ok(text: str) -> bool:
    return bool(_PLAIN.fullmatch(text)) and (
        _RESOLVER.resolve(ScalarNode, text, (True, False)) == STR
    )


def _string(text: str, rng: random.Random) -> str:
    """``text`` as a flow scalar, in one of the quotings that keep its value."""
    choice = rng.random()
    if choice < 0.4 and _plain_ok(text):
        return text
    if choice < 0.7 and not any(c in text for c in "\n\r\x85\u2028\u2029"):
        return "'" + text.replace("'", "''") + "'"
    return json.dumps(text, ensure_ascii=rng.random() < 0.5)


def _scalar(value: Any, rng: random.Random) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Literal):
        return _string(value.text, rng)
    if isinstance(value, Alias):
        return f"*{value.name}"
    if value is None:
        return rng.choice(["null", "~", "Null"])
    if value is True or value is False:
        return rng.choice(["true", "True"]) if value else rng.choice(["false", "FALSE"])
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        return text if "." in text or "e" not in text else text.replace("e", ".0e", 1)
    return _string(str(value), rng)


def _items(value: Any) -> list[tuple[Any, Any]] | None:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, Pairs):
        return value.items
    return None


def _key(key: Any, rng: random.Random) -> str:
    if isinstance(key, str | int | float | bool | Raw | Alias) or key is None:
        text = _scalar(key, rng)
        # A string key may not be too long to be a simple key (YAML: 1024 characters).
        return text if len(text) < 1000 else "? " + text + "\n"
    return "? " + _flow(key, rng)


def _flow(value: Any, rng: random.Random) -> str:
    if isinstance(value, Anchor):
        return f"&{value.name} {_flow(value.value, rng)}"
    items = _items(value)
    if items is not None:
        return "{" + ", ".join(f"{_key(k, rng)}: {_flow(v, rng)}" for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v, rng) for v in value) + "]"
    return _scalar(value, rng)


def _block(value: Any, indent: int, rng: random.Random, depth: int) -> list[str]:
    """Lines of ``value`` as a block node at ``indent``, or [] when it must be written in flow."""
    pad = " " * indent
    items = _items(value)
    if items is not None and items and depth < 12 and rng.random() < 0.8:
        lines: list[str] = []
        for key, item in items:
            key_text = _key(key, rng)
            if key_text.startswith("? "):
                lines.append(f"{pad}? {_flow(key, rng)}")
                head = f"{pad}:"
            else:
                head = f"{pad}{key_text}:"
            lines.extend(_value_lines(head, item, indent, rng, depth))
        return lines
    if isinstance(value, list) and value and depth < 12 and rng.random() < 0.8:
        lines = []
        for item in value:
            lines.extend(_value_lines(f"{pad}-", item, indent, rng, depth))
        return lines
    return []


def _value_lines(head: str, item: Any, indent: int, rng: random.Random, depth: int) -> list[str]:
    if isinstance(item, Literal) and item.text and not item.text[0].isspace():
        body = item.text.split("\n")
        if all(line.strip() or not line for line in body) and not item.text.endswith("\n"):
            return [f"{head} |-", *(" " * (indent + 2) + line if line else "" for line in body)]
    nested = _block(item, indent + 2, rng, depth + 1)
    if nested:
        return [head, *nested]
    return [f"{head} {_flow(item, rng)}"]


def emit(document: Any, rng: random.Random) -> str:
    """``document`` as YAML text."""
    lines = _block(document, 0, rng, 0)
    return "\n".join(lines) + "\n" if lines else _flow(document, rng) + "\n"


# -- the grammar ---------------------------------------------------------------------------------

FIELDS = ("x", "id", "sku", "qty", "lines", "name", "amount")
DURATIONS = ("250ms", "30s", "1m30s", "1h", "1.5s", "2h45m0.5s")
BAD_DURATIONS = ("0s", "30", "-1s", "1s1h", "", "2562048h", "1e3s", "soon")
CODES = ("UNAVAILABLE", "ABORTED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION")
BAD_CODES = ("OK", "NOSUCH", "internal", "")
GRPC_METHODS = ("Reserve", "shop.v1.Inventory/Reserve", "shop.v1.Inventory.Release")
HTTP_METHODS = ("POST /orders/{{ input.id }}/mail", "get /items", "/plain", "SendMail")
BAD_METHODS = ("GET", "not a method", "pkg.Svc/", "POST", "/x/{{ nosuch }}")
GRPC_ENDPOINTS = ("127.0.0.1:50051", "dns:///inventory:443", "unix:/tmp/s.sock")
HTTP_ENDPOINTS = ("http://127.0.0.1:8081", "https://h/api")
BAD_ENDPOINTS = ("http://", "http://[::1", "http://h:99999", "x:{{ env.X }}", "", "h:1 2")
CONDITIONS = (
    "{{ input.x > 1 }}",
    "{{ has(input.id) }}",
    "input.amount >= 100 && size(input.lines) < 3",
    "{{ workflow.name == 'fuzzed' }}",
    "true",
    "{{ .input.flag }}",
    "{{ input.lines.exists(l, l.qty > 2) }}",
)
TEMPLATES = (
    "{{ input.id }}",
    "{{ .input.sku }}",
    "order {{ input.id }} of {{ workflow.name }}",
    "{{ input.lines.map(l, l.sku) }}",
    "{{ size(input.lines) > 2 ? 'big' : 'small' }}",
    "{{ {'id': input.id, 'n': [1, 2.5, true, null]} }}",
    "{{ string(input.qty) + '-' + input.id }}",
    "{{ input.amount / 100 }}",
    "plain text",
    "",
    "{{ workflow.execution_id }}",
)
NAMES = ("input", ".input", "workflow", "steps", "item", "index", "iteration", "error", "signal")
OPERATORS = ("+", "-", "*", "/", "%", "==", "!=", "<", ">=", "&&", "||", "in")


class Grammar:
    """Draws workflow documents from the language's grammar with one ``random.Random``.

    With ``valid`` every choice is one the loader accepts (templates read only ``input`` and
    ``workflow``); without it, choices include wrong ones and templates come from a small CEL
    grammar that references names in and out of scope.
    """

    def __init__(self, rng: random.Random, valid: bool) -> None:
        self.rng = rng
        self.valid = valid
        self.count = 0
        self.outputs: list[str] = []

    def pick(self, good: Any, bad: Any = ()) -> Any:
        """One of ``good``, or when not ``valid`` sometimes one of ``bad``."""
        if bad and not self.valid and self.rng.random() < 0.25:
            return self.rng.choice(bad)
        return self.rng.choice(good)

    def maybe(self, probability: float = 0.5) -> bool:
        return self.rng.random() < probability

    # -- expressions

    def path(self) -> str:
        root = self.rng.choice([*NAMES, *self.outputs])
        if root == "steps":
            return f"steps.{self.rng.choice([*self.outputs, 'nosuch'])}.status"
        return ".".join([root, *self.rng.choices(FIELDS, k=self.rng.randint(0, 3))])

    def cel(self, depth: int = 0) -> str:
        """An expression of a small CEL grammar (not always a valid one)."""
        rng = self.rng
        form = rng.randint(0, 3) if depth >= 3 else rng.randint(0, 11)
        if form <= 1:
            return self.path()
        if form == 2:
            return str(rng.choice([0, -1, 2**63 - 1, 2**64, rng.randint(-(2**70), 2**70)]))
        if form == 3:
            return rng.choice(["1.5", "-0.0", "1e300", "true", "null", "'a'", '"é\\u202e"', "b'x'"])
        if form == 4:
            return f"{self.cel(depth + 1)} {rng.choice(OPERATORS)} {self.cel(depth + 1)}"
        if form == 5:
            return f"({self.cel(depth + 1)})"
        if form == 6:
            fn = rng.choice(["size", "int", "string", "double", "has", "type", "nosuch"])
            return f"{fn}({self.cel(depth + 1)})"
        if form == 7:
            return f"{self.cel(depth + 1)} ? {self.cel(depth + 1)} : {self.cel(depth + 1)}"
        if form == 8:
            return "[" + ", ".join(self.cel(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        if form == 9:
            keys = rng.sample("abc", rng.randint(0, 3))
            return "{" + ", ".join(f"'{k}': {self.cel(depth + 1)}" for k in keys) + "}"
        if form == 10:
            macro = rng.choice(["map", "filter", "exists", "all", "exists_one"])
            return f"{self.path()}.{macro}(x, {self.cel(depth + 1)})"
        method = rng.choice(["startsWith", "size", "contains", "matches"])
        return f"{self.cel(depth + 1)}.{method}({self.cel(depth + 1)})"

    def template(self) -> str:
        if self.valid or self.maybe(0.3):
            return self.pick(TEMPLATES)
        expression = self.cel()
        form = self.rng.randint(0, 4)
        if form == 0:
            return f"{{{{ {expression} }}}}"
        if form == 1:
            return f"id-{{{{ {expression} }}}}/{{{{ {self.cel()} }}}}"
        if form == 2:
            return expression
        if form == 3:
            return self.rng.choice(["{{", "}}", "{{ }}", "a {{ b", "{{ '}}' }}"])
        return f"{{{{ {expression}"

    def condition(self) -> str:
        return self.pick(CONDITIONS) if self.valid or self.maybe(0.5) else self.template()

    def value(self, depth: int = 0) -> Any:
        """A JSON-like step input with templates among its strings."""
        rng = self.rng
        form = rng.randint(0, 7) if depth < 3 else rng.randint(0, 4)
        if form == 0:
            return self.template()
        if form == 1:
            return rng.choice([0, -7, 2**53, 2**64, -(2**63)])
        if form == 2:
            return rng.choice([0.5, -1e-300, 1e308, 2.5])
        if form == 3:
            return rng.choice([True, False, None])
        if form == 4:
            return rng.choice(["", "text", "été", "日本", "😀", "a'b\"c"])
        if form == 5:
            return [self.value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(FIELDS): self.value(depth + 1) for _ in range(rng.randint(0, 3))}

    # -- services

    def retry(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.maybe():
            out["attempts"] = self.pick([1, 3, 5], [0, -1, 1.5, "3"])
        if self.maybe():
            out["backoff"] = self.pick(["exponential", "constant"], ["linear", "Exponential"])
        if self.maybe():
            out["initial"] = self.pick(["100ms", "250ms"], BAD_DURATIONS)
        if self.maybe():
            out["max"] = self.pick(["2s", "1m"], BAD_DURATIONS)
        if self.maybe():
            out["multiplier"] = self.pick([1, 2, 1.5], [0.5, float("inf"), float("nan")])
        if self.maybe():
            out["jitter"] = self.pick([True, False], ["yes", 1])
        if self.maybe():
            out["codes"] = [self.pick(CODES, BAD_CODES) for _ in range(self.rng.randint(1, 3))]
        return out

    def service(self) -> dict[str, Any]:
        kind = self.pick(["grpc", "http", None], ["soap", 1])
        out: dict[str, Any] = {} if kind is None else {"type": kind}
        out["endpoint"] = self.pick(
            HTTP_ENDPOINTS if kind == "http" else GRPC_ENDPOINTS, BAD_ENDPOINTS
        )
        if self.maybe(0.3):
            out["timeout"] = self.pick(DURATIONS, BAD_DURATIONS)
        if self.maybe(0.3):
            out["retry"] = self.retry()
        if self.maybe(0.2):
            out["circuit_breaker"] = self.pick([True, False, {"failures": 5, "reset": "30s"}])
        if self.maybe(0.2):
            out["pool"] = self.pick([1, 4], [0, -1])
        if self.maybe(0.2):
            out["tls"] = self.pick([False, True], ["yes"])
        if self.maybe(0.3):
            header = "metadata" if self.maybe() else "headers"
            out[header] = {self.pick(["x-team", "x-order"], ["bad key", ""]): self.template()}
        if kind != "http" and self.maybe(0.2):
            out["descriptors"] = self.pick(["reflection"], ["nosuch", {"protoset": 1}])
        if kind != "http" and self.maybe(0.2):
            out["protocol"] = self.pick(["auto", "grpc", "maestro-go"], ["soap"])
        if self.maybe(0.2):
            out["max_response_bytes"] = self.pick([1024, 4194304], [0, 2**70])
        return out

    # -- steps

    def _named(self, step: dict[str, Any], output: bool = True) -> None:
        self.count += 1
        step["id"] = f"s{self.count}"
        if output and self.maybe():
            step["output"] = f"o{self.count}"
        if self.maybe(0.25):
            step["when"] = self.condition()

    def _leaves(self, step: dict[str, Any]) -> dict[str, Any]:
        self.outputs.append(str(step.get("output", step["id"])))
        return step

    def steps(self, services: dict[str, Any], depth: int = 0) -> list[Any]:
        return [self.step(services, depth) for _ in range(self.rng.randint(1, 3 if depth else 4))]

    def step(self, services: dict[str, Any], depth: int, in_group: bool = False) -> dict[str, Any]:
        kinds = ["call", "call", "call", "fail", "wait", "emit", "workflow"]
        if depth < 3:
            kinds += ["foreach", "switch", "loop"] + ([] if in_group else ["parallel"])
        kind = self.rng.choice(kinds)
        return getattr(self, f"_{kind}")(services, depth)

    def _call(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        name = self.pick(sorted(services), ["nosuch"])
        out["service"] = name
        http = services.get(name, {}).get("type") == "http"
        out["method"] = self.pick(HTTP_METHODS if http else GRPC_METHODS, BAD_METHODS)
        if self.maybe():
            out["input"] = self.value()
        if self.maybe(0.2):
            out["timeout"] = self.pick(DURATIONS, BAD_DURATIONS)
        if self.maybe(0.2):
            out["retry"] = self.retry()
        if self.maybe(0.2):
            out["metadata"] = {"x-step": self.template()}
        if self.maybe(0.2):
            out["continue_on_error"] = self.pick([True, False], ["no"])
        if self.maybe(0.3):
            undo = self.pick(HTTP_METHODS if http else GRPC_METHODS, BAD_METHODS)
            out["compensate"] = {"method": undo, "input": {"id": self.template()}}
            if not self.valid and self.maybe(0.3):
                out["compensate"]["input"]["why"] = "{{ error.code }}"
        return self._leaves(out)

    def _parallel(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.maybe():
            self.count += 1
            out["id"] = f"s{self.count}"
        children = self.rng.randint(1, 3)
        out["parallel"] = [self.step(services, depth + 1, in_group=True) for _ in range(children)]
        return out

    def _foreach(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        out["foreach"] = self.pick(["{{ input.lines }}", "{{ [1, 2, 3] }}"], ["x", "{{ 1 }}"])
        out["as"] = self.pick([f"it{self.count}"], ["item", "input", "in", "1x"])
        out["index_as"] = f"ix{self.count}"
        if self.maybe(0.3):
            out["concurrency"] = self.pick([1, 4, "{{ size(input.lines) > 2 ? 2 : 1 }}"], [0, "x"])
        if self.maybe(0.3):
            out["max_items"] = self.pick([10, 10000], [0, -1, 2**70])
        out["steps"] = self.steps(services, depth + 1)
        return self._leaves(out)

    def _switch(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        branches: list[Any] = [
            {"when": self.condition(), "steps": self.steps(services, depth + 1)}
            for _ in range(self.rng.randint(1, 2))
        ]
        if self.maybe():
            branches.append({"steps": self.steps(services, depth + 1)})
        out["switch"] = branches
        return self._leaves(out)

    def _loop(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        index_as = f"n{self.count}"
        out["loop"] = {
            "steps": self.steps(services, depth + 1),
            "until": self.condition(),
            "max_iterations": self.pick([1, 30], [0, -1, "3"]),
            "index_as": index_as,
        }
        if self.maybe(0.3):
            out["loop"]["delay"] = self.pick(DURATIONS, BAD_DURATIONS)
        return self._leaves(out)

    def _fail(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out, output=False)
        out["fail"] = {"code": self.pick(CODES, BAD_CODES), "message": self.template()}
        return out

    def _wait(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        out["wait"] = {
            "signal": self.pick(["order.approved", "a/b.c-d"], ["bad name!", ""]),
            "timeout": self.pick(DURATIONS, BAD_DURATIONS),
        }
        if self.maybe():
            out["wait"]["when"] = self.pick(
                ["{{ signal.params.id == input.id }}", "{{ has(signal.params.x) }}"],
                ["{{ signal }}", "{{ error }}"],
            )
        return self._leaves(out)

    def _emit(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        out["emit"] = {"signal": self.pick(["order.shipped"], ["x y"])}
        if self.maybe():
            out["emit"]["params"] = {"id": self.template()}
        if self.maybe(0.3):
            out["emit"]["signal_id"] = self.pick(["sig-{{ input.id }}"], ["{{ nosuch }}"])
        return self._leaves(out)

    def _workflow(self, services: dict[str, Any], depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        self._named(out)
        out["workflow"] = self.pick(["child"], ["fuzzed", "nosuch", "bad name"])
        if self.maybe():
            out["input"] = {"id": self.template()}
        return self._leaves(out)

    # -- the workflow

    def workflow(self) -> dict[str, Any]:
        document: dict[str, Any] = {"name": self.pick(["fuzzed"], ["bad name", "", 7])}
        if self.maybe(0.3):
            document["version"] = self.pick(["1.0", 1.10, 2])
        if self.maybe(0.3):
            document["description"] = self.pick(["Reserve, charge.", "{{ not a template }}"])
        if self.maybe(0.3):
            document["timeout"] = self.pick(DURATIONS, BAD_DURATIONS)
        if self.maybe(0.2):
            document["compensation_timeout"] = self.pick(DURATIONS, BAD_DURATIONS)
        if self.maybe(0.4):
            document["input"] = self.pick(SCHEMAS, BAD_SCHEMAS)
        names = self.rng.sample(["shop", "mailer", "pay", "up.x-1"], self.rng.randint(1, 3))
        services = {name: self.service() for name in names}
        document["services"] = services
        if self.maybe(0.25):
            document["triggers"] = [
                {
                    "signal": self.pick(["order.paid"], ["", "a b"]),
                    "when": self.pick(["{{ signal.params.amount > 0 }}"], ["{{ input.x }}"]),
                    "input": {"id": self.pick(["{{ signal.params.id }}"], ["{{ steps }}"])},
                    "dedup": "{{ signal.params.id }}",
                }
            ]
        document["steps"] = self.steps(services)
        if self.maybe(0.4):
            document["output"] = {"r": self.template()}
        return document


SCHEMAS = (
    {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
    {
        "type": "object",
        "$defs": {"n": {"type": "integer", "minimum": 1}},
        "properties": {"qty": {"$ref": "#/$defs/n"}, "lines": {"type": "array"}},
    },
    {"type": "object", "additionalProperties": {"type": ["string", "number", "null"]}},
)
BAD_SCHEMAS = (
    {"type": "nosuch"},
    {"$ref": "other.json"},
    {"type": "string", "pattern": "(("},
    {"properties": {"a": {"$ref": "#/nowhere"}}},
    {"type": "object", "required": "id"},
    {"$ref": "#"},
    {
        "$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}},
        "properties": {"x": {"$ref": "#/$defs/a"}},
    },
    {"$id": "http://[::1", "$ref": "#/nowhere"},
    {"properties": {"$ref": {"type": "string"}}, "enum": [{"$ref": 1}]},
    "object",
)


@st.composite
def workflows(draw: st.DrawFn) -> tuple[dict[str, Any], bool]:
    """A workflow document from the language's grammar, and whether it was drawn valid."""
    valid = draw(st.integers(0, 2)) == 0
    seed = draw(st.integers(0, 2**32 - 1))
    # A copy, as mutations change it in place and it may hold the module's constants.
    return copy.deepcopy(Grammar(random.Random(seed), valid).workflow()), valid


# -- mutations -----------------------------------------------------------------------------------

ODD = (
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u200b",  # zero-width space
    "\u200d",  # zero-width joiner
    "\ufeff",  # byte-order mark, zero-width no-break space
    "\x00",
    "\x1b",
    "\x7f",
    "\ud800",  # a lone surrogate (high)
    "\udfff",  # a lone surrogate (low)
    "\u2028",  # line separator
    "\u2029",  # paragraph separator
    "\x85",  # next line
    "\t",
    "\r",
    "\U0001f600",
    "e\u0301",  # a combining accent
    "\uffff",
    "\U0010ffff",
    "{{",
    "}}",
    "'",
    '"',
    "\\",
)
WRONG = st.one_of(
    st.integers(-(2**80), 2**80),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from(
        [
            Raw("9" * 5000),
            Raw("-" + "1" * 4301),
            Raw("0x" + "f" * 200),
            Raw("1e99999"),
            Raw(".nan"),
            Raw("-.inf"),
            Raw("0o17"),
            Raw("1_000"),
            Raw("190:20:30"),
            Raw("2001-12-14t21:59:43.10-05:00"),
            Raw("!foo bar"),
            Raw("!!binary aGk="),
            Raw("!!int abc"),
            Raw("!!float x"),
            Raw("!!bool yes"),
            Raw("!!set {a, b}"),
            Raw("!!omap [{a: 1}]"),
            Raw("!!python/object:os.system x"),
            Raw("! x"),
            Raw("="),
            Raw("<<"),
            Raw("~"),
            Raw('"\\ud800"'),
            Raw('"\\ud83d\\ude00"'),
            Raw('"\\0\\a\\e"'),
            Raw("*nosuch"),
            Raw("|\n  x"),
            Raw("{{ input.x }}"),
        ]
    ),
)
BROKEN = (
    "{{",
    "}}",
    "{{ }}",
    "{{ nosuch.x }}",
    "{{ ( }}",
    "{{ input.x + }}",
    "{{ 'unterminated }}",
    "{{ env.NOT_SET_ANYWHERE }}",
    "{{ env[x] }}",
    "{{ has(env.X) }}",
    "{{ steps.nosuch.status }}",
    "{{ error.code }}",
    "{{ signal.params }}",
    "{{ " + "(" * 40 + "1" + ")" * 40 + " }}",
    "{{ " + "[" * 40 + "]" * 40 + " }}",
    "{{ " + "+".join(["1"] * 300) + " }}",
    "{{ '" + "a" * 3000 + "' }}",
    "{{ input.xs.map(x, input.xs.map(y, x * y)) }}",
    "{{ 99999999999999999999 }}",
    "{{ 1 / 0 }}",
    "{{ input }}",
    "{{ .input.x }}",
    "{{ {'a': {'b': 1}} }}",
)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> None:
    """Every (container, key or index) in ``node``, depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Anchor):
            stack.append(current.value)
            continue
        if isinstance(current, dict):
            for key, value in current.items():
                out.append((current, key))
                stack.append(value)
        elif isinstance(current, Pairs):
            for index, (_, value) in enumerate(current.items):
                out.append((current, index))
                stack.append(value)
        elif isinstance(current, list):
            for index, value in enumerate(current):
                out.append((current, index))
                stack.append(value)


def _get(container: Any, key: Any) -> Any:
    return container.items[key][1] if isinstance(container, Pairs) else container[key]


def _set(container: Any, key: Any, value: Any) -> None:
    if isinstance(container, Pairs):
        container.items[key] = (container.items[key][0], value)
    else:
        container[key] = value


def _nest(value: Any, depth: int, mapping: bool) -> Any:
    for _ in range(depth):
        value = {"k": value} if mapping else [value]
    return value


@st.composite
def mutated(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A drawn workflow document with up to five mutations applied, and their names (half of the
    valid documents are left as drawn)."""
    document, valid = draw(workflows())
    applied: list[str] = []
    if valid and draw(st.booleans()):
        return document, applied
    anchors = 0
    for _ in range(draw(st.integers(0, 5))):
        slots: list[tuple[Any, Any]] = []
        _slots(document, slots)
        if not slots:
            break
        container, key = slots[draw(st.integers(0, len(slots) - 1))]
        current = _get(container, key)
        kind = draw(
            st.sampled_from(
                [
                    *("wrong", "unknown", "delete", "duplicate", "template", "nest", "unicode"),
                    *("anchor", "merge", "typo", "literal"),
                ]
            )
        )
        applied.append(kind)
        if kind == "wrong":
            _set(container, key, draw(WRONG))
        elif kind == "unknown" and isinstance(current, dict):
            current[draw(st.sampled_from(["nosuch", "Steps", "inputs", "", "id ", "\u200bid"]))] = 1
        elif kind == "typo" and isinstance(container, dict) and isinstance(key, str) and key:
            value = container.pop(key)
            cut = draw(st.integers(0, len(key) - 1))
            container[key[:cut] + key[cut + 1 :] or "_"] = value
        elif kind == "delete" and isinstance(container, dict | list):
            del container[key]
        elif kind == "duplicate" and isinstance(container, dict):
            pairs = Pairs([*container.items(), (key, draw(WRONG))])
            parent = next((slot for slot in slots if _get(*slot) is container), None)
            if parent is None:
                document = pairs
            else:
                _set(parent[0], parent[1], pairs)
        elif kind == "template":
            _set(container, key, draw(st.sampled_from(BROKEN)))
        elif kind == "nest":
            _set(container, key, _nest(current, draw(st.integers(5, 120)), draw(st.booleans())))
        elif kind == "unicode":
            odd = draw(st.sampled_from(ODD))
            text = current if isinstance(current, str) else "x"
            at = draw(st.integers(0, len(text)))
            _set(container, key, text[:at] + odd + text[at:])
        elif kind == "literal" and isinstance(current, str):
            _set(container, key, Literal(current.replace(" ", "\n", 1)))
        elif kind in ("anchor", "merge"):
            anchors += 1
            name = f"a{anchors}"
            _set(container, key, Anchor(name, current))
            target, target_key = slots[draw(st.integers(0, len(slots) - 1))]
            if kind == "merge" and isinstance(_get(target, target_key), dict):
                _get(target, target_key)["<<"] = Alias(name)
            elif target is not container or target_key != key:
                _set(target, target_key, Alias(name))
    return document, applied


TEXT_EDITS = ("insert", "delete", "duplicate", "tabs", "truncate", "crlf", "cr", "bom", "swap")


@st.composite
def edited(draw: st.DrawFn, text: str) -> str:
    """``text`` with up to two edits of the text itself."""
    for _ in range(draw(st.integers(0, 2))):
        edit = draw(st.sampled_from(TEXT_EDITS))
        at = draw(st.integers(0, len(text)))
        lines = text.split("\n")
        line = draw(st.integers(0, max(len(lines) - 1, 0)))
        if edit == "insert":
            text = (
                text[:at]
                + draw(st.sampled_from([*ODD, ":", "- ", "&", "*", "!", "%", "#", "\n  "]))
                + text[at:]
            )
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)) :]
        elif edit == "duplicate":
            lines.insert(line, lines[line])
            text = "\n".join(lines)
        elif edit == "tabs":
            lines[line] = lines[line].replace("  ", "\t")
            text = "\n".join(lines)
        elif edit == "truncate":
            text = text[:at]
        elif edit == "crlf":
            text = text.replace("\n", "\r\n")
        elif edit == "cr":
            text = text.replace("\n", draw(st.sampled_from(["\r", "\x85", "\u2028"])))
        elif edit == "bom":
            text = "\ufeff" + text
        elif edit == "swap" and len(lines) > 1:
            other = draw(st.integers(0, len(lines) - 1))
            lines[line], lines[other] = lines[other], lines[line]
            text = "\n".join(lines)
    return text


@st.composite
def workflow_texts(draw: st.DrawFn) -> str:
    """The text of a drawn, mutated and perhaps edited workflow."""
    document, _ = draw(mutated())
    rng = draw(st.randoms(use_true_random=False))
    text = emit(document, rng)
    return draw(edited(text)) if draw(st.integers(0, 3)) == 0 else text
