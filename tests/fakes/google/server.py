"""HTTP plumbing: the werkzeug server, routing, the request log, injected faults and latency."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import Any, Self
from urllib.parse import parse_qs

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from .errors import _MESSAGES, ApiError, Headers, Reply, _error_reply, _oauth_error

_CALENDAR_API = "/calendar/v3/"
_BATCH_PATH = "/batch/calendar/v3"


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return (_first(query, name) or "").lower() == "true"


@dataclasses.dataclass(frozen=True)
class Call:
    """What a fault filter sees of a request (a batch part is a call of its own, ``in_batch`` set)."""

    method: str
    path: str
    query: str
    in_batch: bool


Match = str | Callable[[Call], bool]


@dataclasses.dataclass
class _Fault:
    remaining: int
    status: int | None  # None: lose the response
    reason: str
    path_contains: str | None
    method: str | None
    match: Match | None = None

    def matches(self, call: Call) -> bool:
        if self.remaining <= 0:
            return False
        if self.path_contains is not None and self.path_contains not in call.path:
            return False
        if self.method is not None and self.method.upper() != call.method.upper():
            return False
        if isinstance(self.match, str):
            return self.match in call.path
        return self.match is None or bool(self.match(call))


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int  # 0 for a lost response
    batch: bool  # the HTTP request was a batch
    part: bool  # a part inside a batch (not an HTTP request of its own)


class _Lost(Exception):
    """Commit done; the connection is to be closed without an answer."""


class _Handler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # without it every response stalls ~40 ms

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServerMixin:
    """The HTTP server, routing to the other concerns, faults, latency and the request log."""

    def _init_server(self) -> None:
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.latency = 0.0
        self._faults: list[_Fault] = []
        self._fault_rate = 0.0
        self._rng = random.Random(0)
        self._log: list[LoggedRequest] = []

    def start(self) -> Self:
        server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="google-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self if self._server is not None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not started"
        return int(self._server.server_address[1])

    @property
    def api_root(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def auth_uri(self) -> str:
        return f"{self.api_root}o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        return f"{self.api_root}token"

    @property
    def revoke_uri(self) -> str:
        return f"{self.api_root}revoke"

    @property
    def userinfo_uri(self) -> str:
        return f"{self.api_root}oauth2/v3/userinfo"

    # -- test API: faults, latency, log ---------------------------------------------------------------
    def fail_next(
        self,
        n: int,
        status: int,
        reason: str,
        path_contains: str | None = None,
        method: str | None = None,
        match: Match | None = None,
    ) -> None:
        """The next n matching requests (HTTP requests, or batch parts) fail with status/reason.

        Every filter given must hold; ``match`` is a path substring or a predicate on a ``Call``."""
        with self._lock:
            self._faults.append(_Fault(n, status, reason, path_contains, method, match))

    def lose_response_next(
        self,
        n: int,
        path_contains: str | None = None,
        method: str | None = None,
        match: Match | None = None,
    ) -> None:
        """The next n matching HTTP requests are carried out, then the connection closes unanswered.

        Batch parts are never lost on their own (a batch answer is all or nothing): to lose a batch,
        match its path ``/batch/``."""
        with self._lock:
            self._faults.append(_Fault(n, None, "lost", path_contains, method, match))

    def set_fault_rate(self, rate: float, seed: int = 0) -> None:
        """Random 429/500/503/lost responses on this share of Calendar HTTP requests (and 429/5xx on parts)."""
        with self._lock:
            self._fault_rate = rate
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._fault_rate = 0.0

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._send_updates.clear()

    def count(
        self, method: str | None = None, path_contains: str | None = None, batch: bool | None = None
    ) -> int:
        """HTTP requests seen (a batch is one, whatever it holds)."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if not r.part
                and (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
                and (batch is None or r.batch == batch)
            )

    def count_parts(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Calls carried inside batch requests."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if r.part
                and (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
            )

    # -- WSGI -----------------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "/"))
        query_string = str(environ.get("QUERY_STRING", ""))
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if self.latency:
            time.sleep(self.latency)
        is_batch = path == _BATCH_PATH
        try:
            status, out_headers, out_body = self._serve(method, path, query_string, headers, body, is_batch)
        except _Lost:
            self._record(LoggedRequest(method, path, query_string, 0, is_batch, False))
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("response lost on purpose") from None
        self._record(LoggedRequest(method, path, query_string, status, is_batch, False))
        phrase = HTTPStatus(status).phrase
        out_headers.setdefault("Content-Length", str(len(out_body)))
        start_response(f"{status} {phrase}", list(out_headers.items()))
        return [out_body]

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, method: str, path: str, query: str, part: bool) -> _Fault | None:
        """A configured fault for this request, or a random one; None: serve normally."""
        call = Call(method, path, query, part)
        with self._lock:
            for fault in self._faults:
                if fault.matches(call) and not (part and fault.status is None):
                    fault.remaining -= 1
                    return dataclasses.replace(fault)
            api = path.startswith((_CALENDAR_API, _BATCH_PATH))
            if api and self._fault_rate and self._rng.random() < self._fault_rate:
                kinds: list[tuple[int | None, str]] = [
                    (429, "rateLimitExceeded"),
                    (500, "backendError"),
                    (503, "backendError"),
                ]
                if not part:
                    kinds.append((None, "lost"))
                status, reason = self._rng.choice(kinds)
                return _Fault(1, status, reason, None, None)
        return None

    def _fault_reply(self, fault: _Fault, path: str) -> Reply:
        assert fault.status is not None
        message = _MESSAGES.get(fault.reason, fault.reason)
        if path.startswith(("/token", "/revoke", "/o/oauth2")):
            return _oauth_error(fault.status, fault.reason, message)
        return _error_reply(fault.status, fault.reason, message)

    def _serve(
        self, method: str, path: str, query_string: str, headers: Headers, body: bytes, is_batch: bool
    ) -> Reply:
        fault = self._take_fault(method, path, query_string, part=False)
        if fault is not None and fault.status is not None:
            return self._fault_reply(fault, path)
        if is_batch:
            reply = (
                self._batch(method, headers, body) if method == "POST" else _error_reply(405, "invalid", "")
            )
        else:
            reply = self._route(method, path, query_string, headers, body)
        if fault is not None:  # lost: the work is done, the answer never arrives
            raise _Lost
        return reply

    def _route(self, method: str, path: str, query_string: str, headers: Headers, body: bytes) -> Reply:
        query = parse_qs(query_string, keep_blank_values=True)
        if path == "/o/oauth2/auth" and method == "GET":
            return self._authorize(query)
        if path == "/token" and method == "POST":
            return self._token(headers, body)
        if path == "/revoke" and method == "POST":
            return self._revoke(query, headers, body)
        if path == "/oauth2/v3/userinfo" and method == "GET":
            return self._userinfo(headers)
        if path.startswith(_CALENDAR_API):
            try:
                return self._calendar_api(method, path[len(_CALENDAR_API) :], query, headers, body)
            except ApiError as exc:
                return _error_reply(exc.status, exc.reason, exc.message)
        return _error_reply(404, "notFound", "Not Found")
