"""Push notifications end to end, as deployed: Google's notification reaches booking_hook's /notifications,
which publishes a sync request on the real Pub/Sub emulator, whose push subscription delivers it to
calendar_import, which runs the connection's cycle and writes the booking in the real Directus 12. The
functions each run in their own process; Firestore emulator; Secret Manager fake; Google fake."""

from __future__ import annotations

import dataclasses
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests

from calsync.state.firestore import FirestoreSyncStore
from calsync.state.store import utcnow
from tests.e2e.test_end_to_end import SOON, World, deployed, wait_for
from tests.fakes.google import GoogleFake
from tests.fakes.secretmanager import SecretManagerFake
from tests.parts.directus import DirectusServer
from tests.parts.pubsub import PubSubEmulator, unique

pytestmark = [pytest.mark.e2e, pytest.mark.directus, pytest.mark.firestore, pytest.mark.google,
              pytest.mark.secretmanager, pytest.mark.slow]  # fmt: skip

FRESH = 10.0  # seconds an edit in Google may take to show in Directus with push on ("within seconds")


class Pushed(World):
    def booking_of(self, event_id: str) -> dict[str, Any] | None:
        return next((b for b in self.bookings().values() if b.get("google_event_id") == event_id), None)

    def title_in_directus(self, event_id: str) -> str | None:
        booking = self.booking_of(event_id)
        return booking["title"] if booking else None

    def active_channels(self) -> list[dict[str, Any]]:
        return [c for c in self.google.channels() if not c["stopped"] and not c["expired"]]

    def notify(self, headers: dict[str, str]) -> requests.Response:
        return requests.post(self.url("booking_hook", "/notifications"), headers=headers, timeout=30)


@pytest.fixture(scope="module")
def pushed(
    directus: DirectusServer,
    firestore_emulator: Any,
    _secretmanager_server: SecretManagerFake,
    pubsub_emulator: PubSubEmulator,
) -> Iterator[Pushed]:
    google = GoogleFake().start()
    google.allow_http_push = True  # the receiver listens on 127.0.0.1 (Google itself wants https)
    topic = pubsub_emulator.topic(unique("sync-requests"))
    subscription: list[str] = []

    def push_env(urls: dict[str, str]) -> dict[str, str]:
        subscription.append(
            pubsub_emulator.push_subscription(unique("calendar-import"), topic, urls["calendar_import"] + "/")
        )
        return {
            "NOTIFICATION_URL": urls["booking_hook"] + "/notifications",
            "PUBSUB_TOPIC": topic,
            "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        }

    try:
        with deployed(directus, firestore_emulator, _secretmanager_server, google, push_env) as (
            functions,
            proxy,
        ):
            directus.setup(booking_hook_url=functions["booking_hook"].url + "/",
                           oauth_callback_url=functions["oauth_callback"].url)  # fmt: skip
            yield Pushed(google, directus, proxy, functions)
    finally:
        for path in (*subscription, topic):
            pubsub_emulator.delete(path)
        google.stop()


@pytest.fixture(scope="module")
def watching(pushed: Pushed) -> Pushed:
    response = pushed.connect()
    assert response.status_code == 302, response.text
    body = pushed.cycle().json()  # the first cycle imports, and opens the channel
    assert body["status"] == "ok", body
    wait_for(lambda: len(pushed.active_channels()) == 1, "the channel Google was asked to open")
    return pushed


def settled(w: Pushed, quiet: float = 2.0) -> int:
    """How many notifications were sent, once none came for ``quiet`` seconds (and their cycles ran)."""
    count, since = len(w.google.notifications()), time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.1)
        now = len(w.google.notifications())
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_an_edit_in_google_shows_in_directus_within_seconds_with_no_tick(watching: Pushed) -> None:
    w = watching
    event = w.google.create_event("Pushed in", SOON, SOON + timedelta(hours=1))
    wait_for(lambda: w.title_in_directus(event["id"]) == "Pushed in", "the new event as a booking", FRESH)
    started = time.monotonic()
    w.google.edit_event(event["id"], summary="Edited in Google")
    wait_for(lambda: w.title_in_directus(event["id"]) == "Edited in Google", "the edit in Directus", FRESH)
    print(f"edit in Google to booking in Directus: {time.monotonic() - started:.2f} s, with no tick")


def test_a_forged_notification_changes_nothing_and_costs_no_google_call(watching: Pushed) -> None:
    w = watching
    settled(w, quiet=3.0)  # the earlier tests' notifications and the cycles they asked for are over
    before = w.bookings()
    (channel,) = w.active_channels()
    w.google.clear_log()
    forged = [
        {"X-Goog-Channel-ID": str(uuid.uuid4()), "X-Goog-Channel-Token": secrets.token_urlsafe(32)},
        {"X-Goog-Channel-ID": channel["id"], "X-Goog-Channel-Token": secrets.token_urlsafe(32)},
    ]
    for headers in forged:
        answer = w.notify({**headers, "X-Goog-Resource-ID": channel["resource_id"],
                           "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "99"})  # fmt: skip
        assert answer.status_code == 200, answer.text
    time.sleep(2)  # a sync request would have been delivered and run by now
    assert w.google.count(path_contains="/calendar/v3") == 0
    assert w.bookings() == before


def test_a_lost_notification_is_repaired_by_the_next_tick(watching: Pushed) -> None:
    w = watching
    event = w.google.create_event("Quiet one", SOON, SOON + timedelta(hours=2))
    wait_for(lambda: w.title_in_directus(event["id"]) == "Quiet one", "the new event as a booking", FRESH)
    sent = settled(w)  # the sync's own stamping of the new event is told too: let that pass first
    w.google.drop_notifications(1)
    w.google.edit_event(event["id"], summary="Edited, notification lost")
    w.google.wait_for_notifications(sent + 1)
    time.sleep(2)
    assert w.title_in_directus(event["id"]) == "Quiet one"  # nothing told the sync
    tick = w.cycle()
    assert tick.status_code == 200, tick.text
    assert w.title_in_directus(event["id"]) == "Edited, notification lost"


def test_a_channel_near_expiry_is_replaced_without_a_gap(watching: Pushed, firestore_emulator: Any) -> None:
    """Time passes: the week-old channel has 30 seconds left, at Google and in the state store."""
    w = watching
    (old,) = w.active_channels()
    w.google.expire_channel_in(old["id"], 30)
    store = FirestoreSyncStore(firestore_emulator.client())
    record = store.get_channel(old["id"])
    assert record is not None
    now = utcnow()
    store.put_channel(
        dataclasses.replace(
            record, created_at=now - timedelta(days=7), expiration=now + timedelta(seconds=30)
        )
    )
    assert w.cycle().json()["status"] == "ok"  # due: the new channel first, then the old one stopped
    channels = {c["id"]: c for c in w.google.channels()}
    assert channels[old["id"]]["stopped"] is True
    (renewed,) = w.active_channels()
    assert renewed["id"] != old["id"] and renewed["expiration_ms"] > channels[old["id"]]["expiration_ms"]
    event = w.google.create_event("After renewal", SOON, SOON + timedelta(hours=3))
    wait_for(
        lambda: w.title_in_directus(event["id"]) == "After renewal", "a change told by the new channel", FRESH
    )
    assert any(n.channel_id == renewed["id"] for n in w.google.notifications())
