"""Sync requests: the in-process adapter's collapsing, the Pub/Sub wire format both ways, the publisher's
retries and failures (on a fake session), and calendar_import's answers to push deliveries (Flask test
client, in-memory connections). The real emulator: tests/integration/test_pubsub_fanout.py."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import flask
import pytest
import requests

from calsync.bootstrap import set_app
from calsync.fanout import SyncRequest, build_sync_requests, covered
from calsync.fanout.inprocess import InProcessRequests
from calsync.fanout.pubsub import (
    PUBLISH_BATCH,
    MalformedEnvelope,
    PubSubRequests,
    message,
    parse_push_envelope,
)
from calsync.settings import load_settings
from calsync.state.store import ConnectionStatus
from calsync.web import entrypoints
from calsync.web.server import function_app
from tests.unit.memory_app import MemoryApp, MemoryConnection

TOPIC = "projects/calsync-test/topics/calsync-sync-requests"
NOW = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


# --- in process --------------------------------------------------------------------------------------


class Runs:
    """``run(connection)`` that records each call and, while ``gate`` is closed, blocks in it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.running = 0
        self.peak = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()

    def __call__(self, connection: str) -> None:
        with self._lock:
            self.calls.append(connection)
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.gate.wait(10)
        with self._lock:
            self.running -= 1


@pytest.fixture
def runs() -> Runs:
    return Runs()


def wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_in_process_a_burst_while_running_costs_one_more_run(runs: Runs) -> None:
    requests_ = InProcessRequests(runs, workers=2)
    runs.gate.clear()
    requests_.request(["alice"], "notification")
    wait_until(lambda: runs.running == 1)
    for _ in range(20):
        requests_.request(["alice"], "notification")
    runs.gate.set()
    assert requests_.wait_idle(5)
    assert runs.calls == ["alice", "alice"]
    requests_.close()


def test_in_process_requests_while_queued_are_covered_by_the_queued_run(runs: Runs) -> None:
    requests_ = InProcessRequests(runs, workers=1)
    runs.gate.clear()
    requests_.request(["alice"], "tick")
    wait_until(lambda: runs.running == 1)
    for _ in range(5):
        requests_.request(["bob"], "notification")  # bob waits for the only worker
    assert requests_.pending() == ["alice", "bob"]
    runs.gate.set()
    assert requests_.wait_idle(5)
    assert runs.calls == ["alice", "bob"]
    requests_.close()


def test_in_process_runs_on_a_bounded_pool_and_each_connection_once_at_a_time(runs: Runs) -> None:
    requests_ = InProcessRequests(runs, workers=3)
    runs.gate.clear()
    connections = [f"staff-{n}" for n in range(10)]
    requests_.request(connections + connections, "tick")
    wait_until(lambda: runs.running == 3)
    runs.gate.set()
    assert requests_.wait_idle(5)
    assert sorted(runs.calls) == connections, "a duplicate in one request is one run"
    assert runs.peak == 3
    requests_.close()


def test_in_process_returns_at_once_and_a_failing_run_does_not_stop_the_worker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def run(connection: str) -> None:
        calls.append(connection)
        if connection == "broken":
            raise RuntimeError("a bug")

    requests_ = InProcessRequests(run, workers=1)
    started = time.monotonic()
    requests_.request(["broken", "alice"], "tick")
    assert time.monotonic() - started < 0.5
    assert requests_.wait_idle(5)
    assert calls == ["broken", "alice"]
    assert any(r.levelno == logging.ERROR and "requested sync failed" in r.message for r in caplog.records)
    requests_.close()
    requests_.request(["alice"], "late")  # closed: ignored, not raised
    assert calls == ["broken", "alice"]


def test_settings_choose_the_adapter() -> None:
    assert isinstance(build_sync_requests(load_settings(), run=lambda c: None), InProcessRequests)
    chosen = build_sync_requests(load_settings(pubsub_topic=TOPIC), run=lambda c: None,
                                 emulator_host="127.0.0.1:8085")  # fmt: skip
    assert isinstance(chosen, PubSubRequests)
    assert (chosen.topic, chosen.endpoint) == (TOPIC, "http://127.0.0.1:8085")


def test_the_emulator_host_comes_from_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8123")
    chosen = build_sync_requests(load_settings(pubsub_topic=TOPIC), run=lambda c: None)
    assert isinstance(chosen, PubSubRequests) and chosen.endpoint == "http://127.0.0.1:8123"
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")
    chosen = build_sync_requests(load_settings(pubsub_topic=TOPIC), run=lambda c: None)
    assert isinstance(chosen, PubSubRequests) and chosen.endpoint == "https://pubsub.googleapis.com"


# --- the wire format ---------------------------------------------------------------------------------


def envelope(data: Any = None, attributes: Any = None, **message_fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messageId": "17", "publishTime": "2030-03-01T08:00:00Z", **message_fields}
    if data is not None:
        body["data"] = data if isinstance(data, str) else base64.b64encode(json.dumps(data).encode()).decode()
    if attributes is not None:
        body["attributes"] = attributes
    return {"message": body, "subscription": "projects/calsync-test/subscriptions/calsync-sync-requests"}


def pushed(msg: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What a push subscription delivers for a message we published."""
    return {"message": {**msg, "messageId": "42"}, "subscription": "projects/p/subscriptions/s", **extra}


def test_a_published_message_reads_back_as_the_same_request() -> None:
    request = parse_push_envelope(pushed(message("alice", "notification", NOW), deliveryAttempt=3))
    assert request == SyncRequest("alice", "notification", NOW, message_id="42", delivery_attempt=3)
    msg = message("alice", "tick", NOW)
    assert msg["attributes"] == {"connection": "alice", "reason": "tick"}
    assert json.loads(base64.b64decode(msg["data"])) == {
        "connection": "alice", "reason": "tick", "requested_at": NOW.isoformat()}  # fmt: skip


def test_attributes_alone_name_the_connection() -> None:
    request = parse_push_envelope(envelope(attributes={"connection": "bob"}))
    assert request is not None and (request.connection, request.requested_at) == ("bob", None)


@pytest.mark.parametrize("body", [{}, {"status": "tick"}, [], "text", None, 3])
def test_anything_else_is_not_a_push(body: Any) -> None:
    assert parse_push_envelope(body) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"subscription": "projects/p/subscriptions/s"}, "without a message"),
        ({"message": "alice"}, "without a message"),
        (envelope(), "no connection"),
        (envelope(data="%%%not base64"), "not base64"),
        (envelope(data=base64.b64encode(b"not json").decode()), "not base64 of a JSON object"),
        (envelope(data=["alice"]), "not a JSON object"),
        (envelope(data={"connection": "Alice Smith"}), "not a connection id"),
        (envelope(data={"connection": 7}), "not a connection id"),
        (envelope(data={"connection": "alice"}, attributes={"connection": "bob"}), "different connections"),
        (envelope(attributes=["connection", "alice"]), "attributes must be an object"),
        ({"message": {"data": 12, "messageId": "1"}}, "base64 string"),
    ],
)
def test_a_malformed_push_names_its_problem(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(MalformedEnvelope, match=problem):
        parse_push_envelope(body)


def status(cycle: str = "ok", finished: datetime = NOW, duration: float = 2.0) -> ConnectionStatus:
    return ConnectionStatus("alice", "connected", last_cycle_at=finished,
                            last_cycle={"status": cycle, "duration": duration})  # fmt: skip


@pytest.mark.parametrize(
    ("last", "requested_at", "expected"),
    [
        (status(), NOW - timedelta(seconds=3), True),  # the cycle started (NOW - 2 s) after the request
        (status(), NOW - timedelta(seconds=2), True),
        (status(), NOW - timedelta(seconds=1), False),  # made while that cycle ran: it may have missed it
        (status(), NOW + timedelta(seconds=1), False),
        (status("error"), NOW - timedelta(minutes=5), False),  # a failed cycle covers nothing
        (status(), None, False),
        (ConnectionStatus("alice"), NOW - timedelta(minutes=5), False),
    ],
)
def test_a_request_is_covered_by_a_successful_cycle_that_started_after_it(
    last: ConnectionStatus, requested_at: datetime | None, expected: bool
) -> None:
    assert covered(last, requested_at) is expected


# --- the publisher -----------------------------------------------------------------------------------


class FakeSession(requests.Session):
    """Answers publish calls with the given statuses in turn (then 200); records the bodies."""

    def __init__(self, statuses: list[int | Exception] | None = None) -> None:
        super().__init__()
        self.statuses = list(statuses or [])
        self.posts: list[tuple[str, dict[str, Any]]] = []

    def post(self, url: Any, data: Any = None, json: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.posts.append((url, json))
        outcome = self.statuses.pop(0) if self.statuses else 200
        if isinstance(outcome, Exception):
            raise outcome
        response = requests.Response()
        response.status_code = outcome
        response._content = b'{"messageIds": []}' if outcome == 200 else b'{"error": {"message": "no"}}'
        return response


def publisher(session: FakeSession) -> PubSubRequests:
    return PubSubRequests(TOPIC, session=lambda: session, clock=lambda: NOW, sleep=lambda s: None)


def test_one_message_per_connection_in_one_publish_call() -> None:
    session = FakeSession()
    publisher(session).request(["alice", "bob", "alice"], "tick")
    assert len(session.posts) == 1
    url, body = session.posts[0]
    assert url == f"https://pubsub.googleapis.com/v1/{TOPIC}:publish"
    assert [m["attributes"]["connection"] for m in body["messages"]] == ["alice", "bob"]
    assert body["messages"][0] == message("alice", "tick", NOW)


def test_more_than_a_publish_call_holds_go_in_several() -> None:
    session = FakeSession()
    publisher(session).request([f"staff-{n}" for n in range(PUBLISH_BATCH + 5)], "tick")
    assert [len(body["messages"]) for _url, body in session.posts] == [PUBLISH_BATCH, 5]


def test_a_passing_failure_is_retried() -> None:
    session = FakeSession([503, requests.ConnectionError("reset"), 429])
    publisher(session).request(["alice"], "notification")
    assert len(session.posts) == 4


@pytest.mark.parametrize("statuses", [[403], [404], [503, 503, 503, 503, 503]])
def test_a_failure_is_logged_never_raised(
    statuses: list[int | Exception], caplog: pytest.LogCaptureFixture
) -> None:
    session = FakeSession(statuses)
    publisher(session).request(["alice"], "notification")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "could not publish sync requests" in errors[0].message
    assert errors[0].calsync_fields["failed"] == 1  # type: ignore[attr-defined]


def test_nothing_to_request_publishes_nothing() -> None:
    session = FakeSession()
    publisher(session).request([], "tick")
    assert session.posts == []


# --- calendar_import's answers to push deliveries ------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[flask.testing.FlaskClient, MemoryConnection]]:
    alice = MemoryConnection("alice")
    app = MemoryApp(alice, MemoryConnection("default"))  # "default": the scheduler tick's, today
    set_app(app)
    yield function_app("calendar_import", entrypoints.calendar_import).test_client(), alice
    set_app(None)


def deliver(client: flask.testing.FlaskClient, connection: str, requested_at: datetime) -> Any:
    return client.post("/", json=pushed(message(connection, "notification", requested_at)))


def test_a_push_runs_that_connections_cycle(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, alice = served
    alice.google.create_event("Dentist")
    response = deliver(client, "alice", datetime.now(UTC))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "ok" and response.get_json()["connection"] == "alice"
    assert alice.cycles == 1
    assert [row["title"] for row in alice.directus.rows().values()] == ["Dentist"]


def test_a_redelivery_after_the_cycle_is_covered(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, alice = served
    requested_at = datetime.now(UTC) - timedelta(seconds=1)
    assert deliver(client, "alice", requested_at).get_json()["status"] == "ok"
    again = deliver(client, "alice", requested_at)
    assert (again.status_code, again.get_json()["status"]) == (200, "covered")
    assert alice.cycles == 1
    later = deliver(client, "alice", datetime.now(UTC))
    assert later.get_json()["status"] == "ok" and alice.cycles == 2


def test_busy_is_acknowledged_as_collapsed(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, alice = served
    assert alice.store.acquire_lease("alice/import", "another-instance", timedelta(minutes=9))
    response = deliver(client, "alice", datetime.now(UTC))
    assert response.status_code == 200
    assert response.get_json() == {"status": "busy", "collapsed": True, "connection": "alice"}
    assert alice.cycles == 0


def test_a_retryable_failure_answers_5xx(served: tuple[flask.testing.FlaskClient, MemoryConnection]) -> None:
    client, alice = served
    alice.google.fail_next(20)
    response = deliver(client, "alice", datetime.now(UTC))
    assert response.status_code == 503, response.get_json()
    assert response.get_json()["status"] == "error"


def test_an_unknown_connection_is_acknowledged(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, _alice = served
    response = deliver(client, "gone", datetime.now(UTC))
    assert (response.status_code, response.get_json()["status"]) == (200, "unknown_connection")


def test_a_malformed_push_is_a_400_naming_the_problem(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, alice = served
    response = client.post("/", json=envelope(data={"connection": "Not An Id"}))
    assert response.status_code == 400
    assert "malformed Pub/Sub push" in response.get_json()["error"]
    assert "not a connection id" in response.get_json()["error"]
    broken = client.post("/", data=b'{"message": ', content_type="application/json")
    assert broken.status_code == 400
    assert alice.cycles == 0


def test_the_scheduler_tick_still_runs_the_cycle(
    served: tuple[flask.testing.FlaskClient, MemoryConnection],
) -> None:
    client, _alice = served
    for response in (client.post("/", json={}), client.post("/")):
        assert response.status_code != 400, response.get_json()
        assert "connection" not in response.get_json(), "the tick is not a push"


# --- App.run_connection: a request made while the connection's cycle runs makes it pull once more ----


def test_a_request_that_finds_the_cycle_running_makes_that_cycle_pull_once_more() -> None:
    alice = MemoryConnection("alice")
    app = MemoryApp(alice)
    alice.gate.clear()  # the first cycle waits inside, holding the connection's lease
    first: list[Any] = []
    running = threading.Thread(target=lambda: first.append(app.run_connection("alice")))
    running.start()
    wait_until(lambda: alice.cycles == 1)
    alice.google.create_event("Changed while the cycle ran")  # what the second request is about
    assert app.run_connection("alice").status == "busy"  # answered at once
    alice.gate.set()
    running.join(10)
    assert first and first[0].status == "ok"
    assert alice.cycles == 2  # the running cycle pulled once more, and no more than once
    assert [r["title"] for r in alice.directus.rows().values()] == ["Changed while the cycle ran"]
    assert app.run_connection("alice").status == "ok" and alice.cycles == 3  # a later request: its own cycle


class Permits:
    """A gate that lets one cycle through per ``allow()`` (MemoryConnection's cycles wait on ``gate``)."""

    def __init__(self) -> None:
        self._permits = threading.Semaphore(0)

    def allow(self) -> None:
        self._permits.release()

    def wait(self, timeout: float | None = None) -> bool:
        return self._permits.acquire(timeout=timeout)


def test_requests_that_keep_coming_while_the_cycle_reruns_are_pulled_too() -> None:
    alice = MemoryConnection("alice")
    app = MemoryApp(alice)
    gate = Permits()
    alice.gate = gate  # type: ignore[assignment]
    results: list[Any] = []
    running = threading.Thread(target=lambda: results.append(app.run_connection("alice")))
    running.start()
    wait_until(lambda: alice.cycles == 1)
    alice.google.create_event("During the first cycle")
    assert app.run_connection("alice").status == "busy"
    gate.allow()  # the first cycle ends; it was asked again: it runs once more
    wait_until(lambda: alice.cycles == 2)
    alice.google.create_event("During the second cycle")
    assert app.run_connection("alice").status == "busy"
    gate.allow()  # the second ends; asked again meanwhile: a third
    wait_until(lambda: alice.cycles == 3)
    gate.allow()
    running.join(10)
    assert results and results[0].status == "ok" and alice.cycles == 3
    titles = sorted(r["title"] for r in alice.directus.rows().values())
    assert titles == ["During the first cycle", "During the second cycle"]
