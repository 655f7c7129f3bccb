"""The HTTP face of the three functions. ``functions/<name>/main.py`` and the local server both call these.

Each handler authenticates first, then checks the settings it needs (503 naming them), then hands over to
the core. Routing is by path so the same handler serves ``/start`` as a function and
``/oauth_callback/start`` behind the local server's prefix.
"""

from __future__ import annotations

import logging

import flask

from calsync.bootstrap import App, get_app
from calsync.sync.connection import overview, status_body
from calsync.web.http import (
    HttpError,
    MissingSettings,
    guarded,
    json_response,
    require_bearer,
    require_key,
    require_method,
)

log = logging.getLogger(__name__)


def _route(request: flask.Request) -> str:
    return "/" + request.path.strip("/")


def _require_connect_key(request: flask.Request, app: App, query_allowed: bool = False) -> None:
    """``Authorization: Bearer CONNECT_KEY``. ``query_allowed``: /status also takes the older ``?key=``
    (links and scripts made before the header existed), with a warning in the log, when no header is sent."""
    if query_allowed and "Authorization" not in request.headers and "key" in request.args:
        require_key(request, app.settings.connect_key, "CONNECT_KEY")
        log.warning(
            "/status was given CONNECT_KEY in its query string, which ends up in access logs and "
            "browser history; send it in the Authorization header (Bearer) instead"
        )
        return
    require_bearer(request, app.settings.connect_key, "CONNECT_KEY")


@guarded("oauth_callback")
def oauth_callback(request: flask.Request) -> flask.Response:
    """Connect a Google account to a connection: /start, /callback, /status, /disconnect."""
    app = get_app()
    route = _route(request)
    if route not in ("/start", "/callback", "/status", "/disconnect"):
        raise HttpError(404, f"no route {route}; use /start, /callback, /status or /disconnect")
    from calsync.web import oauth  # only this function pays for oauthlib

    if route == "/status":
        require_method(request, "GET")
        _require_connect_key(request, app, query_allowed=True)
        connection = request.args.get("connection")
        if connection is not None:
            return json_response(200, status_body(app.store, connection, oauth.known(app, connection)))
        return json_response(200, overview(app.store, oauth.roster(app), app.connection))
    if route == "/disconnect":
        require_method(request, "POST")
        _require_connect_key(request, app)
        app.require("google_client_id", "google_client_secret", "google_redirect_uri")
        return json_response(200, oauth.disconnect(app, request.args.get("connection") or app.connection))
    require_method(request, "GET")
    if app.settings.connect_key is None:  # it signs links and states
        raise MissingSettings(["CONNECT_KEY"])
    connection = app.connection
    if route == "/start":
        checked = oauth.check_start(app, request)  # a signed link, or the key itself
        if isinstance(checked, flask.Response):
            return checked
        connection = checked
    app.require("google_client_id", "google_client_secret", "google_redirect_uri")
    if route == "/start":
        return oauth.start(app, connection)
    return oauth.callback(app, request)


@guarded("booking_hook")
def booking_hook(request: flask.Request) -> flask.Response:
    """A Directus Flow delivery: write the bookings' Google events. ``/notifications``: Google's push
    notifications, authenticated by their channel's own token instead of WEBHOOK_SECRET."""
    app = get_app()
    if _route(request) == "/notifications":
        from calsync.web.notifications import handle_notification

        return handle_notification(app, request)
    require_bearer(request, app.settings.webhook_secret, "WEBHOOK_SECRET")
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    from calsync.web.hook import handle_delivery

    return handle_delivery(app, request)


@guarded("calendar_import")
def calendar_import(request: flask.Request) -> flask.Response:
    """One tick: every connection's cycle (Cloud Scheduler calls this), or the one connection's cycle a
    Pub/Sub push delivery asks for (the platform checks the OIDC token of both)."""
    app = get_app()
    require_method(request, "POST")
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    from calsync.web import sync_requests

    pushed = sync_requests.push_delivery(request)
    if pushed is not None:
        return sync_requests.answer(app, pushed)
    result = app.run_tick()
    return json_response(result.http_status, result.body)
