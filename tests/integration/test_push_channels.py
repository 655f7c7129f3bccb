"""Push notifications end to end against the HTTP fake of Google: the channel lifecycle through the real
Calendar client, and booking_hook's /notifications served for real (functions-framework's app on a werkzeug
server) with the fake delivering Google's messages to it."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from functions_framework import create_app
from werkzeug.serving import make_server

from calsync.bootstrap import App, set_app
from calsync.directus.memory import MemoryDirectus
from calsync.google.calendar import GoogleCalendar
from calsync.settings import Settings
from calsync.state.memory import MemorySyncStore
from calsync.sync.channels import channel_status, ensure_channel, stop_channels
from calsync.sync.ports import SyncContext
from tests.fakes.google import DEFAULT_TTL_S, GoogleFake
from tests.integration.test_google_fake import START

pytestmark = pytest.mark.google

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_SECRET = "hook-secret-for-tests-0001"


class RecordingApp(App):
    """The real App, whose sync requests are recorded instead of run (the fan-out's part)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, store=MemorySyncStore(), sleep=lambda _: None)
        self.requested: list[tuple[str, str]] = []
        self.fail_requests = 0

    def request_sync(self, connection: str, reason: str) -> None:
        if self.fail_requests:
            self.fail_requests -= 1
            raise RuntimeError("the fan-out is down")
        self.requested.append((connection, reason))


class Served:
    """booking_hook as functions-framework builds it, on a free port of 127.0.0.1, in this process."""

    def __init__(self) -> None:
        app = create_app("booking_hook", str(ROOT / "functions" / "booking_hook" / "main.py"))
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()


@dataclasses.dataclass
class Bench:
    fake: GoogleFake
    app: RecordingApp
    hook: Served

    @property
    def address(self) -> str:
        return self.hook.url + "/notifications"

    def calendar(self) -> GoogleCalendar:
        calendar = self.app.calendar()
        assert calendar is not None
        return calendar

    def context(self) -> SyncContext:
        return SyncContext(
            connection="default",
            config=self.app.config(),
            store=self.app.store,
            directus=MemoryDirectus(),
            calendar=self.calendar,
        )

    def notify(self, **headers: str) -> requests.Response:
        """A notification as anyone on the internet could send it."""
        return requests.post(self.address, headers=headers, timeout=5)


@pytest.fixture
def bench(google_fake: GoogleFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    for name in ("DIRECTUS_URL", "DIRECTUS_TOKEN", "NOTIFICATION_URL", "STORE", "TOKEN_STORE"):
        monkeypatch.delenv(name, raising=False)
    google_fake.allow_http_push = True
    settings = Settings(
        google_client_id=google_fake.client_id,
        google_client_secret=google_fake.client_secret,
        google_api_root=google_fake.api_root,
        google_token_uri=google_fake.token_uri,
        webhook_secret=WEBHOOK_SECRET,
        token_store=f"file:///{tmp_path}/refresh_token",
        store=f"sqlite:///{tmp_path}/unused.sqlite3",
    )
    app = RecordingApp(settings)
    app.tokens.put(google_fake.issue_refresh_token(), "default")
    set_app(app)
    hook = Served()
    yield Bench(google_fake, app, hook)
    hook.stop()
    set_app(None)


# -- the lifecycle through the real client ---------------------------------------------------------------


def test_open_renew_and_stop_through_the_real_client(bench: Bench) -> None:
    ctx, calendar = bench.context(), bench.calendar()
    opened = ensure_channel(ctx, calendar, bench.address)
    assert opened.action == "opened" and opened.channel is not None
    first = opened.channel
    (watched,) = bench.fake.channels()
    assert watched["id"] == first.channel_id and watched["resource_id"] == first.resource_id
    assert watched["token"] == first.token and watched["address"] == bench.address
    assert watched["event_types"] == frozenset(ctx.config.event_types)  # the import's eventTypes
    lifetime = first.expiration - first.created_at
    assert abs(lifetime.total_seconds() - DEFAULT_TTL_S) < 60  # Google's default, read from the answer
    assert ensure_channel(ctx, calendar, bench.address).action == "kept"

    renewed = ensure_channel(ctx, calendar, bench.address, now=first.expiration - timedelta(hours=2))
    assert renewed.action == "renewed" and renewed.stopped == 1 and renewed.channel is not None
    by_id = {c["id"]: c for c in bench.fake.channels()}
    assert by_id[first.channel_id]["stopped"] is True
    assert by_id[renewed.channel.channel_id]["stopped"] is False

    assert stop_channels(ctx, calendar) == 1
    assert all(c["stopped"] for c in bench.fake.channels())
    assert ctx.store.list_channels("default") == []


def test_a_watch_google_refuses_is_recorded_and_shown(bench: Bench) -> None:
    bench.fake.allow_http_push = False  # Google: "WebHook callback must be HTTPS"
    outcome = ensure_channel(bench.context(), bench.calendar(), bench.address)
    assert outcome.action == "failed"
    status = channel_status(bench.app.store, "default")
    assert status["push"] == "failing" and "push.webhookUrlNotHttps" in status["reason"]
    assert bench.fake.channels() == []


# -- the receiver ------------------------------------------------------------------------------------------


def test_sync_is_acknowledged_and_each_change_requests_one_sync(bench: Bench) -> None:
    ensure_channel(bench.context(), bench.calendar(), bench.address)
    (sync,) = bench.fake.wait_for_notifications(1)
    assert (sync.state, sync.status) == ("sync", 200)
    assert bench.app.requested == []

    bench.fake.create_event("Moved on the phone", START)
    sent = bench.fake.wait_for_notifications(2)
    assert [(n.state, n.status) for n in sent] == [("sync", 200), ("exists", 200)]
    assert bench.app.requested == [("default", "notification")]


def test_forged_notifications_change_nothing_and_cost_no_google_call(
    bench: Bench, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    channel = ensure_channel(bench.context(), bench.calendar(), bench.address).channel
    assert channel is not None
    bench.fake.wait_for_notifications(1)
    google_requests = bench.fake.count()
    genuine = {
        "X-Goog-Channel-ID": channel.channel_id,
        "X-Goog-Channel-Token": channel.token,
        "X-Goog-Resource-ID": channel.resource_id,
        "X-Goog-Resource-State": "exists",
        "X-Goog-Message-Number": "7",
    }
    forgeries = [
        dict(genuine, **{"X-Goog-Channel-ID": "6f1c9a4e-dead-4000-8000-000000000000"}),
        dict(genuine, **{"X-Goog-Channel-Token": channel.token[:-1] + "x"}),
        {k: v for k, v in genuine.items() if k != "X-Goog-Channel-Token"},
        dict(genuine, **{"X-Goog-Resource-ID": "someone-elses-resource"}),
        dict(genuine, **{"X-Goog-Channel-ID": "c" * 500}),
        {},
    ]
    for headers in forgeries:
        answer = bench.notify(**headers)
        assert answer.status_code == 200, headers
        assert answer.json()["status"] in ("unknown", "ignored")
    assert bench.app.requested == []
    assert bench.fake.count() == google_requests
    assert bench.notify(**genuine).json()["status"] == "sync_requested"  # and the real one still works
    assert bench.app.requested == [("default", "notification")]
    assert "wrong channel token" in caplog.text and channel.token not in caplog.text


def test_a_sync_request_that_fails_is_answered_503_and_google_sends_it_again(bench: Bench) -> None:
    ensure_channel(bench.context(), bench.calendar(), bench.address)
    bench.fake.wait_for_notifications(1)
    bench.app.fail_requests = 1
    bench.fake.create_event("While the fan-out was down", START)
    sent = bench.fake.wait_for_notifications(3)
    assert [(n.state, n.status, n.attempt) for n in sent[1:]] == [("exists", 503, 1), ("exists", 200, 2)]
    assert bench.app.requested == [("default", "notification")]


def test_duplicated_notifications_are_harmless(bench: Bench) -> None:
    ensure_channel(bench.context(), bench.calendar(), bench.address)
    bench.fake.wait_for_notifications(1)
    bench.fake.duplicate_notifications(1)
    bench.fake.create_event("Twice", START)
    sent = bench.fake.wait_for_notifications(3)
    assert [n.status for n in sent] == [200, 200, 200]
    # Each copy asks for a sync; the fan-out collapses requests for a connection already syncing.
    assert bench.app.requested == [("default", "notification")] * 2


def test_a_notification_on_a_replaced_channel_stops_it(bench: Bench) -> None:
    ctx, calendar = bench.context(), bench.calendar()
    first = ensure_channel(ctx, calendar, bench.address).channel
    assert first is not None
    bench.fake.wait_for_notifications(1)
    # Renewed, but the old channel's stop did not reach Google: both still send.
    real_stop = calendar.stop_channel
    calendar.stop_channel = lambda *_: None  # type: ignore[method-assign]
    renewed = ensure_channel(ctx, calendar, bench.address, now=first.expiration - timedelta(hours=1))
    calendar.stop_channel = real_stop  # type: ignore[method-assign]
    assert renewed.channel is not None
    ctx.store.put_channel(dataclasses.replace(first, state="replaced"))
    bench.fake.wait_for_notifications(2)  # the new channel's sync
    bench.app.requested.clear()

    bench.fake.create_event("Seen by both channels", START)
    sent = bench.fake.wait_for_notifications(4)
    assert all(n.status == 200 for n in sent)
    assert bench.app.requested == [("default", "notification")]  # from the active channel only
    by_id = {c["id"]: c for c in bench.fake.channels()}
    assert (
        by_id[first.channel_id]["stopped"] is True and by_id[renewed.channel.channel_id]["stopped"] is False
    )
    record = ctx.store.get_channel(first.channel_id)
    assert record is not None and record.state == "stopped"


def test_notifications_skip_the_webhook_secret_and_everything_else_still_needs_it(bench: Bench) -> None:
    hook = create_app("booking_hook", str(ROOT / "functions" / "booking_hook" / "main.py")).test_client()
    answer = hook.post(
        "/notifications", headers={"X-Goog-Channel-ID": "nope", "X-Goog-Resource-State": "sync"}
    )
    assert answer.status_code == 200 and answer.get_json()["status"] == "unknown"
    assert hook.get("/notifications").status_code == 405
    assert hook.post("/", json={}).status_code == 401
    assert hook.post("/other", json={}).status_code == 401
