"""The local server: all three functions in one process under their path prefixes.

Each function is mounted as its own WSGI app, so a handler sees the same path (``/start``) as it does when
served alone by functions-framework.
"""

from __future__ import annotations

from collections.abc import Callable

import flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from calsync.web import entrypoints

FUNCTIONS: dict[str, Callable[[flask.Request], flask.Response]] = {
    "oauth_callback": entrypoints.oauth_callback,
    "booking_hook": entrypoints.booking_hook,
    "calendar_import": entrypoints.calendar_import,
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def function_app(name: str, handler: Callable[[flask.Request], flask.Response]) -> flask.Flask:
    app = flask.Flask(f"calsync.{name}")

    def serve(path: str = "") -> flask.Response:
        return handler(flask.request)

    app.add_url_rule("/", name, serve, methods=METHODS, strict_slashes=False)
    app.add_url_rule("/<path:path>", name + "_path", serve, methods=METHODS)
    return app


def create_app() -> DispatcherMiddleware:
    index = flask.Flask("calsync")

    @index.route("/", defaults={"path": ""})
    @index.route("/<path:path>")
    def unknown(path: str) -> flask.Response:
        body = {"error": f"no function at /{path}", "functions": [f"/{name}/" for name in FUNCTIONS]}
        return flask.Response(flask.json.dumps(body), status=404, mimetype="application/json")

    mounts = {f"/{name}": function_app(name, handler) for name, handler in FUNCTIONS.items()}
    return DispatcherMiddleware(index, mounts)  # type: ignore[arg-type]
