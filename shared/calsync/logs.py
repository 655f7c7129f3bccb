"""Structured logs as Cloud Logging reads them: one JSON object per line, secrets scrubbed.

Usage: ``log = logging.getLogger(__name__)`` then ``log.info("pushed", extra=fields(booking="5"))``.
Every secret the process knows (settings, tokens it obtains) is registered with :func:`register_secret`;
the formatter replaces them, and anything shaped like a bearer/OAuth token, before a line is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

_trace: contextvars.ContextVar[str | None] = contextvars.ContextVar("calsync_trace", default=None)
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_MIN_SECRET = 6  # shorter values would scrub ordinary words

REDACTED = "[redacted]"
# Shapes of credentials that may reach a message without being registered (e.g. inside a library's
# exception text): bearer headers, OAuth form fields, Google access (ya29.) and refresh (1//) tokens.
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(
        r"(?i)((?:refresh_token|access_token|id_token|code_verifier|client_secret|[?&]code|[?&]token|[?&]key)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"
    ),
    re.compile(r"ya29\.[A-Za-z0-9._-]+"),
    re.compile(r"1//[A-Za-z0-9._-]{10,}"),
]
_SEVERITY = {"WARNING": "WARNING", "CRITICAL": "CRITICAL", "ERROR": "ERROR", "INFO": "INFO", "DEBUG": "DEBUG"}


def fields(**values: Any) -> dict[str, Any]:
    """``extra=`` for a log call: structured fields shown beside the message."""
    return {"calsync_fields": values}


def register_secret(value: str | None) -> None:
    """Never let this value reach a log line."""
    if value and len(value) >= _MIN_SECRET:
        with _secrets_lock:
            _secrets.add(value)


def scrub(text: str) -> str:
    """The text with every registered secret and token-shaped value replaced."""
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
    return text


def _scrub_value(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(k): _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_scrub_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return scrub(str(value))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: severity, message, time, logger, fields, trace."""

    def __init__(self, project: str | None = None) -> None:
        super().__init__()
        self.project = project

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": scrub(record.getMessage()),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        extra = getattr(record, "calsync_fields", None)
        if extra:
            entry.update({k: _scrub_value(v) for k, v in extra.items() if k not in entry})
        if record.exc_info and record.exc_info[0] is not None:
            # The type and scrubbed text, not the traceback: frames can hold request bodies and tokens.
            entry["error_type"] = record.exc_info[0].__name__
            entry["error"] = scrub(str(record.exc_info[1]))
        trace = _trace.get()
        if trace:
            key = "logging.googleapis.com/trace"
            entry[key] = f"projects/{self.project}/traces/{trace}" if self.project else trace
        return json.dumps(entry, default=str)


_base_factory = logging.getLogRecordFactory()


def _scrubbing_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Records are scrubbed when they are made, so no handler (ours, the platform's, a test's) sees a token."""
    record = _base_factory(*args, **kwargs)
    try:
        message = record.getMessage()
    except Exception:  # a malformed format string: let the handler report it as usual
        return record
    record.msg = scrub(message)
    record.args = None
    return record


def configure(project: str | None = None, level: int = logging.INFO) -> None:
    """Send every log line through the JSON formatter on stdout (idempotent)."""
    logging.setLogRecordFactory(_scrubbing_factory)
    root = logging.getLogger()
    for handler in root.handlers:
        if getattr(handler, "calsync", False):
            handler.setFormatter(JsonFormatter(project))
            return
    handler = logging.StreamHandler(sys.stdout)
    handler.calsync = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter(project))
    root.addHandler(handler)
    root.setLevel(level)
    # The Google client libraries log request URLs at DEBUG/INFO; keep them quiet.
    for noisy in (
        "googleapiclient",
        "google_auth_httplib2",
        "urllib3",
        "google.auth",
        "werkzeug",
        "requests_oauthlib",
        "oauthlib",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def trace_context(header: str | None) -> Iterator[None]:
    """Attach the trace id from ``X-Cloud-Trace-Context: TRACE/SPAN;o=1`` to every line logged within."""
    trace = header.split("/", 1)[0].strip() if header else None
    token = _trace.set(trace if trace and re.fullmatch(r"[0-9a-fA-F]{1,64}", trace) else None)
    try:
        yield
    finally:
        _trace.reset(token)
