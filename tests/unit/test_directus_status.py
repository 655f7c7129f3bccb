"""Publishing every connection's status (calsync.directus.status.publish_all) against a recording stand-in for
the Directus client: what is written where, in how many requests, and what a refusal leaves behind.
(tests/integration/test_directus_connections.py runs the same against a real Directus 11 and 12.)"""

from __future__ import annotations

from typing import Any

import pytest

from calsync.directus.errors import DirectusAuthError, DirectusError, DirectusUnavailable
from calsync.directus.status import PublishRefused, publish, publish_all
from calsync.state.memory import MemorySyncStore
from calsync.sync.connections import Roster

ROSTER = Roster.from_items(
    [
        {"id": "default", "name": "Default"},
        {"id": "alice", "name": "Alice", "staff": "u-alice"},
        {"id": "bob", "name": "Bob", "staff": "u-bob", "account_from": "alice", "calendar_id": "b@group"},
    ],
    route_field="staff",
)
# what Directus answers to the aggregate, grouped by sync_status and staff
ROWS = [
    {"sync_status": "error", "staff": "u-alice", "count": {"id": 2}},
    {"sync_status": "error", "staff": None, "count": {"id": "1"}},  # some databases count in strings
    {"sync_status": "queued", "staff": "u-bob", "count": {"id": 4}},
    {"sync_status": "error", "staff": "u-nobody", "count": {"id": 7}},  # nobody serves them: nowhere
    {"sync_status": "synced", "staff": "u-alice", "count": {"id": 9}},
]


class FakeDirectus:
    """The client's calls publish makes, recorded; ``refuse``: the collections whose writes fail."""

    collection = "bookings"

    def __init__(self, rows: list[dict[str, Any]] = ROWS) -> None:
        self.rows = rows
        self.calls: list[tuple[str, Any]] = []
        self.refuse: dict[str, DirectusError] = {}

    def request(self, method: str, path: str, what: str, *, params: Any = None, **_: Any) -> Any:
        self.calls.append(("aggregate", params["groupBy[]"]))
        return self.rows

    def update_singleton(self, collection: str, data: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("singleton", dict(data)))
        if collection in self.refuse:
            raise self.refuse[collection]
        return data

    def update_connections(self, items: list[dict[str, Any]]) -> None:
        self.calls.append(("connections", [dict(i) for i in items]))
        if "calendar_sync_connections" in self.refuse:
            raise self.refuse["calendar_sync_connections"]

    def written(self, kind: str) -> list[Any]:
        return [body for what, body in self.calls if what == kind]


URLS = {"default": "https://o/start?link=d", "alice": "https://o/start?link=a", "bob": None}


def test_every_connection_in_one_write_with_its_own_counts_and_the_default_on_the_singleton_too() -> None:
    directus, store = FakeDirectus(), MemorySyncStore()
    store.update_status("alice", {"state": "connected", "account": "alice@example.com"})
    publish_all(directus, store, ROSTER, URLS)  # type: ignore[arg-type]
    assert [what for what, _ in directus.calls] == ["aggregate", "connections", "singleton"]
    assert directus.written("aggregate") == [["sync_status", "staff"]]
    (items,) = directus.written("connections")
    by_id = {item["id"]: item for item in items}
    assert sorted(by_id) == ["alice", "bob", "default"]
    assert (by_id["alice"]["bookings_in_error"], by_id["alice"]["google_account"]) == (2, "alice@example.com")
    assert (by_id["bob"]["bookings_queued"], by_id["bob"]["bookings_in_error"]) == (4, 0)
    assert by_id["default"]["bookings_in_error"] == 1  # the bookings without a staff value
    assert by_id["alice"]["connect_url"] == URLS["alice"] and "connect_url" not in by_id["bob"]
    (singleton,) = directus.written("singleton")
    # the same fields, but push notifications, which only the connections' items show
    assert by_id["default"]["channel_state"] == "push off: no channel yet"
    assert singleton == {k: v for k, v in by_id["default"].items() if k not in ("id", "channel_state")}
    assert not {"staff", "calendar_id", "name", "account_from"} & set().union(*items)  # the admin's


def test_an_installation_without_the_collection_publishes_only_the_singleton_as_before() -> None:
    directus, store = FakeDirectus([{"sync_status": "error", "count": {"id": 3}}]), MemorySyncStore()
    publish_all(directus, store, Roster.implicit("primary"), {"default": "u"})  # type: ignore[arg-type]
    assert [what for what, _ in directus.calls] == ["aggregate", "singleton"]
    assert directus.written("aggregate") == [["sync_status"]]
    assert directus.written("singleton")[0]["bookings_in_error"] == 3
    # and publish() writes what publish_all writes for the default connection
    alone = FakeDirectus([{"sync_status": "error", "count": {"id": 3}}])
    publish(alone, store, "default", "u")  # type: ignore[arg-type]
    assert alone.written("singleton") == directus.written("singleton")


def test_without_a_default_connection_the_singleton_is_left_alone() -> None:
    roster = Roster.from_items([{"id": "alice", "staff": "u-alice"}], route_field="staff")
    directus = FakeDirectus()
    publish_all(directus, MemorySyncStore(), roster, {})  # type: ignore[arg-type]
    assert [what for what, _ in directus.calls] == ["aggregate", "connections"]


def test_counts_that_fail_leave_the_status_to_be_published() -> None:
    directus = FakeDirectus()
    directus.request = lambda *a, **k: (_ for _ in ()).throw(DirectusUnavailable("down", 503))  # type: ignore[method-assign]
    publish_all(directus, MemorySyncStore(), ROSTER, URLS)  # type: ignore[arg-type]
    (items,) = directus.written("connections")
    assert all("bookings_in_error" not in item and "last_cycle_result" in item for item in items)


def test_a_refusal_is_recorded_per_connection_retried_with_the_basic_fields_and_shown_next_time() -> None:
    directus, store = FakeDirectus(), MemorySyncStore()
    store.update_status("alice", {"last_error": "Google said no"})
    directus.refuse["calendar_sync_connections"] = DirectusAuthError(
        "Directus: 403 FORBIDDEN", 403, "FORBIDDEN"
    )
    with pytest.raises(PublishRefused, match="refused the status update"):
        publish_all(directus, store, ROSTER, URLS)  # type: ignore[arg-type]
    full, basic = directus.written("connections")
    assert len(full) == len(basic) == 3
    assert set(basic[0]) == {"id", "last_cycle_at", "last_cycle_result", "last_error"}
    alice = store.get_status("alice")
    assert alice.publish_error and alice.last_error and alice.last_error.startswith("Google said no; ")
    assert store.get_status("bob").publish_error
    # the singleton went through: the default connection was still refused (its item is stale)
    assert store.get_status("default").publish_error
    directus.refuse.clear()
    publish_all(directus, store, ROSTER, URLS)  # type: ignore[arg-type]
    shown = {item["id"]: item["last_publish_error"] for item in directus.written("connections")[-1]}
    assert all(text and "refused" in text for text in shown.values())
    assert all(store.get_status(c).publish_error is None for c in ROSTER.ids)  # shown once, then dropped


def test_a_directus_that_is_down_is_not_written_to_again() -> None:
    directus, store = FakeDirectus(), MemorySyncStore()
    directus.refuse["calendar_sync_connections"] = DirectusUnavailable("Directus: 503", 503)
    directus.refuse["calendar_sync"] = DirectusUnavailable("Directus: 503", 503)
    with pytest.raises(PublishRefused):
        publish_all(directus, store, ROSTER, URLS)  # type: ignore[arg-type]
    assert [what for what, _ in directus.calls] == ["aggregate", "connections", "singleton"]
