"""The Google fake holds what real calendars hold: event types, other organizers' meetings, minimal cancelled
events, per-event time zones, ``source``; checked through the real client library (no calsync code)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from googleapiclient.errors import HttpError

from tests.fakes.google import DEFAULT_ACCOUNT, ForeignWrite, GoogleFake
from tests.fakes.google.corpus import CORPUS_NAMES, ORGANIZER, seed_corpus
from tests.integration.test_google_fake import START, event_body, http_error, list_all, service

pytestmark = pytest.mark.google

WINDOW = (START - timedelta(days=1)).isoformat()


def error_message(excinfo: pytest.ExceptionInfo[HttpError]) -> str:
    return str(json.loads(excinfo.value.content)["error"]["message"])


# -- event types --------------------------------------------------------------------------------------


def test_every_event_has_an_event_type_and_lists_filter_by_it(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    created = events.insert(calendarId="primary", body=event_body("plain00001")).execute()
    assert created["eventType"] == "default"
    google_fake.create_event("Focus", START + timedelta(hours=3), event_type="focusTime")
    google_fake.create_event("Home", START.date(), event_type="workingLocation")

    everything, _ = list_all(events, singleEvents=True)
    assert sorted(e["eventType"] for e in everything) == ["default", "focusTime", "workingLocation"]
    focus, _ = list_all(events, singleEvents=True, eventTypes=["focusTime"])
    assert [e["summary"] for e in focus] == ["Focus"]
    assert focus[0]["focusTimeProperties"]["chatStatus"] == "doNotDisturb"
    two, _ = list_all(events, singleEvents=True, eventTypes=["default", "workingLocation"])
    assert sorted(e["eventType"] for e in two) == ["default", "workingLocation"]

    # Google adds types now and then: an unknown one is accepted (the discovery enum stops it client-side).
    token = google_fake.issue_access_token()
    unknown = requests.get(
        f"{google_fake.api_root}calendar/v3/calendars/primary/events",
        params={"eventTypes": "somethingNew"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert unknown.status_code == 200 and unknown.json()["items"] == []


def test_event_type_is_fixed_at_creation_and_from_gmail_cannot_be_created(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    body = event_body("typed00001")
    body["eventType"] = "fromGmail"
    with pytest.raises(HttpError) as gmail:
        events.insert(calendarId="primary", body=body).execute()
    assert http_error(gmail) == (400, "invalid")

    focus = google_fake.create_event("Focus", START, event_type="focusTime")
    with pytest.raises(HttpError) as changed:
        events.patch(calendarId="primary", eventId=focus["id"], body={"eventType": "default"}).execute()
    assert http_error(changed) == (400, "invalid")
    kept = events.update(calendarId="primary", eventId=focus["id"], body=event_body(summary="F")).execute()
    assert kept["eventType"] == "focusTime"  # a PUT without eventType keeps it


def test_a_sync_token_is_bound_to_the_event_types_of_its_full_sync(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    google_fake.create_event("Meeting", START)
    focus = google_fake.create_event("Focus", START + timedelta(hours=2), event_type="focusTime")
    _, pages = list_all(events, singleEvents=True, eventTypes=["default"])
    token = pages[-1]["nextSyncToken"]

    google_fake.edit_event(focus["id"], summary="Deep work")
    same, _ = list_all(events, singleEvents=True, eventTypes=["default"], syncToken=token)
    assert same == []  # the focus-time change is outside the filter

    for changed in ({"eventTypes": ["default", "focusTime"]}, {}):
        with pytest.raises(HttpError) as refused:
            events.list(calendarId="primary", singleEvents=True, syncToken=token, **changed).execute()
        assert http_error(refused) == (400, "invalid")
        assert "eventTypes" in error_message(refused)

    _, unfiltered = list_all(events, singleEvents=True)
    assert list_all(events, singleEvents=True, syncToken=unfiltered[-1]["nextSyncToken"])[0] == []


# -- the owner's events and other organizers' meetings ---------------------------------------------


def test_own_events_name_the_owner_as_organizer_and_creator(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    created = events.insert(calendarId="primary", body=event_body("mine000001")).execute()
    me = {"email": DEFAULT_ACCOUNT, "self": True}
    assert created["organizer"] == me and created["creator"] == me
    body = event_body("mine000002")
    body["organizer"] = {"email": "someone@example.org"}  # read-only: Google ignores it
    assert events.insert(calendarId="primary", body=body).execute()["organizer"] == me

    meeting = google_fake.create_event("Team", START, attendees=["a@example.org"])
    assert meeting["attendees"] == [
        {"email": DEFAULT_ACCOUNT, "organizer": True, "self": True, "responseStatus": "accepted"},
        {"email": "a@example.org", "responseStatus": "needsAction"},
    ]


def test_an_invitation_is_the_attendees_copy(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    invite = google_fake.add_invitation(ORGANIZER, "Review", START, response_status="tentative")
    got = events.get(calendarId="primary", eventId=invite["id"]).execute()
    assert got["organizer"] == {"email": ORGANIZER} and got["creator"] == {"email": ORGANIZER}
    own = [a for a in got["attendees"] if a.get("self")]
    assert own == [{"email": DEFAULT_ACCOUNT, "self": True, "responseStatus": "tentative"}]
    assert "guestsCanModify" not in got  # Google leaves the default out


def test_non_organizer_writes_to_shared_fields_are_refused(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    invite = google_fake.add_invitation(ORGANIZER, "Review", START, response_status="accepted")
    for body in (
        {"summary": "Mine now"},
        {
            "start": {"dateTime": START.isoformat()},
            "end": {"dateTime": (START + timedelta(hours=3)).isoformat()},
        },
        {"attendees": []},
        {"extendedProperties": {"shared": {"k": "v"}}},
        {"status": "cancelled"},
    ):
        with pytest.raises(HttpError) as refused:
            events.patch(calendarId="primary", eventId=invite["id"], body=body).execute()
        assert http_error(refused) == (403, "forbiddenForNonOrganizer")
        assert (
            error_message(refused) == "Shared properties can only be changed by the organizer of the event."
        )
    with pytest.raises(HttpError) as put:
        events.update(calendarId="primary", eventId=invite["id"], body=event_body(summary="Review")).execute()
    assert http_error(put) == (403, "forbiddenForNonOrganizer")
    assert google_fake.event(invite["id"])["summary"] == "Review"
    assert google_fake.foreign_writes() == []


def test_private_properties_and_the_own_answer_belong_to_the_copy(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    invite = google_fake.add_invitation(ORGANIZER, "Review", START)
    stamped = events.patch(
        calendarId="primary", eventId=invite["id"], body={"extendedProperties": {"private": {"k": "1"}}}
    ).execute()
    assert stamped["extendedProperties"]["private"] == {"k": "1"}
    answered = [dict(a, responseStatus="accepted") if a.get("self") else a for a in stamped["attendees"]]
    result = events.patch(calendarId="primary", eventId=invite["id"], body={"attendees": answered}).execute()
    assert [a["responseStatus"] for a in result["attendees"] if a.get("self")] == ["accepted"]
    assert google_fake.foreign_writes() == []


def test_guests_can_modify_lets_the_write_through_and_records_it(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    invite = google_fake.add_invitation(ORGANIZER, "Open", START, guests_can_modify=True)
    assert invite["guestsCanModify"] is True
    changed = events.patch(calendarId="primary", eventId=invite["id"], body={"summary": "Edited"}).execute()
    assert changed["summary"] == "Edited"
    assert google_fake.foreign_writes() == [ForeignWrite("PATCH", invite["id"], ORGANIZER, ("summary",))]


def test_an_attendees_delete_removes_the_copy_and_is_recorded(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    invite = google_fake.add_invitation(ORGANIZER, "Review", START, response_status="accepted")
    events.delete(calendarId="primary", eventId=invite["id"]).execute()
    gone = events.get(calendarId="primary", eventId=invite["id"]).execute()
    assert gone["status"] == "cancelled"
    assert [a["responseStatus"] for a in gone["attendees"] if a.get("self")] == ["declined"]
    assert google_fake.foreign_writes(invite["id"]) == [ForeignWrite("DELETE", invite["id"], ORGANIZER, ())]
    own = google_fake.create_event("Mine", START)
    events.delete(calendarId="primary", eventId=own["id"]).execute()
    assert google_fake.foreign_writes(own["id"]) == []


def test_declining_keeps_the_meeting_listed_and_removal_cancels_it(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    declined = google_fake.add_invitation(ORGANIZER, "Declined", START, response_status="accepted")
    removed = google_fake.add_invitation(ORGANIZER, "Removed", START + timedelta(hours=2))
    _, pages = list_all(events, singleEvents=True)
    token = pages[-1]["nextSyncToken"]

    google_fake.set_response(declined["id"], "declined")
    google_fake.remove_attendee_self(removed["id"])
    changes, _ = list_all(events, singleEvents=True, syncToken=token)
    by_id = {e["id"]: e for e in changes}
    assert by_id[declined["id"]]["status"] == "confirmed"
    assert [a["responseStatus"] for a in by_id[declined["id"]]["attendees"] if a.get("self")] == ["declined"]
    assert by_id[removed["id"]]["status"] == "cancelled" and "summary" not in by_id[removed["id"]]
    listed, _ = list_all(events, singleEvents=True)
    assert [e["summary"] for e in listed] == ["Declined"]
    with pytest.raises(ValueError):
        google_fake.set_response(declined["id"], "maybe")


def test_birthday_and_from_gmail_events_refuse_shared_changes(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    birthday = google_fake.create_event("Ada", START.date(), event_type="birthday")
    assert (
        birthday["recurrence"] == ["RRULE:FREQ=YEARLY"]
        and birthday["birthdayProperties"]["type"] == "birthday"
    )
    instances = [e for e in list_all(events, singleEvents=True)[0] if e.get("recurringEventId")]
    assert [e["start"]["date"] for e in instances[:3]] == ["2030-03-04", "2031-03-04", "2032-03-04"]
    with pytest.raises(HttpError) as renamed:
        events.patch(calendarId="primary", eventId=birthday["id"], body={"summary": "Bob"}).execute()
    assert http_error(renamed) == (400, "invalid")
    props = {"extendedProperties": {"private": {"k": "v"}}}
    assert events.patch(calendarId="primary", eventId=birthday["id"], body=props).execute()[
        "extendedProperties"
    ]

    gmail = google_fake.create_event("Flight", START, event_type="fromGmail", private_copy=True)
    assert gmail["privateCopy"] is True and not gmail["organizer"].get("self")
    with pytest.raises(HttpError) as moved:
        events.patch(calendarId="primary", eventId=gmail["id"], body={"location": "Elsewhere"}).execute()
    assert http_error(moved) == (403, "forbiddenForNonOrganizer")
    assert events.patch(calendarId="primary", eventId=gmail["id"], body=props).execute()["extendedProperties"]


# -- cancelled events ---------------------------------------------------------------------------------


def test_incremental_sync_carries_cancelled_events_in_the_minimal_shape(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    single = google_fake.create_event("Single", START)
    series = google_fake.add_recurring("Daily", START, START + timedelta(hours=1), count=3)
    occurrence = google_fake.instance_ids(series["id"])[1]
    for flags in ({"singleEvents": True}, {"singleEvents": False}):
        _, pages = list_all(events, **flags)
        token = pages[-1]["nextSyncToken"]
        if flags["singleEvents"]:
            google_fake.cancel_event(single["id"])
            google_fake.cancel_instance(occurrence)
        else:
            google_fake.edit_event(single["id"], status="confirmed")
            google_fake.cancel_event(single["id"])
            google_fake.edit_event(occurrence, status="confirmed")
            google_fake.cancel_instance(occurrence)
        by_id = {e["id"]: e for e in list_all(events, syncToken=token, **flags)[0]}
        assert set(by_id[single["id"]]) == {"kind", "etag", "id", "status"}
        assert set(by_id[occurrence]) == {
            "kind",
            "etag",
            "id",
            "status",
            "recurringEventId",
            "originalStartTime",
        }
        assert by_id[occurrence]["originalStartTime"] == {"dateTime": "2030-03-05T09:00:00Z"}

    # get, and listings with showDeleted, keep the details (the organizer can restore them).
    assert events.get(calendarId="primary", eventId=single["id"]).execute()["summary"] == "Single"
    shown, _ = list_all(events, singleEvents=True, showDeleted=True)
    assert {e["id"]: e.get("summary") for e in shown}[occurrence] == "Daily"


# -- times, source, description --------------------------------------------------------------------


def test_each_event_keeps_its_own_time_zone(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    cases = {  # id: (start as written, zone as written, start as Google renders it)
        "offset0001": ("2030-03-04T15:00:00+05:30", "Asia/Kolkata", "2030-03-04T15:00:00+05:30"),
        "offset0002": ("2030-03-04T09:00:00Z", "America/Los_Angeles", "2030-03-04T01:00:00-08:00"),
        "offset0003": ("2030-03-04T09:00:00+02:00", "Asia/Kolkata", "2030-03-04T12:30:00+05:30"),
        "offset0004": ("2030-03-04T15:00:00+05:30", None, "2030-03-04T09:30:00Z"),  # the calendar's zone
    }
    for event_id, (start, zone, _) in cases.items():
        end = (datetime.fromisoformat(start) + timedelta(hours=1)).isoformat()
        times = [{"dateTime": value} | ({"timeZone": zone} if zone else {}) for value in (start, end)]
        body = {"id": event_id, "start": times[0], "end": times[1]}
        events.insert(calendarId="primary", body=body).execute()
    listed = {e["id"]: e for e in list_all(events, singleEvents=True)[0]}
    for event_id, (_, zone, rendered) in cases.items():
        assert listed[event_id]["start"]["dateTime"] == rendered
        assert listed[event_id]["start"].get("timeZone") == zone
        assert ("timeZone" in listed[event_id]["end"]) == (zone is not None)


def test_source_is_stored_and_shown_only_to_its_creator(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    body = event_body("source0001")
    body["source"] = {"title": "Booking 7", "url": "https://crm.example.com/items/7"}
    assert events.insert(calendarId="primary", body=body).execute()["source"] == body["source"]
    assert events.get(calendarId="primary", eventId="source0001").execute()["source"] == body["source"]
    bad = event_body("source0002")
    bad["source"] = {"title": "x", "url": "ftp://crm.example.com/7"}
    with pytest.raises(HttpError) as refused:
        events.insert(calendarId="primary", body=bad).execute()
    assert http_error(refused) == (400, "invalid")

    invite = google_fake.add_invitation(
        ORGANIZER, "Theirs", START, source={"title": "t", "url": "https://x.org"}
    )
    assert "source" not in events.get(calendarId="primary", eventId=invite["id"]).execute()


def test_description_may_hold_html_up_to_the_limit(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    body = event_body("descr00001")
    body["description"] = "<b>bold</b><br>line"
    assert events.insert(calendarId="primary", body=body).execute()["description"] == "<b>bold</b><br>line"
    long_ok = events.patch(calendarId="primary", eventId="descr00001", body={"description": "x" * 8192})
    assert len(long_ok.execute()["description"]) == 8192
    with pytest.raises(HttpError) as too_long:
        events.patch(calendarId="primary", eventId="descr00001", body={"description": "x" * 8193}).execute()
    assert http_error(too_long) == (400, "invalid")


# -- the corpus ---------------------------------------------------------------------------------------


def test_the_corpus_seeds_one_event_of_each_kind(google_fake: GoogleFake) -> None:
    ids = seed_corpus(google_fake)
    assert tuple(ids) == CORPUS_NAMES
    events = service(google_fake).events()
    items, _ = list_all(events, singleEvents=True, timeMin=WINDOW)
    by_id: dict[str, dict[str, Any]] = {e["id"]: e for e in items}
    by_series = {e.get("recurringEventId") for e in items}

    def get(name: str) -> dict[str, Any]:
        return by_id.get(ids[name]) or events.get(calendarId="primary", eventId=ids[name]).execute()

    assert get("timed_kolkata")["start"]["timeZone"] == "Asia/Kolkata"
    assert get("all_day_multi_day")["end"]["date"] > get("all_day_multi_day")["start"]["date"]
    assert ids["weekly_series"] in by_series and ids["weekly_cancelled_instance"] not in by_id
    assert get("from_gmail")["eventType"] == "fromGmail" and get("from_gmail")["privateCopy"] is True
    responses = {
        name: next(a["responseStatus"] for a in get(name)["attendees"] if a.get("self"))
        for name in ids
        if name.startswith("invitation_")
    }
    assert responses == {
        "invitation_locked": "accepted",
        "invitation_modifiable": "accepted",
        "invitation_unanswered": "needsAction",
        "invitation_declined": "declined",
        "invitation_tentative": "tentative",
    }
    assert get("invitation_modifiable")["guestsCanModify"] is True
    assert "guestsCanModify" not in get("invitation_locked")
    for name, kind in (
        ("working_location", "workingLocation"),
        ("out_of_office", "outOfOffice"),
        ("focus_time", "focusTime"),
        ("birthday", "birthday"),
    ):
        assert get(name)["eventType"] == kind
    assert get("html_description")["description"] == "<b>bold</b><br>line"
    offset = get("offset_without_zone")["start"]
    assert "timeZone" not in offset and offset["dateTime"] == "2030-03-04T23:00:00Z"
