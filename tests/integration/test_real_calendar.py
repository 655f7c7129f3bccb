"""A real calendar, not a tidy one: every kind of event Google holds, imported through the real client into a
real Directus. Only what is a booking is imported; nothing is written to what the owner does not own; zones,
HTML and occurrences survive; quiet cycles write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from calsync.bootstrap import App, set_app
from calsync.sync.ids import event_id_for
from tests.fakes.google.corpus import ORGANIZER, seed_corpus
from tests.parts.product import Product

pytestmark = [pytest.mark.google, pytest.mark.directus]

IMPORTED = {
    "Call with Pune",
    "Conference",
    "Weekly sync",  # three occurrences: the fourth is cancelled
    "Invitation (accepted)",  # twice: with and without guestsCanModify
    "Invitation (tentative)",
    "Formatted",
    "Offset only",
}


def reconfigure(product: Product, **changes: Any) -> None:
    settings = product.app.settings.model_copy(update=changes)
    product.app = App(settings, sleep=lambda _: None, store=product.app.store)
    set_app(product.app)


def cycle(product: Product) -> dict[str, Any]:
    response = product.cycle()
    body: dict[str, Any] = response.get_json()
    assert response.status_code == 200 and body["status"] == "ok", body
    return body


def google_writes(product: Product) -> int:
    """Calendar API writes (single and batched parts alike), the token endpoint aside."""
    return sum(
        product.google.count_parts(method=m, path_contains="/events")
        for m in ("POST", "PATCH", "PUT", "DELETE")
    ) + sum(
        product.google.count(method=m, path_contains="/events", batch=False)
        for m in ("POST", "PATCH", "PUT", "DELETE")
    )


def by_title(product: Product) -> dict[str, dict[str, Any]]:
    return {row["title"]: row for row in product.bookings().values()}


@pytest.fixture
def corpus(product: Product) -> dict[str, str]:
    product.connect()
    ids = seed_corpus(product.google)
    cycle(product)
    return ids


def test_only_the_owners_own_events_and_accepted_invitations_become_bookings(
    product: Product, corpus: dict[str, str]
) -> None:
    titles = [row["title"] for row in product.bookings().values()]
    assert set(titles) == IMPORTED
    assert titles.count("Weekly sync") == 3 and titles.count("Invitation (accepted)") == 2
    product.google.clear_log()
    dead_before = product.store.count_dead_letters("default")
    for _ in range(2):  # two further cycles: nothing to write anywhere, nothing refused
        cycle(product)
    assert google_writes(product) == 0
    assert product.store.count_dead_letters("default") == dead_before
    assert product.google.foreign_writes() == []


def test_every_instant_is_google_s_and_every_zone_is_kept(product: Product, corpus: dict[str, str]) -> None:
    rows = by_title(product)
    pune = rows["Call with Pune"]
    assert (pune["start_datetime"], pune["timezone"]) == ("2030-03-04T09:00:00.000Z", "Asia/Kolkata")
    assert (
        rows["Offset only"]["start_datetime"] == "2030-03-04T23:00:00.000Z"
        and rows["Offset only"]["timezone"] is None
    )
    assert rows["Conference"]["all_day"] is True
    for title in ("Call with Pune", "Offset only"):  # a Directus edit of each goes to Google ...
        product.update_booking(rows[title]["id"], location="Room 2")
        assert product.deliver_event("update", [rows[title]["id"]]).status_code == 200
    # ... and leaves the zone each event shows in as it was
    assert product.google.event(corpus["timed_kolkata"])["start"]["timeZone"] == "Asia/Kolkata"
    assert "timeZone" not in product.google.event(corpus["offset_without_zone"])["start"]
    assert product.google.event(corpus["offset_without_zone"])["location"] == "Room 2"
    # a new booking without a zone takes TIMEZONE (UTC here); one with a zone keeps it
    new, zoned = product.create_bookings(
        {"title": "New", "start_datetime": "2030-03-06T10:00:00Z"},
        {"title": "Zoned", "start_datetime": "2030-03-06T10:00:00Z", "timezone": "America/New_York"},
    )
    product.deliver_event("update", [new["id"], zoned["id"]])
    assert (
        product.google.event(event_id_for("default", "bookings", str(new["id"])))["start"]["timeZone"]
        == "UTC"
    )
    zoned_event = product.google.event(event_id_for("default", "bookings", str(zoned["id"])))
    assert zoned_event["start"] == {"dateTime": "2030-03-06T05:00:00-05:00", "timeZone": "America/New_York"}


def test_bookings_of_someone_else_s_meeting_are_read_only(product: Product, corpus: dict[str, str]) -> None:
    rows = [r for r in product.bookings().values() if r["title"].startswith("Invitation")]
    product.google.clear_log()
    for row in rows:
        product.update_booking(row["id"], title="Renamed in Directus", description="our notes")
    answer = product.deliver_event("update", [r["id"] for r in rows])
    assert answer.status_code == 200 and set(answer.get_json()["read_only"]) == {str(r["id"]) for r in rows}
    for row in product.bookings().values():
        if row["id"] in {r["id"] for r in rows}:
            assert row["sync_status"] == "read_only" and ORGANIZER in row["sync_error"]
    cycle(product)
    cycle(product)
    product.delete_bookings(*[r["id"] for r in rows])
    assert product.deliver_event("delete", [r["id"] for r in rows]).status_code == 200
    cycle(product)
    assert google_writes(product) == 0 and product.google.foreign_writes() == []
    assert product.google.event(corpus["invitation_modifiable"])["summary"] == "Invitation (accepted)"
    assert product.google.event(corpus["invitation_locked"])["status"] == "confirmed"


def test_a_cancellation_in_google_is_applied_and_nothing_goes_back(
    product: Product, corpus: dict[str, str]
) -> None:
    cycle(product)  # settled
    instance = next(
        e for e in product.google.events() if e.get("recurringEventId") and e.get("status") != "cancelled"
    )
    product.google.cancel_instance(instance["id"])
    product.google.clear_log()
    cycle(product)  # Google lists the occurrence in its minimal cancelled shape
    cycle(product)
    cancelled = [r for r in product.bookings().values() if r["google_event_id"] == instance["id"]]
    assert [r["status"] for r in cancelled] == ["cancelled"]
    assert google_writes(product) == 0


def test_a_later_decline_ends_the_booking(product: Product, corpus: dict[str, str]) -> None:
    product.google.set_response(corpus["invitation_locked"], "declined")
    summary = cycle(product)
    assert summary["cancelled"] == 1
    rows = [r for r in product.bookings().values() if r["google_event_id"] == corpus["invitation_locked"]]
    assert [r["status"] for r in rows] == ["cancelled"]
    assert product.google.foreign_writes() == []


def test_an_html_description_reads_as_text_and_does_not_churn(
    product: Product, corpus: dict[str, str]
) -> None:
    assert by_title(product)["Formatted"]["description"] == "bold\nline"
    product.google.clear_log()
    cycle(product)
    cycle(product)
    assert google_writes(product) == 0
    assert product.google.event(corpus["html_description"])["description"] == "<b>bold</b><br>line"


def test_editing_one_occurrence_changes_that_occurrence_only(
    product: Product, corpus: dict[str, str]
) -> None:
    cycle(product)
    occurrences = sorted(
        (r for r in product.bookings().values() if r["title"] == "Weekly sync"),
        key=lambda r: r["start_datetime"],
    )
    first, second = occurrences[0], occurrences[1]
    product.update_booking(first["id"], title="Weekly sync (moved room)", location="Room 9")
    product.deliver_event("update", [first["id"]])
    assert product.google.event(first["google_event_id"])["location"] == "Room 9"
    assert product.google.event(second["google_event_id"]).get("location") in (None, "")
    product.delete_bookings(second["id"])
    product.deliver_event("delete", [second["id"]])
    series = product.google.event(corpus["weekly_series"])
    assert series["status"] == "confirmed"
    assert product.google.event(second["google_event_id"])["status"] == "cancelled"
    live = [
        e for e in product.google.events() if e.get("recurringEventId") and e.get("status") != "cancelled"
    ]
    assert second["google_event_id"] not in {e["id"] for e in live}
    assert first["google_event_id"] in {e["id"] for e in live}


def test_changing_the_imported_types_starts_a_full_sync_by_itself(
    product: Product, corpus: dict[str, str]
) -> None:
    cycle(product)
    reconfigure(product, import_event_types="default,focusTime")
    summary = cycle(product)
    assert summary["full_sync"] is True
    assert (
        by_title(product)["Focus time"]["sync_status"] == "read_only"
    )  # a focusTime event is not a meeting to edit
    product.update_booking(by_title(product)["Focus time"]["id"], title="Renamed focus")
    assert (
        str(by_title(product)["Renamed focus"]["id"])
        in product.deliver_event("update", [by_title(product)["Renamed focus"]["id"]]).get_json()["read_only"]
    )


def test_invitations_no_longer_imported_are_marked_not_deleted(
    product: Product, corpus: dict[str, str]
) -> None:
    reconfigure(product, import_invitations="none")
    cycle(product)
    invitations = [r for r in product.bookings().values() if r["title"].startswith("Invitation")]
    assert len(invitations) == 3
    assert all(
        r["sync_status"] == "excluded" and "IMPORT_INVITATIONS" in r["sync_error"] for r in invitations
    )
    reconfigure(product, import_invitations="all")
    cycle(product)
    assert "Invitation (needsAction)" in by_title(product)


def test_a_permanent_refusal_is_recorded_once(product: Product, corpus: dict[str, str]) -> None:
    row = by_title(product)["Call with Pune"]
    product.update_booking(row["id"], title="Refused")
    product.google.fail_next(1, 403, "forbiddenForNonOrganizer", method="PATCH")
    assert product.deliver_event("update", [row["id"]]).get_json()["rejected"]
    assert product.store.count_dead_letters("default") == 1
    product.google.clear_log()
    cycle(product)
    cycle(product)
    assert product.store.count_dead_letters("default") == 1 and google_writes(product) == 0
    product.update_booking(row["id"], title="Changed again")  # a new change is tried again
    product.deliver_event("update", [row["id"]])
    assert product.google.event(corpus["timed_kolkata"])["summary"] == "Changed again"


def test_our_events_link_back_in_source_and_long_texts_are_cut_visibly(product: Product) -> None:
    product.connect()
    row = product.create_bookings(
        {"title": "Long", "start_datetime": "2030-03-06T10:00:00Z", "description": "x" * 9000}
    )[0]
    product.deliver_event("create", [row["id"]])
    event = product.google.event(event_id_for("default", "bookings", str(row["id"])))
    assert event["source"]["url"] == f"https://crm.example.com/admin/content/bookings/{row['id']}"
    assert len(event["description"]) <= 8192 and "cut" in event["description"]
    assert "cut" in product.bookings()[str(row["id"])]["sync_error"]
    assert product.bookings()[str(row["id"])]["sync_status"] == "synced"
    product.google.clear_log()
    cycle(product)
    cycle(product)
    assert google_writes(product) == 0  # the cut text is what we wrote: no churn


def test_events_the_sync_did_not_create_get_no_footer(product: Product, corpus: dict[str, str]) -> None:
    row = by_title(product)["Formatted"]
    product.update_booking(row["id"], description="plain now")
    product.deliver_event("update", [row["id"]])
    event = product.google.event(corpus["html_description"])
    assert event["description"] == "plain now" and "source" not in event
