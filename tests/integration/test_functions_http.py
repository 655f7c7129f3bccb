"""Each function served by functions-framework from its own main.py, called over its Flask test client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import flask
import pytest
from functions_framework import create_app

from calsync.bootstrap import set_app

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "hook-secret-for-tests-0001"
CONNECT_KEY = "connect-key-for-tests-0002"
SETTING_NAMES = (
    "DIRECTUS_URL",
    "DIRECTUS_TOKEN",
    "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET",
    "GOOGLE_REDIRECT_URI",
    "WEBHOOK_SECRET",
    "CONNECT_KEY",
    "STORE",
    "TOKEN_STORE",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STORE", f"sqlite:///{tmp_path}/state.sqlite3")
    monkeypatch.setenv("TOKEN_STORE", f"file:///{tmp_path}/refresh_token")
    monkeypatch.setenv("WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("CONNECT_KEY", CONNECT_KEY)
    set_app(None)
    yield monkeypatch
    set_app(None)


def client(name: str) -> flask.testing.FlaskClient:
    return create_app(name, str(ROOT / "functions" / name / "main.py")).test_client()


def configure_sync(env: pytest.MonkeyPatch) -> None:
    env.setenv("DIRECTUS_URL", "http://127.0.0.1:9/")
    env.setenv("DIRECTUS_TOKEN", "directus-token-for-tests")
    env.setenv("GOOGLE_CLIENT_ID", "client-id.apps.googleusercontent.com")
    env.setenv("GOOGLE_CLIENT_SECRET", "google-client-secret-for-tests")


def test_booking_hook_authenticates_before_anything_else(env: pytest.MonkeyPatch) -> None:
    hook = client("booking_hook")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": WEBHOOK_SECRET}):
        response = hook.post("/", json={"event": "bookings.items.create"}, headers=headers)
        assert response.status_code == 401
        assert "WEBHOOK_SECRET" in response.get_json()["error"]
    # authenticated, but the Directus and Google settings are missing: 503 naming each of them
    response = hook.post("/", json={}, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    assert response.status_code == 503
    assert response.get_json()["missing"] == [
        "DIRECTUS_URL",
        "DIRECTUS_TOKEN",
        "GOOGLE_CLIENT_ID",
        "GOOGLE_CLIENT_SECRET",
    ]
    assert hook.get("/", headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"}).status_code == 405


def test_booking_hook_without_a_configured_secret_lets_nobody_in(env: pytest.MonkeyPatch) -> None:
    env.delenv("WEBHOOK_SECRET")
    response = client("booking_hook").post("/", json={}, headers={"Authorization": "Bearer anything"})
    assert response.status_code == 503
    assert response.get_json()["missing"] == ["WEBHOOK_SECRET"]


BEARER = {"Authorization": f"Bearer {CONNECT_KEY}"}


def test_oauth_status_needs_the_connect_key(env: pytest.MonkeyPatch) -> None:
    oauth = client("oauth_callback")
    assert oauth.get("/status").status_code == 401
    assert oauth.get("/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert oauth.get("/status?key=wrong").status_code == 403
    response = oauth.get("/status", headers=BEARER)
    assert response.status_code == 200
    body = response.get_json()
    assert (
        body["connected"] is False and body["state"] == "not_connected" and body["needs_reconnect"] is False
    )
    assert body["pending_outbox"] == 0 and body["dead_letters"] == 0
    assert oauth.get("/nowhere").status_code == 404
    start = oauth.get(f"/start?key={CONNECT_KEY}")
    assert start.status_code == 503
    assert start.get_json()["missing"] == ["GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI"]


def one_connection(env: pytest.MonkeyPatch) -> None:
    """Nothing answers at DIRECTUS_URL here: the one implicit connection of an installation without the
    connections collection."""
    from calsync.bootstrap import App
    from calsync.sync.connections import Roster

    env.setattr(App, "roster", lambda app, fresh=False: Roster.implicit("primary"))


def test_calendar_import_answers_503_naming_directus_when_it_cannot_read_the_connections(
    env: pytest.MonkeyPatch,
) -> None:
    configure_sync(env)
    response = client("calendar_import").post("/")
    assert response.status_code == 503
    assert "Directus" in response.get_json()["error"]


def test_calendar_import_answers_not_connected_without_a_token(env: pytest.MonkeyPatch) -> None:
    configure_sync(env)
    one_connection(env)
    importer = client("calendar_import")
    response = importer.post("/")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["status"], body["pending_outbox"]) == ("not_connected", 0)  # the one connection's answer
    assert body["connections"] == {"default": {"status": "not_connected", "pending_outbox": 0}}
    assert importer.get("/").status_code == 405


def test_corrupt_state_file_is_a_503_that_keeps_the_detail_in_the_log(
    env: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "state.sqlite3").write_bytes(b"this is not a database" * 100)
    response = client("oauth_callback").get(f"/status?key={CONNECT_KEY}")
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"].startswith("state store unavailable")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "state.sqlite3" not in text and str(tmp_path) not in text
    assert "state.sqlite3" in caplog.text  # the operator finds the detail in the log


def test_secrets_never_reach_the_logs_or_answers(
    env: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    configure_sync(env)
    from calsync import logs

    logs.configure()
    answers = [
        client("booking_hook").post("/", data=b"{}", headers={"Authorization": f"Bearer {WEBHOOK_SECRET}x"}),
        client("oauth_callback").get(f"/status?key={CONNECT_KEY}x"),
        client("oauth_callback").get("/status", headers={"Authorization": f"Bearer {CONNECT_KEY}x"}),
        client("oauth_callback").get(
            "/start", query_string={"link": _link(datetime(2020, 1, 1, tzinfo=UTC))}
        ),
        client("oauth_callback").get(f"/start?key={CONNECT_KEY}"),
        client("calendar_import").post("/", headers={"X-Cloud-Trace-Context": "abc123/1"}),
    ]
    captured = capfd.readouterr()
    text = captured.out + captured.err + "".join(a.get_data(as_text=True) for a in answers)
    for secret in (WEBHOOK_SECRET, CONNECT_KEY, "directus-token-for-tests", "google-client-secret-for-tests"):
        assert secret not in text


HOOK_AUTH = {"Authorization": f"Bearer {WEBHOOK_SECRET}", "Content-Type": "application/json"}


def _create(key: bytes) -> bytes:
    return b'{"event": "bookings.items.create", "collection": "bookings", "key": ' + key + b"}"


# (function, method, path, request arguments, status, a fragment of the answer naming the problem)
MALFORMED: list[tuple[str, str, str, dict[str, object], int, str]] = [
    ("booking_hook", "POST", "/", {"data": b"[" * 100_000 + b"]" * 100_000}, 400, "nested too deep"),
    ("booking_hook", "POST", "/", {"data": b'{"a":' * 100_000 + b"1" + b"}" * 100_000}, 400, "nested too deep"),
    ("booking_hook", "POST", "/", {"data": b"[" * 100_000}, 400, "nested too deep"),
    ("booking_hook", "POST", "/", {"data": _create(b'"\\ud800"')}, 400, "key has control"),
    ("booking_hook", "POST", "/", {"data": _create(b'"a\\u0000b"')}, 400, "key has control"),
    ("booking_hook", "POST", "/", {"data": _create(b'"a\\nb"')}, 400, "key has control"),
    ("booking_hook", "POST", "/", {"data": _create(b'"' + b"k" * 100_000 + b'"')}, 400, "key too long"),
    ("booking_hook", "POST", "/", {"data": _create(b"9" * 300)}, 400, "key too long"),
    ("booking_hook", "POST", "/", {"data": _create(b"9" * 5000)}, 400, "not valid JSON"),
    ("booking_hook", "POST", "/", {"data": _create(b"true")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b"false")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b"1.0")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b"NaN")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b"1e400")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b'{"id": 1}')}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": _create(b"[1]")}, 400, "key"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "bookings.items.update", "collection": "bookings", '
                                           b'"keys": [1, true]}'}, 400, "keys"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "bookings.items.delete", "collection": "bookings", '
                                           b'"payload": [true, "\\ud800"]}'}, 400, "key has control"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "bookings.items.create", "collection": "\\ud800", '
                                           b'"key": 1}'}, 400, "collection"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "\\ud800.items.create", "key": 1}'}, 400, "event"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "' + b"e" * 100_000 + b'", "key": 1}'}, 400, "event"),
    ("booking_hook", "POST", "/", {"data": b'{"event": 5, "key": 1}'}, 400, "event"),
    ("booking_hook", "POST", "/", {"data": b'{"trigger": {"event": "bookings.items.create", "key": 1}, '
                                           b'"user": {"id": "x"}}'}, 400, "user"),
    ("booking_hook", "POST", "/", {"data": b'{"trigger": {"event": "bookings.items.create", "key": 1}, '
                                           b'"user": "\\ud800"}'}, 400, "user"),
    ("booking_hook", "POST", "/", {"data": b"\xff\xfe{\x00"}, 400, "not valid JSON"),
    ("booking_hook", "POST", "/", {"data": b'{"event": "bookings.items.create", "key": 1'}, 400, "not valid JSON"),
    ("booking_hook", "POST", "/", {"data": b"   "}, 400, "empty body"),
    ("booking_hook", "POST", "/", {"data": b'"just a string"'}, 400, "JSON object"),
    ("booking_hook", "POST", "/", {"data": b"x" * (1024 * 1024 + 1)}, 413, "too large"),
    ("oauth_callback", "GET", "/callback?state=a.%C3%A9", {}, 400, "malformed"),
    ("oauth_callback", "GET", "/callback?state=a.%ED%A0%80", {}, 400, "did not start here"),  # kept encoded
    ("oauth_callback", "GET", "/callback?state=a.%FF", {}, 400, "did not start here"),
    ("oauth_callback", "GET", "/callback?state=" + "a" * 10_000, {}, 400, "malformed"),
    ("oauth_callback", "GET", "/callback?state=abc.def", {}, 400, "did not start here"),
    ("oauth_callback", "GET", "/callback?error=" + "e" * 100_000 + "&state=x", {}, 400, "Google reported"),
    ("oauth_callback", "GET", "/status?key=%C3%A9", {}, 403, "wrong key"),
    ("oauth_callback", "GET", "/status?key=%00", {}, 403, "wrong key"),
    ("oauth_callback", "GET", "/status?key=" + "k" * 100_000, {}, 403, "wrong key"),
    ("oauth_callback", "GET", "/start?key=%ED%A0%80", {}, 403, "wrong key"),
    ("calendar_import", "PUT", "/", {"data": b"[" * 100_000}, 405, "not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("function", "method", "path", "kwargs", "status", "fragment"),
    MALFORMED,
    ids=[f"{m[0]}-{n}" for n, m in enumerate(MALFORMED)],
)
def test_every_malformed_input_is_a_4xx_naming_the_problem(
    env: pytest.MonkeyPatch,
    function: str,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    fragment: str,
) -> None:
    configure_sync(env)
    env.setenv("GOOGLE_REDIRECT_URI", "http://127.0.0.1:9/callback")
    headers = HOOK_AUTH if function == "booking_hook" else {}
    response = client(function).open(path, method=method, headers=headers, **kwargs)  # type: ignore[arg-type]
    text = response.get_data(as_text=True)
    assert response.status_code == status, text[:500]
    assert fragment in text, text[:500]
    assert len(text) < 4000  # nothing the caller sent is echoed back whole
    if function != "oauth_callback" or not path.startswith("/callback"):
        assert response.mimetype == "application/json" and "error" in response.get_json()


@pytest.mark.parametrize(("action", "queued_as"), [("update", "upsert"), ("delete", "delete")])
def test_a_large_delivery_is_queued_whole_without_calling_google(
    env: pytest.MonkeyPatch, action: str, queued_as: str
) -> None:
    from calsync.bootstrap import get_app
    from calsync.sync import routing
    from calsync.web import delivery

    configure_sync(env)
    one_connection(env)

    class NoPush:
        def __init__(self, *args: object) -> None:
            raise AssertionError("a large delivery must not be pushed inline")

    env.setattr(routing, "Pusher", NoPush)
    keys = list(range(1, delivery.INLINE_KEYS + 2))
    body = {"event": f"bookings.items.{action}", "collection": "bookings", "keys": keys}
    response = client("booking_hook").post("/", json=body, headers=HOOK_AUTH)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["queued"] == len(keys)
    store = get_app().store
    assert store.count_outbox("default") == len(keys)
    entry = store.get_outbox("default", "bookings", str(keys[-1]))
    assert entry is not None and entry.action == queued_as


def test_status_still_takes_the_key_in_the_query_but_says_to_use_the_header(
    env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    response = client("oauth_callback").get(f"/status?key={CONNECT_KEY}")
    assert response.status_code == 200 and response.get_json()["state"] == "not_connected"
    assert "CONNECT_KEY in its query string" in caplog.text and CONNECT_KEY not in caplog.text
    # a header, when sent, decides: a wrong one is not rescued by a right ?key=
    wrong = client("oauth_callback").get(f"/status?key={CONNECT_KEY}", headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401


def test_disconnect_takes_the_key_only_in_the_authorization_header(env: pytest.MonkeyPatch) -> None:
    env.setenv("GOOGLE_CLIENT_ID", "client-id.apps.googleusercontent.com")
    env.setenv("GOOGLE_CLIENT_SECRET", "google-client-secret-for-tests")
    env.setenv("GOOGLE_REDIRECT_URI", "http://127.0.0.1:9/callback")
    oauth = client("oauth_callback")
    in_query = oauth.post(f"/disconnect?key={CONNECT_KEY}")
    assert in_query.status_code == 401 and "Authorization" in in_query.get_json()["error"]
    assert oauth.post("/disconnect", headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = oauth.post("/disconnect", headers=BEARER)
    assert response.status_code == 200 and response.get_json()["disconnected"] is True


def _link(now: datetime) -> str:
    from calsync.web.links import connect_link_token

    return connect_link_token(CONNECT_KEY, "default", now)


def test_start_takes_a_signed_link_in_place_of_the_key(env: pytest.MonkeyPatch) -> None:
    from calsync.bootstrap import App
    from calsync.sync.connections import Roster
    from calsync.web.links import LINK_TTL

    configure_sync(env)
    env.setenv("GOOGLE_REDIRECT_URI", "http://127.0.0.1:9/callback")
    # the connections an installation without the connections collection has (Directus is not running)
    env.setattr(App, "roster", lambda self, fresh=False: Roster.implicit("primary"))
    oauth = client("oauth_callback")
    now = datetime.now(UTC)
    fresh = oauth.get("/start", query_string={"link": _link(now)})
    assert fresh.status_code == 302 and fresh.headers["Location"].startswith("https://accounts.google.com/")
    expired = oauth.get("/start", query_string={"link": _link(now - LINK_TTL - timedelta(seconds=1))})
    assert expired.status_code == 403 and expired.mimetype == "text/html"
    assert "This connect link has expired; open the settings item again" in expired.get_data(as_text=True)
    forged = oauth.get("/start", query_string={"link": _link(now)[:-3] + "AAA"})
    assert forged.status_code == 403 and "Location" not in forged.headers
    other = oauth.get("/start", query_string={"link": _link(now).replace(".", "x.", 1)})
    assert other.status_code == 403
    assert oauth.get(f"/start?key={CONNECT_KEY}").status_code == 302  # the key itself still opens it
