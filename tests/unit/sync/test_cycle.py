"""The import cycle's repairs on in-memory ports: missed webhooks, deleted bookings, leases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from calsync.sync import cycle
from calsync.sync.cycle import import_lease_name
from tests.unit.sync.world import World


def test_a_webhook_that_never_came_is_repaired_by_the_next_cycle() -> None:
    world = World()
    key = world.book("Lost delivery")
    world.flow.clear()  # the Flow's call never arrived
    world.cycle()
    assert [e["summary"] for e in world.live_events()] == ["Lost delivery"]
    assert world.directus.rows()[key]["sync_status"] == "synced"


def test_a_booking_deleted_without_a_webhook_loses_its_event_once_proven_gone() -> None:
    world = World()
    keep, drop = world.book("Keep"), world.book("Drop", hour=1)
    world.deliver_flow()
    world.directus.person_delete(drop)
    world.flow.clear()
    world.cycle()
    assert [e["summary"] for e in world.live_events()] == ["Keep"]
    assert world.store.get_mapping("default", "bookings", keep) is not None


def test_a_cycle_whose_reads_come_back_empty_deletes_nothing() -> None:
    world = World()
    for n in range(30):
        world.book(f"b{n}", hour=n)
    world.deliver_flow()
    world.directus.blank_reads = True
    world.cycle()
    world.directus.blank_reads = False
    world.cycle()
    assert len(world.live_events()) == 30


def test_the_sweep_visits_every_mapping_in_bounded_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    world = World()
    keys = [world.book(f"b{n}", hour=n) for n in range(5)]
    world.deliver_flow()
    world.directus.person_delete(keys[1], keys[4])
    world.flow.clear()

    monkeypatch.setattr(cycle, "SWEEP_PER_CYCLE", 2)
    for _ in range(3):
        world.cycle()
    assert sorted(e["summary"] for e in world.live_events()) == ["b0", "b2", "b3"]


def test_a_second_cycle_while_one_runs_is_refused() -> None:
    world = World()
    assert world.store.acquire_lease(import_lease_name("default"), "other", timedelta(minutes=5))
    assert world.cycle().http_status == 409


def test_not_connected_is_said_and_nothing_is_tried() -> None:
    world = World(connected=False)
    world.book()
    result = world.cycle()
    assert result.status == "not_connected" and world.google.requests == 0


def test_a_booking_edited_between_the_repair_scan_and_its_push_is_pushed_as_edited() -> None:
    world = World()
    key = world.book("Scanned")
    world.flow.clear()  # the webhook never came: the repair finds it
    light_read = world.directus.get_items

    def edit_first(keys: object, fields: object = None) -> dict[str, dict[str, object]]:
        if fields is not None:  # push() checking, under the lease, that the scanned row did not change
            world.directus.person_update(key, title="Edited meanwhile")
            world.flow.clear()
        return light_read(keys, fields)  # type: ignore[arg-type]

    world.directus.get_items = edit_first  # type: ignore[method-assign]
    world.cycle()
    assert [e["summary"] for e in world.live_events()] == ["Edited meanwhile"]
