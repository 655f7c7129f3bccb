"""The Google fake's fidelity, checked through the real client libraries (no calsync code involved).

google-api-python-client, google-auth, google-auth-oauthlib and requests talk to the fake over HTTP exactly
as they talk to Google; these tests pin the behaviours the sync relies on.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.auth.exceptions import RefreshError
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest

from tests.fakes.google import (
    CALENDAR_EVENTS_SCOPE,
    DEFAULT_ACCOUNT,
    EMAIL_SCOPE,
    Call,
    GoogleFake,
    SendUpdates,
)

pytestmark = pytest.mark.google

REDIRECT = "http://127.0.0.1:9/oauth/callback"
START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


def service(fake: GoogleFake, refresh_token: str | None = None) -> Any:
    doc = json.loads(get_static_doc("calendar", "v3") or "{}")
    doc["rootUrl"] = fake.api_root
    creds = Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token=refresh_token or fake.issue_refresh_token(),
        token_uri=fake.token_uri,
        client_id=fake.client_id,
        client_secret=fake.client_secret,
    )
    return build_from_document(doc, credentials=creds)


def event_body(event_id: str | None = None, hour: int = 9, summary: str = "Booking") -> dict[str, Any]:
    start = START + timedelta(hours=hour - 9)
    body: dict[str, Any] = {
        "summary": summary,
        "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat()},
    }
    if event_id:
        body["id"] = event_id
    return body


def http_error(excinfo: pytest.ExceptionInfo[HttpError]) -> tuple[int, str]:
    data = json.loads(excinfo.value.content)
    assert set(data["error"]) >= {"errors", "code", "message"}
    assert data["error"]["code"] == excinfo.value.resp.status
    return excinfo.value.resp.status, data["error"]["errors"][0]["reason"]


# -- events -------------------------------------------------------------------------------------------


def test_client_ids_are_validated_and_unique_even_after_delete(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    created = events.insert(calendarId="primary", body=event_body("abcdefv0123")).execute()
    assert created["id"] == "abcdefv0123"
    assert created["status"] == "confirmed"
    assert created["sequence"] == 0
    assert created["updated"].endswith("Z") and len(created["updated"]) == len("2030-01-01T00:00:00.000Z")

    with pytest.raises(HttpError) as dup:
        events.insert(calendarId="primary", body=event_body("abcdefv0123")).execute()
    assert http_error(dup) == (409, "duplicate")

    events.delete(calendarId="primary", eventId="abcdefv0123").execute()
    with pytest.raises(HttpError) as dup_deleted:
        events.insert(calendarId="primary", body=event_body("abcdefv0123")).execute()
    assert http_error(dup_deleted) == (409, "duplicate")

    for bad in ("abc", "ABCDEF12", "wxyz0123", "abc_def12"):
        with pytest.raises(HttpError) as invalid:
            events.insert(calendarId="primary", body=event_body(bad)).execute()
        assert http_error(invalid) == (400, "invalid")


def test_soft_delete_restore_by_patch_and_410_on_second_delete(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    created = events.insert(calendarId="primary", body=event_body("deleteme01")).execute()
    assert events.delete(calendarId="primary", eventId="deleteme01").execute() == ""

    gone = events.get(calendarId="primary", eventId="deleteme01").execute()
    assert gone["status"] == "cancelled"
    assert gone["etag"] != created["etag"] and gone["sequence"] == 1 and gone["updated"] > created["updated"]

    with pytest.raises(HttpError) as twice:
        events.delete(calendarId="primary", eventId="deleteme01").execute()
    assert http_error(twice) == (410, "deleted")

    restored = events.patch(
        calendarId="primary", eventId="deleteme01", body={"status": "confirmed"}
    ).execute()
    assert restored["status"] == "confirmed"
    assert restored["summary"] == "Booking"

    with pytest.raises(HttpError) as unknown:
        events.get(calendarId="primary", eventId="nosuchevent").execute()
    assert http_error(unknown) == (404, "notFound")
    with pytest.raises(HttpError) as unknown_delete:
        events.delete(calendarId="primary", eventId="nosuchevent").execute()
    assert http_error(unknown_delete) == (404, "notFound")


def test_patch_merges_private_properties_and_update_replaces(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    body = event_body("props00001")
    body["extendedProperties"] = {"private": {"a": "1", "b": "2"}}
    body["location"] = "Room 1"
    events.insert(calendarId="primary", body=body).execute()

    patched = events.patch(
        calendarId="primary",
        eventId="props00001",
        body={"extendedProperties": {"private": {"a": None, "c": "3"}}, "summary": "Renamed"},
    ).execute()
    assert patched["extendedProperties"]["private"] == {"b": "2", "c": "3"}
    assert patched["summary"] == "Renamed" and patched["location"] == "Room 1"

    replaced = events.update(
        calendarId="primary", eventId="props00001", body=event_body(summary="New")
    ).execute()
    assert replaced["summary"] == "New"
    assert "location" not in replaced and "extendedProperties" not in replaced
    assert replaced["sequence"] == 2


def test_times_are_rendered_in_the_event_zone(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    body = {
        "id": "berlin0001",
        "start": {"dateTime": "2030-03-04T09:00:00Z", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2030-03-04T10:00:00Z", "timeZone": "Europe/Berlin"},
    }
    created = events.insert(calendarId="primary", body=body).execute()
    assert created["start"] == {"dateTime": "2030-03-04T10:00:00+01:00", "timeZone": "Europe/Berlin"}
    with pytest.raises(HttpError) as empty:
        events.insert(
            calendarId="primary",
            body={"start": {"dateTime": "2030-03-04T10:00:00Z"}, "end": {"dateTime": "2030-03-04T09:00:00Z"}},
        ).execute()
    assert http_error(empty) == (400, "timeRangeEmpty")


def test_if_match_mismatch_is_412(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    created = events.insert(calendarId="primary", body=event_body("etagged001")).execute()
    google_fake.edit_event("etagged001", summary="Changed by the owner")

    stale = events.update(calendarId="primary", eventId="etagged001", body=event_body(summary="Mine"))
    stale.headers["If-Match"] = created["etag"]
    with pytest.raises(HttpError) as conflict:
        stale.execute()
    assert http_error(conflict) == (412, "conditionNotMet")

    fresh = events.get(calendarId="primary", eventId="etagged001").execute()
    ok = events.update(calendarId="primary", eventId="etagged001", body=event_body(summary="Mine"))
    ok.headers["If-Match"] = fresh["etag"]
    assert ok.execute()["summary"] == "Mine"


def test_calendar_get_and_other_calendars(google_fake: GoogleFake) -> None:
    svc = service(google_fake)
    calendar = svc.calendars().get(calendarId="primary").execute()
    assert calendar["id"] == DEFAULT_ACCOUNT and calendar["timeZone"] == "UTC"
    assert svc.calendars().get(calendarId=DEFAULT_ACCOUNT).execute()["id"] == DEFAULT_ACCOUNT
    with pytest.raises(HttpError) as other:
        svc.events().list(calendarId="someone-else@example.com").execute()
    assert http_error(other) == (404, "notFound")


# -- listing and sync ---------------------------------------------------------------------------------


def list_all(events: Any, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, raw pages) following nextPageToken."""
    pages = []
    items: list[dict[str, Any]] = []
    token = None
    while True:
        page = events.list(calendarId="primary", pageToken=token, **params).execute()
        pages.append(page)
        items.extend(page.get("items", []))
        token = page.get("nextPageToken")
        if not token:
            return items, pages


def test_pagination_carries_the_sync_token_on_the_last_page_only(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    for hour in range(7):
        google_fake.create_event(f"E{hour}", START + timedelta(hours=hour))
    items, pages = list_all(events, maxResults=3, singleEvents=True)
    assert [len(p["items"]) for p in pages] == [3, 3, 1]
    assert all("nextPageToken" in p and "nextSyncToken" not in p for p in pages[:-1])
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1]
    assert sorted(e["summary"] for e in items) == [f"E{h}" for h in range(7)]


def test_time_window_and_deleted_events_in_a_full_listing(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    google_fake.create_event("old", START - timedelta(days=30))
    google_fake.create_event("new", START)
    cancelled = google_fake.create_event("gone", START + timedelta(hours=2))
    google_fake.cancel_event(cancelled["id"])
    window = (START - timedelta(days=1)).isoformat()
    items, _ = list_all(events, timeMin=window, singleEvents=True)
    assert [e["summary"] for e in items] == ["new"]
    items, _ = list_all(events, timeMin=window, singleEvents=True, showDeleted=True)
    assert sorted(e["summary"] for e in items) == ["gone", "new"]
    items, _ = list_all(events, timeMax=window, singleEvents=True)
    assert [e["summary"] for e in items] == ["old"]


def test_incremental_sync_returns_changes_and_deletions(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    keep = google_fake.create_event("keep", START)
    change = google_fake.create_event("change", START + timedelta(hours=1))
    drop = google_fake.create_event("drop", START + timedelta(hours=2))
    _, pages = list_all(events, timeMin=(START - timedelta(days=1)).isoformat(), singleEvents=True)
    token = pages[-1]["nextSyncToken"]

    google_fake.edit_event(change["id"], summary="changed")
    google_fake.cancel_event(drop["id"])
    items, pages = list_all(events, syncToken=token, singleEvents=True)
    by_id = {e["id"]: e for e in items}
    assert set(by_id) == {change["id"], drop["id"]}
    assert by_id[change["id"]]["summary"] == "changed"
    assert by_id[drop["id"]]["status"] == "cancelled"
    assert keep["id"] not in by_id

    nothing, _ = list_all(events, syncToken=pages[-1]["nextSyncToken"], singleEvents=True)
    assert nothing == []

    with pytest.raises(HttpError) as forbidden:
        events.list(calendarId="primary", syncToken=token, timeMin=START.isoformat()).execute()
    assert http_error(forbidden) == (400, "invalid")


def test_invalidated_sync_tokens_answer_410_full_sync_required(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    google_fake.create_event("one", START)
    token = events.list(calendarId="primary", singleEvents=True).execute()["nextSyncToken"]
    google_fake.invalidate_sync_tokens()
    with pytest.raises(HttpError) as expired:
        events.list(calendarId="primary", syncToken=token, singleEvents=True).execute()
    assert http_error(expired) == (410, "fullSyncRequired")


def test_recurring_series_expand_and_cancelled_instances_sync(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    series = google_fake.add_recurring("Daily", START, START + timedelta(hours=1), count=3)
    allday = google_fake.add_recurring(
        "Weekly", START.date(), START.date() + timedelta(days=1), count=2, freq="WEEKLY"
    )
    items, pages = list_all(events, singleEvents=True, timeMin=(START - timedelta(days=1)).isoformat())
    daily = [e for e in items if e.get("recurringEventId") == series["id"]]
    assert [e["id"] for e in daily] == [
        f"{series['id']}_20300304T090000Z",
        f"{series['id']}_20300305T090000Z",
        f"{series['id']}_20300306T090000Z",
    ]
    assert daily[1]["originalStartTime"] == daily[1]["start"] == {"dateTime": "2030-03-05T09:00:00Z"}
    weekly = [e["id"] for e in items if e.get("recurringEventId") == allday["id"]]
    assert weekly == [f"{allday['id']}_20300304", f"{allday['id']}_20300311"]
    assert all("recurrence" not in e for e in items)

    raw, _ = list_all(events, singleEvents=False)
    assert {e["id"] for e in raw} == {series["id"], allday["id"]}

    token = pages[-1]["nextSyncToken"]
    google_fake.cancel_instance(daily[1]["id"])
    moved = events.patch(
        calendarId="primary",
        eventId=daily[2]["id"],
        body={
            "summary": "Moved",
            "start": {"dateTime": "2030-03-06T11:00:00Z"},
            "end": {"dateTime": "2030-03-06T12:00:00Z"},
        },
    ).execute()
    assert moved["recurringEventId"] == series["id"] and moved["originalStartTime"] == daily[2]["start"]

    changed, _ = list_all(events, syncToken=token, singleEvents=True)
    by_id = {e["id"]: e for e in changed}
    assert set(by_id) == {daily[1]["id"], daily[2]["id"]}
    assert by_id[daily[1]["id"]]["status"] == "cancelled"
    assert by_id[daily[2]["id"]]["summary"] == "Moved"

    listed, _ = list_all(events, singleEvents=True)
    assert daily[1]["id"] not in {e["id"] for e in listed}
    assert events.get(calendarId="primary", eventId=daily[0]["id"]).execute()["summary"] == "Daily"


# -- batch --------------------------------------------------------------------------------------------


def test_batch_round_trip_is_one_http_request(google_fake: GoogleFake) -> None:
    svc = service(google_fake)
    svc.events().insert(calendarId="primary", body=event_body("present001")).execute()
    google_fake.clear_log()
    results: dict[str, tuple[Any, HttpError | None]] = {}

    def collect(request_id: str, response: Any, exception: HttpError | None) -> None:
        results[request_id] = (response, exception)

    batch = svc.new_batch_http_request(callback=collect)
    batch.add(svc.events().insert(calendarId="primary", body=event_body("batched001")), request_id="new")
    batch.add(svc.events().insert(calendarId="primary", body=event_body("present001")), request_id="dup")
    batch.add(
        svc.events().patch(calendarId="primary", eventId="present001", body={"summary": "P"}), request_id="p"
    )
    batch.add(svc.events().delete(calendarId="primary", eventId="nosuchevent"), request_id="missing")
    batch.add(svc.events().get(calendarId="primary", eventId="batched001"), request_id="get")
    batch.add(svc.events().delete(calendarId="primary", eventId="present001"), request_id="del")
    batch.execute()

    assert results["new"][0]["id"] == "batched001"
    dup = results["dup"][1]
    assert dup is not None and dup.resp.status == 409
    assert results["p"][0]["summary"] == "P"
    missing = results["missing"][1]
    assert missing is not None and missing.resp.status == 404
    assert results["get"][0]["id"] == "batched001"
    assert results["del"] == ("", None)
    assert google_fake.event("present001")["status"] == "cancelled"
    assert google_fake.count() == 1 and google_fake.count(batch=True) == 1
    assert google_fake.count_parts() == 6 and google_fake.count_parts(method="POST") == 2


def test_batch_parts_can_fail_on_their_own(google_fake: GoogleFake) -> None:
    svc = service(google_fake)
    google_fake.fail_next(1, 503, "backendError", path_contains="/events")
    outcomes: list[int] = []

    def collect(_id: str, _response: Any, exception: HttpError | None) -> None:
        outcomes.append(exception.resp.status if exception else 200)

    batch = svc.new_batch_http_request(callback=collect)
    for n in range(3):
        batch.add(svc.events().insert(calendarId="primary", body=event_body(f"part0000{n}")))
    batch.execute()  # the library does not retry parts
    assert outcomes == [503, 200, 200]


def raw_batch(fake: GoogleFake, parts: list[str], token: str) -> requests.Response:
    """A batch request written by hand, as Google documents the wire format."""
    boundary = "===b0undary=="
    chunks = []
    for number, http_part in enumerate(parts):
        chunks.append(
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <item{number}>\r\n\r\n"
            f"{http_part}\r\n"
        )
    chunks.append(f"--{boundary}--\r\n")
    return requests.post(
        f"{fake.api_root}batch/calendar/v3",
        data="".join(chunks).encode(),
        headers={"Content-Type": f"multipart/mixed; boundary={boundary}"},
        timeout=5,
    )


def test_batch_wire_format_and_part_limit(google_fake: GoogleFake) -> None:
    token = google_fake.issue_access_token()
    auth = f"Authorization: Bearer {token}\r\n"
    get_calendar = f"GET /calendar/v3/calendars/primary HTTP/1.1\r\n{auth}\r\n"
    missing = f"GET /calendar/v3/calendars/primary/events/nosuchevent?alt=json HTTP/1.1\r\n{auth}\r\n"
    answer = raw_batch(google_fake, [get_calendar, missing], token)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    text = answer.text
    # Responses name their request as <response-ID>; headers and body are split by an empty line.
    assert "Content-ID: <response-item0>\r\n\r\nHTTP/1.1 200 OK\r\n" in text
    assert "Content-ID: <response-item1>\r\n\r\nHTTP/1.1 404 Not Found\r\n" in text
    first, second = text.split("Content-ID: <response-item")[1:]
    assert json.loads(first.split("\r\n\r\n", 2)[2].split("\r\n--")[0])["id"] == DEFAULT_ACCOUNT
    assert json.loads(second.split("\r\n\r\n", 2)[2].split("\r\n--")[0])["error"]["code"] == 404

    too_many = raw_batch(google_fake, [get_calendar] * 1001, token)
    assert too_many.status_code == 400
    assert too_many.json()["error"]["errors"][0]["reason"] == "invalid"
    assert google_fake.count_parts() == 2  # refused whole, no part was served


def test_fault_filters(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    token = events.list(calendarId="primary").execute()["nextSyncToken"]
    seen: list[Call] = []

    def only_incremental(call: Call) -> bool:
        seen.append(call)
        return "syncToken=" in call.query

    google_fake.fail_next(1, 500, "backendError", match=only_incremental)
    events.list(calendarId="primary").execute()  # a full listing passes the filter by
    with pytest.raises(HttpError) as excinfo:
        events.list(calendarId="primary", syncToken=token).execute()
    assert http_error(excinfo) == (500, "backendError")
    assert events.list(calendarId="primary", syncToken=token).execute()["items"] == []  # used up
    assert [c.method for c in seen] == ["GET", "GET"] and not any(c.in_batch for c in seen)

    google_fake.fail_next(1, 404, "notFound", match="/events/abcdef", method="GET")
    events.insert(calendarId="primary", body=event_body("abcdef0001")).execute()
    with pytest.raises(HttpError):
        events.get(calendarId="primary", eventId="abcdef0001").execute()
    assert events.get(calendarId="primary", eventId="abcdef0001").execute()["id"] == "abcdef0001"


def test_send_updates_is_recorded_and_validated(google_fake: GoogleFake) -> None:
    svc = service(google_fake)
    events = svc.events()
    events.insert(calendarId="primary", body=event_body("n0t1f10001"), sendUpdates="none").execute()
    events.patch(
        calendarId="primary", eventId="n0t1f10001", body={"summary": "x"}, sendUpdates="all"
    ).execute()
    batch = svc.new_batch_http_request()
    batch.add(
        events.update(calendarId="primary", eventId="n0t1f10001", body=event_body(), sendUpdates="none")
    )
    batch.execute()
    events.delete(calendarId="primary", eventId="n0t1f10001").execute()
    google_fake.edit_event("n0t1f10001", status="confirmed")  # the owner's edit is no API write
    assert google_fake.send_updates("n0t1f10001") == [
        SendUpdates("POST", "n0t1f10001", "none"),
        SendUpdates("PATCH", "n0t1f10001", "all"),
        SendUpdates("PUT", "n0t1f10001", "none"),
        SendUpdates("DELETE", "n0t1f10001", None),
    ]
    # The discovery document lets only the enum through the client library: a bad value goes raw.
    token = google_fake.issue_access_token()
    bad = requests.post(
        f"{google_fake.api_root}calendar/v3/calendars/primary/events",
        params={"sendUpdates": "everyone"},
        json=event_body("n0t1f10002"),
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert bad.status_code == 400 and bad.json()["error"]["errors"][0]["reason"] == "invalid"
    assert len(google_fake.send_updates()) == 4
    assert [e["id"] for e in google_fake.events()] == ["n0t1f10001"]  # the refused insert created nothing


# -- auth ---------------------------------------------------------------------------------------------


def test_calendar_requires_a_valid_bearer_token(google_fake: GoogleFake) -> None:
    url = f"{google_fake.api_root}calendar/v3/calendars/primary/events"
    missing = requests.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.json()["error"]["errors"][0]["reason"] == "authError"
    wrong = requests.get(url, headers={"Authorization": "Bearer ya29.nope"}, timeout=5)
    assert wrong.status_code == 401
    token = google_fake.issue_access_token()
    ok = requests.get(url, headers={"Authorization": f"Bearer {token}"}, params={"alt": "json"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["kind"] == "calendar#events"
    narrow = google_fake.issue_access_token(scopes=("openid",))
    refused = requests.get(url, headers={"Authorization": f"Bearer {narrow}"}, timeout=5)
    assert refused.status_code == 403
    assert refused.json()["error"]["errors"][0]["reason"] == "insufficientPermissions"


def test_google_auth_refreshes_an_expired_access_token(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    events.list(calendarId="primary").execute()  # no token yet: google-auth refreshes first
    assert google_fake.count(method="POST", path_contains="/token") == 1
    google_fake.expire_access_tokens()  # the server says no; google-auth still believes in it
    assert "items" in events.list(calendarId="primary").execute()
    assert google_fake.count(method="POST", path_contains="/token") == 2
    assert google_fake.count(method="GET", path_contains="/events") == 3  # 200, 401, 200


def test_revoked_refresh_token_raises_refresh_error(google_fake: GoogleFake) -> None:
    refresh_token = google_fake.issue_refresh_token()
    events = service(google_fake, refresh_token).events()
    events.list(calendarId="primary").execute()
    google_fake.revoke_all()
    with pytest.raises(RefreshError) as excinfo:
        events.list(calendarId="primary").execute()
    assert "invalid_grant" in str(excinfo.value)
    assert excinfo.value.retryable is False


def test_revoke_endpoint(google_fake: GoogleFake) -> None:
    refresh_token = google_fake.issue_refresh_token()
    assert requests.post(google_fake.revoke_uri, data={"token": refresh_token}, timeout=5).status_code == 200
    assert not google_fake.refresh_token_valid(refresh_token)
    again = requests.post(google_fake.revoke_uri, params={"token": refresh_token}, timeout=5)
    assert again.status_code == 400 and again.json()["error"] == "invalid_token"
    refused = requests.post(
        google_fake.token_uri,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": google_fake.client_id,
            "client_secret": google_fake.client_secret,
        },
        timeout=5,
    )
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }


def test_403_rate_limit_shape_makes_the_client_retry(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    events.list(calendarId="primary").execute()
    google_fake.clear_log()
    google_fake.fail_next(2, 403, "rateLimitExceeded", path_contains="/events")
    request: HttpRequest = events.list(calendarId="primary")
    request._sleep = lambda _s: None
    assert "items" in request.execute(num_retries=3)
    assert google_fake.count(path_contains="/events") == 3

    google_fake.fail_next(1, 403, "quotaExceeded", path_contains="/events")
    quota: HttpRequest = events.list(calendarId="primary")
    quota._sleep = lambda _s: None
    with pytest.raises(HttpError) as excinfo:
        quota.execute(num_retries=3)
    assert http_error(excinfo) == (403, "quotaExceeded")
    assert google_fake.count(path_contains="/events") == 4


def test_lost_response_still_commits(google_fake: GoogleFake) -> None:
    events = service(google_fake).events()
    events.list(calendarId="primary").execute()
    google_fake.lose_response_next(2, method="POST", path_contains="/events")  # httplib2 retries once itself
    with pytest.raises((ConnectionError, OSError)):
        events.insert(calendarId="primary", body=event_body("lostresp01")).execute()
    assert events.get(calendarId="primary", eventId="lostresp01").execute()["status"] == "confirmed"
    assert google_fake.count(method="POST", path_contains="/events") == 2


# -- the consent flow (google-auth-oauthlib) ---------------------------------------------------------


def consent_code(fake: GoogleFake, monkeypatch: pytest.MonkeyPatch, **flow_kwargs: Any) -> tuple[Any, str]:
    from google_auth_oauthlib.flow import Flow

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    monkeypatch.setenv("OAUTHLIB_RELAX_TOKEN_SCOPE", "1")
    fake.register_client("web-client", "web-secret", [REDIRECT])
    config = {
        "web": {
            "client_id": "web-client",
            "client_secret": "web-secret",
            "auth_uri": fake.auth_uri,
            "token_uri": fake.token_uri,
            "redirect_uris": [REDIRECT],
        }
    }
    scopes = ["openid", EMAIL_SCOPE, CALENDAR_EVENTS_SCOPE]
    flow = Flow.from_client_config(config, scopes=scopes, redirect_uri=REDIRECT, **flow_kwargs)
    url, _ = flow.authorization_url(access_type="offline", prompt="consent", state="st4te")
    answer = requests.get(url, allow_redirects=False, timeout=5)
    assert answer.status_code == 302
    location = answer.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    params = parse_qs(urlsplit(location).query)
    assert params["state"] == ["st4te"]
    return flow, params["code"][0]


def test_consent_exchange_with_pkce(google_fake: GoogleFake, monkeypatch: pytest.MonkeyPatch) -> None:
    google_fake.consent(account="someone@example.com")
    flow, code = consent_code(google_fake, monkeypatch)
    token = flow.fetch_token(code=code)
    assert token["refresh_token"] and token["access_token"] and token["expires_in"] == 3599
    assert set(token["scope"]) == {"openid", EMAIL_SCOPE, CALENDAR_EVENTS_SCOPE}
    payload = token["id_token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["email"] == "someone@example.com" and claims["email_verified"] is True
    assert claims["aud"] == "web-client" and claims["iss"] == "https://accounts.google.com"
    assert google_fake.refresh_token_valid(token["refresh_token"])

    from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

    with pytest.raises(InvalidGrantError):  # codes are single-use
        flow.fetch_token(code=code)


def test_pkce_mismatch_is_rejected(google_fake: GoogleFake, monkeypatch: pytest.MonkeyPatch) -> None:
    from google_auth_oauthlib.flow import Flow
    from oauthlib.oauth2.rfc6749.errors import InvalidGrantError

    flow, code = consent_code(google_fake, monkeypatch)
    other = Flow.from_client_config(
        {"web": flow.client_config},
        scopes=flow.oauth2session.scope,
        redirect_uri=REDIRECT,
        state="st4te",
        code_verifier="x" * 64,
    )
    with pytest.raises(InvalidGrantError):
        other.fetch_token(code=code)
    assert google_fake.count(method="POST", path_contains="/token") == 1


def test_consent_settings(google_fake: GoogleFake, monkeypatch: pytest.MonkeyPatch) -> None:
    google_fake.consent(scopes=["openid", EMAIL_SCOPE], refresh_token=False)
    flow, code = consent_code(google_fake, monkeypatch)
    token = flow.fetch_token(code=code)
    assert set(token["scope"]) == {"openid", EMAIL_SCOPE}
    assert "refresh_token" not in token

    google_fake.consent(deny=True)
    url, _ = flow.authorization_url(state="s2")
    denied = requests.get(url, allow_redirects=False, timeout=5)
    assert parse_qs(urlsplit(denied.headers["Location"]).query) == {
        "error": ["access_denied"],
        "state": ["s2"],
    }

    bad_redirect = url.replace("redirect_uri=http", "redirect_uri=https")
    assert requests.get(bad_redirect, allow_redirects=False, timeout=5).status_code == 400


def test_userinfo(google_fake: GoogleFake) -> None:
    token = google_fake.issue_access_token(account="who@example.com")
    info = requests.get(
        f"{google_fake.api_root}oauth2/v3/userinfo", headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    assert info.json()["email"] == "who@example.com"


# -- latency and random faults ------------------------------------------------------------------------


def test_latency_is_per_http_request_not_per_part(google_fake: GoogleFake) -> None:
    svc = service(google_fake)
    svc.events().list(calendarId="primary").execute()
    google_fake.latency = 0.2
    batch = svc.new_batch_http_request()
    for n in range(10):
        batch.add(svc.events().insert(calendarId="primary", body=event_body(f"late0000{n}")))
    started = time.monotonic()
    batch.execute()
    elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0
    assert len(google_fake.events()) == 10


def test_random_faults_are_reproducible_by_seed() -> None:
    def statuses(seed: int) -> list[int]:
        with GoogleFake() as fake:
            fake.set_fault_rate(0.5, seed=seed)
            token = fake.issue_access_token()
            url = f"{fake.api_root}calendar/v3/calendars/primary/events"
            out = []
            for _ in range(12):
                try:
                    answer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5)
                    out.append(answer.status_code)
                except requests.ConnectionError:
                    out.append(0)
            return out

    first = statuses(7)
    assert first == statuses(7)
    assert 200 in first and set(first) - {200} and set(first) <= {0, 200, 429, 500, 503}


def test_context_manager_stops_the_server() -> None:
    with GoogleFake() as fake:
        root = fake.api_root
        assert requests.get(f"{root}nothing", timeout=5).status_code == 404
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{root}nothing", timeout=5)
