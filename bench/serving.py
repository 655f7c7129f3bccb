"""The functions served over real HTTP inside the product's process (bench/worker.py), for the scenarios where
Google and Pub/Sub call the product: the Google fake's push notifications reach booking_hook's
``/notifications``, the Pub/Sub emulator's push subscription reaches calendar_import.

Each function is the functions-framework app the worker already built, on a werkzeug server of its own,
threaded (a thread per request, as Cloud Run gives an instance concurrent requests). calendar_import sits
behind a :class:`Gate`: at most ``concurrency`` requests run at once, the others wait for a slot (as requests
wait for a free instance), and every delivery is recorded (when it came, how long it took, what it answered),
so a scenario can wait for the cycles it caused and say how many ran at once.
"""

from __future__ import annotations

import dataclasses
import io
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _Handler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # without it every answer stalls ~40 ms (delayed ACK)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One request calendar_import served: ``connection`` from a Pub/Sub push's attributes (None for a
    tick), the HTTP status, the answer's ``status`` field, and its times (monotonic: waited for a slot,
    then ran)."""

    connection: str | None
    http_status: int
    status: str | None
    arrived: float
    started: float
    ended: float

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Gate:
    """WSGI middleware: at most ``concurrency`` requests inside ``app`` at once, every one recorded."""

    def __init__(self, app: WsgiApp, concurrency: int) -> None:
        self.app = app
        self.concurrency = concurrency
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Condition()
        self._inside = 0
        self.peak = 0  # the most requests inside at once
        self.deliveries: list[Delivery] = []

    def reset(self) -> None:
        with self._lock:
            self.deliveries.clear()
            self.peak = self._inside

    def inside(self) -> int:
        with self._lock:
            return self._inside

    def wait(self, done: Callable[[list[Delivery]], bool], timeout: float) -> bool:
        """Wait until ``done(deliveries)`` holds (checked after each delivery); False after ``timeout``."""
        with self._lock:
            return self._lock.wait_for(lambda: done(self.deliveries), timeout)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        arrived = time.monotonic()
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"], seen["headers"] = status, headers
            return lambda data: None

        with self._slots:
            with self._lock:
                self._inside += 1
                self.peak = max(self.peak, self._inside)
            started = time.monotonic()
            try:
                body = b"".join(self.app(environ, capture))
            finally:
                with self._lock:
                    self._inside -= 1
        ended = time.monotonic()
        delivery = Delivery(_connection(raw), int(seen["status"].split()[0]), _status(body), arrived, started,
                            ended)  # fmt: skip
        with self._lock:
            self.deliveries.append(delivery)
            self._lock.notify_all()
        start_response(seen["status"], seen["headers"])
        return [body]


def _connection(raw: bytes) -> str | None:
    try:
        connection = json.loads(raw)["message"]["attributes"]["connection"]
    except (ValueError, KeyError, TypeError):
        return None
    return str(connection)


def _status(body: bytes) -> str | None:
    try:
        status = json.loads(body).get("status")
    except (ValueError, AttributeError):
        return None
    return str(status) if status is not None else None


class Served:
    """A WSGI app on ``127.0.0.1:port``, served from a thread until ``stop()``."""

    def __init__(self, app: WsgiApp, port: int) -> None:
        self._server: BaseWSGIServer = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=_Handler
        )
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"serve-{port}", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
