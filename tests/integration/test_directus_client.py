"""calsync.directus.client.DirectusClient: against the real Directus 12 where Directus's behaviour matters, against a
scripted local HTTP server where only failures (retries, odd answers) can be provoked."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from calsync.directus.client import (
    DirectusAuthError,
    DirectusClient,
    DirectusError,
    DirectusNotFound,
    DirectusUnavailable,
    DirectusValidationError,
)
from tests.parts.directus import ADMIN_TOKEN, DirectusServer

pytestmark = pytest.mark.directus

START = "2026-07-01T10:00:00Z"


class Counted:
    """A session that counts the HTTP responses it receives, by method (a requests response hook)."""

    def __init__(self) -> None:
        self.session = requests.Session()
        self.calls: list[str] = []
        self.session.hooks["response"].append(self._seen)

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.calls.append(f"{response.request.method} {response.status_code}")


def client_as(server: DirectusServer, who: str, counted: Counted | None = None) -> DirectusClient:
    token = server.sync_token if who == "sync" else ADMIN_TOKEN
    return DirectusClient(
        server.url, token, "bookings", session=counted.session if counted else None, sleep=lambda _: None
    )


@pytest.mark.parametrize("who", ["sync", "admin"])
def test_bulk_writes_skip_items_deleted_meanwhile_whatever_the_token(
    directus_bookings: DirectusServer, who: str
) -> None:
    # A non-admin token gets 403 for a whole bulk PATCH/DELETE if one key is missing; an admin's is
    # silently partial. The client gives both the admin's result.
    counted = Counted()
    client = client_as(directus_bookings, who, counted)
    rows = client.create_items([{"title": f"b{n}", "start_datetime": START} for n in range(4)])
    a, b, c, d = (str(r["id"]) for r in rows)
    directus_bookings.admin("DELETE", "/items/bookings", json=[int(b)]).raise_for_status()

    updated = client.update_items([{"id": a, "title": "a2"}, {"id": b, "title": "gone"}])
    assert [(str(r["id"]), r["title"]) for r in updated] == [(a, "a2")]
    assert {str(r["id"]) for r in client.update_items([{"id": k, "location": "Rome"} for k in (b, c)])} == {c}
    counted.calls.clear()
    client.delete_items([b, d])
    assert len(counted.calls) <= 3  # the write, at most one existence check and one retry of the rest
    assert {k: v["title"] for k, v in client.get_items([a, b, c, d], fields=["title"]).items()} == {
        a: "a2",
        c: "b2",
    }
    assert client.get_items([c], fields=["location"])[c]["location"] == "Rome"
    assert client.update_items([{"id": b, "title": "x"}]) == []
    client.delete_items([b])  # nothing left to delete is not an error


def test_a_real_permission_problem_is_still_an_auth_error(directus_bookings: DirectusServer) -> None:
    sync = DirectusClient(
        directus_bookings.url, directus_bookings.sync_token, "directus_users", sleep=lambda _: None
    )
    me = directus_bookings.admin("GET", "/users/me", params={"fields": "id"}).json()["data"]["id"]
    with pytest.raises(DirectusAuthError) as caught:
        sync.update_items([{"id": me, "first_name": "x"}])
    assert caught.value.status == 403 and caught.value.code == "FORBIDDEN"
    with pytest.raises(DirectusAuthError):  # Directus cannot tell a missing collection from a forbidden one
        DirectusClient(directus_bookings.url, ADMIN_TOKEN, "no_such_collection").get_items(["1"])


def test_reads_many_items_in_one_request_and_keys_come_back_as_text(
    directus_bookings: DirectusServer,
) -> None:
    counted = Counted()
    client = client_as(directus_bookings, "sync", counted)
    rows = client.create_items([{"title": f"t{n}", "start_datetime": START} for n in range(30)])
    assert [r["title"] for r in rows] == [f"t{n}" for n in range(30)] and len(counted.calls) == 1
    counted.calls.clear()
    keys = [r["id"] for r in rows]  # ints as Directus gives them
    found = client.get_items([*keys, 999999], fields=["title"])
    assert counted.calls == ["GET 200"]
    assert set(found) == {str(k) for k in keys}
    assert found[str(keys[7])] == {"id": keys[7], "title": "t7"}


def test_timestamps_keep_the_instant_and_come_back_in_utc(directus_bookings: DirectusServer) -> None:
    client = client_as(directus_bookings, "sync")
    row = client.create_items(
        [
            {
                "title": "offsets",
                "start_datetime": "2026-03-29T01:30:00+01:00",  # the night Europe moves its clocks
                "end_datetime": "2026-03-29T03:30:00+02:00",
            }
        ]
    )[0]
    assert (row["start_datetime"], row["end_datetime"]) == (
        "2026-03-29T00:30:00.000Z",
        "2026-03-29T01:30:00.000Z",
    )
    again = client.get_items([str(row["id"])])[str(row["id"])]
    assert again["start_datetime"] == "2026-03-29T00:30:00.000Z"
    assert (
        again["date_created"].endswith("Z") and again["all_day"] is False and again["status"] == "confirmed"
    )


def test_single_item_routes_say_not_found_for_a_missing_item(directus_bookings: DirectusServer) -> None:
    client = client_as(directus_bookings, "sync")
    with pytest.raises(DirectusNotFound):
        client.request("GET", "/items/bookings/999999", "item read", single_item=True)


def test_singletons_round_trip(directus_bookings: DirectusServer) -> None:
    client = client_as(directus_bookings, "sync")
    client.update_singleton("calendar_sync", {"last_error": "a test wrote this"})
    assert client.request("GET", "/items/calendar_sync", "read")["last_error"] == "a test wrote this"


def test_a_wrong_token_is_an_auth_error_that_never_shows_the_token(
    directus_bookings: DirectusServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = DirectusClient(directus_bookings.url, "wrong-token-7f3a9c", "bookings", sleep=lambda _: None)
    with pytest.raises(DirectusAuthError) as caught:
        wrong.create_items([{"title": "x", "start_datetime": START}])
    assert caught.value.status == 401 and caught.value.code == "INVALID_CREDENTIALS"
    assert "wrong-token-7f3a9c" not in str(caught.value) + repr(caught.value.args) + caplog.text


# -- failures, from a scripted local server -----------------------------------------------------------


class Scripted:
    """Answers each request with the next scripted (status, headers, body); the last one repeats."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, str], bytes]] = []
        self.seen: list[tuple[str, str, str | None]] = []  # method, path, Authorization
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # or every answer waits ~40 ms for the client's ACK

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                scripted.seen.append((self.command, self.path, self.headers.get("Authorization")))
                status, headers, body = (
                    scripted.answers.pop(0) if len(scripted.answers) > 1 else scripted.answers[0]
                )
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def script(self, *answers: tuple[int, dict[str, str], Any]) -> None:
        self.answers = [
            (
                status,
                {"Content-Type": "application/json", **headers},
                body if isinstance(body, bytes) else json.dumps(body).encode(),
            )
            for status, headers, body in answers
        ]
        self.seen.clear()


def unavailable(status: int = 503, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    return (
        status,
        headers or {},
        {"errors": [{"message": "Under pressure", "extensions": {"code": "SERVICE_UNAVAILABLE"}}]},
    )


OK_ROWS = (200, {}, {"data": [{"id": 1, "title": "ok"}]})


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    fake = Scripted()
    threading.Thread(target=fake.server.serve_forever, daemon=True).start()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def fake_client(fake: Scripted, sleeps: list[float], retries: int = 3) -> DirectusClient:
    return DirectusClient(fake.url, "secret-token-42ab", "bookings", retries=retries, sleep=sleeps.append)


def test_503_twice_then_200_is_retried_with_backoff(
    scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scripted.script(unavailable(), unavailable(), OK_ROWS)
    sleeps: list[float] = []
    client = fake_client(scripted, sleeps)
    assert client.get_items(["1"]) == {"1": {"id": 1, "title": "ok"}}
    assert len(scripted.seen) == 3 and len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1] <= 4
    assert all(auth == "Bearer secret-token-42ab" for _, _, auth in scripted.seen)
    assert "secret-token-42ab" not in caplog.text and "Retrying" in caplog.text.title()


def test_a_persistent_503_is_unavailable_after_bounded_retries(
    scripted: Scripted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    scripted.script(unavailable())
    sleeps: list[float] = []
    with pytest.raises(DirectusUnavailable) as caught:
        fake_client(scripted, sleeps, retries=2).update_items([{"id": "1", "title": "x"}])
    assert len(scripted.seen) == 3 and len(sleeps) == 2
    assert caught.value.status == 503 and "SERVICE_UNAVAILABLE" in str(caught.value)
    assert "secret-token-42ab" not in str(caught.value) + caplog.text


def test_429_waits_as_long_as_retry_after_says(scripted: Scripted) -> None:
    scripted.script(unavailable(429, {"Retry-After": "7"}), OK_ROWS)
    sleeps: list[float] = []
    assert fake_client(scripted, sleeps).get_items(["1"])
    assert sleeps == [7.0]


def test_a_create_is_repeated_only_when_directus_surely_did_nothing(scripted: Scripted) -> None:
    # 500: the bulk create may have been committed; a repeat could duplicate bookings.
    scripted.script(unavailable(500), OK_ROWS)
    sleeps: list[float] = []
    with pytest.raises(DirectusUnavailable):
        fake_client(scripted, sleeps).create_items([{"title": "x"}])
    assert len(scripted.seen) == 1 and sleeps == []
    # 503 and 429 come from Directus's limiters before any work: repeat.
    scripted.script(unavailable(503), OK_ROWS)
    assert fake_client(scripted, sleeps).create_items([{"title": "x"}]) == [{"id": 1, "title": "ok"}]
    assert len(scripted.seen) == 2
    # An update is idempotent: a 500 is repeated.
    scripted.script(unavailable(500), OK_ROWS)
    assert fake_client(scripted, sleeps).update_items([{"id": 1, "title": "ok"}])
    assert [method for method, _, _ in scripted.seen] == ["PATCH", "PATCH"]


def test_unreachable_directus_is_unavailable_and_even_a_create_is_retried() -> None:
    sleeps: list[float] = []
    client = DirectusClient(
        "http://127.0.0.1:9", "secret-token-42ab", "bookings", retries=2, sleep=sleeps.append
    )
    with pytest.raises(DirectusUnavailable, match="cannot connect"):
        client.create_items([{"title": "x"}])  # refused before sending: nothing can have been created
    assert client.requests == 3 and len(sleeps) == 2


def test_an_answer_that_is_not_json_says_so(scripted: Scripted) -> None:
    scripted.script((200, {"Content-Type": "text/html"}, b"<html>the Directus app</html>"))
    with pytest.raises(DirectusError, match="not JSON; is DIRECTUS_URL"):
        fake_client(scripted, []).get_items(["1"])


def test_finds_items_by_a_field_with_long_values_and_splits_large_writes(
    directus_bookings: DirectusServer,
) -> None:
    """Google event ids may be 1024 characters long: lookups by google_event_id keep each URL under what
    Directus (Node) accepts. Bulk updates over Directus's 1 MB body limit are split; one item too large
    for it alone is a validation error (Directus: 400 INVALID_PAYLOAD), not an outage to retry."""
    counted = Counted()
    client = client_as(directus_bookings, "sync", counted)
    ids = [f"{n:03d}" + "v" * 1000 for n in range(12)]
    rows = client.create_items([{"title": f"e{n}", "start_datetime": START, "google_event_id": ids[n]}
                                for n in range(12)])  # fmt: skip
    directus_bookings.admin("POST", "/items/bookings", json={"title": "twin", "start_datetime": START,
                                                             "google_event_id": ids[0]}).raise_for_status()  # fmt: skip
    counted.calls.clear()
    found = client.find_items("google_event_id", [*ids, "absent"], fields=["title"])
    assert {value: row["title"] for value, row in found.items()} == {ids[n]: f"e{n}" for n in range(12)}
    assert str(found[ids[0]]["id"]) == str(rows[0]["id"])  # of two holding one id, the lowest key
    assert counted.calls == ["GET 200", "GET 200", "GET 200"]  # 6,000 characters of values a request

    long_text = "x" * 200_000  # six of these are over 1 MB together; two fit in one body
    counted.calls.clear()
    updated = client.update_items([{"id": r["id"], "description": long_text} for r in rows[:6]])
    assert len(updated) == 6 and counted.calls == ["PATCH 200"] * 3
    with pytest.raises(DirectusValidationError) as caught:
        client.update_items([{"id": rows[0]["id"], "description": "y" * 1_200_000}])
    assert caught.value.status == 400 and "too large" in str(caught.value)  # INVALID_PAYLOAD
