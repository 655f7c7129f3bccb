"""The HTTP face of the three functions. ``functions/<name>/main.py`` and the local server both call these.

Each handler authenticates first, then checks the settings it needs (503 naming them), then hands over to
the core. Routing is by path so the same handler serves ``/start`` as a function and
``/oauth_callback/start`` behind the local server's prefix.
"""

from __future__ import annotations

import flask

from calsync.bootstrap import get_app
from calsync.sync.connection import status_body
from calsync.web.http import (
    HttpError,
    MissingSettings,
    guarded,
    json_response,
    require_bearer,
    require_key,
    require_method,
)


def _route(request: flask.Request) -> str:
    return "/" + request.path.strip("/")


@guarded("oauth_callback")
def oauth_callback(request: flask.Request) -> flask.Response:
    """Connect a Google account: /start, /callback, /status, /disconnect."""
    app = get_app()
    route = _route(request)
    if route == "/status":
        require_method(request, "GET")
        require_key(request, app.settings.connect_key, "CONNECT_KEY")
        return json_response(200, status_body(app.store, app.connection))
    if route not in ("/start", "/callback", "/disconnect"):
        raise HttpError(404, f"no route {route}; use /start, /callback, /status or /disconnect")
    from calsync.web import oauth  # only this function pays for oauthlib

    if route == "/callback":
        require_method(request, "GET")
        if app.settings.connect_key is None:  # it signs the state
            raise MissingSettings(["CONNECT_KEY"])
        app.require("google_client_id", "google_client_secret", "google_redirect_uri")
        return oauth.callback(app, request)
    require_method(request, "GET" if route == "/start" else "POST")
    require_key(request, app.settings.connect_key, "CONNECT_KEY")
    app.require("google_client_id", "google_client_secret", "google_redirect_uri")
    if route == "/start":
        return oauth.start(app)
    return json_response(200, oauth.disconnect(app))


@guarded("booking_hook")
def booking_hook(request: flask.Request) -> flask.Response:
    """A Directus Flow delivery: write the bookings' Google events."""
    app = get_app()
    require_bearer(request, app.settings.webhook_secret, "WEBHOOK_SECRET")
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    from calsync.web.hook import handle_delivery

    return handle_delivery(app, request)


@guarded("calendar_import")
def calendar_import(request: flask.Request) -> flask.Response:
    """One sync cycle (Cloud Scheduler calls this; the platform checks its OIDC token)."""
    app = get_app()
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    from calsync.sync.cycle import run_cycle

    result = run_cycle(app.context())
    return json_response(result.http_status, result.body)
