"""Staff calendars: connecting, showing and disconnecting several connections through oauth_callback.

The real google-auth-oauthlib and Calendar client against the HTTP fake of Google (several accounts, each with
its own tokens and calendars). The connections are what Directus's connections collection would hold: the App
is given a roster (no Directus runs here), and the first syncs it is asked for are recorded, not run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import flask
import pytest
import requests
from functions_framework import create_app

from calsync.bootstrap import App, set_app
from calsync.settings import load_settings
from calsync.state.store import EventMapping, utcnow
from calsync.sync.connections import Roster
from calsync.web.links import signed_connect_url
from calsync.web.oauth import STATE_COOKIE
from tests.fakes.google import GoogleFake

pytestmark = pytest.mark.google

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://127.0.0.1:9/oauth_callback/callback"
CONNECT_KEY = "connect-key-for-staff-tests-0003"
ADMIN = {"Authorization": f"Bearer {CONNECT_KEY}"}
WHEN = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
ALICE, BOB, OFFICE = "alice@salon.example", "bob@salon.example", "office@salon.example"
FRONT = "front0001@group.calendar.google.com"
BACK = "back00001@group.calendar.google.com"
CONNECTIONS = [
    {"id": "default", "name": "Salon"},
    {"id": "alice", "name": "Alice", "staff": "alice"},
    {"id": "bob", "name": "Bob", "staff": "bob"},
    {"id": "office", "name": "Office", "staff": "office"},
    {"id": "front", "name": "Front desk", "staff": "front", "calendar_id": FRONT, "account_from": "office"},
    {"id": "back", "name": "Back room", "staff": "back", "calendar_id": BACK, "account_from": "office"},
]


class Staff:
    """The App with a roster of staff connections, and the people around it."""

    def __init__(self, google: GoogleFake, app: App, monkeypatch: pytest.MonkeyPatch) -> None:
        self.google, self.app = google, app
        self.items = [dict(item) for item in CONNECTIONS]
        self.synced: list[tuple[str, str]] = []
        monkeypatch.setattr(App, "roster", lambda _app, fresh=False: Roster.from_items(self.items))
        monkeypatch.setattr(App, "request_sync", lambda _app, c, reason: self.synced.append((c, reason)))

    def client(self) -> flask.testing.FlaskClient:
        main = ROOT / "functions" / "oauth_callback" / "main.py"
        return create_app("oauth_callback", str(main)).test_client()

    def connect(self, connection: str, account: str) -> flask.Response:
        """Open the connection's signed Connect link as ``account`` and come back from Google."""
        self.google.consent(account=account)
        link = signed_connect_url(self.app.settings, connection, utcnow())
        client = self.client()
        began = client.get("/start?" + urlsplit(link).query)
        if began.status_code != 302:
            return began
        at_google = requests.get(began.headers["Location"], allow_redirects=False, timeout=10)
        back = {k: v[0] for k, v in parse_qs(urlsplit(at_google.headers["Location"]).query).items()}
        cookie = began.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1]
        client.set_cookie(STATE_COOKIE, cookie)
        return client.get("/callback", query_string=back)

    def status(self, connection: str | None = None) -> dict[str, Any]:
        query = {"connection": connection} if connection else {}
        response = self.client().get("/status", headers=ADMIN, query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)
        return dict(response.get_json())

    def disconnect(self, connection: str) -> flask.Response:
        return self.client().post("/disconnect", headers=ADMIN, query_string={"connection": connection})

    def map_booking(self, connection: str, key: str, calendar_id: str = "primary") -> None:
        self.app.store.put_mappings(
            [EventMapping(connection, "bookings", key, calendar_id, f"ev{connection}{key}", "hash")]
        )


@pytest.fixture
def staff(google_fake: GoogleFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Staff]:
    google_fake.register_client(google_fake.client_id, google_fake.client_secret, [REDIRECT_URI])
    google_fake.add_calendar(OFFICE, FRONT, summary="Front desk")
    google_fake.add_calendar(OFFICE, BACK, summary="Back room")
    settings = load_settings(
        google_client_id=google_fake.client_id,
        google_client_secret=google_fake.client_secret,
        google_redirect_uri=REDIRECT_URI,
        connect_key=CONNECT_KEY,
        allowed_google_accounts="any",
        store=f"sqlite:///{tmp_path}/state.sqlite3",
        token_store=f"file:///{tmp_path}/refresh_token",
        google_api_root=google_fake.api_root,
        google_auth_uri=google_fake.auth_uri,
        google_token_uri=google_fake.token_uri,
        google_revoke_uri=google_fake.revoke_uri,
    )
    app = App(settings, sleep=lambda _: None)
    set_app(app)
    yield Staff(google_fake, app, monkeypatch)
    set_app(None)


def test_each_staff_member_connects_their_own_account_to_their_own_connection(
    staff: Staff, tmp_path: Path
) -> None:
    assert staff.connect("alice", ALICE).status_code == 200
    assert staff.connect("bob", BOB).status_code == 200
    tokens = staff.app.tokens
    assert {c: staff.google._refresh[tokens.get(c) or ""].account for c in ("alice", "bob")} == {
        "alice": ALICE,
        "bob": BOB,
    }
    assert tokens.get() is None  # the default connection was not touched
    assert (tmp_path / "refresh_token.alice").stat().st_mode & 0o777 == 0o600
    assert staff.synced == [("alice", "connected"), ("bob", "connected")]  # a first sync of each
    for connection, account in (("alice", ALICE), ("bob", BOB)):
        assert staff.status(connection)["account"] == account
        calendar = staff.app.calendar(connection)
        assert calendar is not None and calendar.list_events().items == []
    staff.google.create_event("Alice's walk-in", WHEN, calendar=ALICE)
    alice = staff.app.calendar("alice")
    assert alice is not None and [e["summary"] for e in alice.list_events().items] == ["Alice's walk-in"]
    bob = staff.app.calendar("bob")
    assert bob is not None and bob.list_events().items == []  # Bob's own calendar, not Alice's


def test_one_business_account_serves_its_secondary_calendars_with_one_consent(staff: Staff) -> None:
    refused = staff.connect("front", OFFICE)
    assert refused.status_code == 409 and "Location" not in refused.headers
    text = refused.get_data(as_text=True)
    assert "connected on office" in text and "connect that one" in text
    assert staff.connect("office", OFFICE).status_code == 200
    assert staff.app.tokens.get("office") is not None
    assert staff.app.tokens.get("front") is None and staff.app.tokens.get("back") is None  # one consent
    assert sorted(staff.synced) == [("back", "connected"), ("front", "connected"), ("office", "connected")]
    for connection in ("office", "front", "back"):
        body = staff.status(connection)
        assert body["state"] == "connected" and body["account"] == OFFICE, (connection, body)
    assert staff.status("front")["account_from"] == "office" and staff.status("front")["calendar_id"] == FRONT
    staff.google.create_event("At the front desk", WHEN, calendar=FRONT)
    front = staff.app.calendar("front")
    assert front is not None and [e["summary"] for e in front.list_events().items] == ["At the front desk"]
    back = staff.app.calendar("back")
    assert back is not None and back.list_events().items == []


def test_an_unknown_connection_is_a_404_naming_it_everywhere(staff: Staff) -> None:
    client = staff.client()
    for response in (
        client.get(f"/start?key={CONNECT_KEY}&connection=carol"),
        staff.connect("carol", ALICE),  # a genuine link for a connection that does not exist
        client.get("/status", headers=ADMIN, query_string={"connection": "carol"}),
        staff.disconnect("carol"),
    ):
        assert response.status_code == 404, response.get_data(as_text=True)
        body = response.get_json()
        assert "'carol'" in body["error"] and body["connection"] == "carol"
    assert client.get(f"/start?key={CONNECT_KEY}&connection=alice").status_code == 302  # the key opens any


def test_one_account_is_not_connected_to_two_connections(staff: Staff) -> None:
    assert staff.connect("alice", ALICE).status_code == 200
    token = staff.app.tokens.get("alice")
    refused = staff.connect("bob", ALICE)
    text = refused.get_data(as_text=True)
    assert refused.status_code == 409 and "already connected on alice" in text and "account_from" in text
    assert staff.app.tokens.get("bob") is None and staff.status("bob")["state"] == "not_connected"
    # not revoked: Google would end the grant that alice's connection uses as well
    assert token is not None and staff.google.refresh_token_valid(token)
    calendar = staff.app.calendar("alice")
    assert calendar is not None and calendar.list_events().items == []
    assert staff.connect("bob", BOB).status_code == 200  # Bob's own account is fine


def test_another_account_is_refused_per_connection_until_it_is_disconnected(staff: Staff) -> None:
    assert staff.connect("alice", ALICE).status_code == 200
    intruder = staff.connect("alice", "intruder@example.com")
    assert intruder.status_code == 409 and "disconnect" in intruder.get_data(as_text=True)
    assert staff.status("alice")["account"] == ALICE
    grants = [t for t, g in staff.google._refresh.items() if g.account == "intruder@example.com"]
    assert grants and not any(staff.google.refresh_token_valid(t) for t in grants)  # revoked
    assert staff.connect("bob", BOB).status_code == 200  # the rule is per connection
    assert staff.connect("alice", ALICE).status_code == 200  # the same account: a plain reconnect
    assert staff.disconnect("alice").status_code == 200
    assert staff.connect("alice", "intruder@example.com").status_code == 200
    assert (
        staff.status("alice")["account"] == "intruder@example.com" and staff.status("bob")["account"] == BOB
    )


def test_disconnecting_one_connection_revokes_and_forgets_only_its_own(staff: Staff) -> None:
    staff.connect("alice", ALICE)
    staff.connect("bob", BOB)
    alice, bob = staff.app.tokens.get("alice"), staff.app.tokens.get("bob")
    staff.map_booking("alice", "1")
    staff.map_booking("bob", "2")
    staff.app.store.update_cursor("bob", "primary", sync_token="bob-sync-token")
    answer = staff.disconnect("alice")
    assert answer.status_code == 200
    assert answer.get_json() == {
        "disconnected": True,
        "connection": "alice",
        "revoked": True,
        "detail": "revoked at Google",
        "also_disconnected": [],
    }
    assert alice is not None and not staff.google.refresh_token_valid(alice)
    assert bob is not None and staff.google.refresh_token_valid(bob) and staff.app.tokens.get("bob") == bob
    assert staff.app.tokens.get("alice") is None
    store = staff.app.store
    assert store.list_mappings("alice", "bookings", None, 10) == []
    assert [m.booking_key for m in store.list_mappings("bob", "bookings", None, 10)] == ["2"]
    assert store.cursor("bob", "primary").sync_token == "bob-sync-token"
    assert staff.status("alice")["state"] == "disconnected" and staff.status("bob")["state"] == "connected"
    calendar = staff.app.calendar("bob")
    assert calendar is not None and calendar.list_events().items == []


def test_disconnecting_the_account_holder_disconnects_the_calendars_using_it(staff: Staff) -> None:
    staff.connect("office", OFFICE)
    token = staff.app.tokens.get("office")
    staff.map_booking("front", "7", FRONT)
    answer = staff.disconnect("office").get_json()
    assert answer["revoked"] is True and answer["also_disconnected"] == ["back", "front"]
    assert token is not None and not staff.google.refresh_token_valid(token)
    for connection in ("office", "front", "back"):
        assert staff.status(connection)["state"] == "disconnected", connection
    assert staff.app.store.list_mappings("front", "bookings", None, 10) == []


def test_disconnecting_a_calendar_that_uses_another_account_only_stops_it(staff: Staff) -> None:
    staff.connect("office", OFFICE)
    token = staff.app.tokens.get("office")
    staff.map_booking("front", "7", FRONT)
    staff.map_booking("back", "8", BACK)
    answer = staff.disconnect("front").get_json()
    assert answer["revoked"] is False and "office" in answer["detail"] and answer["also_disconnected"] == []
    assert token is not None and staff.google.refresh_token_valid(token)
    assert staff.app.tokens.get("office") == token
    assert staff.status("front")["state"] == "disconnected"
    assert staff.status("back")["state"] == staff.status("office")["state"] == "connected"
    assert staff.app.store.list_mappings("front", "bookings", None, 10) == []
    assert len(staff.app.store.list_mappings("back", "bookings", None, 10)) == 1
    staff.synced.clear()
    assert staff.connect("office", OFFICE).status_code == 200  # a new consent of the holder resumes it
    assert staff.status("front")["state"] == "connected" and ("front", "connected") in staff.synced


def test_status_lists_every_connection_and_keeps_the_default_ones_fields_on_top(staff: Staff) -> None:
    staff.connect("alice", ALICE)
    staff.connect("office", OFFICE)
    body = staff.status()
    assert body["connection"] == "default" and body["connected"] is False and body["state"] == "not_connected"
    listed = {c["connection"]: c for c in body["connections"]}
    assert list(listed) == ["alice", "back", "bob", "default", "front", "office"]
    assert listed["alice"]["account"] == ALICE and listed["alice"]["staff"] == "alice"
    assert listed["bob"]["state"] == "not_connected" and listed["front"]["account"] == OFFICE
    assert listed["front"]["name"] == "Front desk" and listed["default"]["staff"] is None
    assert body["problems"] == []
    json.dumps(body)  # all of it is JSON


def test_a_connection_removed_while_its_owner_signs_in_stores_nothing(staff: Staff) -> None:
    staff.google.consent(account=ALICE)
    client = staff.client()
    began = client.get("/start?" + urlsplit(signed_connect_url(staff.app.settings, "alice", utcnow())).query)
    assert began.status_code == 302
    staff.items = [i for i in staff.items if i["id"] != "alice"]  # an admin removed it meanwhile
    at_google = requests.get(began.headers["Location"], allow_redirects=False, timeout=10)
    back = {k: v[0] for k, v in parse_qs(urlsplit(at_google.headers["Location"]).query).items()}
    client.set_cookie(STATE_COOKIE, began.headers["Set-Cookie"].split(";", 1)[0].split("=", 1)[1])
    gone = client.get("/callback", query_string=back)
    assert gone.status_code == 404 and "no longer exists" in gone.get_data(as_text=True)
    assert staff.app.tokens.get("alice") is None
    assert not [t for t, g in staff.google._refresh.items() if g.account == ALICE and not g.revoked]


def test_a_cycle_meeting_the_revoked_token_of_a_disconnected_connection_leaves_it_disconnected(
    staff: Staff,
) -> None:
    from calsync.sync.connection import mark_needs_reconnect

    staff.connect("alice", ALICE)
    staff.disconnect("alice")
    assert mark_needs_reconnect(staff.app.store, "alice", "invalid_grant: Token has been revoked") is False
    assert staff.status("alice")["state"] == "disconnected"
