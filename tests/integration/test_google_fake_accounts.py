"""Several Google accounts in one fake: each its own calendars and tokens; checked through the real client."""

from __future__ import annotations

from datetime import timedelta

import pytest
from googleapiclient.errors import HttpError

from tests.fakes.google import DEFAULT_ACCOUNT, GoogleFake
from tests.integration.test_google_fake import START, event_body, http_error, service

pytestmark = pytest.mark.google

OTHER = "second@example.net"
TEAM = "team0001@group.calendar.google.com"


def test_each_account_has_its_own_primary_calendar(google_fake: GoogleFake) -> None:
    mine = service(google_fake).events()
    theirs = service(google_fake, google_fake.issue_refresh_token(account=OTHER)).events()
    mine.insert(calendarId="primary", body=event_body("mine000001", summary="Mine")).execute()
    theirs.insert(calendarId="primary", body=event_body("mine000001", summary="Theirs")).execute()
    assert [e["summary"] for e in mine.list(calendarId="primary").execute()["items"]] == ["Mine"]
    listed = theirs.list(calendarId="primary").execute()
    assert [e["summary"] for e in listed["items"]] == ["Theirs"]
    assert listed["items"][0]["organizer"] == {"email": OTHER, "self": True}
    other_service = service(google_fake, google_fake.issue_refresh_token(account=OTHER))
    assert other_service.calendars().get(calendarId="primary").execute()["id"] == OTHER
    assert google_fake.event("mine000001", calendar=OTHER)["summary"] == "Theirs"
    assert google_fake.event("mine000001")["summary"] == "Mine"  # "primary" in the test API: the default


def test_a_token_sees_only_its_own_accounts_calendars(google_fake: GoogleFake) -> None:
    google_fake.create_event("Theirs", START, calendar=OTHER)
    google_fake.add_calendar(OTHER, TEAM)
    svc = service(google_fake)
    for calendar_id in (OTHER, TEAM, "nosuchcalendar@group.calendar.google.com"):
        with pytest.raises(HttpError) as hidden:
            svc.events().list(calendarId=calendar_id).execute()
        assert http_error(hidden) == (404, "notFound")
        with pytest.raises(HttpError) as hidden_get:
            svc.calendars().get(calendarId=calendar_id).execute()
        assert http_error(hidden_get) == (404, "notFound")
    with pytest.raises(HttpError) as write:
        svc.events().insert(calendarId=OTHER, body=event_body("intruder01")).execute()
    assert http_error(write) == (404, "notFound")
    assert [e["summary"] for e in google_fake.events(OTHER)] == ["Theirs"]


def test_secondary_calendars_hold_their_own_events_and_sync_tokens(google_fake: GoogleFake) -> None:
    google_fake.add_calendar(DEFAULT_ACCOUNT, TEAM, summary="Team", time_zone="Europe/Berlin")
    svc = service(google_fake)
    events = svc.events()
    google_fake.create_event("On primary", START)
    created = events.insert(calendarId=TEAM, body=event_body("teamevent1", summary="On team")).execute()
    assert created["organizer"] == {"email": TEAM, "displayName": "Team", "self": True}
    assert created["creator"] == {"email": DEFAULT_ACCOUNT, "self": True}
    assert created["start"]["dateTime"] == "2030-03-04T10:00:00+01:00"  # the calendar's zone
    team = events.list(calendarId=TEAM).execute()
    assert [e["summary"] for e in team["items"]] == ["On team"] and team["timeZone"] == "Europe/Berlin"
    assert svc.calendars().get(calendarId=TEAM).execute()["summary"] == "Team"

    with pytest.raises(HttpError) as crossed:
        events.list(calendarId="primary", syncToken=team["nextSyncToken"]).execute()
    assert http_error(crossed) == (410, "fullSyncRequired")
    google_fake.create_event("Later", START + timedelta(hours=3), calendar=TEAM)
    changes = events.list(calendarId=TEAM, syncToken=team["nextSyncToken"]).execute()
    assert [e["summary"] for e in changes["items"]] == ["Later"]

    entries = svc.calendarList().list().execute()["items"]
    assert [(c["id"], c.get("primary", False)) for c in entries] == [(DEFAULT_ACCOUNT, True), (TEAM, False)]
    other = service(google_fake, google_fake.issue_refresh_token(account=OTHER))
    assert [c["id"] for c in other.calendarList().list().execute()["items"]] == [OTHER]
    assert google_fake.calendars() == [DEFAULT_ACCOUNT, TEAM]
    with pytest.raises(ValueError):
        google_fake.add_calendar(OTHER, TEAM)


def test_tokens_are_per_account(google_fake: GoogleFake) -> None:
    first = google_fake.issue_refresh_token()
    second = google_fake.issue_refresh_token(account=OTHER)
    mine = service(google_fake, first).events()
    mine.list(calendarId="primary").execute()
    google_fake.expire_access_tokens(account=OTHER)
    google_fake.revoke_all(account=OTHER)
    assert google_fake.refresh_token_valid(first) and not google_fake.refresh_token_valid(second)
    assert "items" in mine.list(calendarId="primary").execute()  # the first account's token still works
    assert google_fake.count(method="POST", path_contains="/token") == 1
