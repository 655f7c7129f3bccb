"""Staff calendars end to end, as deployed: a real Directus 12 prepared by ``calsync directus setup`` with a
``staff`` routing field, whose Flow calls booking_hook; the three functions each in its own process; the
Firestore emulator; the Secret Manager fake; the Google fake with three accounts.

Two staff members each connect their own Google account (their primary calendars); a business account is
connected once and serves two connections, each one of its secondary calendars (``account_from``)."""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from calsync.sync.booking import PRIVATE_KEY
from tests.e2e.test_end_to_end import SOON, World, deployed, wait_for
from tests.fakes.google import GoogleFake
from tests.fakes.secretmanager import SecretManagerFake
from tests.parts.directus import CONNECT_KEY, DirectusServer

pytestmark = [pytest.mark.e2e, pytest.mark.directus, pytest.mark.firestore, pytest.mark.google,
              pytest.mark.secretmanager, pytest.mark.slow]  # fmt: skip

BUSINESS = "biz@example.com"
ROOM_A = "room-a@group.calendar.google.com"
ROOM_B = "room-b@group.calendar.google.com"
# connection id -> (its item in Directus, the calendar it writes to in the fake)
CONNECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "anna": ({"id": "anna", "name": "Anna", "staff": "anna"}, "anna@example.com"),
    "bob": ({"id": "bob", "name": "Bob", "staff": "bob"}, "bob@example.com"),
    "room-a": ({"id": "room-a", "name": "Room A", "staff": "room-a", "calendar_id": ROOM_A}, ROOM_A),
    "room-b": (
        {
            "id": "room-b",
            "name": "Room B",
            "staff": "room-b",
            "calendar_id": ROOM_B,
            "account_from": "room-a",
        },
        ROOM_B,
    ),
}
CALENDAR = {connection: calendar for connection, (_, calendar) in CONNECTIONS.items()}


class Staff(World):
    def connect_as(self, connection: str, account: str) -> requests.Response:
        self.google.consent(account=account)
        browser = requests.Session()
        start = browser.get(self.url("oauth_callback", "/start"),
                            params={"key": CONNECT_KEY, "connection": connection},
                            allow_redirects=False, timeout=30)  # fmt: skip
        assert start.status_code == 302, start.text
        at_google = browser.get(start.headers["Location"], allow_redirects=False, timeout=30)
        back = urlsplit(at_google.headers["Location"])
        return browser.get(self.url("oauth_callback", "/callback"), params=parse_qs(back.query),
                           allow_redirects=False, timeout=60)  # fmt: skip

    def live(self, connection: str) -> list[dict[str, Any]]:
        return [
            e for e in self.google.events(calendar=CALENDAR[connection]) if e.get("status") != "cancelled"
        ]

    def titles(self, connection: str) -> list[str]:
        return sorted(e.get("summary", "") for e in self.live(connection))

    def where(self, key: str) -> list[str]:
        """The connections whose calendars hold a live event of this booking."""
        return sorted(
            c for c in CALENDAR for e in self.live(c) if e.get("extendedProperties", {}).get("private", {}).get(
                PRIVATE_KEY) == key
        )  # fmt: skip

    def connection_item(self, connection: str) -> dict[str, Any]:
        return dict(
            self.directus.admin("GET", f"/items/calendar_sync_connections/{connection}").json()["data"]
        )

    def tick(self) -> dict[str, Any]:
        response = self.cycle()
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture(scope="module")
def staff(
    directus: DirectusServer, firestore_emulator: Any, _secretmanager_server: SecretManagerFake
) -> Iterator[Staff]:
    google = GoogleFake().start()
    google.add_calendar(BUSINESS, ROOM_A, "Room A")
    google.add_calendar(BUSINESS, ROOM_B, "Room B")
    routed = {"ROUTE_FIELD": "staff"}
    try:
        with deployed(directus, firestore_emulator, _secretmanager_server, google, lambda urls: routed) as (
            functions,
            proxy,
        ):
            directus.setup(booking_hook_url=functions["booking_hook"].url + "/",
                           oauth_callback_url=functions["oauth_callback"].url, route_field="staff")  # fmt: skip
            items = [item for item, _ in CONNECTIONS.values()]
            created = directus.admin("POST", "/items/calendar_sync_connections", json=items)
            assert created.status_code == 200, created.text
            try:
                yield Staff(google, directus, proxy, functions)
            finally:
                directus.admin("DELETE", "/items/calendar_sync_connections", json=list(CONNECTIONS))
    finally:
        google.stop()


@pytest.fixture(scope="module")
def connected(staff: Staff) -> Staff:
    for connection, account in (
        ("anna", "anna@example.com"),
        ("bob", "bob@example.com"),
        ("room-a", BUSINESS),
    ):
        response = staff.connect_as(connection, account)
        assert response.status_code == 302, response.text
    staff.tick()  # every connection's first cycle
    return staff


def test_each_connection_shows_its_account_in_directus_and_one_consent_serves_two_calendars(
    connected: Staff,
) -> None:
    for connection, account in (("anna", "anna@example.com"), ("bob", "bob@example.com"),
                                ("room-a", BUSINESS), ("room-b", BUSINESS)):  # fmt: skip
        item = connected.connection_item(connection)
        assert (item["google_account"], item["connection_state"]) == (account, "connected"), item
    assert connected.connection_item("room-b")["connect_url"] in (None, "")  # it uses room-a's consent
    assert connected.connection_item("anna")["connect_url"].startswith(
        connected.url("oauth_callback", "/start")
    )


def test_bookings_land_in_their_staff_members_calendars_through_the_flow(connected: Staff) -> None:
    w = connected
    for connection in CALENDAR:
        w.create(
            {"title": f"first for {connection}", "start_datetime": SOON.isoformat(), "staff": connection}
        )
    for connection in CALENDAR:
        wait_for(
            lambda c=connection: w.titles(c) == [f"first for {c}"], f"the booking in {connection}'s calendar"
        )


def test_a_reassignment_moves_the_event_through_the_flow(connected: Staff) -> None:
    w = connected
    (row,) = w.create({"title": "to move", "start_datetime": SOON.isoformat(), "staff": "anna"})
    key = str(row["id"])
    wait_for(lambda: w.where(key) == ["anna"], "the booking in anna's calendar")
    w.update(key, staff="room-b")
    wait_for(lambda: w.where(key) == ["room-b"], "the event moved to room-b's calendar")
    (event,) = [e for e in w.live("room-b") if e["extendedProperties"]["private"].get(PRIVATE_KEY) == key]
    wait_for(lambda: w.bookings()[key]["google_event_id"] == event["id"], "the new event's id on the booking")


def test_edits_in_each_calendar_come_back_to_the_right_booking(connected: Staff) -> None:
    w = connected
    rows = {c: w.create({"title": f"edit me {c}", "start_datetime": SOON.isoformat(), "staff": c})[0]
            for c in ("bob", "room-b")}  # fmt: skip
    for connection, row in rows.items():
        wait_for(lambda c=connection, r=row: str(r["id"]) in [
            e.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY) for e in w.live(c)],
            f"{connection}'s event")  # fmt: skip
    for connection, row in rows.items():
        event = next(e for e in w.live(connection)
                     if e.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY) == str(row["id"]))  # fmt: skip
        w.google.edit_event(event["id"], calendar=CALENDAR[connection], summary=f"edited in {connection}")
    made = w.google.create_event("made in room-a", SOON, SOON + timedelta(hours=1), calendar=ROOM_A)
    assert w.tick()["status"] == "ok"
    bookings = w.bookings()
    for connection, row in rows.items():
        assert bookings[str(row["id"])]["title"] == f"edited in {connection}"
        assert bookings[str(row["id"])]["staff"] == connection
    (imported,) = [b for b in bookings.values() if b["google_event_id"] == made["id"]]
    assert imported["staff"] == "room-a" and imported["title"] == "made in room-a"


def test_a_revoked_connection_leaves_the_others_syncing(connected: Staff) -> None:
    w = connected
    w.google.revoke_all("bob@example.com")
    anna, bob = w.create({"title": "anna after revoke", "start_datetime": SOON.isoformat(), "staff": "anna"},
                         {"title": "bob after revoke", "start_datetime": SOON.isoformat(), "staff": "bob"})  # fmt: skip
    body = w.tick()
    assert body["connections"]["bob"]["status"] == "needs_reconnect", body
    assert body["connections"]["anna"]["status"] == "ok" and body["connections"]["room-b"]["status"] == "ok"
    assert "anna after revoke" in w.titles("anna") and "bob after revoke" not in w.titles("bob")
    bob_status = requests.get(w.url("oauth_callback", "/status"), params={"connection": "bob"},
                              headers={"Authorization": f"Bearer {CONNECT_KEY}"}, timeout=30).json()  # fmt: skip
    assert bob_status["state"] == "needs_reconnect" and bob_status["pending_outbox"] >= 1
    assert w.connection_item("bob")["connection_state"] == "needs_reconnect"
    assert w.connection_item("anna")["connection_state"] == "connected"
    assert w.bookings()[str(anna["id"])]["sync_status"] == "synced"
    assert w.bookings()[str(bob["id"])]["sync_status"] == "queued"


def assert_converged(w: Staff, connections: tuple[str, ...]) -> None:
    """Every live booking of these connections has exactly one live event, in its staff member's calendar,
    with its title; no live event there belongs to a booking that is gone or lives elsewhere."""
    all_rows = w.bookings()
    bookings = {
        k: r for k, r in all_rows.items() if r.get("status") != "cancelled" and r["staff"] in connections
    }
    placed: Counter[str] = Counter()
    for connection in connections:
        for event in w.live(connection):
            key = event.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY)
            row = all_rows.get(str(key))
            brief = (
                {k: row.get(k) for k in ("status", "staff", "title", "sync_status", "sync_error")}
                if row
                else None
            )
            assert key in bookings, (
                f"{connection}: event {event.get('summary')!r} of no live booking here ({key}: {brief})"
            )
            assert bookings[key]["staff"] == connection, (key, bookings[key]["staff"], connection)
            assert (bookings[key]["title"] or "") == event.get("summary", ""), (key, event.get("summary"))
            placed[key] += 1
    assert {k: n for k, n in placed.items() if n > 1} == {}, "bookings with more than one live event"
    assert sorted(set(bookings) - set(placed)) == [], "bookings without an event"


def test_chaos_over_two_connections_converges(connected: Staff) -> None:
    w = connected
    pair = ("anna", "room-b")
    seed = int(os.environ.get("CALSYNC_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"chaos seed: {seed} (replay with CALSYNC_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    w.tick()
    counts: Counter[str] = Counter()
    w.google.set_fault_rate(0.2, seed=seed)
    try:
        for step in range(120):
            op = rng.choices(["d_create", "d_update", "d_reassign", "d_delete", "g_create", "g_edit", "g_cancel",
                              "hook", "directus_blip", "cycle"],
                             weights=[18, 14, 10, 6, 10, 10, 5, 5, 5, 10])[0]  # fmt: skip
            counts[op] += 1
            mine = [k for k, r in w.bookings().items() if r["staff"] in pair]
            when = SOON + timedelta(hours=rng.randrange(0, 24 * 14))
            if op == "d_create":
                w.create({"title": f"d{step}", "start_datetime": when.isoformat(), "staff": rng.choice(pair)})
            elif op == "d_update" and mine:
                w.update(rng.choice(mine), title=f"d{step}-edit", start_datetime=when.isoformat(),
                         end_datetime=(when + timedelta(hours=1)).isoformat())  # fmt: skip
            elif op == "d_reassign" and mine:
                key = rng.choice(mine)
                w.update(key, staff=pair[1] if w.bookings()[key]["staff"] == pair[0] else pair[0])
            elif op == "d_delete" and mine:
                w.delete(rng.choice(mine))
            elif op == "g_create":
                w.google.create_event(
                    f"g{step}", when, when + timedelta(minutes=30), calendar=CALENDAR[rng.choice(pair)]
                )
            elif op in ("g_edit", "g_cancel"):
                connection = rng.choice(pair)
                live = w.live(connection)
                if live:
                    target = rng.choice(live)
                    if op == "g_edit":
                        w.google.edit_event(
                            target["id"], calendar=CALENDAR[connection], summary=f"g{step}-edit"
                        )
                    else:
                        w.google.cancel_event(target["id"], calendar=CALENDAR[connection])
            elif op == "hook":
                w.hook.stop() if w.hook.process else w.hook.start()
            elif op == "directus_blip":
                w.proxy.fail_rate = 0.5 if w.proxy.fail_rate == 0 else 0.0
            elif op == "cycle":
                w.cycle()  # may fail under faults; that is the point
    finally:
        w.google.clear_faults()
        w.proxy.fail_rate = 0.0
        if not w.hook.process:
            w.hook.start()
    time.sleep(3)  # deliveries the Flow made during the last operations finish
    print(f"operations: {dict(counts)}; Directus 503s injected: {w.proxy.failures}")
    for _ in range(3):
        w.tick()
    body = w.tick()
    assert all(body["connections"][c]["status"] == "ok" for c in pair), body
    assert_converged(w, pair)
