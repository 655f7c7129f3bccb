"""One contract per port, run on the in-memory adapter and on the real one: the Calendar port in memory and as
the real client against the HTTP fake of Google; the Directus port in memory and as the real client against a
real Directus. The fast tier (tests/unit/sync) is only as good as the in-memory adapters' likeness to the real
ones: this is where it is checked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
import requests

from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusValidationError
from calsync.directus.memory import MemoryDirectus
from calsync.google.calendar import GoogleCalendar, build_calendar_service, build_credentials
from calsync.google.errors import GoogleBadRequest, GoogleConflict, GoogleError, GoogleGone, GoogleNotFound
from calsync.google.memory import MemoryCalendar
from calsync.sync.booking import FIELDS
from calsync.sync.ids import event_id_for
from calsync.sync.ports import Calendar, Directus, EventWrite
from tests.fakes.google import CALENDAR_EVENTS_SCOPE, GoogleFake
from tests.parts.directus import ADMIN_TOKEN, DirectusServer

START = datetime(2030, 5, 6, 8, 0, tzinfo=UTC)
MINIMAL_CANCELLED = {"kind", "etag", "id", "status", "updated", "recurringEventId", "originalStartTime"}


# -- the Calendar port ---------------------------------------------------------------------------------


class Owner(Protocol):
    """What the calendar's owner does in the Calendar UI: both fakes offer it under these names."""

    def create_event(
        self, summary: str = ..., start: Any = ..., end: Any = ..., **fields: Any
    ) -> dict[str, Any]: ...
    def edit_event(self, event_id: str, **changes: Any) -> dict[str, Any]: ...
    def cancel_event(self, event_id: str) -> None: ...
    def invalidate_sync_tokens(self) -> None: ...


@pytest.fixture(params=["memory", pytest.param("google", marks=pytest.mark.google)])
def calendar(request: pytest.FixtureRequest) -> Iterator[tuple[Calendar, Owner]]:
    if request.param == "memory":
        memory = MemoryCalendar()
        yield memory, memory
        return
    fake: GoogleFake = request.getfixturevalue("google_fake")
    credentials = build_credentials(
        fake.issue_refresh_token(),
        fake.token_uri,
        fake.client_id,
        fake.client_secret,
        [CALENDAR_EVENTS_SCOPE],
    )
    service = build_calendar_service(credentials, fake.api_root)
    yield GoogleCalendar(service, "primary", sleep=lambda _: None), fake


def body(key: str, summary: str = "Booking", hour: int = 0) -> dict[str, Any]:
    start = START + timedelta(hours=hour)
    return {
        "summary": summary,
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
        "extendedProperties": {"private": {"calsync_key": key, "other": "x"}},
    }


def insert(key: str, **kw: Any) -> EventWrite:
    return EventWrite("insert", event_id_for("default", "bookings", key), body(key, **kw))


def all_pages(calendar: Calendar, **params: Any) -> tuple[list[dict[str, Any]], str | None, int]:
    items, token, pages = [], None, 0
    while True:
        page = calendar.list_events(page_token=token, **params) if token else calendar.list_events(**params)
        pages += 1
        items += page.items
        assert not (page.next_page_token and page.next_sync_token), (
            "a sync token on a page that is not the last"
        )
        if not page.next_page_token:
            return items, page.next_sync_token, pages
        token = page.next_page_token


def test_calendar_ids_conflicts_soft_delete_and_restore(calendar: tuple[Calendar, Owner]) -> None:
    port, _ = calendar
    created = port.write(insert("1"))
    assert created["id"] == event_id_for("default", "bookings", "1") and created["status"] == "confirmed"
    with pytest.raises(GoogleConflict):
        port.write(insert("1"))
    patched = port.write(
        EventWrite(
            "patch", created["id"], {"summary": "Patched", "extendedProperties": {"private": {"other": None}}}
        )
    )
    assert patched["summary"] == "Patched" and patched["extendedProperties"]["private"] == {
        "calsync_key": "1"
    }
    assert patched["etag"] != created["etag"] and patched["updated"] >= created["updated"]
    assert port.write(EventWrite("delete", created["id"])) == {}
    with pytest.raises(GoogleGone):
        port.write(EventWrite("delete", created["id"]))
    with pytest.raises(GoogleConflict):  # a deleted event keeps its id
        port.write(insert("1"))
    restored = port.write(EventWrite("patch", created["id"], {"status": "confirmed"}))
    assert restored["status"] == "confirmed"
    with pytest.raises(GoogleNotFound):
        port.write(EventWrite("patch", event_id_for("default", "bookings", "none"), {"summary": "x"}))
    with pytest.raises(GoogleBadRequest):
        port.write(EventWrite("insert", "UPPER_CASE", body("2")))


def test_calendar_batch_answers_each_write_in_order_without_raising(calendar: tuple[Calendar, Owner]) -> None:
    port, _ = calendar
    existing = port.write(insert("0"))
    results = port.batch(
        [insert("1"), insert("0"), EventWrite("patch", existing["id"], {"summary": "P"}), insert("2", hour=2)]
    )
    assert [type(r) for r in results] == [dict, GoogleConflict, dict, dict]
    assert isinstance(results[2], dict) and results[2]["summary"] == "P"
    assert port.batch([]) == []
    assert all(isinstance(r, GoogleError | dict) for r in results)


def test_calendar_sync_tokens_pages_and_cancelled_shapes(calendar: tuple[Calendar, Owner]) -> None:
    port, owner = calendar
    kept = owner.create_event("Kept", START, START + timedelta(hours=1))
    gone = owner.create_event("Gone", START + timedelta(hours=2), START + timedelta(hours=3))
    owner.cancel_event(gone["id"])
    for n in range(3):
        port.write(insert(str(n), hour=4 + n))
    items, token, pages = all_pages(port, time_min=START - timedelta(days=1), max_results=2)
    assert pages == 3 and token
    assert {e["id"] for e in items} >= {kept["id"], gone["id"]}  # a full sync lists deleted events too
    assert next(e for e in items if e["id"] == gone["id"])["status"] == "cancelled"
    quiet, token2, _ = all_pages(port, sync_token=token)
    assert quiet == [] and token2
    owner.edit_event(kept["id"], summary="Edited")
    port.write(EventWrite("delete", event_id_for("default", "bookings", "0")))
    changed, token3, _ = all_pages(port, sync_token=token2)
    by_id = {e["id"]: e for e in changed}
    assert set(by_id) == {kept["id"], event_id_for("default", "bookings", "0")}
    assert by_id[kept["id"]]["summary"] == "Edited"
    cancelled = by_id[event_id_for("default", "bookings", "0")]
    # Google guarantees only the id of a deleted event; the in-memory port gives the minimal shape always (the
    # harder case for the sync), the fake with showDeleted the full one
    assert cancelled["status"] == "cancelled" and {"id", "status"} <= set(cancelled)
    if isinstance(port, MemoryCalendar):
        assert set(cancelled) <= MINIMAL_CANCELLED
    owner.invalidate_sync_tokens()
    with pytest.raises(GoogleGone) as expired:
        port.list_events(sync_token=token3)
    assert expired.value.full_sync_required


def test_calendar_event_types_filter_and_stay_the_same_for_a_token(calendar: tuple[Calendar, Owner]) -> None:
    port, owner = calendar
    owner.create_event("Ordinary", START, START + timedelta(hours=1))
    if isinstance(owner, GoogleFake):
        owner.create_event("Focus", START, START + timedelta(hours=2), event_type="focusTime")
    else:
        owner.create_event("Focus", START, START + timedelta(hours=2), eventType="focusTime")
    items, token, _ = all_pages(port, time_min=START - timedelta(days=1), event_types=("default",))
    assert [e["summary"] for e in items] == ["Ordinary"]
    every, _, _ = all_pages(port, time_min=START - timedelta(days=1))
    assert {e["summary"] for e in every} == {"Ordinary", "Focus"}
    with pytest.raises(GoogleBadRequest):  # another filter needs another full sync
        port.list_events(sync_token=token, event_types=("default", "focusTime"))


def test_calendar_push_channels_watch_refuse_and_stop(calendar: tuple[Calendar, Owner]) -> None:
    port, owner = calendar
    local = "http://127.0.0.1:9/notifications"
    with pytest.raises(GoogleBadRequest) as insecure:
        port.watch("channel-0001", local, "secret-token-0001")
    assert insecure.value.reason == "push.webhookUrlNotHttps"
    owner.allow_http_push = True  # type: ignore[attr-defined]  # both fakes: a local receiver may be http
    before = datetime.now(UTC)
    watched = port.watch("channel-0001", local, "secret-token-0001", ("default",))
    assert watched.channel_id == "channel-0001" and watched.resource_id
    assert watched.expiration is not None  # Google's default lifetime: 7 days
    assert abs((watched.expiration - before).total_seconds() - 7 * 24 * 3600) < 60
    with pytest.raises(GoogleBadRequest) as twice:
        port.watch("channel-0001", local, "secret-token-0001")
    assert twice.value.reason == "channelIdNotUnique"
    with pytest.raises(GoogleNotFound):
        port.stop_channel("channel-0001", "not-its-resource")
    port.stop_channel("channel-0001", watched.resource_id)
    with pytest.raises(GoogleNotFound):  # stopped already
        port.stop_channel("channel-0001", watched.resource_id)


# -- the Directus port ---------------------------------------------------------------------------------


class People(Protocol):
    def create(self, **values: Any) -> dict[str, Any]: ...
    def update(self, key: str, **changes: Any) -> None: ...
    def delete(self, *keys: str) -> None: ...


class MemoryPeople:
    def __init__(self, memory: MemoryDirectus) -> None:
        self.memory = memory

    def create(self, **values: Any) -> dict[str, Any]:
        return self.memory.person_create(**values)

    def update(self, key: str, **changes: Any) -> None:
        self.memory.person_update(key, **changes)

    def delete(self, *keys: str) -> None:
        self.memory.person_delete(*keys)


class DirectusPeople:
    def __init__(self, server: DirectusServer) -> None:
        self.server = server

    def create(self, **values: Any) -> dict[str, Any]:
        response = self.server.admin("POST", "/items/bookings", json=values)
        response.raise_for_status()
        return dict(response.json()["data"])

    def update(self, key: str, **changes: Any) -> None:
        self.server.admin("PATCH", f"/items/bookings/{key}", json=changes).raise_for_status()

    def delete(self, *keys: str) -> None:
        self.server.admin("DELETE", "/items/bookings", json=[int(k) for k in keys]).raise_for_status()


@pytest.fixture(params=["memory", pytest.param("directus", marks=pytest.mark.directus)])
def directus_port(request: pytest.FixtureRequest) -> tuple[Directus, People]:
    if request.param == "memory":
        memory = MemoryDirectus()
        return memory, MemoryPeople(memory)
    server: DirectusServer = request.getfixturevalue("directus_bookings")
    return DirectusClient(server.url, server.sync_token, "bookings", sleep=lambda _: None), DirectusPeople(
        server
    )


def test_directus_items_round_trip_in_utc_with_string_keys(directus_port: tuple[Directus, People]) -> None:
    port, _ = directus_port
    rows = port.create_items(
        [
            {FIELDS.title: "a", FIELDS.start: "2030-07-01T10:00:00+02:00"},
            {FIELDS.title: "b", FIELDS.start: "2030-07-01T10:00:00Z", FIELDS.location: "Rome"},
        ]
    )
    assert [r[FIELDS.title] for r in rows] == ["a", "b"] and all(isinstance(r["id"], int) for r in rows)
    assert rows[0][FIELDS.start] == "2030-07-01T08:00:00.000Z"
    a, b = (str(r["id"]) for r in rows)
    assert set(port.get_items([a, b, "999999"])) == {a, b}
    assert port.get_items([b], fields=[FIELDS.location])[b][FIELDS.location] == "Rome"
    assert port.read_item(a) is not None and port.read_item("999999") is None
    with pytest.raises(DirectusValidationError):  # a body over Directus's limit: refused whole
        port.create_items(
            [{FIELDS.title: "c", FIELDS.start: "2030-07-01T10:00:00Z", FIELDS.description: "x" * 1_100_000}]
        )
    assert {r[FIELDS.title] for r in port.get_items([str(int(b) + n) for n in range(1, 4)]).values()} == set()


def test_directus_bulk_writes_skip_what_vanished(directus_port: tuple[Directus, People]) -> None:
    port, people = directus_port
    rows = port.create_items(
        [{FIELDS.title: f"t{n}", FIELDS.start: "2030-07-01T10:00:00Z"} for n in range(3)]
    )
    a, b, c = (str(r["id"]) for r in rows)
    people.delete(b)
    updated = port.update_items([{"id": a, FIELDS.sync_status: "synced"}, {"id": b, FIELDS.sync_status: "x"}])
    assert [str(r["id"]) for r in updated] == [a] and updated[0][FIELDS.date_updated]
    assert port.read_item(b) is None
    port.delete_items([b, c])  # b is gone already: fine
    assert set(port.get_items([a, b, c])) == {a}


def test_directus_find_items_and_changed_since(directus_port: tuple[Directus, People]) -> None:
    port, people = directus_port
    first = people.create(
        **{FIELDS.title: "x", FIELDS.start: "2030-07-01T10:00:00Z", FIELDS.google_event_id: "ev1"}
    )
    people.create(**{FIELDS.title: "y", FIELDS.start: "2030-07-01T10:00:00Z", FIELDS.google_event_id: "ev1"})
    found = port.find_items(FIELDS.google_event_id, ["ev1", "ev2"], [FIELDS.title])
    assert list(found) == ["ev1"] and found["ev1"]["id"] == first["id"]  # the lowest key wins
    everything = [row["id"] for page in port.items_changed_since(None, page_size=1) for row in page]
    assert len(everything) == 2 and everything == sorted(everything)
    time.sleep(1.1)  # Directus's clock has whole seconds
    checkpoint = port.server_time().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    time.sleep(1.1)
    people.update(str(first["id"]), **{FIELDS.title: "changed"})
    later = [row["id"] for page in port.items_changed_since(checkpoint) for row in page]
    assert later == [first["id"]]


def test_directus_knows_its_fields_and_its_user(directus_port: tuple[Directus, People]) -> None:
    port, _ = directus_port
    assert {
        FIELDS.google_event_id,
        FIELDS.sync_status,
        FIELDS.date_updated,
        FIELDS.timezone,
    } <= port.booking_fields()
    assert port.current_user_id()


@pytest.mark.directus
def test_the_real_directus_shows_a_missing_item_as_no_such_item(directus_bookings: DirectusServer) -> None:
    """The proof of absence rests on this: Directus answers 403 FORBIDDEN on a missing item's route."""
    answer = requests.get(
        f"{directus_bookings.url}/items/bookings/999999",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=10,
    )
    assert answer.status_code == 403 and answer.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_directus_changed_since_pages_a_small_first_page_then_full_ones(
    directus_port: tuple[Directus, People],
) -> None:
    port, _ = directus_port
    rows = port.create_items(
        [{FIELDS.title: f"p{n}", FIELDS.start: "2030-07-01T10:00:00Z"} for n in range(6)]
    )
    pages = [
        [row["id"] for row in page] for page in port.items_changed_since(None, page_size=3, first_page=2)
    ]
    assert pages == [[r["id"] for r in rows[:2]], [r["id"] for r in rows[2:5]], [rows[5]["id"]]]
