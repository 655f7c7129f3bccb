"""Google -> Directus on in-memory ports: what a cycle brings back, and that it echoes nothing."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.sync.world import START, World


def settled(world: World) -> None:
    """Two cycles: the import, then the one that sees the echo of our own stamping."""
    world.cycle()
    world.cycle()


def test_an_event_made_in_google_becomes_a_booking_linked_to_it() -> None:
    world = World()
    event = world.google.create_event("Call", START, START + timedelta(minutes=30))
    settled(world)
    (row,) = world.directus.rows().values()
    assert (row["title"], row["start_datetime"], row["end_datetime"]) == (
        "Call",
        "2030-03-04T09:00:00.000Z",
        "2030-03-04T09:30:00.000Z",
    )
    assert row["google_event_id"] == event["id"] and row["sync_status"] == "synced"
    stamped = world.google.event(event["id"])["extendedProperties"]["private"]
    assert stamped["calsync_key"] == str(row["id"])


def test_a_quiet_cycle_is_one_list_call_and_no_write_anywhere() -> None:
    world = World()
    world.google.create_event("Call", START)
    world.book("Booked")
    world.deliver_flow()
    settled(world)
    google_before, rows_before = world.google.requests, world.directus.rows()
    assert world.cycle().status == "ok"
    assert world.google.requests - google_before == 1
    assert world.directus.rows() == rows_before


def test_a_google_edit_comes_back_and_is_not_written_back_to_google() -> None:
    world = World()
    key = world.book("Before")
    world.deliver("upsert", key)
    event_id = world.directus.rows()[key]["google_event_id"]
    world.google.edit_event(
        event_id, summary="After", start=START + timedelta(hours=2), end=START + timedelta(hours=3)
    )
    etag = world.google.event(event_id)["etag"]
    world.cycle()
    row = world.directus.rows()[key]
    assert row["title"] == "After" and row["start_datetime"] == "2030-03-04T11:00:00.000Z"
    world.deliver_flow()  # nothing: the sync's own write is not delivered
    world.cycle()
    assert world.google.event(event_id)["etag"] == etag  # no write to Google followed the pull


def test_a_cancellation_in_google_cancels_the_booking_without_writing_to_google() -> None:
    world = World()
    key = world.book()
    world.deliver("upsert", key)
    event_id = world.directus.rows()[key]["google_event_id"]
    world.google.cancel_event(event_id)
    etag = world.google.event(event_id)["etag"]
    world.cycle()
    world.cycle()
    assert world.directus.rows()[key]["status"] == "cancelled"
    assert world.google.event(event_id)["etag"] == etag


def test_more_cancellations_than_the_guard_allows_cancel_nothing() -> None:
    world = World()
    keys = [world.book(hour=n) for n in range(20)]
    world.deliver("upsert", *keys)
    for event in world.live_events()[:11]:
        world.google.cancel_event(event["id"])
    result = world.cycle()
    assert result.status == "mass_cancel_refused"
    assert all(row["status"] != "cancelled" for row in world.directus.rows().values())


def test_an_expired_sync_token_makes_a_full_sync_that_duplicates_nothing() -> None:
    world = World()
    world.google.create_event("One", START)
    settled(world)
    world.google.invalidate_sync_tokens()
    result = world.cycle()
    assert result.body["full_sync"] is True and len(world.directus.rows()) == 1


def test_a_lost_state_store_relinks_instead_of_duplicating() -> None:
    world = World()
    world.google.create_event("From Google", START)
    key = world.book("From Directus", hour=2)
    world.deliver("upsert", key)
    settled(world)
    world.lose_store()
    settled(world)
    assert sorted(r["title"] for r in world.directus.rows().values()) == ["From Directus", "From Google"]
    assert len(world.google.events()) == 2
