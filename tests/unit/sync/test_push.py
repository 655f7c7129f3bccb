"""Directus -> Google on in-memory ports: what a delivery does, and what it must never do."""

from __future__ import annotations

from calsync.google.errors import GoogleBadRequest
from calsync.sync.ids import event_id_for
from tests.unit.sync.world import START, World


def test_a_new_booking_gets_one_event_with_its_derived_id_and_the_booking_says_so() -> None:
    world = World()
    key = world.book("Haircut")
    outcome = world.deliver("upsert", key)
    assert outcome.synced == [key]
    event = world.google.event(event_id_for("default", "bookings", key))
    assert event["summary"] == "Haircut" and event["extendedProperties"]["private"]["calsync_key"] == key
    row = world.directus.rows()[key]
    assert (row["google_event_id"], row["sync_status"], row["sync_error"]) == (event["id"], "synced", None)


def test_a_delivery_that_changes_nothing_makes_no_google_call() -> None:
    world = World()
    key = world.book()
    world.deliver("upsert", key)
    before = world.google.requests
    for _ in range(3):  # duplicated deliveries, and the echo of our own status write
        assert world.deliver("upsert", key).skipped == [key]
    assert world.google.requests == before


def test_an_edit_patches_the_same_event() -> None:
    world = World()
    key = world.book("Before")
    world.deliver("upsert", key)
    world.directus.person_update(key, title="After")
    world.deliver("upsert", key)
    assert [e["summary"] for e in world.live_events()] == ["After"]


def test_a_forged_delete_of_a_booking_that_exists_deletes_nothing() -> None:
    world = World()
    key = world.book()
    world.deliver("upsert", key)
    outcome = world.deliver("delete", key)
    assert outcome.deleted == [] and outcome.skipped == [key]
    assert len(world.live_events()) == 1
    assert world.store.get_mapping("default", "bookings", key) is not None


def test_a_real_delete_deletes_the_event_and_forgets_the_mapping() -> None:
    world = World()
    key = world.book()
    world.deliver("upsert", key)
    world.directus.person_delete(key)
    assert world.deliver("delete", key).deleted == [key]
    assert world.live_events() == []
    assert world.store.get_mapping("default", "bookings", key) is None


def test_a_booking_a_bulk_read_missed_keeps_its_event_and_its_status() -> None:
    world = World()
    key = world.book("Still here")
    world.deliver("upsert", key)
    world.directus.hidden.add(key)  # the bulk read leaves it out; its own route finds it
    outcome = world.deliver("delete", key)
    assert outcome.deleted == [] and outcome.skipped == [key]
    assert [e["summary"] for e in world.live_events()] == ["Still here"]
    assert world.directus.rows()[key]["sync_status"] == "synced"


def test_reads_that_come_back_empty_prove_nothing_and_delete_nothing() -> None:
    world = World()
    keys = [world.book(hour=n) for n in range(3)]
    world.deliver("upsert", *keys)
    world.directus.blank_reads = True  # a proxy, a wrong DIRECTUS_URL: no rows, no errors
    outcome = world.deliver("delete", *keys)
    assert outcome.deleted == [] and set(outcome.failed) == set(keys)
    assert len(world.live_events()) == 3
    assert {e.booking_key for e in world.store.due_outbox("default", world.clock(), 10)} == set(keys)
    world.directus.blank_reads = False
    world.cycle()  # the reads are back: the bookings exist, their events stay, the intents are settled
    assert len(world.live_events()) == 3 and world.store.count_outbox("default") == 0


def test_more_deletions_than_the_guard_allows_delete_none_and_wait_in_the_outbox() -> None:
    world = World()
    keys = [world.book(hour=n) for n in range(30)]
    world.deliver("upsert", *keys)
    world.directus.person_delete(*keys[:11])  # more than max(10, 20% of 30)
    outcome = world.deliver("delete", *keys[:11])
    assert outcome.deleted == [] and outcome.guard and "MAX_DELETE_SHARE" in outcome.guard
    assert len(world.live_events()) == 30
    assert world.store.count_outbox("default") == 11
    result = world.cycle()
    assert result.status == "mass_delete_refused" and len(world.live_events()) == 30
    # the operator lets them through for one cycle
    world.config = world.config.__class__(max_delete_share=0.5)
    world.ctx = world.context()
    world.clock.advance(3600)
    assert world.cycle().status == "ok"
    assert len(world.live_events()) == 19 and world.store.count_outbox("default") == 0


def test_google_down_queues_the_booking_and_a_cycle_delivers_it() -> None:
    world = World()
    key = world.book()
    world.google.fail_next(1)
    outcome = world.deliver("upsert", key)
    assert key in outcome.failed and world.directus.rows()[key]["sync_status"] == "queued"
    world.clock.advance(120)
    world.cycle()
    assert world.directus.rows()[key]["sync_status"] == "synced" and len(world.live_events()) == 1


def test_a_lost_insert_answer_is_not_a_second_event() -> None:
    world = World()
    key = world.book()
    world.google.lose_next(1)
    assert key in world.deliver("upsert", key).failed
    world.clock.advance(120)
    world.cycle()  # insert -> 409 duplicate -> patch
    assert len(world.google.events()) == 1


def test_without_a_connection_bookings_wait_in_the_outbox() -> None:
    world = World(connected=False)
    key = world.book()
    assert "no Google account is connected" in world.deliver("upsert", key).failed[key]
    assert world.store.count_outbox("default") == 1
    world.connected = True
    world.cycle()
    assert len(world.live_events()) == 1 and world.store.count_outbox("default") == 0


def test_an_invalid_booking_says_why_and_sends_nothing() -> None:
    world = World()
    key = world.book(end_datetime="2030-03-04T08:00:00Z")
    assert "is before" in world.deliver("upsert", key).invalid[key]
    row = world.directus.rows()[key]
    assert row["sync_status"] == "error" and "is before" in row["sync_error"]
    assert world.google.requests == 0


def test_a_permanent_refusal_is_a_dead_letter() -> None:
    world = World()
    key = world.book()
    world.google.fail_next(1, GoogleBadRequest(400, "invalid", "Google Calendar insert failed: 400 invalid"))
    assert key in world.deliver("upsert", key).dead
    assert world.store.count_dead_letters("default") == 1 and world.store.count_outbox("default") == 0


def test_bulk_deliveries_go_in_batches() -> None:
    world = World()
    keys = [world.book(hour=n) for n in range(120)]
    world.deliver("upsert", *keys)
    assert len(world.live_events()) == 120
    assert world.google.requests == 3  # 50 + 50 + 20 in three batch requests


def test_an_event_made_in_google_stays_writable_after_the_sync_writes_to_it() -> None:
    world = World()
    event = world.google.create_event("Made in Google", START)
    world.cycle()
    (key,) = world.directus.rows()
    world.directus.person_update(key, status="cancelled")
    world.deliver("upsert", key)
    assert world.google.event(event["id"])["status"] == "cancelled"
    world.directus.person_update(key, status="confirmed")  # and back: the sync still may write it
    assert world.deliver("upsert", key).synced == [key]
    assert world.google.event(event["id"])["status"] == "confirmed"
