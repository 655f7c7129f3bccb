"""calendar_import: one sync cycle against the Google fake and a real Directus."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from calsync.state.store import Cursor
from calsync.sync import cycle as cycle_module
from calsync.sync import pull
from calsync.sync.booking import PRIVATE_KEY
from calsync.sync.ids import event_id_for
from tests.parts.product import Product

pytestmark = [pytest.mark.google, pytest.mark.directus]

SOON = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


def cycle(product: Product) -> dict[str, Any]:
    response = product.cycle()
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    assert body["status"] == "ok", body
    return body


def by_title(product: Product) -> dict[str, dict[str, Any]]:
    return {row["title"]: row for row in product.bookings().values()}


def test_first_import_brings_timed_all_day_and_recurring_events(product: Product) -> None:
    product.connect()
    product.google.create_event(
        "Timed", SOON, SOON + timedelta(minutes=45), location="Room 1", description="Notes"
    )
    product.google.create_event("Day off", SOON.date(), SOON.date() + timedelta(days=2))
    series = product.google.add_recurring(
        "Daily standup", SOON + timedelta(hours=2), SOON + timedelta(hours=3), count=3
    )
    summary = cycle(product)
    assert summary["created"] == 5 and summary["full_sync"] is True
    rows = product.bookings()
    assert len(rows) == 5
    titles = by_title(product)
    timed = titles["Timed"]
    assert timed["location"] == "Room 1" and timed["description"] == "Notes" and timed["all_day"] is False
    assert timed["start_datetime"] == SOON.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert titles["Day off"]["all_day"] is True
    standups = [r for r in rows.values() if r["title"] == "Daily standup"]
    assert len(standups) == 3
    assert {r["google_event_id"] for r in standups} == set(product.google.instance_ids(series["id"]))
    # every imported event is stamped with its booking key, and mapped
    for row in rows.values():
        event = product.google.event(row["google_event_id"])
        assert event["extendedProperties"]["private"][PRIVATE_KEY] == str(row["id"])
        assert product.store.get_mapping("default", "bookings", str(row["id"])) is not None


def test_a_quiet_cycle_makes_one_list_call_and_no_writes(product: Product) -> None:
    product.connect()
    product.google.create_event("Timed", SOON)
    cycle(product)
    cycle(product)  # absorbs the echo of our own stamping patch
    product.google.clear_log()
    before = product.bookings()
    directus_before = product.app.directus.requests
    summary = cycle(product)
    assert (summary["created"], summary["updated"], summary["pushed"]) == (0, 0, 0)
    assert product.google.count() == 1 and product.google.count(method="GET", path_contains="/events") == 1
    # Directus: the connections, its clock, one page of changed bookings, one sweep slice (deleted
    # bookings), the bookings counted by sync status, and the status shown on the connection's item and
    # on the settings item; none of them grows with the calendar (nor with the number of connections:
    # tests/unit/sync/test_tick.py)
    assert product.app.directus.requests - directus_before == 7
    assert product.bookings() == before  # no booking was written


def test_edits_cancellations_and_new_events_come_back(product: Product) -> None:
    product.connect()
    moved = product.google.create_event("To move", SOON)
    gone = product.google.create_event("To cancel", SOON + timedelta(hours=3))
    series = product.google.add_recurring(
        "Class", SOON + timedelta(days=1), SOON + timedelta(days=1, hours=1), count=3
    )
    cycle(product)
    cycle(product)
    product.google.edit_event(
        moved["id"],
        summary="Moved",
        start={"dateTime": (SOON + timedelta(hours=1)).isoformat()},
        end={"dateTime": (SOON + timedelta(hours=2)).isoformat()},
    )
    product.google.cancel_event(gone["id"])
    second = product.google.instance_ids(series["id"])[1]
    product.google.cancel_instance(second)
    product.google.create_event("Brand new", SOON + timedelta(days=3))
    summary = cycle(product)
    assert (summary["updated"], summary["cancelled"], summary["created"]) == (1, 2, 1)
    titles = by_title(product)
    assert titles["Moved"]["start_datetime"].startswith(
        (SOON + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    )
    assert titles["To cancel"]["status"] == "cancelled"
    classes = {
        r["google_event_id"]: r["status"] for r in product.bookings().values() if r["title"] == "Class"
    }
    assert classes[second] == "cancelled" and list(classes.values()).count("cancelled") == 1
    assert "Brand new" in titles


def test_our_own_pushes_are_not_imported_back(product: Product) -> None:
    product.connect()
    key = product.create_bookings({"title": "From Directus", "start_datetime": SOON.isoformat()})[0]["id"]
    product.deliver_event("create", [key])
    summary = cycle(product)
    assert summary["created"] == 0 and summary["skipped_echoes"] == 1
    assert len(product.bookings()) == 1


def test_a_webhook_that_never_arrived_is_repaired(product: Product) -> None:
    product.connect()
    cycle(product)  # sets the checkpoint
    keys = [r["id"] for r in product.create_bookings(*[{"title": f"missed {n}", "start_datetime": SOON.isoformat()}
                                                       for n in range(4)])]  # fmt: skip
    product.update_booking(keys[0], title="missed 0, edited")
    summary = cycle(product)
    assert summary["pushed"] == 4
    assert sorted(e["summary"] for e in product.live_events()) == [
        "missed 0, edited",
        "missed 1",
        "missed 2",
        "missed 3",
    ]
    assert cycle(product)["pushed"] == 0


def test_repairing_many_pages_writes_every_status_back_and_frees_every_lease(
    product: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 60 pushed in batches of 50: statuses are written on the write-back thread while the next
    batch and page go to Google; every booking ends synced, its mapping knows the date_updated of that
    write (or the next cycle would pull our own write back), and no lease outlives the cycle."""
    monkeypatch.setattr(cycle_module, "REPAIR_PAGE", 60)
    monkeypatch.setattr(cycle_module, "REPAIR_FIRST_PAGE", 60)
    product.connect()
    cycle(product)  # sets the checkpoint
    rows = product.create_bookings(*[{"title": f"missed {n}", "start_datetime": SOON.isoformat()}
                                     for n in range(150)])  # fmt: skip
    assert cycle(product)["pushed"] == 150
    assert product.google.count(batch=True) == 5  # pages of 60, 60 and 30: 50 + 10, 50 + 10, 30
    assert len(product.live_events()) == 150
    mappings = product.store.get_mappings("default", "bookings", [str(r["id"]) for r in rows])
    for key, booking in product.bookings().items():
        assert booking["sync_status"] == "synced" and booking["google_event_id"] == mappings[key].event_id
        assert mappings[key].directus_updated == booking["date_updated"]
        assert product.store.acquire_lease(
            f"default/booking/bookings/{key}", "a-delivery", timedelta(seconds=5)
        )
    quiet = cycle(product)
    assert quiet["pushed"] == 0 and quiet["updated"] == 0


def test_pagination_and_410_recovery_make_no_duplicates(
    product: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull, "PAGE_SIZE", 4)
    product.connect()
    for n in range(10):
        product.google.create_event(f"e{n}", SOON + timedelta(hours=n))
    summary = cycle(product)
    assert summary["created"] == 10 and summary["pages"] == 3
    product.google.invalidate_sync_tokens()
    product.google.edit_event(product.google.events()[0]["id"], summary="e0 renamed")
    after = cycle(product)
    assert after["full_sync"] is True and after["created"] == 0 and after["updated"] == 1
    assert len(product.bookings()) == 10


def test_nothing_is_cancelled_for_being_outside_the_window(product: Product) -> None:
    product.connect()
    old = product.create_bookings({"title": "Last year", "start_datetime": "2025-01-10T10:00:00Z"})[0]["id"]
    product.deliver_event("create", [old])
    product.google.invalidate_sync_tokens()
    cycle(product)
    assert product.bookings()[str(old)]["status"] == "confirmed"


def test_google_failure_mid_pages_then_a_clean_cycle_converges(
    product: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull, "PAGE_SIZE", 3)
    product.connect()
    for n in range(8):
        product.google.create_event(f"e{n}", SOON + timedelta(hours=n))
    # the first page goes through, then Google fails long enough to exhaust the retries
    original = product.app.calendar()
    assert original is not None
    calls = {"n": 0}
    real_list = original.list_events

    def flaky_list(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            product.google.fail_next(20, 503, "backendError", path_contains="/events", method="GET")
        return real_list(**kwargs)

    monkeypatch.setattr(original, "list_events", flaky_list)
    failed = product.cycle()
    assert failed.status_code == 503 and failed.get_json()["status"] == "error"
    product.google.clear_faults()
    monkeypatch.setattr(original, "list_events", real_list)
    cycle(product)
    cycle(product)
    assert sorted(r["title"] for r in product.bookings().values()) == [f"e{n}" for n in range(8)]


def test_a_crash_between_pages_repeats_work_and_never_duplicates(
    product: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pull, "PAGE_SIZE", 3)
    product.connect()
    for n in range(7):
        product.google.create_event(f"e{n}", SOON + timedelta(hours=n))
    real = pull.Puller._apply_page
    pages = {"n": 0}

    def crash_on_second(self: pull.Puller, events: list[dict[str, Any]]) -> None:
        pages["n"] += 1
        if pages["n"] == 2:
            raise SystemExit("the instance died")  # nothing in the product catches this
        real(self, events)

    monkeypatch.setattr(pull.Puller, "_apply_page", crash_on_second)
    with pytest.raises(SystemExit):
        product.cycle()
    cursor = product.store.get_cursor("default", "primary")
    assert cursor is None or cursor.sync_token is None  # the token did not move past uncommitted work
    # the dead instance's lease runs out (taken here as if ten minutes had passed, then given back)
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert product.store.acquire_lease("default/import", "janitor", timedelta(seconds=1), now=later)
    product.store.release_lease("default/import", "janitor")
    monkeypatch.setattr(pull.Puller, "_apply_page", real)
    cycle(product)
    assert sorted(r["title"] for r in product.bookings().values()) == [f"e{n}" for n in range(7)]


class _FailingAdapter(HTTPAdapter):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        if self.failures > 0 and request.method in ("POST", "PATCH"):
            self.failures -= 1
            response = requests.Response()
            response.status_code = 503
            response._content = (
                b'{"errors":[{"message":"Service Unavailable","extensions":{"code":"SERVICE_UNAVAILABLE"}}]}'
            )
            response.request = request
            return response
        return super().send(request, **kwargs)


def test_directus_503_mid_cycle_then_a_clean_cycle_converges(product: Product) -> None:
    product.connect()
    for n in range(3):
        product.google.create_event(f"e{n}", SOON + timedelta(hours=n))
    adapter = _FailingAdapter(failures=10)
    product.app.directus.session.mount("http://", adapter)
    failed = product.cycle()
    assert failed.status_code == 503 and "Directus" in failed.get_json()["error"]
    product.app.directus.session.mount("http://", HTTPAdapter())
    cycle(product)
    cycle(product)
    assert sorted(r["title"] for r in product.bookings().values()) == ["e0", "e1", "e2"]
    assert len(product.google.events()) == 3


class _LosingAdapter(HTTPAdapter):
    """Delivers the first bulk create to Directus, then loses its answer (a dropped connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        response = super().send(request, **kwargs)
        if not self.lost and request.method == "POST" and "/items/bookings" in (request.url or ""):
            self.lost += 1
            raise requests.ConnectionError("connection reset after the request was sent")
        return response


def test_a_lost_answer_to_the_bulk_create_makes_no_duplicates(product: Product) -> None:
    product.connect()
    for n in range(5):
        product.google.create_event(f"e{n}", SOON + timedelta(hours=n))
    adapter = _LosingAdapter()
    product.app.directus.session.mount("http://", adapter)
    failed = product.cycle()
    assert adapter.lost == 1 and failed.status_code == 503  # Directus did create them; we never heard
    assert len(product.bookings()) == 5
    product.app.directus.session.mount("http://", HTTPAdapter())
    cycle(product)
    bookings = product.bookings()
    assert sorted(r["title"] for r in bookings.values()) == [f"e{n}" for n in range(5)]
    # relinked: mapped, and each event now carries its booking's key
    for event in product.live_events():
        key = event["extendedProperties"]["private"][PRIVATE_KEY]
        assert bookings[key]["google_event_id"] == event["id"]
        assert product.store.get_mapping("default", "bookings", key).event_id == event["id"]
    quiet = cycle(product)
    assert quiet["created"] == quiet["updated"] == quiet["pushed"] == 0


def test_a_lost_state_store_relinks_every_booking_instead_of_duplicating(product: Product) -> None:
    product.connect()
    product.google.create_event("from google", SOON)
    cycle(product)
    product.create_bookings({"title": "from directus", "start_datetime": SOON.isoformat()})
    cycle(product)
    assert len(product.bookings()) == 2 and len(product.live_events()) == 2
    # the state is gone (say a new SQLite file): no mappings, no sync token, no checkpoint
    keys = list(product.bookings())
    product.store.delete_mappings("default", "bookings", keys)
    product.store.put_cursor(Cursor("default", "primary"))
    product.google.edit_event(product.live_events()[0]["id"], location="Room 7")
    cycle(product)
    assert sorted(r["title"] for r in product.bookings().values()) == ["from directus", "from google"]
    assert len(product.live_events()) == 2
    assert {k: product.store.get_mapping("default", "bookings", k) is not None for k in keys} == {
        k: True for k in keys
    }
    assert "Room 7" in [r["location"] for r in product.bookings().values()]
    quiet = cycle(product)
    assert quiet["created"] == quiet["updated"] == quiet["pushed"] == 0


def test_a_page_of_events_over_directus_body_limit_is_created_in_parts(product: Product) -> None:
    product.connect()
    for n in range(150):  # 150 x 8 KB (Google's description limit): more than Directus's 1 MB in one body
        product.google.create_event(f"long {n}", SOON + timedelta(minutes=n), description="d" * 8000)
    posts: list[int] = []
    product.app.directus.session.hooks["response"].append(
        lambda response, *args, **kwargs: (
            posts.append(response.status_code) if response.request.method == "POST" else None
        )
    )
    summary = cycle(product)
    assert summary["created"] == 150 and summary["dead_letters"] == 0
    assert posts == [200, 200, 200]  # bodies of at most 512 KB, none refused and retried one by one
    assert product.google.count(batch=True) == 3  # stamped in full batches of 50 across the parts
    assert all(len(r["description"]) == 8000 for r in product.bookings().values())


def test_two_concurrent_cycles_one_answers_409(product: Product) -> None:
    product.connect()
    assert product.store.acquire_lease("default/import", "another-instance", timedelta(minutes=5))
    busy = product.cycle()
    assert busy.status_code == 409 and busy.get_json()["status"] == "busy"
    product.store.release_lease("default/import", "another-instance")
    answers: list[int] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        answers.append(product.cycle().status_code)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) in ([200, 200], [200, 409])  # they overlap (409) or one ran after the other


def test_mass_cancellation_is_refused(product: Product) -> None:
    product.connect()
    events = [product.google.create_event(f"e{n}", SOON + timedelta(hours=n)) for n in range(12)]
    cycle(product)
    cycle(product)
    for event in events[:11]:
        product.google.cancel_event(event["id"])
    refused = product.cycle()
    assert refused.status_code == 200 and refused.get_json()["status"] == "mass_cancel_refused"
    assert all(r["status"] != "cancelled" for r in product.bookings().values())
    status = product.client("oauth_callback").get("/status?key=calsync-test-connect-key").get_json()
    assert "MAX_CANCEL_SHARE" in status["last_error"]


def test_conflict_the_later_change_wins(product: Product) -> None:
    product.connect()
    key = product.create_bookings({"title": "Original", "start_datetime": SOON.isoformat()})[0]["id"]
    product.deliver_event("create", [key])
    cycle(product)
    event_id = event_id_for("default", "bookings", str(key))
    # Directus first (its webhook lost), then Google: Google is later and wins
    product.update_booking(key, title="Directus edit")
    product.google.edit_event(event_id, summary="Google edit")
    cycle(product)
    assert product.bookings()[str(key)]["title"] == "Google edit"
    assert product.google.event(event_id)["summary"] == "Google edit"
    # Google first, then Directus: Directus is later and wins
    product.google.edit_event(event_id, summary="Google again")
    import time

    time.sleep(0.01)
    product.update_booking(key, title="Directus last")
    summary = cycle(product)
    assert summary["conflicts_directus_won"] == 1
    assert product.bookings()[str(key)]["title"] == "Directus last"
    assert product.google.event(event_id)["summary"] == "Directus last"


def test_not_connected_and_needs_reconnect_answers(product: Product) -> None:
    assert product.cycle().get_json()["status"] == "not_connected"
    product.connect()
    product.google.revoke_all()
    product.google.expire_access_tokens()
    product.app.forget_calendar()
    first = product.cycle()
    assert first.status_code == 200 and first.get_json()["status"] == "needs_reconnect"
    assert product.cycle().get_json()["status"] == "needs_reconnect"


def test_cycle_on_firestore(product_firestore: Product) -> None:
    product = product_firestore
    product.connect()
    product.google.create_event("Timed", SOON)
    product.google.create_event("Day", date.today() + timedelta(days=3))
    assert cycle(product)["created"] == 2
    cycle(product)
    assert cycle(product)["created"] == 0 and len(product.bookings()) == 2


def test_a_delete_whose_webhook_never_came_is_repaired(
    product: Product, monkeypatch: pytest.MonkeyPatch
) -> None:
    from calsync.sync import cycle as cycle_module

    monkeypatch.setattr(cycle_module, "SWEEP_PER_CYCLE", 2)
    product.connect()
    rows = product.create_bookings(
        *[{"title": f"b{n}", "start_datetime": SOON.isoformat()} for n in range(5)]
    )
    product.deliver_event("update", [r["id"] for r in rows])
    assert len(product.live_events()) == 5
    product.delete_bookings(rows[1]["id"], rows[4]["id"])  # the Flow's calls never arrive
    for _ in range(3):  # 5 mappings, 2 per cycle: three cycles visit them all
        cycle(product)
    assert sorted(e["summary"] for e in product.live_events()) == ["b0", "b2", "b3"]
    assert product.store.get_mapping("default", "bookings", str(rows[1]["id"])) is None


def test_on_google_delete_delete_removes_the_booking(product: Product) -> None:
    from calsync.bootstrap import App, set_app

    settings = product.app.settings.model_copy(update={"on_google_delete": "delete"})
    product.app = App(settings, sleep=lambda _: None, store=product.app.store)
    set_app(product.app)
    product.connect()
    keep = product.google.create_event("Keep", SOON)
    drop = product.google.create_event("Drop", SOON + timedelta(hours=1))
    cycle(product)
    cycle(product)
    product.google.cancel_event(drop["id"])
    assert cycle(product)["cancelled"] == 1
    assert [r["title"] for r in product.bookings().values()] == ["Keep"]
    assert product.store.get_mappings_by_event("default", "primary", [drop["id"], keep["id"]]).keys() == {
        keep["id"]
    }


def test_a_cancellation_while_the_sync_token_was_lost_still_cancels_the_booking(product: Product) -> None:
    product.connect()
    product.google.create_event("Stays", SOON)
    gone = product.google.create_event("Cancelled during the gap", SOON + timedelta(hours=2))
    cycle(product)
    cycle(product)
    product.google.invalidate_sync_tokens()  # Google will answer 410: the next cycle is a full sync
    product.google.cancel_event(gone["id"])
    summary = cycle(product)
    assert summary["full_sync"] is True and summary["cancelled"] == 1
    assert by_title(product)["Cancelled during the gap"]["status"] == "cancelled"
    assert by_title(product)["Stays"]["status"] != "cancelled"
