"""Log records as ``key=value`` text and as JSON lines (``--log-format json``)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from maestro_gateway.redaction import MASK, SECRETS, RedactingFormatter
from maestro_gateway.server.logfmt import JsonFormatter, logfmt

SECRET = "tok-Zq81-secret-0093"


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    """Each test starts and ends with an empty redaction registry."""
    SECRETS.clear()
    yield
    SECRETS.clear()


def lines(formatter: logging.Formatter, emit: Callable[[logging.Logger], None]) -> list[str]:
    """What ``emit(log)`` writes through ``formatter``, line by line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("tests.logfmt")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_logfmt_text_is_unchanged_by_the_fields_it_keeps() -> None:
    """logfmt still returns the text line; values with spaces or quotes are quoted."""
    line = logfmt("execution", id="e-1", workflow="checkout", problem='a "b"\nc', n=3)
    assert line == 'execution id=e-1 workflow=checkout problem="a \\"b\\"\\nc" n=3'
    assert isinstance(line, str)


def test_json_lines_carry_the_logfmt_fields_as_fields() -> None:
    """One object per line: time, level, logger, message (the event), then each field typed."""
    out = lines(
        JsonFormatter(),
        lambda log: log.info(
            logfmt("execution", id="e-1", duration_ms=12, ratio=0.5, ok=True, none=None, obj=[1])
        ),
    )
    assert len(out) == 1
    record = json.loads(out[0])
    assert list(record) == [
        "time",
        "level",
        "logger",
        "message",
        "id",
        "duration_ms",
        "ratio",
        "ok",
        "none",
        "obj",
    ]
    assert record["level"] == "INFO"
    assert record["logger"] == "tests.logfmt"
    assert record["message"] == "execution"
    assert (record["id"], record["duration_ms"], record["ratio"]) == ("e-1", 12, 0.5)
    assert (record["ok"], record["none"], record["obj"]) == (True, None, "[1]")
    assert record["time"].endswith("Z")


def test_a_field_named_like_a_reserved_key_moves_aside() -> None:
    """A ``message`` field does not replace the event: it is written as ``_message``."""
    out = lines(JsonFormatter(), lambda log: log.debug(logfmt("execution_error", message="boom")))
    record = json.loads(out[0])
    assert (record["message"], record["_message"], record["level"]) == (
        "execution_error",
        "boom",
        "DEBUG",
    )


def test_json_lines_are_redacted_everywhere_and_stay_valid_json() -> None:
    """A secret in a field, a %-argument, a plain message or a traceback becomes ***."""
    SECRETS.add([SECRET, 'quo"te\\d-secret'])

    def emit(log: logging.Logger) -> None:
        log.warning(logfmt("call_failed", url=f"http://h/{SECRET}?q=1", step="a"))
        log.info("journal %s: commit failed (%s)", "j", SECRET)
        log.info(f'plain {SECRET} and quo"te\\d-secret')
        try:
            raise RuntimeError(f"bad {SECRET}")
        except RuntimeError:
            log.exception(logfmt("execution_crashed", id="e-1"))

    out = lines(JsonFormatter(), emit)
    text = "\n".join(out)
    assert SECRET not in text
    assert "quo" not in text
    records = [json.loads(line) for line in out]
    assert records[0]["url"] == f"http://h/{MASK}?q=1"
    assert records[1]["message"] == f"journal j: commit failed ({MASK})"
    assert records[2]["message"] == f"plain {MASK} and {MASK}"
    assert records[3]["message"] == "execution_crashed"
    assert f"RuntimeError: bad {MASK}" in records[3]["exception"]


def test_the_text_format_still_redacts() -> None:
    """The default format is the logfmt text, redacted as before."""
    SECRETS.add([SECRET])
    out = lines(
        RedactingFormatter("level=%(levelname)s %(message)s"),
        lambda log: log.info(logfmt("call", url=f"http://h/{SECRET}")),
    )
    assert out == [f"level=INFO call url=http://h/{MASK}"]
