"""HTTP plumbing shared by the three functions and the local server: JSON errors, authentication, and one
guard that turns every failure into a JSON answer (never a traceback page)."""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

import flask
from pydantic import SecretStr

from calsync import logs
from calsync.settings import SettingsError
from calsync.state.store import StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32  # Directus bodies are 3-4 levels deep; Python's parser recurses once per level
_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")

Handler = Callable[[flask.Request], flask.Response]


class HttpError(Exception):
    """An answer to give instead of going on: status and a message naming the problem."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class MissingSettings(HttpError):
    """The endpoint needs settings that are not configured: 503 naming them."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(503, "not configured: set " + ", ".join(names), missing=names)


def json_response(status: int, body: dict[str, Any]) -> flask.Response:
    response = flask.Response(flask.json.dumps(body), status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def json_error(status: int, message: str, **extra: Any) -> flask.Response:
    return json_response(status, {"error": logs.scrub(message), **extra})


def _matches(given: str, expected: SecretStr) -> bool:
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def require_bearer(request: flask.Request, secret: SecretStr | None, setting: str) -> None:
    """Constant-time check of ``Authorization: Bearer <secret>``; with no secret configured, no entry."""
    if secret is None:
        raise MissingSettings([setting])
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or not _matches(token.strip(), secret):
        raise HttpError(401, f"missing or wrong {setting} in the Authorization header")


def require_key(request: flask.Request, key: SecretStr | None, setting: str) -> None:
    """Constant-time check of the ``?key=`` query parameter (links an admin clicks carry it)."""
    if key is None:
        raise MissingSettings([setting])
    given = request.args.get("key", "")
    if not given:
        raise HttpError(401, "missing key parameter")
    if not _matches(given, key):
        raise HttpError(403, "wrong key")


def require_method(request: flask.Request, *methods: str) -> None:
    if request.method not in methods:
        raise HttpError(405, f"method {request.method} not allowed; use {' or '.join(methods)}")


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without parsing it (no recursion)."""
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def read_json(request: flask.Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The JSON body, refusing oversized or malformed ones with a 4xx naming the problem."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"body too large: {request.content_length} bytes, limit {limit}")
    raw = request.stream.read(limit + 1)
    if len(raw) > limit:
        raise HttpError(413, f"body too large: limit {limit} bytes")
    if not raw.strip():
        raise HttpError(400, "empty body: expected JSON")
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise HttpError(400, f"JSON nested too deep: more than {MAX_JSON_DEPTH} levels")
    try:
        return flask.json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, f"body is not valid JSON: {exc}") from None


def guarded(name: str) -> Callable[[Handler], Handler]:
    """Run a handler with the request's trace id, mapping every failure to a JSON answer."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def run(request: flask.Request) -> flask.Response:
            with logs.trace_context(request.headers.get("X-Cloud-Trace-Context")):
                try:
                    return handler(request)
                except HttpError as exc:
                    if exc.status >= 500:
                        log.warning(exc.message, extra=logs.fields(function=name, status=exc.status))
                    return json_error(exc.status, exc.message, **exc.extra)
                except SettingsError as exc:
                    log.error(str(exc), extra=logs.fields(function=name))
                    return json_error(503, str(exc))
                except StoreError:
                    # The detail (a file path, a resource name) is for the operator's log, not the caller.
                    log.error("state store unavailable", exc_info=True, extra=logs.fields(function=name))
                    return json_error(503, "state store unavailable; see the logs")
                except Exception as exc:
                    log.exception("unexpected failure", extra=logs.fields(function=name))
                    return json_error(500, f"internal error ({type(exc).__name__}); see the logs")

        return run

    return decorate
