"""The HTTP face of the three functions. ``functions/<name>/main.py`` and the local server both call these.

Each handler authenticates first, then checks the settings it needs (503 naming them), then hands over to
the core. Routing is by path so the same handler serves ``/start`` as a function and
``/oauth_callback/start`` behind the local server's prefix.
"""

from __future__ import annotations

from typing import Any

import flask

from calsync.http import HttpError, guarded, json_response, require_bearer, require_key, require_method
from calsync.store import ConnectionStatus
from calsync.wiring import App, get_app

NOT_YET = "not implemented yet in this version"


def _route(request: flask.Request) -> str:
    return "/" + request.path.strip("/")


def status_body(app: App) -> dict[str, Any]:
    """What /status shows: the connection, the last cycle and what is waiting."""
    status: ConnectionStatus = app.store.get_status(app.connection)
    return {
        "connection": app.connection,
        "connected": status.state == "connected",
        "state": status.state,
        "needs_reconnect": status.state == "needs_reconnect",
        "account": status.account,
        "scopes": list(status.scopes),
        "connected_at": status.connected_at.isoformat() if status.connected_at else None,
        "last_cycle_at": status.last_cycle_at.isoformat() if status.last_cycle_at else None,
        "last_cycle": dict(status.last_cycle) if status.last_cycle else None,
        "last_error": status.last_error,
        "pending_outbox": app.store.count_outbox(app.connection),
        "dead_letters": app.store.count_dead_letters(app.connection),
    }


@guarded("oauth_callback")
def oauth_callback(request: flask.Request) -> flask.Response:
    """Connect a Google account: /start, /callback, /status, /disconnect."""
    app = get_app()
    route = _route(request)
    if route == "/status":
        require_method(request, "GET")
        require_key(request, app.settings.connect_key, "CONNECT_KEY")
        return json_response(200, status_body(app))
    if route in ("/start", "/disconnect"):
        require_method(request, "GET" if route == "/start" else "POST")
        require_key(request, app.settings.connect_key, "CONNECT_KEY")
        app.require("google_client_id", "google_client_secret", "google_redirect_uri")
        raise HttpError(501, f"{route}: {NOT_YET}")
    if route == "/callback":
        require_method(request, "GET")
        raise HttpError(501, f"{route}: {NOT_YET}")
    raise HttpError(404, f"no route {route}; use /start, /callback, /status or /disconnect")


@guarded("booking_hook")
def booking_hook(request: flask.Request) -> flask.Response:
    """A Directus Flow delivery: write the bookings' Google events."""
    app = get_app()
    require_bearer(request, app.settings.webhook_secret, "WEBHOOK_SECRET")
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    raise HttpError(501, f"booking delivery: {NOT_YET}")


@guarded("calendar_import")
def calendar_import(request: flask.Request) -> flask.Response:
    """One sync cycle (Cloud Scheduler calls this; the platform checks its OIDC token)."""
    app = get_app()
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    if app.tokens.get(app.connection) is None:
        return json_response(200, {"status": "not_connected"})
    raise HttpError(501, f"sync cycle: {NOT_YET}")
