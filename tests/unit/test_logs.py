"""Log lines are JSON objects Cloud Logging reads; secrets and tokens never reach them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from calsync import logs


def render(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


@pytest.fixture
def sink() -> io.StringIO:
    """Where the logger below writes its JSON lines."""
    return io.StringIO()


@pytest.fixture
def logger(sink: io.StringIO) -> Iterator[logging.Logger]:
    log = logging.getLogger("calsync.test")
    handler = logging.StreamHandler(sink)
    handler.setFormatter(logs.JsonFormatter(project="proj-1"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    log.removeHandler(handler)


def test_one_json_object_per_line_with_severity_fields_and_trace(
    logger: logging.Logger, sink: io.StringIO
) -> None:
    with logs.trace_context("105445aa7843bc8bf206b12000100000/1;o=1"):
        logger.warning("cycle done", extra=logs.fields(created=3, keys=["1", "2"]))
    logger.info("outside")
    first, second = render(sink)
    assert first["severity"] == "WARNING" and first["message"] == "cycle done"
    assert first["created"] == 3 and first["keys"] == ["1", "2"]
    assert first["logging.googleapis.com/trace"] == "projects/proj-1/traces/105445aa7843bc8bf206b12000100000"
    assert "logging.googleapis.com/trace" not in second


def test_registered_secrets_and_token_shapes_are_scrubbed(logger: logging.Logger, sink: io.StringIO) -> None:
    logs.register_secret("webhook-secret-value-123")
    logger.error(
        "failed with webhook-secret-value-123 and Bearer abc.def.ghi",
        extra=logs.fields(
            body={"refresh_token": "1//0gLongRefreshTokenValue", "nested": ["ya29.a0AccessToken"]},
            url="https://x/callback?code=4/0AauthCode&state=s",
        ),
    )
    text = sink.getvalue()
    for leaked in (
        "webhook-secret-value-123",
        "abc.def.ghi",
        "1//0gLongRefreshTokenValue",
        "ya29.a0AccessToken",
        "4/0AauthCode",
    ):
        assert leaked not in text
    assert text.count(logs.REDACTED) >= 4
    assert json.loads(text)["severity"] == "ERROR"


def test_exceptions_are_logged_as_type_and_scrubbed_text_not_traceback(
    logger: logging.Logger, sink: io.StringIO
) -> None:
    logs.register_secret("client-secret-xyz-789")
    try:
        raise RuntimeError("token endpoint said no to client-secret-xyz-789")
    except RuntimeError:
        logger.exception("refresh failed")
    line = json.loads(sink.getvalue())
    assert line["error_type"] == "RuntimeError"
    assert "client-secret-xyz-789" not in line["error"]
    assert "Traceback" not in json.dumps(line)


def test_short_values_are_not_registered_as_secrets() -> None:
    logs.register_secret("abc")
    assert logs.scrub("abc is an ordinary word") == "abc is an ordinary word"


def test_every_handler_sees_scrubbed_records_after_configure(caplog: pytest.LogCaptureFixture) -> None:
    logs.configure()
    caplog.set_level(logging.DEBUG, logger="some.library")
    logging.getLogger("some.library").debug("Obtained token %s", {"refresh_token": "1//0gLibraryLeakedToken"})
    assert "1//0gLibraryLeakedToken" not in caplog.text
    assert logs.REDACTED in caplog.text
