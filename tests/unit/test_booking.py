"""Booking <-> event mapping: time zones (incl. DST), all-day, cancellation, validation, content hash."""

from __future__ import annotations

import pytest

from calsync.sync.booking import (
    PRIVATE_HASH,
    PRIVATE_KEY,
    InvalidBooking,
    booking_to_event,
    event_hash,
    event_to_booking,
    strip_footer,
)


def to_event(
    item: dict[str, object], tz: str = "UTC", link: str | None = "https://crm.example.com"
) -> dict[str, object]:
    return booking_to_event(item, collection="bookings", key="42", default_timezone=tz, link_base=link)


def test_timed_booking_in_rome_becomes_a_zoned_event() -> None:
    event = to_event(
        {
            "title": "Cut",
            "start_datetime": "2026-07-01T08:00:00.000Z",
            "end_datetime": "2026-07-01T09:30:00.000Z",
            "description": "Bring photos",
            "location": "Via Roma 1",
            "status": "confirmed",
        },
        tz="Europe/Rome",
    )
    assert event["start"] == {"dateTime": "2026-07-01T10:00:00+02:00", "timeZone": "Europe/Rome"}
    assert event["end"] == {"dateTime": "2026-07-01T11:30:00+02:00", "timeZone": "Europe/Rome"}
    assert event["summary"] == "Cut" and event["location"] == "Via Roma 1" and event["status"] == "confirmed"
    assert event["description"].startswith(
        "Bring photos\n\n— Booking #42: https://crm.example.com/admin/content/bookings/42"
    )
    private = event["extendedProperties"]["private"]
    assert private[PRIVATE_KEY] == "42" and private[PRIVATE_HASH] == event_hash(event)


def test_naive_values_are_read_in_the_configured_zone_across_dst() -> None:
    # 2026-10-25 is the night Rome leaves summer time: 01:30 is +02:00, 04:00 is +01:00
    event = to_event(
        {"start_datetime": "2026-10-25T01:30:00", "end_datetime": "2026-10-25T04:00:00"}, tz="Europe/Rome"
    )
    assert event["start"]["dateTime"] == "2026-10-25T01:30:00+02:00"
    assert event["end"]["dateTime"] == "2026-10-25T04:00:00+01:00"
    back = event_to_booking(event, default_timezone="Europe/Rome")
    assert (back["start_datetime"], back["end_datetime"]) == ("2026-10-24T23:30:00Z", "2026-10-25T03:00:00Z")


def test_all_day_booking_becomes_a_date_event_with_exclusive_end() -> None:
    one_day = to_event(
        {"all_day": True, "start_datetime": "2026-12-01T00:00:00", "end_datetime": "2026-12-01T00:00:00"},
        tz="Europe/Rome",
    )
    assert (one_day["start"], one_day["end"]) == ({"date": "2026-12-01"}, {"date": "2026-12-02"})
    inclusive = to_event(
        {"all_day": True, "start_datetime": "2026-12-01T09:00:00", "end_datetime": "2026-12-03T17:00:00"}
    )
    assert (inclusive["start"], inclusive["end"]) == ({"date": "2026-12-01"}, {"date": "2026-12-04"})


def test_all_day_round_trip_is_stable() -> None:
    google = {
        "summary": "Holiday",
        "start": {"date": "2026-12-24"},
        "end": {"date": "2026-12-27"},
        "status": "confirmed",
    }
    booking = event_to_booking(google, default_timezone="Europe/Rome")
    assert booking["all_day"] is True
    again = to_event(booking, tz="Europe/Rome")
    assert (again["start"], again["end"]) == (google["start"], google["end"])


def test_cancelled_booking_cancels_the_event_and_changes_the_hash() -> None:
    item = {"title": "x", "start_datetime": "2026-07-01T08:00:00Z", "end_datetime": "2026-07-01T09:00:00Z"}
    live = to_event(item)
    cancelled = to_event({**item, "status": "Cancelled"})
    assert cancelled["status"] == "cancelled" and live["status"] == "confirmed"
    assert event_hash(live) != event_hash(cancelled)


def test_hash_is_the_same_for_what_google_returns_in_another_offset() -> None:
    sent = to_event(
        {"title": "x", "start_datetime": "2026-07-01T08:00:00Z", "end_datetime": "2026-07-01T09:00:00Z"},
        tz="Europe/Rome",
    )
    returned = {
        **sent,
        "start": {"dateTime": "2026-07-01T08:00:00Z"},
        "end": {"dateTime": "2026-07-01T04:00:00-05:00"},
        "etag": '"1"',
        "updated": "2026-07-01T00:00:00Z",
    }
    assert event_hash(returned) == event_hash(sent)
    assert event_hash({**returned, "summary": "y"}) != event_hash(sent)


def test_event_to_booking_strips_our_footer_and_keeps_the_text() -> None:
    sent = to_event({"title": "x", "description": "Line 1\nLine 2", "start_datetime": "2026-07-01T08:00:00Z"})
    assert event_to_booking(sent, default_timezone="UTC")["description"] == "Line 1\nLine 2"
    assert strip_footer("no footer here") == "no footer here"


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"title": "x"}, "start_datetime is empty"),
        ({"start_datetime": "tomorrow"}, "not a date and time"),
        ({"start_datetime": "2026-07-01T10:00:00Z", "end_datetime": "2026-07-01T09:00:00Z"}, "is before"),
        ({"start_datetime": "2026-07-01T10:00:00Z", "timezone": "Europe/Atlantis"}, "unknown time zone"),
    ],
)
def test_invalid_bookings_say_why(item: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidBooking, match=reason):
        to_event(item)


def test_missing_end_defaults_to_one_hour() -> None:
    event = to_event({"start_datetime": "2026-07-01T10:00:00Z"})
    assert event["end"]["dateTime"] == "2026-07-01T11:00:00+00:00"


def test_an_imported_event_hashes_like_the_event_its_booking_would_write() -> None:
    google = {
        "summary": "Walk-in",
        "description": "from the phone",
        "location": "",
        "start": {"dateTime": "2026-07-01T10:00:00+02:00", "timeZone": "Europe/Rome"},
        "end": {"dateTime": "2026-07-01T11:00:00+02:00", "timeZone": "Europe/Rome"},
        "status": "confirmed",
    }
    booking = event_to_booking(google, default_timezone="UTC")
    written = to_event(booking, tz="Europe/Rome")
    assert written["description"] != google["description"]  # we add the footer...
    assert event_hash(written) == event_hash(google)  # ...and still recognise it as the same appointment


def test_untitled_booking_stays_untitled() -> None:
    assert to_event({"start_datetime": "2026-07-01T10:00:00Z"})["summary"] == ""
