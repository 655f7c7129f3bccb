"""Connecting a Google account through oauth_callback, with the real google-auth-oauthlib against the fake."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from calsync.bootstrap import App, set_app
from calsync.settings import load_settings
from calsync.state.store import utcnow
from calsync.web.links import signed_connect_url
from calsync.web.oauth import CALENDAR_EVENTS_SCOPE, STATE_COOKIE
from tests.parts.directus import CONNECT_KEY
from tests.parts.product import ACCOUNT, Product

pytestmark = [pytest.mark.google, pytest.mark.directus]
ADMIN = {"Authorization": f"Bearer {CONNECT_KEY}"}


@pytest.fixture(autouse=True)
def first_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The first sync a consent asks for, recorded rather than run on a thread of its own, so that it
    cannot race the cycles these tests run themselves."""
    asked: list[tuple[str, str]] = []
    monkeypatch.setattr(App, "request_sync", lambda _app, c, reason: asked.append((c, reason)))
    return asked


def start(product: Product, key: str | None = None) -> requests.Response:
    """/start as a person opens it: through the signed link Directus shows, or with a key."""
    if key is None:
        link = signed_connect_url(product.app.settings, product.app.connection, utcnow())
        assert urlsplit(link).path == "/oauth_callback/start"  # beside the redirect URI's /callback
        # the function alone is served at /, as in production
        return product.client("oauth_callback").get("/start?" + urlsplit(link).query)  # type: ignore[return-value]
    return product.client("oauth_callback").get(f"/start?key={key}")  # type: ignore[return-value]


class Consent(dict[str, str]):
    """The query Google sends back to /callback, and the cookie /start set in the browser that began it."""

    cookie: str | None = None


def browser_cookie(response: requests.Response) -> str:
    header = response.headers["Set-Cookie"]
    assert header.startswith(f"{STATE_COOKIE}=")
    return header.split(";", 1)[0].split("=", 1)[1]


def consent(product: Product) -> Consent:
    """Follow /start to the fake's consent screen, which answers with the redirect Google would send."""
    began = start(product)
    assert began.status_code == 302
    at_google = requests.get(began.headers["Location"], allow_redirects=False, timeout=10)
    assert at_google.status_code == 302, at_google.text
    back = urlsplit(at_google.headers["Location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == str(product.app.settings.google_redirect_uri)
    params = Consent({k: v[0] for k, v in parse_qs(back.query).items()})
    params.cookie = browser_cookie(began)
    return params


def callback(product: Product, params: dict[str, str], cookie: str | None = None) -> requests.Response:
    """Google's redirect back, in the browser holding ``cookie`` (by default the one that began it)."""
    client = product.client("oauth_callback")
    cookie = cookie or getattr(params, "cookie", None)
    if cookie:
        client.set_cookie(STATE_COOKIE, cookie)
    return client.get("/callback", query_string=dict(params))  # type: ignore[return-value]


def status(product: Product) -> dict[str, object]:
    response = product.client("oauth_callback").get("/status", headers=ADMIN)
    assert response.status_code == 200
    return dict(response.get_json())


def test_start_redirects_to_consent_with_offline_pkce_and_a_signed_state(product: Product) -> None:
    response = start(product)
    assert response.status_code == 302
    url = urlsplit(response.headers["Location"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == product.google.auth_uri
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert (
        query["response_type"] == "code"
        and query["access_type"] == "offline"
        and query["prompt"] == "consent"
    )
    assert query["include_granted_scopes"] == "true" and query["code_challenge_method"] == "S256"
    assert CALENDAR_EVENTS_SCOPE in query["scope"].split()
    assert query["redirect_uri"] == str(product.app.settings.google_redirect_uri)
    assert len(query["state"]) > 40 and "." in query["state"]
    # the state is bound to this browser by a cookie only the callback receives
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{STATE_COOKIE}=") and len(browser_cookie(response)) >= 40  # type: ignore[arg-type]
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in cookie.split(";")[1:]}
    assert attributes["path"] == "Path=/oauth_callback/callback" and attributes["max-age"] == "Max-Age=600"
    assert "httponly" in attributes and attributes["samesite"] == "SameSite=Lax"
    assert "secure" not in attributes  # a loopback redirect URI: plain http locally, Secure in production
    assert browser_cookie(response) not in query["state"]  # type: ignore[arg-type]


def test_full_connection_stores_the_token_and_shows_who_is_connected(
    product: Product, tmp_path: Path, first_syncs: list[tuple[str, str]]
) -> None:
    params = consent(product)
    response = callback(product, params)
    assert response.status_code == 302
    assert first_syncs == [("default", "connected")]  # the first cycle starts now, not at the next tick
    assert (
        response.headers["Location"]
        == f"https://crm.example.com/admin/content/calendar_sync?calendar_connected={ACCOUNT.replace('@', '%40')}"
    )
    body = status(product)
    assert body["connected"] is True and body["account"] == ACCOUNT and body["state"] == "connected"
    assert CALENDAR_EVENTS_SCOPE in body["scopes"]  # type: ignore[operator]
    token = product.app.tokens.get()
    assert token is not None and product.google.refresh_token_valid(token)
    token_file = tmp_path / "refresh_token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    # the Directus settings item shows the account too
    settings = product.directus.admin("GET", "/items/calendar_sync").json()["data"]
    assert settings["google_account"] == ACCOUNT and settings["connection_state"] == "connected"
    # and the token works for the calendar
    calendar = product.app.calendar()
    assert calendar is not None and calendar.list_events().items == []


def test_a_replayed_callback_is_refused(product: Product) -> None:
    params = consent(product)
    assert callback(product, params).status_code == 302
    replay = callback(product, params)
    assert replay.status_code == 400 and b"already" in replay.data


def test_forged_and_expired_states_are_refused(product: Product) -> None:
    params = consent(product)
    nonce, issued, bound = params["state"].split(".")
    for state in (f"{nonce}.{issued[:-4]}AAAA.{bound}", f"{nonce}x.{issued}.{bound}", f"{nonce}.{issued}"):
        forged = callback(product, {**params, "state": state}, cookie=params.cookie)
        assert forged.status_code == 400 and b"did not start here" in forged.data
    stored = product.store.consume_oauth_state(params["state"])
    assert stored is not None
    from datetime import timedelta

    product.store.put_oauth_state(
        dataclasses.replace(stored, expires_at=stored.created_at - timedelta(seconds=1))
    )
    expired = callback(product, params)
    assert expired.status_code == 400 and b"10 minutes" in expired.data
    assert product.app.tokens.get() is None


@pytest.mark.parametrize(("key", "status_code"), [("", 401), ("wrong", 403), (CONNECT_KEY + "x", 403)])
def test_start_needs_the_key(product: Product, key: str, status_code: int) -> None:
    response = start(product, key)
    assert response.status_code == status_code and "Location" not in response.headers


def test_access_denied_and_escaped_errors(product: Product) -> None:
    product.google.consent(deny=True)
    params = consent(product)
    assert params["error"] == "access_denied"
    denied = callback(product, params)
    assert denied.status_code == 403 and b"declined" in denied.data
    xss = callback(product, {"error": "<script>alert(1)</script>", "state": "x"})
    assert xss.status_code == 400
    assert b"<script>" not in xss.data and b"&lt;script&gt;" in xss.data


def test_no_refresh_token_is_explained_and_nothing_stored(product: Product) -> None:
    product.google.consent(refresh_token=False)
    response = callback(product, consent(product))
    assert response.status_code == 400 and b"no refresh token" in response.data
    assert product.app.tokens.get() is None and status(product)["connected"] is False


def test_narrowed_scopes_are_refused_and_revoked(product: Product) -> None:
    product.google.consent(scopes=["openid", "https://www.googleapis.com/auth/userinfo.email"])
    response = callback(product, consent(product))
    assert response.status_code == 403 and b"calendar" in response.data
    assert product.app.tokens.get() is None


def test_account_not_allowed(google_fake: object, product: Product, tmp_path: Path) -> None:
    settings = load_settings(
        **{**product.app.settings.model_dump(), "allowed_google_accounts": "@company.example"}
    )
    app = App(settings, sleep=lambda _: None)
    set_app(app)
    product.app = app
    response = callback(product, consent(product))
    assert response.status_code == 403 and b"not in ALLOWED_GOOGLE_ACCOUNTS" in response.data
    assert app.tokens.get() is None


def test_token_endpoint_down_is_a_502(product: Product) -> None:
    params = consent(product)
    product.google.fail_next(3, 500, "backendError", path_contains="/token")
    response = callback(product, params)
    assert response.status_code == 502 and b"Google" in response.data
    assert product.app.tokens.get() is None


def test_disconnect_revokes_and_forgets(product: Product) -> None:
    callback(product, consent(product))
    token = product.app.tokens.get()
    assert token is not None
    oauth = product.client("oauth_callback")
    assert oauth.post("/disconnect", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert oauth.post(f"/disconnect?key={CONNECT_KEY}").status_code == 401  # the key in a URL: refused
    response = oauth.post("/disconnect", headers=ADMIN)
    assert response.status_code == 200 and response.get_json()["revoked"] is True
    assert not product.google.refresh_token_valid(token)
    assert product.app.tokens.get() is None
    assert status(product)["state"] == "disconnected"


def test_the_next_account_reuses_nothing_of_the_previous_one(product: Product) -> None:
    callback(product, consent(product))
    booking = product.create_bookings({"title": "Moves along", "start_datetime": "2030-05-01T10:00:00Z"})[0]
    product.deliver_event("create", [booking["id"]])
    assert product.cycle().status_code == 200
    first_calendar = {e["summary"] for e in product.google.events()}
    assert "Moves along" in first_calendar
    assert product.client("oauth_callback").post("/disconnect", headers=ADMIN).status_code == 200
    assert product.store.list_mappings("default", "bookings", None, 10) == []
    assert product.store.cursor("default", "primary").sync_token is None
    other = "second@example.com"
    product.google.consent(account=other)
    assert callback(product, consent(product)).status_code == 302
    assert product.cycle().get_json()["status"] == "ok"
    assert "Moves along" in {e["summary"] for e in product.google.events(calendar=other)}
    # the first account's calendar was neither read through old mappings nor written to
    assert {e["summary"] for e in product.google.events()} == first_calendar


def test_invalid_grant_marks_needs_reconnect_once_and_a_new_consent_recovers(
    product: Product, caplog: pytest.LogCaptureFixture
) -> None:
    callback(product, consent(product))
    product.google.revoke_all()
    product.google.expire_access_tokens()
    caplog.set_level(logging.ERROR)
    booking = product.create_bookings({"title": "while revoked", "start_datetime": "2026-12-01T10:00:00Z"})[0]
    first = product.deliver_event("create", [booking["id"]])
    assert first.status_code == 202 and first.get_json()["queued"]
    second = product.deliver_event("update", [booking["id"]])
    assert second.status_code == 202
    assert status(product)["needs_reconnect"] is True
    assert sum("needs a new consent" in r.getMessage() for r in caplog.records) == 1  # logged once
    assert product.store.count_outbox("default") == 1  # latest intent per booking
    cycle = product.cycle()
    assert cycle.status_code == 200 and cycle.get_json()["status"] == "needs_reconnect"
    settings = product.directus.admin("GET", "/items/calendar_sync").json()["data"]
    assert settings["connection_state"] == "needs_reconnect"
    # a new consent clears it, and the next cycle drains the queue
    callback(product, consent(product))
    assert status(product)["state"] == "connected"
    drained = product.cycle()
    assert drained.status_code == 200, drained.get_json()
    assert product.store.count_outbox("default") == 0
    assert [e["summary"] for e in product.live_events()] == ["while revoked"]


def test_tokens_never_reach_the_logs(
    product: Product, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from calsync import logs

    logs.configure()
    caplog.set_level(logging.DEBUG)
    params = consent(product)
    callback(product, params)
    token = product.app.tokens.get()
    assert token is not None
    product.client("oauth_callback").post("/disconnect", headers=ADMIN)
    captured = capfd.readouterr()
    text = captured.out + captured.err + caplog.text
    for secret in (token, params["code"], CONNECT_KEY, product.google.client_secret):
        assert secret not in text


def test_secret_manager_holds_the_token_when_configured(product: Product, secretmanager_fake: object) -> None:
    fake = secretmanager_fake
    fake.create_secret("refresh-token")  # type: ignore[attr-defined]
    settings = load_settings(
        **{
            **product.app.settings.model_dump(),
            "token_store": f"secretmanager://projects/{fake.project}/secrets/refresh-token",  # type: ignore[attr-defined]
            "secret_manager_endpoint": fake.endpoint,  # type: ignore[attr-defined]
        }
    )
    app = App(settings, sleep=lambda _: None, store=product.app.store)
    set_app(app)
    product.app = app
    callback(product, consent(product))
    token = app.tokens.get()
    assert token is not None and product.google.refresh_token_valid(token)
    versions = fake.versions(f"projects/{fake.project}/secrets/refresh-token")  # type: ignore[attr-defined]
    assert [v[1] for v in versions].count("ENABLED") == 1
    callback(product, consent(product))  # a reconnect: new version, the old one destroyed
    versions = fake.versions(f"projects/{fake.project}/secrets/refresh-token")  # type: ignore[attr-defined]
    assert [str(v[1]) for v in versions].count("ENABLED") == 1 and len(versions) == 2


def test_a_callback_without_the_browsers_cookie_is_refused_and_consumes_nothing(product: Product) -> None:
    """Login CSRF: an attacker's own consent, sent to the admin's browser, must not connect the attacker."""
    attackers = consent(product)
    for cookie in (None, consent(product).cookie, "made-up"):  # no cookie; another browser's; a guess
        client = product.client("oauth_callback")
        if cookie:
            client.set_cookie(STATE_COOKIE, cookie)
        refused = client.get("/callback", query_string=dict(attackers))
        assert refused.status_code == 400 and b"same browser" in refused.data
        assert "Set-Cookie" not in refused.headers
    assert product.app.tokens.get() is None and status(product)["connected"] is False
    finished = callback(product, attackers)  # its own browser still can: nothing was consumed
    assert finished.status_code == 302 and status(product)["connected"] is True
    assert f"{STATE_COOKIE}=;" in finished.headers["Set-Cookie"]  # spent with its state


def test_another_account_is_refused_until_the_connected_one_is_disconnected(product: Product) -> None:
    callback(product, consent(product))
    token = product.app.tokens.get()
    assert status(product)["account"] == ACCOUNT
    product.google.consent(account="intruder@example.com")
    refused = callback(product, consent(product))
    assert refused.status_code == 409 and b"disconnect" in refused.data and ACCOUNT.encode() in refused.data
    assert product.app.tokens.get() == token and status(product)["account"] == ACCOUNT
    intruder = [t for t, g in product.google._refresh.items() if g.account == "intruder@example.com"]
    assert intruder and not any(product.google.refresh_token_valid(t) for t in intruder)  # revoked
    product.google.consent(account=ACCOUNT.upper())  # the same account again: a plain reconnect
    assert callback(product, consent(product)).status_code == 302
    assert status(product)["account"] == ACCOUNT and product.app.tokens.get() != token
    product.client("oauth_callback").post("/disconnect", headers=ADMIN)
    product.google.consent(account="intruder@example.com")
    assert callback(product, consent(product)).status_code == 302
    assert status(product)["account"] == "intruder@example.com"


def test_directus_shows_a_fresh_signed_connect_link_that_works_and_is_not_the_key(product: Product) -> None:
    product.app.publish_status()  # what every cycle and every connection change does
    link = product.directus.admin("GET", "/items/calendar_sync").json()["data"]["connect_url"]
    assert "link=" in link and CONNECT_KEY not in link and "key=" not in urlsplit(link).query
    opened = product.client("oauth_callback").get("/start?" + urlsplit(link).query)
    assert opened.status_code == 302 and opened.headers["Location"].startswith(product.google.auth_uri)
