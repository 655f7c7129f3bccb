"""A calendar as real ones are: one event of each kind a sync meets, seeded through the fake's test API.

``seed_corpus(fake)`` returns the ids by name (see ``CORPUS_NAMES``). Times start from ``start`` (default
2030-03-04 09:00 UTC) so that a listing with ``timeMin`` a day earlier sees them all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import GoogleFake

ORGANIZER = "organizer@example.org"
_IST = timezone(timedelta(hours=5, minutes=30))
CORPUS_NAMES = (
    "timed_kolkata",
    "all_day_multi_day",
    "weekly_series",
    "weekly_cancelled_instance",
    "from_gmail",
    "invitation_locked",
    "invitation_modifiable",
    "invitation_unanswered",
    "invitation_declined",
    "invitation_tentative",
    "working_location",
    "out_of_office",
    "focus_time",
    "birthday",
    "html_description",
    "offset_without_zone",
)


def seed_corpus(fake: GoogleFake, calendar: str = "primary", start: datetime | None = None) -> dict[str, str]:
    """One event of each kind in ``calendar``; their ids by name."""
    at = start or datetime(2030, 3, 4, 9, 0, tzinfo=UTC)
    day = at.date()

    def hour(n: int) -> datetime:
        return at + timedelta(hours=n)

    ids: dict[str, str] = {}
    ids["timed_kolkata"] = fake.create_event(
        "Call with Pune", hour(0), hour(1), calendar=calendar, time_zone="Asia/Kolkata"
    )["id"]
    ids["all_day_multi_day"] = fake.create_event(
        "Conference", day + timedelta(days=1), day + timedelta(days=4), calendar=calendar
    )["id"]
    weekly = fake.add_recurring(
        "Weekly sync",
        hour(2),
        hour(3),
        count=4,
        freq="WEEKLY",
        calendar=calendar,
        time_zone="America/Los_Angeles",
    )
    ids["weekly_series"] = weekly["id"]
    ids["weekly_cancelled_instance"] = fake.instance_ids(weekly["id"], calendar)[1]
    fake.cancel_instance(ids["weekly_cancelled_instance"], calendar)
    ids["from_gmail"] = fake.create_event(
        "Flight to Lisbon",
        hour(4),
        hour(7),
        calendar=calendar,
        event_type="fromGmail",
        private_copy=True,
        location="Airport",
    )["id"]
    for name, response, can_modify, offset in (
        ("invitation_locked", "accepted", False, 8),
        ("invitation_modifiable", "accepted", True, 9),
        ("invitation_unanswered", "needsAction", False, 10),
        ("invitation_declined", "declined", False, 11),
        ("invitation_tentative", "tentative", False, 12),
    ):
        ids[name] = fake.add_invitation(
            ORGANIZER,
            f"Invitation ({response})",
            hour(offset),
            hour(offset + 1),
            calendar=calendar,
            response_status=response,
            guests_can_modify=can_modify,
            attendees=["colleague@example.org"],
        )["id"]
    ids["working_location"] = fake.create_event(
        "Home", day, day + timedelta(days=1), calendar=calendar, event_type="workingLocation"
    )["id"]
    ids["out_of_office"] = fake.create_event(
        "Out of office", hour(24), hour(32), calendar=calendar, event_type="outOfOffice"
    )["id"]
    ids["focus_time"] = fake.create_event(
        "Focus time", hour(26), hour(28), calendar=calendar, event_type="focusTime"
    )["id"]
    ids["birthday"] = fake.create_event(
        "Ada's birthday", date(day.year, 3, 5), date(day.year, 3, 6), calendar=calendar, event_type="birthday"
    )["id"]
    ids["html_description"] = fake.create_event(
        "Formatted", hour(13), hour(14), calendar=calendar, description="<b>bold</b><br>line"
    )["id"]
    ids["offset_without_zone"] = fake.create_event(
        "Offset only",
        {"dateTime": hour(14).astimezone(_IST).isoformat()},
        {"dateTime": hour(15).astimezone(_IST).isoformat()},
        calendar=calendar,
    )["id"]
    return ids
