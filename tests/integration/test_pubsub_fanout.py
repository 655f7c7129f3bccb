"""Sync requests through the real Pub/Sub emulator: PubSubRequests publishes, a push subscription (with the
retry policy and dead-letter topic of terraform/pubsub.tf) delivers to calendar_import served over HTTP, and
calendar_import runs the connection's cycle on in-memory ports.

The emulator pushes one or two messages at a time, as Pub/Sub's slow start does at first: a burst's
deliveries arrive while its first cycle runs (busy, collapsed) or after it (covered)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from werkzeug.serving import make_server

from calsync.bootstrap import set_app
from calsync.fanout.pubsub import PubSubRequests
from calsync.web import entrypoints
from calsync.web.server import function_app
from tests.parts.pubsub import PubSubEmulator, unique
from tests.unit.memory_app import MemoryApp, MemoryConnection

pytestmark = pytest.mark.slow

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass
class Delivery:
    connection: str | None
    message_id: str | None
    status: int
    answer: dict[str, Any]


@dataclass
class Recorder:
    """WSGI middleware in front of calendar_import: records each push and its answer; ``lose_answers``
    replaces that many answers (after the handler ran) by a 502, as a dropped connection would look."""

    app: WsgiApp
    deliveries: list[Delivery] = field(default_factory=list)
    lose_answers: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        environ["wsgi.input"] = io.BytesIO(raw)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen["status"] = int(status.split(maxsplit=1)[0])
            seen["headers"] = headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        try:
            message = json.loads(raw)["message"]
            connection = message.get("attributes", {}).get("connection")
            message_id = message.get("messageId")
        except (ValueError, KeyError, TypeError, AttributeError):
            connection = message_id = None
        status = seen["status"]
        with self.lock:
            lost = self.lose_answers > 0
            self.lose_answers -= int(lost)
            self.deliveries.append(Delivery(connection, message_id, status, json.loads(body or b"{}")))
        if lost:
            start_response("502 Bad Gateway", [("Content-Length", "0")])
            return [b""]
        start_response(f"{status} X", seen["headers"])
        return [body]

    def answered(self, status: int | None = None) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if status is None or d.status == status]


@dataclass
class Fanout:
    emulator: PubSubEmulator
    alice: MemoryConnection
    bob: MemoryConnection
    recorder: Recorder
    topic: str
    dead_letters: str
    publisher: PubSubRequests


@pytest.fixture
def fanout(pubsub_emulator: PubSubEmulator) -> Iterator[Fanout]:
    alice, bob = MemoryConnection("alice", cycle_seconds=0.3), MemoryConnection("bob")
    set_app(MemoryApp(alice, bob))
    recorder = Recorder(function_app("calendar_import", entrypoints.calendar_import))  # type: ignore[arg-type]
    server = make_server("127.0.0.1", 0, recorder, threaded=True)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    emulator = pubsub_emulator
    topic = emulator.topic(unique("sync-requests"))
    dead_letter_topic = emulator.topic(unique("sync-requests-dead"))
    dead_letters = emulator.pull_subscription(unique("dead-letters"), dead_letter_topic)
    subscription = emulator.push_subscription(
        unique("calendar-import"), topic, f"http://127.0.0.1:{server.server_port}/",
        dead_letter_topic=dead_letter_topic, max_delivery_attempts=5,
    )  # fmt: skip
    try:
        yield Fanout(emulator, alice, bob, recorder, topic, dead_letters,
                     PubSubRequests(topic, emulator_host=emulator.host))  # fmt: skip
    finally:
        for path in (subscription, dead_letters, topic, dead_letter_topic):
            emulator.delete(path)
        server.shutdown()
        set_app(None)


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> float:
    """Seconds until ``condition()`` is true; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.01)
    return time.monotonic() - started


def titles(connection: MemoryConnection) -> list[str]:
    return sorted(row["title"] for row in connection.directus.rows().values())


def test_a_published_request_runs_that_connections_cycle(fanout: Fanout) -> None:
    fanout.alice.google.create_event("Dentist")
    started = time.monotonic()
    fanout.publisher.request(["alice"], "notification")
    wait_for(lambda: titles(fanout.alice) == ["Dentist"], what="the event in Directus")
    print(f"\npublish -> booking in Directus: {time.monotonic() - started:.2f} s")
    wait_for(fanout.recorder.answered, what="the answer")
    [delivery] = fanout.recorder.answered()
    assert (delivery.connection, delivery.status, delivery.answer["status"]) == ("alice", 200, "ok")
    assert fanout.alice.cycles == 1 and fanout.bob.cycles == 0


def test_a_tick_publishes_one_request_per_connection(fanout: Fanout) -> None:
    fanout.alice.google.create_event("Dentist")
    fanout.bob.google.create_event("Haircut")
    fanout.publisher.request(["alice", "bob"], "tick")
    wait_for(lambda: len(fanout.recorder.answered(200)) == 2, what="both deliveries")
    assert (titles(fanout.alice), titles(fanout.bob)) == (["Dentist"], ["Haircut"])


def test_a_burst_of_20_requests_costs_at_most_two_cycles(fanout: Fanout) -> None:
    fanout.alice.google.create_event("Dentist")
    fanout.alice.gate.clear()  # a cycle that starts now lasts until the whole burst is published
    for _ in range(20):
        fanout.publisher.request(["alice"], "notification")
    fanout.alice.gate.set()
    wait_for(lambda: len(fanout.recorder.answered()) >= 20, what="20 deliveries")
    time.sleep(0.5)  # nothing comes back: every delivery was acknowledged
    answers = fanout.recorder.answered()
    assert len(answers) == 20 and {d.status for d in answers} == {200}
    assert fanout.alice.cycles <= 2, [d.answer["status"] for d in answers]
    assert {d.answer["status"] for d in answers} <= {"ok", "busy", "covered"}
    assert titles(fanout.alice) == ["Dentist"]


def test_a_redelivery_of_a_request_already_served_is_harmless(fanout: Fanout) -> None:
    fanout.alice.google.create_event("Dentist")
    fanout.recorder.lose_answers = 1  # the cycle runs, its answer never reaches Pub/Sub
    fanout.publisher.request(["alice"], "notification")
    wait_for(lambda: len(fanout.recorder.answered()) == 2, what="the redelivery")
    first, again = fanout.recorder.answered()
    assert first.message_id == again.message_id
    assert (first.answer["status"], again.answer["status"]) == ("ok", "covered")
    assert fanout.alice.cycles == 1
    assert titles(fanout.alice) == ["Dentist"]
    assert len(fanout.alice.google.events()) == 1


def test_a_failure_a_retry_fixes_answers_5xx_and_pubsub_retries(fanout: Fanout) -> None:
    fanout.alice.google.create_event("Dentist")
    fanout.alice.google.fail_next(1000)  # Google is down
    fanout.publisher.request(["alice"], "notification")
    wait_for(lambda: fanout.recorder.answered(503), what="a 503")
    fanout.alice.google.clear_faults()  # Google is back
    wait_for(lambda: titles(fanout.alice) == ["Dentist"], what="the retried cycle")
    statuses = [d.status for d in fanout.recorder.answered()]
    assert statuses[0] == 503 and statuses[-1] == 200, statuses


def test_a_malformed_push_is_refused_and_ends_in_the_dead_letter_topic(fanout: Fanout) -> None:
    data = base64.b64encode(json.dumps({"connection": "Not An Id"}).encode()).decode()
    fanout.emulator.call("POST", f"{fanout.topic}:publish", {"messages": [{"data": data}]})
    wait_for(lambda: len(fanout.recorder.answered()) == 5, what="5 delivery attempts")
    assert {d.status for d in fanout.recorder.answered()} == {400}
    assert "not a connection id" in fanout.recorder.answered()[0].answer["error"]
    dead: list[dict[str, Any]] = []
    wait_for(lambda: dead.extend(fanout.emulator.pull(fanout.dead_letters)) or dead, what="the dead letter")
    assert dead[0]["data"] == data
    assert dead[0]["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"
    assert fanout.alice.cycles == 0


def test_an_unreachable_pubsub_costs_the_caller_nothing(fanout: Fanout) -> None:
    publisher = PubSubRequests(fanout.topic, emulator_host="127.0.0.1:9", sleep=lambda s: None)
    started = time.monotonic()
    publisher.request(["alice"], "notification")  # logged, not raised
    assert time.monotonic() - started < 5
