"""An HTTP proxy on 127.0.0.1 in front of a real server, which can answer 503 instead of forwarding, or
answer every read of items with no rows.

The functions reach Directus through it in the end-to-end tests, so "Directus is briefly down" and "Directus
answers reads with nothing" (a misconfigured proxy, a wrong DIRECTUS_URL, a restored backup) happen on the
wire, exactly as the product would meet them.
"""

from __future__ import annotations

import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length", "content-encoding", "host"}  # fmt: skip
UNAVAILABLE = b'{"errors":[{"message":"Service Unavailable","extensions":{"code":"SERVICE_UNAVAILABLE"}}]}'
NO_ROWS = b'{"data":[]}'


class FaultProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.fail_rate = 0.0
        self.down = False
        self.blank_reads = False  # every GET of /items/ answers 200 with no rows
        self.rng = random.Random(0)
        self.failures = 0
        self._lock = threading.Lock()
        self._session = requests.Session()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy._should_fail():
                    self._answer(503, UNAVAILABLE)
                    return
                if proxy.blank_reads and self.command == "GET" and self.path.startswith("/items/"):
                    self._answer(200, NO_ROWS)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = proxy._session.request(self.command, proxy.target + self.path, headers=headers, data=body,
                                                  timeout=60, allow_redirects=False)  # fmt: skip
                content = upstream.content
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _forward

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _should_fail(self) -> bool:
        with self._lock:
            fail = self.down or (self.fail_rate > 0 and self.rng.random() < self.fail_rate)
            self.failures += fail
            return fail

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
