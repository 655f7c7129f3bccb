"""Connecting a Google account: the consent start, the callback, and disconnecting.

The consent runs through google-auth-oauthlib's ``Flow`` (PKCE S256, ``access_type=offline``). The ``state``
is unguessable, signed with a key derived from CONNECT_KEY (a forged one is refused before any lookup) and
single-use (consumed atomically from the SyncStore together with its PKCE verifier). Only this module imports
oauthlib, so the other functions do not pay for it.

Every step is for one connection: the signed Connect link (or ``?connection=``) names it, the OAuth state
carries it, and the callback stores the refresh token under it. A connection with ``account_from`` has no
consent of its own: connecting the connection it names connects it too. One Google account serves one
connection and those that name it in ``account_from``; the same account consenting on a second connection
is refused (its calendars are reached through ``account_from`` instead), because two consents of one
account would share one grant at Google, and revoking either would end both.

Scopes: ``calendar.events`` is all the sync needs (read and write events, incremental sync); ``openid`` and
``userinfo.email`` let the token response say which account consented (its ID token), without an extra call
and without the broader ``calendar`` scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import logging
import os
import secrets
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import flask
import requests
from pydantic import SecretStr

from calsync import logs
from calsync.bootstrap import App, UnknownConnection
from calsync.directus.errors import DirectusError
from calsync.directus.status import SETTINGS_COLLECTION
from calsync.settings import ANY_ACCOUNT, Settings
from calsync.state.store import DEFAULT_CONNECTION, OAuthState, StoreError, utcnow
from calsync.sync.channels import stop_channels
from calsync.sync.connection import mark_connected, mark_disconnected
from calsync.sync.connections import CONNECTIONS_COLLECTION, ConnectionSpec, Roster
from calsync.sync.ports import SyncContext
from calsync.web import links
from calsync.web.http import HttpError, require_key

log = logging.getLogger(__name__)

CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
SCOPES = ("openid", EMAIL_SCOPE, CALENDAR_EVENTS_SCOPE)
STATE_TTL = timedelta(minutes=10)
MAX_STATE_LENGTH = 512
STATE_COOKIE = "calsync_oauth"
MAX_CODE_LENGTH = 2048
TIMEOUT_S = 15
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class TokenEndpointDown(Exception):
    """Google's token endpoint answered 5xx/429: Google's failure, not the admin's."""


# -- pages --------------------------------------------------------------------------------------------


def page(status: int, title: str, text: str, action: str | None = None) -> flask.Response:
    """A short HTML page that says what happened and what to do; every piece of text is escaped."""
    body = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>{t}</title>"
        "<body style='font-family:sans-serif;max-width:40em;margin:3em auto'>"
        "<h1>{t}</h1><p>{x}</p>{a}</body></html>"
    ).format(
        t=html.escape(title),
        x=html.escape(logs.scrub(text)),
        a=f"<p>{html.escape(action)}</p>" if action else "",
    )
    response = flask.Response(body, status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response


def redirect(url: str) -> flask.Response:
    response = flask.Response(status=302, headers={"Location": url})
    response.headers["Cache-Control"] = "no-store"
    return response


START_AGAIN = "Open the “Connect Google Calendar” link again to start over."


# -- state --------------------------------------------------------------------------------------------


def _state_key(connect_key: SecretStr) -> bytes:
    return links.derive_key(connect_key.get_secret_value(), "calsync-oauth-state")


def _signature(connect_key: SecretStr, *parts: str) -> str:
    digest = hmac.new(_state_key(connect_key), "\0".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def browser_binding(cookie: str) -> str:
    """What a state remembers of the browser that began it: the SHA-256 of its cookie, never the cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_state(connect_key: SecretStr, binding: str) -> str:
    """``nonce.issued.bound``: ``issued`` proves we made it; ``bound`` ties it to the browser's cookie hash
    (the state is stored whole, so the binding travels with the stored OAuth state without a new field)."""
    nonce = secrets.token_urlsafe(32)
    return f"{nonce}.{_signature(connect_key, 'issued', nonce)}.{_signature(connect_key, 'bound', nonce, binding)}"


def _state_parts(state: str) -> list[str] | None:
    parts = state.split(".")
    return parts if state.isascii() and len(parts) == 3 and all(parts) else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def state_is_signed(connect_key: SecretStr, state: str) -> bool:
    """We issued this state (before any lookup: a forged one costs nothing)."""
    parts = _state_parts(state)
    return parts is not None and _same(parts[1], _signature(connect_key, "issued", parts[0]))


def state_is_bound_to(connect_key: SecretStr, state: str, cookie: str | None) -> bool:
    """This browser began this state: its cookie is the one /start set along with it."""
    parts = _state_parts(state)
    if parts is None or not cookie or not cookie.isascii():
        return False
    return _same(parts[2], _signature(connect_key, "bound", parts[0], browser_binding(cookie)))


def _cookie_path(settings: Settings) -> str:
    assert settings.google_redirect_uri is not None
    return settings.google_redirect_uri.path or "/"


def _bind_browser(response: flask.Response, settings: Settings, cookie: str) -> None:
    """The cookie only /callback receives: HttpOnly, SameSite=Lax (Google's redirect back is a top-level
    GET, which Lax lets through), Secure except on a loopback redirect URI (plain-http local runs)."""
    assert settings.google_redirect_uri is not None
    response.set_cookie(
        STATE_COOKIE,
        cookie,
        max_age=int(STATE_TTL.total_seconds()),
        path=_cookie_path(settings),
        secure=settings.google_redirect_uri.host not in _LOOPBACK,
        httponly=True,
        samesite="Lax",
    )


def _forget_browser(response: flask.Response, settings: Settings) -> flask.Response:
    assert settings.google_redirect_uri is not None
    response.delete_cookie(
        STATE_COOKIE,
        path=_cookie_path(settings),
        secure=settings.google_redirect_uri.host not in _LOOPBACK,
        httponly=True,
        samesite="Lax",
    )
    return response


# -- the Connect link ---------------------------------------------------------------------------------


def check_start(app: App, request: flask.Request) -> str | flask.Response:
    """/start is opened with a signed ``link`` (what Directus shows, naming its connection) or the key itself
    (``?connection=ID``, default ``default``). The connection to connect, or a page if refused."""
    assert app.settings.connect_key is not None
    token = request.args.get("link")
    if token is None:
        require_key(request, app.settings.connect_key, "CONNECT_KEY")
        return request.args.get("connection") or DEFAULT_CONNECTION
    try:
        connection, _ = links.check_connect_link(app.settings.connect_key.get_secret_value(), token, utcnow())
    except links.LinkExpired:
        return page(
            403,
            "This connect link has expired",
            "This connect link has expired; open the settings item again for a fresh one.",
        )
    except links.LinkInvalid:
        return page(
            403,
            "Unrecognised connect link",
            "This connect link was not made by this installation, or it was changed.",
            "Open the “Connect Google Calendar” link in Directus's settings item again.",
        )
    return connection


def roster(app: App, fresh: bool = False) -> Roster:
    """The connections, or a 503 naming Directus when it cannot say which there are."""
    try:
        return app.roster(fresh=fresh)
    except DirectusError as exc:
        raise HttpError(503, f"Directus did not answer the connections read: {exc}") from None


def known(app: App, connection: str) -> ConnectionSpec:
    """The connection's definition; a 404 naming it when there is none."""
    try:
        return app.spec(connection)
    except UnknownConnection:
        raise no_such(connection) from None
    except DirectusError as exc:
        raise HttpError(503, f"Directus did not answer the connections read: {exc}") from None


def no_such(connection: str) -> HttpError:
    return HttpError(
        404,
        f"no connection {connection[:64]!r}: add it in {CONNECTIONS_COLLECTION} "
        "(or `calsync connections add`) first",
        connection=connection[:64],
    )


def _uses_another_account(spec: ConnectionSpec) -> flask.Response:
    owner = spec.account_from
    return page(
        409,
        "This calendar uses another connection's Google account",
        f"The calendar of {spec.label} uses the Google account connected on {owner}: connect that one, "
        f"and {spec.label} is connected with it (one consent serves all the calendars of one account).",
        f"Open the Connect link of {owner}.",
    )


# -- the consent flow ---------------------------------------------------------------------------------


def _allow_plain_http_on_loopback(settings: Settings) -> None:
    """oauthlib refuses http:// endpoints; the local Google fake is one. Production URIs are https."""
    for uri in (settings.google_auth_uri, settings.google_token_uri):
        if uri.scheme == "http" and uri.host in _LOOPBACK:
            os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    # include_granted_scopes may return more scopes than asked for; oauthlib would raise "Scope has
    # changed". We check the granted scopes ourselves below.
    os.environ["OAUTHLIB_RELAX_TOKEN_SCOPE"] = "1"  # noqa: S105 - a flag, not a secret


def _flow(settings: Settings, state: str | None = None, code_verifier: str | None = None) -> Any:
    from google_auth_oauthlib.flow import Flow

    _allow_plain_http_on_loopback(settings)
    assert settings.google_client_secret is not None
    redirect_uri = str(settings.google_redirect_uri)
    client_config = {
        "web": {
            "client_id": settings.google_client_id,
            "client_secret": settings.google_client_secret.get_secret_value(),
            "auth_uri": str(settings.google_auth_uri),
            "token_uri": str(settings.google_token_uri),
            "redirect_uris": [redirect_uri],
        }
    }
    return Flow.from_client_config(
        client_config,
        scopes=list(SCOPES),
        redirect_uri=redirect_uri,
        state=state,
        code_verifier=code_verifier,
    )


def start(app: App, connection: str = DEFAULT_CONNECTION) -> flask.Response:
    """302 to Google's consent screen with a fresh single-use state for this connection (404 for one that
    does not exist; a 409 page for one that uses another connection's account)."""
    spec = known(app, connection)
    if spec.account_from:
        return _uses_another_account(spec)
    settings = app.settings
    assert settings.connect_key is not None
    cookie = secrets.token_urlsafe(32)
    state = new_state(settings.connect_key, browser_binding(cookie))
    flow = _flow(settings)
    url, _ = flow.authorization_url(
        state=state, access_type="offline", prompt="consent", include_granted_scopes="true"
    )
    app.store.put_oauth_state(
        OAuthState(
            state=state,
            connection=spec.id,
            code_verifier=flow.code_verifier,
            expires_at=utcnow() + STATE_TTL,
        )
    )
    response = redirect(url)
    _bind_browser(response, settings, cookie)
    return response


def _granted_scopes(token: dict[str, Any]) -> list[str]:
    scope = token.get("scope") or []
    return scope.split() if isinstance(scope, str) else [str(s) for s in scope]


def _account_from_id_token(id_token: str | None) -> tuple[str | None, bool]:
    """(email, verified) from the ID token's claims.

    Its signature is not checked: it came straight from Google's token endpoint over TLS, which OpenID
    Connect Core 3.1.3.7 allows in place of validation."""
    if not id_token or id_token.count(".") != 2:
        return None, False
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None, False
    email = claims.get("email")
    return (str(email).lower() if email else None), bool(claims.get("email_verified", False))


def account_allowed(settings: Settings, account: str) -> bool:
    """ALLOWED_GOOGLE_ACCOUNTS: comma-separated emails or @domain; ``any`` (or unset) allows any account."""
    if not settings.allowed_google_accounts or settings.allowed_google_accounts == ANY_ACCOUNT:
        return True
    account = account.lower()
    for rule in (r.strip().lower() for r in settings.allowed_google_accounts.split(",")):
        if rule and (account == rule or (rule.startswith("@") and account.endswith(rule))):
            return True
    return False


def revoke(settings: Settings, token: str) -> tuple[bool, str]:
    """Revoke a token at Google. (revoked, detail); an already invalid token counts as revoked."""
    try:
        response = requests.post(
            str(settings.google_revoke_uri),
            data={"token": token},
            timeout=TIMEOUT_S,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    except requests.RequestException as exc:
        return False, f"Google's revoke endpoint could not be reached ({type(exc).__name__})"
    if response.ok:
        return True, "revoked at Google"
    if response.status_code == 400:
        return True, "Google already considered the token invalid"
    return False, f"Google's revoke endpoint answered {response.status_code}"


def _check_token_response(response: requests.Response) -> requests.Response:
    if response.status_code >= 500 or response.status_code == 429:
        raise TokenEndpointDown(f"Google's token endpoint answered {response.status_code}")
    return response


def callback(app: App, request: flask.Request) -> flask.Response:
    """Finish the consent: check the state, exchange the code, keep the refresh token, go back to Directus."""
    settings = app.settings
    assert settings.connect_key is not None
    args = request.args
    if args.get("error"):
        error = args["error"]
        if error == "access_denied":
            return page(
                403,
                "Access was not granted",
                "Google says the consent was declined, so nothing was connected.",
                START_AGAIN,
            )
        return page(
            400, "Google reported an error", f"Google answered the consent with: {error[:200]}.", START_AGAIN
        )
    state = args.get("state", "")
    if not state:
        return page(400, "Missing state", "This address lacks the state Google sends back.", START_AGAIN)
    if not state.isascii() or len(state) > MAX_STATE_LENGTH:
        return page(400, "Unrecognised request", "This address's state is malformed.", START_AGAIN)
    if not state_is_signed(settings.connect_key, state):
        return page(
            400,
            "Unrecognised request",
            "This sign-in did not start here (its state is not ours).",
            START_AGAIN,
        )
    if not state_is_bound_to(settings.connect_key, state, request.cookies.get(STATE_COOKIE)):
        # Login CSRF: someone else's consent, sent to this browser, must not connect their account here.
        return page(
            400,
            "Start again from the same browser",
            "This sign-in was started in another browser (or this browser's cookies were cleared), so it "
            "cannot be finished here. Nothing was changed.",
            "Open the “Connect Google Calendar” link again in this browser and finish the sign-in in it.",
        )
    try:
        stored = app.store.consume_oauth_state(state)
    except StoreError:
        log.exception("state store unavailable during the OAuth callback")
        return page(
            503, "Temporarily unavailable", "The connection could not be checked right now.", START_AGAIN
        )
    if stored is None:
        return page(
            400, "Link already used", "This sign-in was already completed or is unknown.", START_AGAIN
        )
    return _forget_browser(_finish(app, request, stored), settings)  # the state is spent: so is its cookie


def _finish(app: App, request: flask.Request, stored: OAuthState) -> flask.Response:
    """The state was ours, this browser's, and is now consumed: exchange the code and keep the token."""
    settings = app.settings
    args = request.args
    if stored.expired():
        return page(400, "Link expired", "The sign-in took longer than 10 minutes.", START_AGAIN)
    code = args.get("code", "")
    if not code:
        return page(400, "Missing code", "Google did not send an authorization code.", START_AGAIN)
    if not code.isascii() or not code.isprintable() or len(code) > MAX_CODE_LENGTH:
        return page(
            400, "Malformed code", "The authorization code in this address is malformed.", START_AGAIN
        )

    from oauthlib.oauth2.rfc6749.errors import OAuth2Error

    flow = _flow(settings, state=stored.state, code_verifier=stored.code_verifier)
    flow.oauth2session.register_compliance_hook("access_token_response", _check_token_response)
    try:
        token: dict[str, Any] = dict(flow.fetch_token(code=code, timeout=TIMEOUT_S))
    except TokenEndpointDown as exc:
        log.warning("token exchange failed at Google", extra=logs.fields(error=str(exc)))
        return page(
            502,
            "Google is not answering",
            f"{exc}; nothing was stored.",
            "Try again in a few minutes. " + START_AGAIN,
        )
    except requests.RequestException as exc:
        log.warning("token endpoint unreachable", extra=logs.fields(error_type=type(exc).__name__))
        return page(
            502,
            "Google is not answering",
            "Google's token endpoint could not be reached; nothing was stored.",
            START_AGAIN,
        )
    except OAuth2Error as exc:
        log.warning("token exchange refused", extra=logs.fields(error=exc.error))
        return page(
            400,
            "Google refused the sign-in",
            f"Google did not accept the authorization ({exc.error}).",
            START_AGAIN,
        )
    refresh_token = token.get("refresh_token")
    logs.register_secret(refresh_token)
    logs.register_secret(token.get("access_token"))
    account, verified = _account_from_id_token(token.get("id_token"))
    try:
        connections = roster(app, fresh=True)
    except HttpError:
        log.warning("connections unreadable during the OAuth callback", exc_info=True)
        return page(
            503, "Temporarily unavailable", "The connection could not be checked right now.", START_AGAIN
        )
    spec = connections.get(stored.connection)
    holder = _connected_elsewhere(app, connections, stored.connection, account)

    def discard() -> None:
        """Refuse the new token at Google, unless its account serves another connection: Google revokes
        the app's grant for the account, which would end that connection's access too."""
        if refresh_token and holder is None:
            revoke(settings, refresh_token)

    if spec is None:
        discard()
        return page(
            404,
            "This calendar connection no longer exists",
            f"The connection {stored.connection} was removed while you signed in; nothing was stored.",
        )
    if spec.account_from:
        discard()
        return _uses_another_account(spec)
    granted = _granted_scopes(token)
    if CALENDAR_EVENTS_SCOPE not in granted and CALENDAR_SCOPE not in granted:
        discard()
        return page(
            403,
            "Calendar access was not granted",
            "The consent did not include access to your calendar events, which the sync needs.",
            "Start again and leave the calendar box ticked. " + START_AGAIN,
        )
    if not refresh_token:
        return page(
            400,
            "Google kept the long-lived access back",
            "Google returned no refresh token, so the sync could not run while you are away.",
            "Remove this app at https://myaccount.google.com/permissions, then connect again.",
        )
    if account is None or not verified:
        discard()
        return page(400, "Unknown account", "Google did not confirm which account consented.", START_AGAIN)
    if not account_allowed(settings, account):
        discard()
        log.warning("consent from an account that is not allowed", extra=logs.fields(account=account))
        return page(
            403,
            "This account is not allowed",
            f"{account} is not in ALLOWED_GOOGLE_ACCOUNTS; nothing was stored and its access was revoked.",
            "Connect with an allowed account.",
        )
    if holder is not None:
        log.warning(
            "consent from an account another connection uses",
            extra=logs.fields(connection=spec.id, account=account, holder=holder),
        )
        return page(
            409,
            "This Google account is connected elsewhere",
            f"{account} is already connected on {holder}, so it was not connected on {spec.label} too. "
            f"To sync another calendar of {account} here, set this connection's account_from to {holder} "
            "and its calendar_id to that calendar.",
            f"Otherwise connect {spec.label} with the staff member's own Google account.",
        )
    connected = app.store.get_status(spec.id)
    current = (connected.account or account).lower()
    if connected.state in ("connected", "needs_reconnect") and current != account:
        # Another account's consent must not silently move the sync (and every booking) to its calendar.
        discard()
        log.warning(
            "consent from another account while one is connected",
            extra=logs.fields(connection=spec.id, account=account, connected=connected.account),
        )
        return page(
            409,
            "Another Google account is connected",
            f"{connected.account} is connected now, so {account} was not connected; its access was revoked. "
            f"To switch accounts, disconnect {connected.account} first, then connect again.",
            "Reconnecting the same account needs no disconnect.",
        )
    served = connections.sharing(spec.id)  # itself, and every connection using its account
    try:
        app.tokens.put(refresh_token, spec.id)
        for each in served:
            mark_connected(app.store, each.id, account, granted)
    except StoreError:
        log.exception("could not store the refresh token")
        return page(
            503,
            "Could not save the connection",
            "The token store is unavailable; nothing changed.",
            START_AGAIN,
        )
    for each in served:
        app.forget_calendar(each.id)
        app.publish_status(each.id)
        _first_sync(app, each.id)
    base = settings.directus_link_base
    if base is None:
        return page(200, "Google Calendar connected", f"Connected as {account}. You can close this page.")
    # The Data Studio opens a singleton at /admin/content/<collection> (the default connection's settings
    # item) and an item at /admin/content/<collection>/<key>; the publish above just showed it connected.
    target = f"{urlsplit(base)._replace(query='').geturl().rstrip('/')}/admin/content/"
    target += SETTINGS_COLLECTION if spec.id == DEFAULT_CONNECTION else f"{CONNECTIONS_COLLECTION}/{spec.id}"
    return redirect(f"{target}?{urlencode({'calendar_connected': account})}")


def _connected_elsewhere(app: App, connections: Roster, connection: str, account: str | None) -> str | None:
    """The other connection holding a consent of this account (connected or awaiting a reconnect)."""
    if account is None:
        return None
    for spec in connections.specs:
        if spec.id == connection or spec.account_from:
            continue
        status = app.store.get_status(spec.id)
        if status.state in ("connected", "needs_reconnect") and (status.account or "").lower() == account:
            return spec.id
    return None


def _first_sync(app: App, connection: str) -> None:
    """Ask for the new connection's first cycle now; the scheduler's tick runs it anyway if this fails."""
    try:
        app.request_sync(connection, "connected")
    except Exception:
        log.warning(
            "could not request the first sync", exc_info=True, extra=logs.fields(connection=connection)
        )


def disconnect(app: App, connection: str = DEFAULT_CONNECTION) -> dict[str, Any]:
    """Disconnect one connection: revoke its refresh token at Google, destroy every stored copy, and forget
    its mappings and sync token. Connections using its account (``account_from``) lose their access with
    it and are disconnected too (named in ``also_disconnected``). A connection that uses another's account
    only stops: nothing is revoked, the other connection keeps its token."""
    connections = roster(app, fresh=True)
    spec = connections.get(connection)
    token = app.tokens.get(connection)
    if spec is None and token is None:
        raise no_such(connection)
    spec = spec or ConnectionSpec(connection)  # removed in Directus, its token left behind: forget it too
    sharing = [s for s in connections.sharing(spec.id) if s.id != spec.id] if not spec.account_from else []
    for each in (spec, *sharing):
        _stop_push(app, each)  # with the account's credentials, so before any revocation
    if spec.account_from:
        _forget(app, spec)
        detail = f"uses the Google account connected on {spec.account_from}, which stays connected"
        return {
            "disconnected": True,
            "connection": spec.id,
            "revoked": False,
            "detail": detail,
            "also_disconnected": [],
        }
    revoked, detail = revoke(app.settings, token) if token else (True, "no token was stored")
    app.tokens.delete(spec.id)
    for each in (spec, *sharing):
        _forget(app, each)
    if not revoked:
        log.warning(
            "token forgotten here but not revoked at Google",
            extra=logs.fields(connection=spec.id, detail=detail),
        )
    return {
        "disconnected": True,
        "connection": spec.id,
        "revoked": revoked,
        "detail": detail,
        "also_disconnected": [s.id for s in sharing],
    }


def _stop_push(app: App, spec: ConnectionSpec) -> None:
    """Stop the connection's push channels at Google (best effort: one that cannot be stopped expires by
    itself within days, and its notifications are answered as unknown)."""
    try:
        if app.roster().get(spec.id) is not None:
            stop_channels(app.context(spec.id), app.calendar(spec.id))
        else:  # removed in Directus: its channels are forgotten (they expire by themselves)
            ctx = SyncContext(
                connection=spec.id,
                config=app.config(spec),
                store=app.store,
                directus=app.directus,
                calendar=lambda: None,
            )
            stop_channels(ctx, None)
    except Exception:
        log.warning("could not stop the push channels", extra=logs.fields(connection=spec.id), exc_info=True)


def _forget(app: App, spec: ConnectionSpec) -> None:
    mark_disconnected(app.store, spec.id, app.settings.directus_collection, spec.calendar_id)
    app.forget_calendar(spec.id)
    app.publish_status(spec.id)
