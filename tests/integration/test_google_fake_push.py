"""Push notifications from the Google fake (events.watch, channels.stop, webhook messages), through the real
client library and a real HTTP receiver."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
from googleapiclient.errors import HttpError
from werkzeug.serving import make_server

from tests.fakes.google import DEFAULT_TTL_S, RETRIES, GoogleFake, Notification
from tests.integration.test_google_fake import START, event_body, http_error, service

pytestmark = pytest.mark.google


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps what it was sent."""

    def __init__(self, delay: float = 0.0, statuses: tuple[int, ...] = ()) -> None:
        self.delay = delay
        self.statuses = list(statuses)  # the answers to give, in order; then 200
        self.got: list[tuple[dict[str, str], bytes]] = []
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        time.sleep(self.delay)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            k[5:].replace("_", "-").title(): str(v) for k, v in environ.items() if k.startswith("HTTP_")
        }
        self.got.append((headers, body))
        status = self.statuses.pop(0) if self.statuses else 200
        start_response(f"{status} X", [("Content-Length", "0")])
        return [b""]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def states(self) -> list[tuple[str, str]]:
        return [(h["X-Goog-Resource-State"], h["X-Goog-Message-Number"]) for h, _ in self.got]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    hook._thread.start()
    yield hook
    hook._server.shutdown()


def watch_body(receiver: Receiver, channel_id: str = "channel-1", **extra: Any) -> dict[str, Any]:
    return {"id": channel_id, "type": "web_hook", "address": receiver.url, **extra}


def test_watch_sends_sync_then_exists_after_each_change(google_fake: GoogleFake, receiver: Receiver) -> None:
    google_fake.allow_http_push = True
    svc = service(google_fake)
    before = time.time()
    channel = (
        svc.events()
        .watch(calendarId="primary", body=watch_body(receiver, token="secret-token", params={"ttl": "3600"}))
        .execute()
    )
    assert channel["kind"] == "api#channel" and channel["id"] == "channel-1"
    assert channel["token"] == "secret-token" and channel["resourceUri"].endswith("/events?alt=json")
    assert before + 3599 <= int(channel["expiration"]) / 1000 <= time.time() + 3601
    google_fake.wait_for_notifications(1)

    svc.events().insert(calendarId="primary", body=event_body("pushed0001")).execute()
    google_fake.create_event("By the owner", START + timedelta(hours=2))
    google_fake.wait_for_notifications(3)
    assert receiver.states() == [("sync", "1"), ("exists", "2"), ("exists", "3")]
    headers, body = receiver.got[0]
    assert body == b""
    assert headers["X-Goog-Channel-Id"] == "channel-1"
    assert headers["X-Goog-Channel-Token"] == "secret-token"
    assert headers["X-Goog-Resource-Id"] == channel["resourceId"]
    assert headers["X-Goog-Resource-Uri"] == channel["resourceUri"]
    expiry = parsedate_to_datetime(headers["X-Goog-Channel-Expiration"]).timestamp()
    assert abs(expiry - int(channel["expiration"]) / 1000) < 1

    second = svc.events().watch(calendarId="primary", body=watch_body(receiver, "channel-2")).execute()
    assert second["resourceId"] == channel["resourceId"]  # the same resource watched twice
    assert "token" not in second
    assert abs(int(second["expiration"]) / 1000 - time.time() - DEFAULT_TTL_S) < 5


def test_watch_validates_the_channel(google_fake: GoogleFake, receiver: Receiver) -> None:
    events = service(google_fake).events()
    with pytest.raises(HttpError) as insecure:
        events.watch(calendarId="primary", body=watch_body(receiver)).execute()
    assert http_error(insecure) == (400, "push.webhookUrlNotHttps")
    google_fake.allow_http_push = True
    for body in (
        watch_body(receiver, "x" * 65),
        watch_body(receiver, token="t" * 257),
        watch_body(receiver, type="email"),
        dict(watch_body(receiver), address="http://example.com/hook"),  # only loopback may be http
    ):
        with pytest.raises(HttpError) as refused:
            events.watch(calendarId="primary", body=body).execute()
        assert http_error(refused)[0] == 400
    events.watch(calendarId="primary", body=watch_body(receiver, "c" * 64, token="t" * 256)).execute()
    with pytest.raises(HttpError) as duplicate:
        events.watch(calendarId="primary", body=watch_body(receiver, "c" * 64)).execute()
    assert http_error(duplicate) == (400, "channelIdNotUnique")
    with pytest.raises(HttpError) as hidden:
        events.watch(calendarId="someone@example.org", body=watch_body(receiver, "other")).execute()
    assert http_error(hidden) == (404, "notFound")


def test_channels_stop_ends_delivery(google_fake: GoogleFake, receiver: Receiver) -> None:
    google_fake.allow_http_push = True
    svc = service(google_fake)
    channel = svc.events().watch(calendarId="primary", body=watch_body(receiver)).execute()
    google_fake.wait_for_notifications(1)
    stop = {"id": channel["id"], "resourceId": channel["resourceId"]}
    assert svc.channels().stop(body=stop).execute() == ""
    google_fake.create_event("After the stop", START)
    for unknown in (stop, {"id": "nosuchchannel", "resourceId": channel["resourceId"]}):
        with pytest.raises(HttpError) as missing:
            svc.channels().stop(body=unknown).execute()
        assert http_error(missing) == (404, "notFound")
    time.sleep(0.2)
    assert receiver.states() == [("sync", "1")]
    assert google_fake.channels()[0]["stopped"] is True


def test_notifications_can_be_dropped_duplicated_and_channels_expired(
    google_fake: GoogleFake, receiver: Receiver
) -> None:
    google_fake.allow_http_push = True
    svc = service(google_fake)
    channel = svc.events().watch(calendarId="primary", body=watch_body(receiver)).execute()
    google_fake.drop_notifications(1)
    google_fake.create_event("Lost", START)
    google_fake.duplicate_notifications(1)
    google_fake.create_event("Twice", START)
    google_fake.wait_for_notifications(4)
    assert receiver.states() == [("sync", "1"), ("exists", "3"), ("exists", "3")]
    dropped = [n for n in google_fake.notifications() if n.status == -1]
    assert dropped == [Notification(channel["id"], "exists", 2, -1)]

    google_fake.expire_channels()
    google_fake.create_event("Too late", START)
    time.sleep(0.2)
    assert len(receiver.got) == 3
    assert google_fake.channels()[0]["expired"] is True


def test_delivery_never_blocks_the_api_call(google_fake: GoogleFake) -> None:
    slow = Receiver(delay=0.6)
    slow._thread.start()
    try:
        google_fake.allow_http_push = True
        events = service(google_fake).events()
        events.list(calendarId="primary").execute()  # the token refresh is not what is timed
        started = time.monotonic()
        events.watch(calendarId="primary", body=watch_body(slow)).execute()
        events.insert(calendarId="primary", body=event_body("fastinsrt1")).execute()
        assert time.monotonic() - started < 0.5
        google_fake.wait_for_notifications(2, timeout=5)
        assert [n.status for n in google_fake.notifications()] == [200, 200]
    finally:
        slow._server.shutdown()


def test_a_channel_watches_only_its_event_types(google_fake: GoogleFake, receiver: Receiver) -> None:
    google_fake.allow_http_push = True
    events = service(google_fake).events()
    events.watch(calendarId="primary", eventTypes=["focusTime"], body=watch_body(receiver)).execute()
    google_fake.create_event("Plain", START)
    google_fake.create_event("Focus", START, event_type="focusTime")
    google_fake.wait_for_notifications(2)
    time.sleep(0.1)
    assert receiver.states() == [("sync", "1"), ("exists", "2")]


def test_google_retries_a_message_answered_5xx_and_nothing_else(google_fake: GoogleFake) -> None:
    flaky = Receiver(statuses=(503, 500, 404))
    flaky._thread.start()
    try:
        google_fake.allow_http_push = True
        events = service(google_fake).events()
        channel = events.watch(calendarId="primary", body=watch_body(flaky)).execute()
        sent = google_fake.wait_for_notifications(3, timeout=5)
        # sync: 503, again 500, again 404 (not retried: a failure, but final)
        assert [(n.number, n.status, n.attempt) for n in sent] == [(1, 503, 1), (1, 500, 2), (1, 404, 3)]
        google_fake.create_event("After", START)
        google_fake.wait_for_notifications(4)
        time.sleep(0.3)
        assert [n.status for n in google_fake.notifications(channel["id"])] == [503, 500, 404, 200]
    finally:
        flaky._server.shutdown()


def test_google_gives_up_after_its_retries(google_fake: GoogleFake) -> None:
    down = Receiver(statuses=(503,) * 10)
    down._thread.start()
    try:
        google_fake.allow_http_push = True
        service(google_fake).events().watch(calendarId="primary", body=watch_body(down)).execute()
        sent = google_fake.wait_for_notifications(RETRIES + 1, timeout=5)
        time.sleep(1.0)
        assert len(google_fake.notifications()) == RETRIES + 1
        assert {n.number for n in sent} == {1} and [n.attempt for n in sent] == list(range(1, RETRIES + 2))
    finally:
        down._server.shutdown()
