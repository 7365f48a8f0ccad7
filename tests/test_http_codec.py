"""The HTTP transport's pure encoding rules: statuses, Retry-After, query and body encoding."""

from __future__ import annotations

from typing import Any

import pytest

from maestro_gateway.codes import Code
from maestro_gateway.errors import CallError
from maestro_gateway.model.types import Service
from maestro_gateway.transports.http import (
    HttpTransport,
    json_body,
    parse_retry_after,
    query_params,
    status_code,
)

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (100, Code.UNKNOWN),
        (301, Code.FAILED_PRECONDITION),
        (408, Code.FAILED_PRECONDITION),
        (499, Code.FAILED_PRECONDITION),
        (505, Code.INTERNAL),
        (599, Code.INTERNAL),
        (600, Code.UNKNOWN),
    ],
)
def test_statuses_outside_the_table_map_by_class(status: int, code: Code) -> None:
    """Statuses the table does not name map by class; outside 3xx–5xx they are UNKNOWN."""
    assert status_code(status) is code


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Tue, 14 Nov 2023 22:13:50 GMT", 30.0),
        ("Tue, 14 Nov 2023 22:00:00 GMT", 0.0),
        ("-5", None),
        ("soon", None),
        ("", None),
        ("inf", None),
        (None, None),
    ],
)
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    """Delta-seconds and HTTP dates give a delay (a past date: 0); anything else None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_query_params_keep_order_and_stringify_keys() -> None:
    """Parameters follow the object's order; keys are strings; an empty object gives none."""
    assert query_params({"b": 1, "a": [2.5, {"x": 1.0}]}) == [
        ("b", "1"),
        ("a", "2.5"),
        ("a", '{"x":1}'),
    ]
    assert query_params({}) == []
    assert query_params(None) == []


@pytest.mark.parametrize("request_value", ["text", 3, [1]])
def test_query_params_need_an_object(request_value: Any) -> None:
    """A scalar or a list cannot become query parameters: INVALID_ARGUMENT, permanent."""
    with pytest.raises(CallError) as info:
        query_params(request_value)
    assert (info.value.code, info.value.permanent) == (Code.INVALID_ARGUMENT, True)


def test_json_body_is_compact_utf8_with_integral_floats_as_ints() -> None:
    """Bodies are compact UTF-8 JSON; 2.0 is sent as 2, 2.5 stays, big floats stay floats."""
    body = json_body({"n": 2.0, "f": 2.5, "s": "é", "l": [1.0, None, True], "big": 1e300})
    assert body == '{"n":2,"f":2.5,"s":"é","l":[1,null,true],"big":1e+300}'.encode()
    assert json_body(None) is None
    assert json_body([]) == b"[]"


@pytest.mark.parametrize(
    "method",
    ["", "GET", "get/x", "G3T /x", "GET\t"],
)
async def test_malformed_methods_are_invalid_argument(method: str) -> None:
    """A method that is not 'VERB /path' or '/path' is INVALID_ARGUMENT before any connection."""
    transport = HttpTransport(Service(name="s", type="http", endpoint="http://127.0.0.1:1"))
    try:
        with pytest.raises(CallError) as info:
            await transport.call(method, {}, timeout=1.0, metadata=())
    finally:
        await transport.close()
    assert (info.value.code, info.value.permanent) == (Code.INVALID_ARGUMENT, True)


@pytest.mark.parametrize(
    ("method", "metadata"),
    [
        ("GET /a\x00b", ()),
        ("GET /x", [("x-name", "café")]),
        ("GET /x", [("bad header", "v")]),
    ],
    ids=["control-char-path", "non-ascii-header", "bad-header-name"],
)
async def test_unsendable_requests_are_invalid_argument(method: str, metadata: Any) -> None:
    """A path or header that cannot go on the wire is INVALID_ARGUMENT, never a foreign exception."""
    transport = HttpTransport(Service(name="s", type="http", endpoint="http://127.0.0.1:1"))
    try:
        with pytest.raises(CallError) as info:
            await transport.call(method, {}, timeout=1.0, metadata=metadata)
    finally:
        await transport.close()
    assert info.value.code is Code.INVALID_ARGUMENT
