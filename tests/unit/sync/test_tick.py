"""One tick for every connection, on in-memory ports: routing, reassignment, isolation, fairness, and a
Directus cost that does not grow with the number of connections."""

from __future__ import annotations

import time
from typing import Any

from calsync.google.errors import GoogleAccessRevoked
from calsync.sync.booking import FIELDS
from tests.unit.sync.fleet import ROUTE, FleetWorld
from tests.unit.sync.world import Crash


def salon(**config: Any) -> FleetWorld:
    return FleetWorld(
        {"id": "default", "name": "Front desk"},
        {"id": "anna", "staff": "u-anna"},
        {"id": "bob", "staff": "u-bob"},
        **config,
    )


def test_each_booking_lands_in_its_staff_members_calendar_and_unserved_ones_say_why() -> None:
    world = salon()
    world.book("Cut", staff="u-anna")
    world.book("Colour", staff="u-bob")
    world.book("Walk-in")
    nobody = world.book("Perm", staff="u-carol")
    result = world.tick()
    assert result.status == "ok", result.body
    assert (world.titles("anna"), world.titles("bob"), world.titles("default")) == (
        ["Cut"],
        ["Colour"],
        ["Walk-in"],
    )
    row = world.directus.rows()[nobody]
    assert row[FIELDS.sync_status] == "error" and "u-carol" in row[FIELDS.sync_error]
    assert result.body["unrouted"] == 1
    # the second tick writes nothing more (the sync_error is not written again)
    requests = world.directus.requests
    assert world.tick().status == "ok"
    updates = [r for r in world.directus.rows().values() if r[FIELDS.sync_status] == "error"]
    assert len(updates) == 1 and world.directus.requests - requests < 10


def test_events_created_in_a_staff_calendar_become_that_staff_members_bookings() -> None:
    world = salon()
    world.tick()
    world.calendars["bob"].inner.create_event("Beard trim")
    world.tick()
    rows = [r for r in world.directus.rows().values() if r["title"] == "Beard trim"]
    assert len(rows) == 1 and rows[0][ROUTE] == "u-bob"
    assert world.titles("anna") == [] and world.titles("default") == []


def test_a_reassignment_moves_the_event_through_the_hook() -> None:
    world = salon()
    key = world.book("Cut", staff="u-anna")
    world.tick()
    world.directus.person_update(key, **{ROUTE: "u-bob"})
    outcome = world.deliver("upsert", key)
    assert outcome.moved == [key] and not outcome.failed
    assert (world.titles("anna"), world.titles("bob")) == ([], ["Cut"])
    assert world.mapped_in(key) == ["bob"]
    assert world.tick().status == "ok" and world.titles("bob") == ["Cut"]


def test_a_reassignment_without_a_webhook_is_moved_by_the_tick() -> None:
    world = salon()
    key = world.book("Cut", staff="u-anna")
    world.tick()
    world.directus.person_update(key, **{ROUTE: "u-bob"})  # the delivery is lost
    result = world.tick()
    assert result.status == "ok", result.body
    assert (world.titles("anna"), world.titles("bob")) == ([], ["Cut"])
    assert world.mapped_in(key) == ["bob"]


def test_the_old_event_stays_until_the_new_calendar_has_it() -> None:
    world = salon()
    key = world.book("Cut", staff="u-anna")
    world.tick()
    world.directus.person_update(key, **{ROUTE: "u-bob"})
    world.revoked.add("bob")  # bob's calendar cannot be written now
    world.deliver("upsert", key)
    assert world.titles("anna") == ["Cut"] and world.mapped_in(key) == ["anna"]
    assert world.store.get_outbox("anna", "bookings", key) is not None  # the release waits
    world.revoked.clear()
    for _ in range(3):
        world.clock.advance(3600)
        world.tick()
    assert (world.titles("anna"), world.titles("bob")) == ([], ["Cut"])
    assert world.store.count_outbox("anna") == world.store.count_outbox("bob") == 0


def test_a_crash_between_the_two_steps_of_a_move_loses_nothing_and_duplicates_nothing() -> None:
    for crash_at in range(0, 40, 3):
        world = salon()
        key = world.book("Cut", staff="u-anna")
        world.tick()
        world.directus.person_update(key, **{ROUTE: "u-bob"})
        world.store.crash_after(crash_at)
        try:
            world.deliver("upsert", key)
        except Crash:
            world.clock.advance(600)  # the dead instance's leases expire
        world.store.countdown = None
        for _ in range(3):
            world.clock.advance(3600)
            world.tick()
        assert (world.titles("anna"), world.titles("bob")) == ([], ["Cut"]), crash_at
        assert world.mapped_in(key) == ["bob"], crash_at


def test_a_revoked_connection_does_not_stop_the_others_and_its_changes_wait() -> None:
    world = salon()
    anna_key = world.book("Cut", staff="u-anna")
    world.tick()
    world.calendars["anna"].inner.fail_next(
        100, GoogleAccessRevoked(401, "invalid_grant", "Token has been revoked")
    )
    world.directus.person_update(anna_key, title="Cut and wash")
    bob_key = world.book("Colour", staff="u-bob")
    result = world.tick()
    assert result.status == "partial"
    assert result.body["connections"]["anna"]["status"] == "needs_reconnect"
    assert result.body["connections"]["bob"]["status"] == "ok" and world.titles("bob") == ["Colour"]
    assert world.store.get_outbox("anna", "bookings", anna_key) is not None  # nothing lost
    assert world.mapped_in(bob_key) == ["bob"]


def test_a_quiet_tick_costs_directus_the_same_for_one_connection_or_fifty() -> None:
    def quiet_cost(connections: int) -> tuple[int, list[int]]:
        world = FleetWorld(*({"id": f"s{n}", "staff": f"u{n}"} for n in range(connections)))
        for n in range(connections):
            world.book(f"B{n}", staff=f"u{n}")
        world.tick()
        world.tick()
        for calendar in world.calendars.values():
            calendar.lists = 0
        before = world.directus.requests
        assert world.tick().status == "ok"
        return world.directus.requests - before, [c.lists for c in world.calendars.values()]

    one, lists_one = quiet_cost(1)
    fifty, lists_fifty = quiet_cost(50)
    assert fifty == one, (one, fifty)
    assert lists_one == [1] and lists_fifty == [1] * 50  # one incremental list each: Google's floor


def test_connections_that_do_not_fit_the_budget_go_first_next_tick() -> None:
    world = FleetWorld(*({"id": f"s{n}", "staff": f"u{n}"} for n in range(4)))
    world.tick()  # every connection's first cycle
    slow = world.calendars["s0"]
    original = slow.list_events

    def sluggish(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.2)
        return original(*args, **kwargs)

    slow.list_events = sluggish  # type: ignore[method-assign]
    world.concurrency = 1
    world.budget_seconds = 0.1
    keys = {n: world.book(f"B{n}", staff=f"u{n}") for n in range(4)}
    first = world.tick()
    ran = [c for c, body in first.body["connections"].items() if body["status"] != "skipped"]
    skipped = [c for c, body in first.body["connections"].items() if body["status"] == "skipped"]
    assert ran and skipped, first.body
    for connection in skipped:  # their work waits in their outbox: the checkpoint moved on regardless
        n = int(connection[1:])
        assert world.store.get_outbox(connection, "bookings", keys[n]) is not None
    slow.list_events = original  # type: ignore[method-assign]
    world.budget_seconds = 420
    second = world.tick()
    order = list(second.body["connections"])
    assert set(order[: len(skipped)]) == set(skipped), (order, skipped)  # the least recently synced first
    assert all(body["status"] == "ok" for body in second.body["connections"].values())
    assert all(world.titles(f"s{n}") == [f"B{n}"] for n in range(4))


def test_a_connection_added_later_picks_up_the_bookings_already_routed_to_it() -> None:
    world = salon()
    early = world.book("Early", staff="u-dana")
    world.tick()
    assert "u-dana" in world.directus.rows()[early][FIELDS.sync_error]
    world.add("dana", staff="u-dana")
    result = world.tick()
    assert result.status == "ok", result.body
    assert world.titles("dana") == ["Early"]
    assert world.directus.rows()[early][FIELDS.sync_status] == "synced"


def test_without_a_route_field_one_connection_serves_everything_as_before() -> None:
    world = FleetWorld({"id": "default"}, route_field=None)
    world.book("A")
    world.book("B", staff="whoever")
    assert world.tick().status == "ok"
    assert world.titles("default") == ["A", "B"]


def test_a_listing_older_than_a_push_does_not_cancel_a_booking_moved_away_and_back() -> None:
    """The pull lists anna's calendar (the old event, deleted when the booking moved to bob), and before it
    applies the page, a delivery moves the booking back to anna, which restores that very event: the
    listing's cancellation is older than what the push knows, and must not end the booking."""
    world = salon()
    key = world.book("Cut", staff="u-anna")
    world.tick()
    world.directus.person_update(key, **{ROUTE: "u-bob"})
    world.deliver("upsert", key)
    assert (world.titles("anna"), world.titles("bob")) == ([], ["Cut"])
    anna = world.calendars["anna"]
    original = anna.list_events

    def listed_then_moved_back(*args: Any, **kwargs: Any) -> Any:
        page = original(*args, **kwargs)  # the deleted old event, as Google listed it
        anna.list_events = original  # type: ignore[method-assign]
        world.directus.person_update(key, **{ROUTE: "u-anna"})
        world.deliver("upsert", key)  # restores the old event, while the page is on its way
        return page

    anna.list_events = listed_then_moved_back  # type: ignore[method-assign]
    world.tick()
    row = world.directus.rows()[key]
    assert str(row[FIELDS.status] or "").lower() != "cancelled", row
    for _ in range(2):
        world.tick()
    assert (world.titles("anna"), world.titles("bob")) == (["Cut"], [])
