"""calsync.google.calendar against the Google fake: error mapping, retries, budget, batches, sync paging."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from calsync.google.calendar import GoogleCalendar, build_calendar_service, build_credentials
from calsync.google.errors import (
    GoogleAccessRevoked,
    GoogleBadRequest,
    GoogleConflict,
    GoogleError,
    GoogleGone,
    GoogleNotFound,
    GoogleQuotaExceeded,
    GoogleRetryableError,
)
from calsync.sync.ids import event_id_for
from calsync.sync.ports import EventsPage, EventWrite
from tests.fakes.google import CALENDAR_EVENTS_SCOPE, GoogleFake, SendUpdates

pytestmark = pytest.mark.google

START = datetime(2030, 5, 6, 8, 0, tzinfo=UTC)


class Clock:
    """A monotonic clock that only the stubbed sleep moves: budgets are tested without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Harness:
    def __init__(self, fake: GoogleFake) -> None:
        self.fake = fake
        self.clock = Clock()
        self.refresh_token = fake.issue_refresh_token()
        self.credentials = build_credentials(
            self.refresh_token, fake.token_uri, fake.client_id, fake.client_secret, [CALENDAR_EVENTS_SCOPE]
        )
        self.service = build_calendar_service(self.credentials, fake.api_root)

    def calendar(self, retries: int = 5, budget_s: float = 20.0) -> GoogleCalendar:
        return GoogleCalendar(
            self.service,
            "primary",
            retries=retries,
            budget_s=budget_s,
            sleep=self.clock.sleep,
            clock=self.clock,
        )


@pytest.fixture
def harness(google_fake: GoogleFake) -> Harness:
    return Harness(google_fake)


def body(key: str, hour: int = 0, summary: str = "Booking") -> dict[str, Any]:
    start = START + timedelta(hours=hour)
    return {
        "id": event_id_for("default", "bookings", key),
        "summary": summary,
        "start": {"dateTime": start.isoformat(), "timeZone": "UTC"},
        "end": {"dateTime": (start + timedelta(hours=1)).isoformat(), "timeZone": "UTC"},
        "extendedProperties": {"private": {"calsync_key": key}},
    }


def insert(b: dict[str, Any], send_updates: Any = "none") -> EventWrite:
    return EventWrite("insert", b["id"], {k: v for k, v in b.items() if k != "id"}, send_updates)


def patch(event_id: str, b: dict[str, Any], send_updates: Any = "none") -> EventWrite:
    return EventWrite("patch", event_id, b, send_updates)


def delete(event_id: str, send_updates: Any = "none") -> EventWrite:
    return EventWrite("delete", event_id, None, send_updates)


def ping(calendar: GoogleCalendar, fake: GoogleFake) -> None:
    """One cheap call (a valid access token first, where a test needs one), left out of the fake's log."""
    calendar.list_events(max_results=1)
    fake.clear_log()


# -- event ids ----------------------------------------------------------------------------------------


def test_event_id_for_is_deterministic_base32hex() -> None:
    first = event_id_for("default", "bookings", "42")
    assert first == event_id_for("default", "bookings", "42")
    assert re.fullmatch(r"[a-v0-9]{26,1024}", first)
    assert len(first) == 52
    others = {
        event_id_for("default", "bookings", "43"),
        event_id_for("other", "bookings", "42"),
        event_id_for("default", "rooms", "42"),
        event_id_for("default", "bookings4", "2"),  # separators keep the parts apart
    }
    assert first not in others and len(others) == 4


def test_event_id_is_accepted_by_the_calendar(harness: Harness) -> None:
    created = harness.calendar().write(insert(body("1")))
    assert created["id"] == event_id_for("default", "bookings", "1")


# -- calls and their results --------------------------------------------------------------------------


def test_crud_round_trip(harness: Harness) -> None:
    calendar = harness.calendar()
    created = calendar.write(insert(body("1")))
    event_id = created["id"]
    assert harness.fake.event(event_id)["summary"] == "Booking"
    patched = calendar.write(patch(event_id, {"summary": "Patched"}))
    assert patched["summary"] == "Patched" and patched["etag"] != created["etag"]
    assert calendar.write(delete(event_id)) == {}
    assert harness.fake.event(event_id)["status"] == "cancelled"
    assert calendar.write(patch(event_id, {"status": "confirmed"}))["status"] == "confirmed"
    assert calendar.http_requests == 4
    assert harness.clock.sleeps == []


def test_send_updates_is_passed_through(harness: Harness) -> None:
    calendar = harness.calendar()
    event_id = calendar.write(insert(body("1")))["id"]  # default: nobody is emailed by a sync edit
    calendar.write(patch(event_id, {"summary": "x"}, send_updates="all"))
    calendar.batch([patch(event_id, {"summary": "y"}, send_updates="externalOnly")])
    calendar.write(delete(event_id))
    assert [(r.method, r.value) for r in harness.fake.send_updates(event_id)] == [
        ("POST", "none"),
        ("PATCH", "all"),
        ("PATCH", "externalOnly"),
        ("DELETE", "none"),
    ]
    assert all(isinstance(r, SendUpdates) for r in harness.fake.send_updates())


def test_state_errors_map_to_their_kinds(harness: Harness) -> None:
    calendar = harness.calendar()
    created = calendar.write(insert(body("1")))
    with pytest.raises(GoogleConflict) as conflict:
        calendar.write(insert(body("1")))
    assert (conflict.value.status, conflict.value.reason) == (409, "duplicate")
    with pytest.raises(GoogleNotFound):
        calendar.write(patch(event_id_for("default", "bookings", "missing"), {"summary": "x"}))
    calendar.write(delete(created["id"]))
    with pytest.raises(GoogleGone) as gone:
        calendar.write(delete(created["id"]))
    assert gone.value.reason == "deleted" and not gone.value.full_sync_required
    with pytest.raises(GoogleBadRequest) as bad:
        calendar.write(insert({**body("2"), "id": "UPPER_CASE"}))
    assert (bad.value.status, bad.value.reason) == (400, "invalid")
    assert harness.clock.sleeps == []  # none of these is retried


@pytest.mark.parametrize(
    ("status", "reason", "kind"),
    [
        (400, "badRequest", GoogleBadRequest),
        (403, "forbidden", GoogleBadRequest),
        (403, "quotaExceeded", GoogleQuotaExceeded),
        (403, "dailyLimitExceeded", GoogleQuotaExceeded),
        (403, "insufficientPermissions", GoogleAccessRevoked),
        (404, "notFound", GoogleNotFound),
        (409, "duplicate", GoogleConflict),
        (410, "deleted", GoogleGone),
        (412, "conditionNotMet", GoogleBadRequest),
        (422, "unprocessable", GoogleBadRequest),
    ],
)
def test_final_http_errors_are_not_retried(
    harness: Harness, status: int, reason: str, kind: type[GoogleError]
) -> None:
    calendar = harness.calendar()
    ping(calendar, harness.fake)
    harness.fake.fail_next(1, status, reason, path_contains="/events")
    with pytest.raises(kind) as excinfo:
        calendar.list_events()
    assert type(excinfo.value) is kind
    assert (excinfo.value.status, excinfo.value.reason) == (status, reason)
    assert reason in str(excinfo.value)
    assert harness.fake.count(path_contains="/events") == 1
    assert harness.clock.sleeps == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (429, "rateLimitExceeded"),
        (500, "backendError"),
        (502, "badGateway"),
        (503, "backendError"),
        (403, "rateLimitExceeded"),
        (403, "userRateLimitExceeded"),
    ],
)
def test_transient_errors_are_retried_then_succeed(harness: Harness, status: int, reason: str) -> None:
    calendar = harness.calendar()
    harness.fake.fail_next(2, status, reason, path_contains="/events", method="POST")
    created = calendar.write(insert(body("1")))
    assert created["status"] == "confirmed"
    assert harness.fake.count(method="POST", path_contains="/events") == 3
    assert len(harness.clock.sleeps) == 2
    assert harness.clock.sleeps[0] < harness.clock.sleeps[1] + 0.5  # growing backoff (with jitter)
    assert calendar.http_requests == 3


def test_retries_are_bounded(harness: Harness) -> None:
    calendar = harness.calendar(retries=2)
    harness.fake.fail_next(10, 503, "backendError", path_contains="/events")
    with pytest.raises(GoogleRetryableError) as excinfo:
        calendar.list_events()
    assert (excinfo.value.status, excinfo.value.reason) == (503, "backendError")
    assert harness.fake.count(path_contains="/events") == 3
    assert len(harness.clock.sleeps) == 2


def test_budget_exhaustion_gives_up_early(harness: Harness) -> None:
    calendar = harness.calendar(retries=50, budget_s=4.0)
    harness.fake.fail_next(100, 429, "rateLimitExceeded", path_contains="/events")
    with pytest.raises(GoogleRetryableError):
        calendar.list_events()
    assert sum(harness.clock.sleeps) <= 4.0
    assert 1 <= len(harness.clock.sleeps) < 6
    assert harness.fake.count(path_contains="/events") == len(harness.clock.sleeps) + 1


def test_transport_failure_is_retryable(harness: Harness) -> None:
    calendar = harness.calendar(retries=2)
    ping(calendar, harness.fake)  # a valid access token first: the refresh is not what fails
    harness.fake.stop()
    with pytest.raises(GoogleRetryableError) as excinfo:
        ping(calendar, harness.fake)
    assert excinfo.value.status == 0
    assert len(harness.clock.sleeps) == 2


def test_lost_insert_response_surfaces_as_conflict(harness: Harness) -> None:
    """The insert is committed but its answer never arrives (twice: httplib2 silently retries once); our
    retry then meets the event it created: 409 on our own deterministic id means "already there"."""
    calendar = harness.calendar()
    ping(calendar, harness.fake)
    harness.fake.lose_response_next(2, path_contains="/events", method="POST")
    with pytest.raises(GoogleConflict):
        calendar.write(insert(body("1")))
    assert harness.fake.count(method="POST", path_contains="/events") == 3
    assert len(harness.clock.sleeps) == 1
    stored = [e for e in harness.fake.events() if e["id"] == event_id_for("default", "bookings", "1")]
    assert len(stored) == 1


# -- auth ---------------------------------------------------------------------------------------------


def test_revoked_refresh_token_is_access_revoked(harness: Harness) -> None:
    calendar = harness.calendar()
    harness.fake.revoke_all()
    with pytest.raises(GoogleAccessRevoked) as excinfo:
        calendar.write(insert(body("1")))
    assert excinfo.value.reason == "invalid_grant"
    assert harness.refresh_token not in str(excinfo.value)
    assert harness.clock.sleeps == []


def test_token_endpoint_outage_is_retryable_not_revoked(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 5xx from the token endpoint says nothing about the grant: the connection must not be marked as
    needing a new consent. google-auth retries it itself (3 attempts) with real sleeps: stubbed here."""
    from google.auth import _exponential_backoff

    monkeypatch.setattr(_exponential_backoff, "time", SimpleNamespace(sleep=lambda _s: None))
    calendar = harness.calendar(retries=1)
    harness.fake.fail_next(100, 503, "temporarily_unavailable", path_contains="/token")
    with pytest.raises(GoogleRetryableError) as excinfo:
        ping(calendar, harness.fake)
    assert excinfo.value.status == 0
    assert harness.fake.count(path_contains="/token") == 6  # 3 by google-auth, per our 2 attempts
    assert len(harness.clock.sleeps) == 1
    harness.fake.clear_faults()
    ping(calendar, harness.fake)


def test_expired_access_token_is_refreshed_transparently(harness: Harness) -> None:
    calendar = harness.calendar()
    ping(calendar, harness.fake)
    harness.fake.expire_access_tokens()
    calendar.list_events(max_results=1)
    assert harness.fake.count(path_contains="/token") == 1
    assert harness.clock.sleeps == []


def test_401_that_persists_after_a_refresh_is_access_revoked(harness: Harness) -> None:
    calendar = harness.calendar()
    ping(calendar, harness.fake)
    harness.fake.fail_next(5, 401, "authError", path_contains="/calendars/")
    with pytest.raises(GoogleAccessRevoked) as excinfo:
        calendar.list_events(max_results=1)
    assert excinfo.value.status == 401
    assert harness.fake.count(path_contains="/token") >= 2  # google-auth refreshed before giving up
    token = harness.credentials.token
    assert token is not None and token not in str(excinfo.value)


# -- listing ------------------------------------------------------------------------------------------


def all_pages(fetch: Callable[[str | None], EventsPage]) -> list[EventsPage]:
    pages = [fetch(None)]
    while pages[-1].next_page_token:
        pages.append(fetch(pages[-1].next_page_token))
    return pages


def test_list_pagination_and_sync_token(harness: Harness) -> None:
    calendar = harness.calendar()
    for n in range(5):
        harness.fake.create_event(f"E{n}", START + timedelta(hours=n))
    harness.fake.create_event("Long ago", START - timedelta(days=400))
    window = START - timedelta(days=30)
    pages = all_pages(lambda token: calendar.list_events(time_min=window, page_token=token, max_results=2))
    assert [len(p.items) for p in pages] == [2, 2, 1]
    assert [p.next_sync_token is None for p in pages] == [True, True, False]
    assert sorted(e["summary"] for p in pages for e in p.items) == [f"E{n}" for n in range(5)]
    sync_token = pages[-1].next_sync_token
    assert sync_token

    events = [e for p in pages for e in p.items]
    harness.fake.edit_event(events[0]["id"], summary="Edited")
    harness.fake.cancel_event(events[1]["id"])
    old = harness.fake.events(include_cancelled=False)[-1]  # outside the window, still reported
    harness.fake.edit_event(old["id"], location="Elsewhere")
    harness.fake.clear_log()
    changed = calendar.list_events(sync_token=sync_token)
    by_id = {e["id"]: e for e in changed.items}
    assert set(by_id) == {events[0]["id"], events[1]["id"], old["id"]}
    assert by_id[events[1]["id"]]["status"] == "cancelled"
    assert changed.next_page_token is None and changed.next_sync_token

    (request,) = harness.fake.requests
    assert "timeMin" not in request.query and "singleEvents=true" in request.query


def test_expired_sync_token_requires_a_full_sync(harness: Harness) -> None:
    calendar = harness.calendar()
    token = calendar.list_events(time_min=START).next_sync_token
    harness.fake.invalidate_sync_tokens()
    with pytest.raises(GoogleGone) as excinfo:
        calendar.list_events(sync_token=token)
    assert excinfo.value.full_sync_required
    assert harness.clock.sleeps == []


def test_recurring_instances_come_back_as_single_events(harness: Harness) -> None:
    calendar = harness.calendar()
    series = harness.fake.add_recurring("Weekly", START, START + timedelta(hours=1), count=3, freq="WEEKLY")
    first = calendar.list_events(time_min=START - timedelta(days=1))
    assert [e["recurringEventId"] for e in first.items] == [series["id"]] * 3
    harness.fake.cancel_instance(first.items[2]["id"])
    second = calendar.list_events(sync_token=first.next_sync_token)
    assert [(e["id"], e["status"]) for e in second.items] == [(first.items[2]["id"], "cancelled")]


# -- batches ------------------------------------------------------------------------------------------


def test_batch_of_120_is_three_http_requests(harness: Harness) -> None:
    calendar = harness.calendar()
    ping(calendar, harness.fake)
    harness.fake.clear_log()
    before = calendar.http_requests
    requests_ = [insert(body(str(n), hour=n % 24)) for n in range(120)]
    results = calendar.batch(requests_)
    assert all(isinstance(r, dict) for r in results)
    assert [r["id"] for r in results if isinstance(r, dict)] == [
        event_id_for("default", "bookings", str(n)) for n in range(120)
    ]
    assert harness.fake.count(batch=True) == 3 and harness.fake.count() == 3
    assert harness.fake.count_parts(method="POST") == 120
    assert calendar.http_requests - before == 3


def test_batch_retries_only_the_parts_that_failed_transiently(harness: Harness) -> None:
    calendar = harness.calendar()
    existing = calendar.write(insert(body("0")))
    harness.fake.clear_log()
    harness.fake.fail_next(1, 503, "backendError", path_contains="/events", method="POST")
    requests_ = [insert(body(str(n))) for n in range(4)]
    requests_.append(patch(existing["id"], {"summary": "Patched"}))
    results = calendar.batch(requests_)

    assert isinstance(results[0], GoogleConflict)  # existed before: a final answer, not re-sent
    assert [r["id"] for r in results[1:4] if isinstance(r, dict)] == [
        event_id_for("default", "bookings", str(n)) for n in (1, 2, 3)
    ]
    assert isinstance(results[4], dict) and results[4]["summary"] == "Patched"
    # The 503 hit part 0 (the existing event); only it was sent again, and then got its 409.
    assert harness.fake.count(batch=True) == 2
    assert harness.fake.count_parts() == 6
    assert len(harness.clock.sleeps) == 1


def test_batch_part_that_keeps_failing_ends_as_retryable_error(harness: Harness) -> None:
    calendar = harness.calendar(retries=2)
    stuck = event_id_for("default", "bookings", "stuck")
    calendar.write(insert({**body("stuck"), "summary": "before"}))
    harness.fake.fail_next(100, 500, "backendError", path_contains=stuck)
    requests_ = [insert(body(str(n))) for n in range(3)]
    requests_.insert(1, patch(stuck, {"summary": "after"}))
    results = calendar.batch(requests_)
    assert [type(r).__name__ for r in results] == ["dict", "GoogleRetryableError", "dict", "dict"]
    assert harness.fake.count(batch=True) == 3  # first try + 2 retries of the one part
    assert harness.fake.event(stuck)["summary"] == "before"


def test_wholesale_batch_failure_maps_to_every_part(harness: Harness) -> None:
    calendar = harness.calendar(retries=1)
    ping(calendar, harness.fake)
    harness.fake.fail_next(5, 503, "backendError", path_contains="/batch/")
    results = calendar.batch([insert(body(str(n))) for n in range(3)])
    assert all(isinstance(r, GoogleRetryableError) for r in results)
    assert harness.fake.count(batch=True) == 2
    assert harness.fake.events() == []


def test_batch_with_revoked_access(harness: Harness) -> None:
    calendar = harness.calendar()
    harness.fake.revoke_all()
    results = calendar.batch([insert(body(str(n))) for n in range(2)])
    assert all(isinstance(r, GoogleAccessRevoked) for r in results)
    assert harness.clock.sleeps == []


def test_empty_batch(harness: Harness) -> None:
    calendar = harness.calendar()
    assert calendar.batch([]) == []
    assert calendar.http_requests == 0
