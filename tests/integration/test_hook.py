"""booking_hook: exactly one event per booking, whatever the deliveries do (Google fake, real Directus)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from calsync.sync.booking import PRIVATE_HASH, PRIVATE_KEY
from calsync.sync.ids import event_id_for
from tests.parts.product import Product

pytestmark = [pytest.mark.google, pytest.mark.directus]

BOOKING = {
    "title": "Haircut",
    "start_datetime": "2026-12-01T09:00:00Z",
    "end_datetime": "2026-12-01T10:00:00Z",
    "description": "Short",
    "location": "Shop",
}


def event_of(product: Product, key: Any) -> dict[str, Any]:
    return product.google.event(event_id_for("default", "bookings", str(key)))


@pytest.mark.parametrize("shape", ["flow", "wrapper", "legacy"])
def test_every_body_shape_creates_the_event(product: Product, shape: str) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    trigger = {
        "event": "bookings.items.create",
        "key": key,
        "collection": "bookings",
        "payload": {"title": "x"},
    }
    body: dict[str, Any] = {
        "flow": trigger,
        "wrapper": {"trigger": trigger, "user": "person-1"},
        "legacy": {
            "event": "items.create",
            "accountability": {"user": "person-1"},
            "key": key,
            "collection": "bookings",
            "payload": {},
        },
    }[shape]
    response = product.deliver(body)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["synced"] == [str(key)]
    event = event_of(product, key)
    assert event["summary"] == "Haircut" and event["location"] == "Shop"
    assert event["start"]["dateTime"].startswith("2026-12-01T09:00:00")
    assert event["extendedProperties"]["private"][PRIVATE_KEY] == str(key)
    assert "https://crm.example.com/admin/content/bookings/" in event["description"]
    booking = product.bookings()[str(key)]
    assert booking["google_event_id"] == event["id"] and booking["sync_status"] == "synced"
    assert product.google.count(path_contains="/events") == 1  # one insert, nothing else


def test_bad_input_is_a_4xx_naming_the_problem(product: Product) -> None:
    hook = product.client("booking_hook")
    auth = {"Authorization": "Bearer calsync-test-webhook-secret"}
    assert (
        hook.post("/", data="{not json", headers={**auth, "Content-Type": "application/json"}).status_code
        == 400
    )
    too_big = hook.post("/", data=b"{" + b" " * (1024 * 1024 + 10) + b"}", headers=auth)
    assert too_big.status_code == 413
    other = product.deliver({"event": "invoices.items.create", "key": 1})
    assert other.status_code == 422 and "DIRECTUS_COLLECTION" in other.get_json()["error"]
    assert (
        product.deliver({"event": "bookings.items.create", "collection": "bookings"}).get_json()["error"]
        == "no keys: expected key or keys"
    )
    assert product.deliver({}, secret="wrong").status_code == 401
    assert product.google.count() == 0


def test_updates_use_current_directus_data_and_duplicates_are_noops(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.deliver_event("create", [key])
    product.update_booking(
        key,
        title="Colour",
        start_datetime="2026-12-01T11:00:00+01:00",
        end_datetime="2026-12-01T12:00:00+01:00",
    )
    stale_payload = {
        "trigger": {
            "event": "bookings.items.update",
            "keys": [str(key)],
            "collection": "bookings",
            "payload": {"title": "an old value the payload carried"},
        },
        "user": "p",
    }
    response = product.deliver(stale_payload)
    assert response.status_code == 200 and response.get_json()["synced"] == [str(key)]
    event = event_of(product, key)
    assert event["summary"] == "Colour" and event["start"]["dateTime"].startswith("2026-12-01T10:00:00")
    calls = product.google.count()
    again = product.deliver(stale_payload)
    assert again.get_json()["skipped"] == [str(key)]
    assert product.google.count() == calls  # same content: no Google call
    assert len(product.live_events()) == 1


def test_echo_of_the_sync_users_own_write_is_skipped(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    response = product.deliver_event("update", [key], user=product.directus.sync_user_id)
    assert response.status_code == 200 and response.get_json()["reason"] == "written by the sync itself"
    assert product.google.count() == 0


def test_eight_simultaneous_deliveries_of_one_create_make_one_event(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    barrier = threading.Barrier(8)
    answers: list[int] = []

    def deliver() -> None:
        barrier.wait()
        answers.append(product.deliver_event("create", [key]).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(200) == 8, answers
    assert len(product.google.events()) == 1
    assert (
        product.google.count(method="POST", path_contains="/events") == 1
    )  # one insert; the rest saw the mapping


def test_lost_response_on_insert_is_retried_without_a_duplicate(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.google.lose_response_next(1, path_contains="/events", method="POST")
    response = product.deliver_event("create", [key])
    assert response.status_code == 200, response.get_json()
    assert len(product.google.events()) == 1
    assert event_of(product, key)["summary"] == "Haircut"


def test_google_down_queues_the_intent_and_the_cycle_drains_it(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.google.fail_next(50, 503, "backendError", path_contains="/events")
    response = product.deliver_event("create", [key])
    assert response.status_code == 202 and str(key) in response.get_json()["queued"]
    assert product.bookings()[str(key)]["sync_status"] == "queued"
    entry = product.store.get_outbox("default", "bookings", str(key))
    assert entry is not None and entry.action == "upsert"
    product.google.clear_faults()
    cycle = product.cycle()
    assert cycle.status_code == 200, cycle.get_json()
    assert product.store.get_outbox("default", "bookings", str(key)) is None
    assert event_of(product, key)["summary"] == "Haircut"


def test_not_connected_queues(product: Product) -> None:
    key = product.create_bookings(BOOKING)[0]["id"]
    response = product.deliver_event("create", [key])
    assert response.status_code == 202 and "no Google account" in response.get_json()["queued"][str(key)]
    assert product.google.count() == 0


def test_delete_removes_the_event_and_mapping_and_unknown_is_fine(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.deliver_event("create", [key])
    product.delete_bookings(key)
    response = product.deliver_event("delete", [key])
    assert response.status_code == 200 and response.get_json()["deleted"] == [str(key)]
    assert event_of(product, key)["status"] == "cancelled"
    assert product.store.get_mapping("default", "bookings", str(key)) is None
    unknown = product.deliver_event("delete", ["987654"])
    assert unknown.status_code == 200 and unknown.get_json()["deleted"] == ["987654"]


def test_delete_after_an_unsynced_create_leaves_nothing(product: Product) -> None:
    key = product.create_bookings(BOOKING)[0]["id"]
    product.deliver_event("create", [key])  # not connected: queued
    product.connect()
    product.delete_bookings(key)
    response = product.deliver_event("delete", [key])
    assert response.status_code == 200
    assert product.store.count_outbox("default") == 0
    # Nothing is created; the derived id is deleted once, since an insert whose answer was lost cannot be
    # ruled out (404: there was nothing).
    assert product.google.count(method="POST", path_contains="/events") == 0 and product.google.events() == []


def test_update_after_delete_in_directus_converges_to_no_event(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.deliver_event("create", [key])
    product.delete_bookings(key)
    late_update = product.deliver_event("update", [key])  # arrives after the delete happened
    assert late_update.status_code == 200 and late_update.get_json()["deleted"] == [str(key)]
    assert product.live_events() == []


def test_cancelled_booking_cancels_and_reactivating_restores_the_same_event(product: Product) -> None:
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    product.deliver_event("create", [key])
    product.update_booking(key, status="cancelled")
    product.deliver_event("update", [key])
    assert event_of(product, key)["status"] == "cancelled"
    product.update_booking(key, status="confirmed")
    product.deliver_event("update", [key])
    assert event_of(product, key)["status"] == "confirmed"
    assert len(product.google.events()) == 1


def test_invalid_booking_is_reported_on_the_booking_without_a_google_call(product: Product) -> None:
    product.connect()
    key = product.create_bookings({"title": "no times"})[0]["id"]
    backwards = product.create_bookings({**BOOKING, "end_datetime": "2026-12-01T08:00:00Z"})[0]["id"]
    response = product.deliver_event("update", [key, backwards])
    assert response.status_code == 200
    invalid = response.get_json()["invalid"]
    assert "start_datetime is empty" in invalid[str(key)] and "is before" in invalid[str(backwards)]
    rows = product.bookings()
    assert rows[str(key)]["sync_status"] == "error" and "start_datetime" in rows[str(key)]["sync_error"]
    assert product.google.count() == 0


@pytest.mark.parametrize("zone", ["UTC", "Europe/Rome"])
def test_time_zones_and_all_day(product: Product, zone: str, tmp_path: Any) -> None:
    from calsync.bootstrap import App, set_app

    settings = product.app.settings.model_copy(update={"timezone": zone})
    product.app = App(settings, sleep=lambda _: None, store=product.app.store)
    set_app(product.app)
    product.connect()
    offset = {"UTC": "Z", "Europe/Rome": "+01:00"}[zone]
    timed, all_day = product.create_bookings(
        {
            "title": "DST night",
            "start_datetime": "2026-10-25T00:30:00Z",
            "end_datetime": "2026-10-25T02:30:00Z",
        },
        {
            "title": "Holiday",
            "all_day": True,
            # local midnights, as the Directus app sends them from a browser in that zone
            "start_datetime": f"2026-12-24T00:00:00{offset}",
            "end_datetime": f"2026-12-26T00:00:00{offset}",
        },
    )
    product.deliver_event("update", [timed["id"], all_day["id"]])
    event = event_of(product, timed["id"])
    assert event["start"]["timeZone"] == zone
    expected = {
        "UTC": ("2026-10-25T00:30:00", "2026-10-25T02:30:00"),
        "Europe/Rome": ("2026-10-25T02:30:00+02:00", "2026-10-25T03:30:00+01:00"),
    }[zone]
    assert event["start"]["dateTime"].startswith(expected[0]) and event["end"]["dateTime"].startswith(
        expected[1]
    )
    holiday = event_of(product, all_day["id"])
    assert holiday["start"] == {"date": "2026-12-24"} and holiday["end"] == {"date": "2026-12-26"}


def test_bulk_update_goes_through_batches_of_at_most_fifty(product: Product) -> None:
    product.connect()
    rows = product.create_bookings(*[{**BOOKING, "title": f"b{n}"} for n in range(120)])
    keys = [row["id"] for row in rows]
    response = product.deliver_event("update", keys)
    assert response.status_code == 200, response.get_json()
    assert len(response.get_json()["synced"]) == 120
    assert product.google.count(batch=True) == 3  # 50 + 50 + 20
    assert product.google.count(batch=False, path_contains="/events") == 0
    assert len(product.live_events()) == 120
    # Each batch's statuses were written back (on the write-back thread, while the next batch was with
    # Google), and every mapping remembers the date_updated that write gave its booking.
    mappings = product.store.get_mappings("default", "bookings", [str(k) for k in keys])
    for key, booking in product.bookings().items():
        assert booking["sync_status"] == "synced" and booking["sync_error"] is None
        assert booking["google_event_id"] == mappings[key].event_id
        assert mappings[key].directus_updated == booking["date_updated"]
    product.directus.admin("PATCH", "/items/bookings", json={"keys": keys, "data": {"location": "Moved"}})
    product.google.clear_log()
    product.deliver_event("update", keys)
    assert product.google.count(batch=True) == 3 and product.google.count_parts(method="PATCH") == 120
    assert {e["location"] for e in product.live_events()} == {"Moved"}
    assert all(e["extendedProperties"]["private"][PRIVATE_HASH] for e in product.live_events())


def test_hook_on_firestore(product_firestore: Product) -> None:
    product = product_firestore
    product.connect()
    key = product.create_bookings(BOOKING)[0]["id"]
    assert product.deliver_event("create", [key]).status_code == 200
    assert product.deliver_event("create", [key]).get_json()["skipped"] == [str(key)]
    assert product.store.get_mapping("default", "bookings", str(key)) is not None
    assert len(product.google.events()) == 1
