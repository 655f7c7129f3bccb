"""The whole product wired to real parts: the Google fake over HTTP, a real Directus, a real store.

``product`` (function scope) gives an App with embedded stores in a temporary folder (or the Firestore
emulator with ``product_firestore``), installed as the process's App so the functions' entry points use it,
and helpers to act as Directus (a Flow delivery), as Google's calendar owner, and as Cloud Scheduler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import flask
import pytest
from functions_framework import create_app

from calsync.bootstrap import App, set_app
from calsync.settings import load_settings
from calsync.state.store import SyncStore
from calsync.sync.connection import mark_connected
from tests.fakes.google import GoogleFake
from tests.parts.directus import CONNECT_KEY, WEBHOOK_SECRET, DirectusServer

ROOT = Path(__file__).resolve().parents[2]
REDIRECT_URI = "http://127.0.0.1:9/oauth_callback/callback"
ACCOUNT = "owner@example.com"


@dataclasses.dataclass
class Product:
    google: GoogleFake
    directus: DirectusServer
    app: App

    @property
    def store(self) -> SyncStore:
        return self.app.store

    def client(self, function: str) -> flask.testing.FlaskClient:
        return create_app(function, str(ROOT / "functions" / function / "main.py")).test_client()

    # -- acting as the people and systems around the product ------------------------------------------
    def connect(self, account: str = ACCOUNT) -> str:
        """What a completed consent leaves: a refresh token in the token store and a connected status."""
        token = self.google.issue_refresh_token(account)
        self.app.tokens.put(token, self.app.connection)
        mark_connected(
            self.store, self.app.connection, account, ["https://www.googleapis.com/auth/calendar.events"]
        )
        self.app.forget_calendar()
        return token

    def deliver(self, body: Any, secret: str = WEBHOOK_SECRET) -> flask.Response:
        """A Directus Flow delivery to booking_hook."""
        return self.client("booking_hook").post("/", json=body, headers={"Authorization": f"Bearer {secret}"})

    def deliver_event(self, action: str, keys: list[Any], user: str | None = "a-person") -> flask.Response:
        trigger: dict[str, Any] = {
            "event": f"bookings.items.{action}",
            "collection": "bookings",
            "payload": {},
        }
        if action == "create":
            trigger["key"] = keys[0]
        else:
            trigger["keys"] = keys
        return self.deliver({"trigger": trigger, "user": user})

    def cycle(self) -> flask.Response:
        return self.client("calendar_import").post("/")

    def create_bookings(self, *items: dict[str, Any]) -> list[dict[str, Any]]:
        """Bookings written by a person in Directus (admin token: the Flow points nowhere in these tests)."""
        response = self.directus.admin("POST", "/items/bookings", json=list(items))
        response.raise_for_status()
        return list(response.json()["data"])

    def update_booking(self, key: Any, **changes: Any) -> dict[str, Any]:
        response = self.directus.admin("PATCH", f"/items/bookings/{key}", json=changes)
        response.raise_for_status()
        return dict(response.json()["data"])

    def delete_bookings(self, *keys: Any) -> None:
        self.directus.admin("DELETE", "/items/bookings", json=list(keys)).raise_for_status()

    def bookings(self) -> dict[str, dict[str, Any]]:
        rows = self.directus.admin("GET", "/items/bookings", params={"limit": "-1", "sort": "id"}).json()[
            "data"
        ]
        return {str(row["id"]): row for row in rows}

    def live_events(self) -> list[dict[str, Any]]:
        return [e for e in self.google.events() if e.get("status") != "cancelled"]


def make_app(
    google: GoogleFake,
    directus: DirectusServer,
    tmp_path: Path,
    store: SyncStore | None = None,
    **overrides: Any,
) -> App:
    google.register_client(google.client_id, google.client_secret, [REDIRECT_URI])
    settings = load_settings(
        directus_url=directus.url,
        directus_token=directus.sync_token,
        directus_public_url="https://crm.example.com",
        google_client_id=google.client_id,
        google_client_secret=google.client_secret,
        google_redirect_uri=REDIRECT_URI,
        webhook_secret=WEBHOOK_SECRET,
        connect_key=CONNECT_KEY,
        store=f"sqlite:///{tmp_path}/state.sqlite3",
        token_store=f"file:///{tmp_path}/refresh_token",
        google_api_root=google.api_root,
        google_auth_uri=google.auth_uri,
        google_token_uri=google.token_uri,
        google_revoke_uri=google.revoke_uri,
        **overrides,
    )
    return App(settings, sleep=lambda _: None, store=store)


@pytest.fixture
def product(google_fake: GoogleFake, directus_bookings: DirectusServer, tmp_path: Path) -> Iterator[Product]:
    app = make_app(google_fake, directus_bookings, tmp_path)
    set_app(app)
    yield Product(google_fake, directus_bookings, app)
    set_app(None)


@pytest.fixture
def product_firestore(
    google_fake: GoogleFake, directus_bookings: DirectusServer, tmp_path: Path, firestore_emulator: Any
) -> Iterator[Product]:
    """The same, with the SyncStore on the real Firestore emulator."""
    from calsync.state.firestore import FirestoreSyncStore

    firestore_emulator.reset()
    store = FirestoreSyncStore(firestore_emulator.client())
    app = make_app(google_fake, directus_bookings, tmp_path, store=store)
    set_app(app)
    yield Product(google_fake, directus_bookings, app)
    set_app(None)
