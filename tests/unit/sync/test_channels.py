"""The push channel lifecycle on the in-memory calendar and store: open, keep, renew (new first, then stop),
retry a failed stop, turn off, refuse, disconnect; and the status it shows."""

from __future__ import annotations

import dataclasses
import logging
from datetime import timedelta

import pytest

from calsync import logs
from calsync.directus.memory import MemoryDirectus
from calsync.google.errors import (
    GoogleAccessRevoked,
    GoogleBadRequest,
    GoogleQuotaExceeded,
    GoogleRetryableError,
)
from calsync.google.memory import CHANNEL_TTL, MemoryCalendar
from calsync.state.memory import MemorySyncStore
from calsync.sync.channels import (
    NOT_HTTPS,
    NOT_SET,
    RETRY_REFUSED_AFTER,
    ChannelOutcome,
    channel_status,
    ensure_channel,
    stop_channels,
    stop_retired,
)
from calsync.sync.ports import SyncConfig, SyncContext
from tests.unit.sync.world import Clock

ADDRESS = "https://hooks.example.com/booking_hook/notifications"


class Setup:
    def __init__(self, **config: object) -> None:
        self.clock = Clock()
        self.store = MemorySyncStore(self.clock)
        self.calendar = MemoryCalendar(clock=self.clock)
        self.ctx = SyncContext(
            connection="staff-1",
            config=SyncConfig(**config),  # type: ignore[arg-type]
            store=self.store,
            directus=MemoryDirectus(),
            calendar=lambda: self.calendar,
            clock=self.clock,
        )

    def ensure(self, address: str | None = ADDRESS) -> ChannelOutcome:
        return ensure_channel(self.ctx, self.calendar, address)

    def states(self) -> list[tuple[str, str]]:
        return [(c.channel_id, c.state) for c in self.store.list_channels("staff-1")]


@pytest.fixture
def setup() -> Setup:
    return Setup(event_types=("default", "focusTime"))


def test_the_first_call_opens_a_channel_with_the_imports_event_types_and_a_secret(setup: Setup) -> None:
    outcome = setup.ensure()
    assert outcome.action == "opened" and outcome.channel is not None
    record = outcome.channel
    watched = setup.calendar.channels[record.channel_id]
    assert watched["address"] == ADDRESS and watched["event_types"] == ("default", "focusTime")
    assert watched["token"] == record.token and len(record.token) >= 43  # token_urlsafe(32)
    assert record.resource_id == watched["resource_id"] and record.expiration == watched["expiration"]
    assert setup.store.get_channel(record.channel_id) == record
    assert record.calendar_id == "primary" and record.state == "active"
    assert logs.scrub(f"token={record.token}") == "token=" + logs.REDACTED  # registered as a secret
    status = channel_status(setup.store, "staff-1")
    assert status["push"] == "on" and status["reason"] is None
    assert status["channel_expires_at"] == record.expiration.isoformat()
    assert status["channel_state"].startswith("on until ")


def test_a_live_channel_is_kept_without_any_google_call(setup: Setup) -> None:
    first = setup.ensure().channel
    requests = setup.calendar.requests
    setup.clock.advance((CHANNEL_TTL - timedelta(days=2)).total_seconds())
    outcome = setup.ensure()
    assert outcome.action == "kept" and outcome.channel == first
    assert setup.calendar.requests == requests


def test_a_channel_due_to_expire_is_replaced_new_first_then_the_old_stopped(setup: Setup) -> None:
    old = setup.ensure().channel
    assert old is not None
    setup.clock.advance((CHANNEL_TTL - timedelta(hours=23)).total_seconds())
    outcome = setup.ensure()
    assert outcome.action == "renewed" and outcome.stopped == 1
    new = outcome.channel
    assert new is not None and new.channel_id != old.channel_id and new.token != old.token
    assert setup.calendar.live_channels() == [new.channel_id]
    assert setup.calendar.channels[old.channel_id]["stopped"] is True
    assert dict(setup.states()) == {old.channel_id: "stopped", new.channel_id: "active"}


def test_a_failed_stop_leaves_the_old_channel_replaced_and_is_retried(setup: Setup) -> None:
    old = setup.ensure().channel
    assert old is not None
    setup.clock.advance((CHANNEL_TTL - timedelta(hours=1)).total_seconds())
    calls: list[str] = []
    real_stop = setup.calendar.stop_channel

    def failing_stop(channel_id: str, resource_id: str) -> None:
        calls.append(channel_id)
        raise GoogleRetryableError(503, "backendError", "Google Calendar channels.stop failed: 503")

    setup.calendar.stop_channel = failing_stop  # type: ignore[method-assign]
    outcome = setup.ensure()
    assert outcome.action == "renewed" and outcome.stopped == 0 and calls == [old.channel_id]
    stuck = setup.store.get_channel(old.channel_id)
    assert stuck is not None and stuck.state == "replaced" and "503" in (stuck.last_error or "")
    assert channel_status(setup.store, "staff-1")["channels"] == {"active": 1, "replaced": 1, "stopped": 0}

    setup.calendar.stop_channel = real_stop  # type: ignore[method-assign]
    again = setup.ensure()
    assert again.action == "kept" and again.stopped == 1
    done = setup.store.get_channel(old.channel_id)
    assert done is not None and done.state == "stopped" and done.last_error is None


def test_a_stop_google_no_longer_knows_counts_as_stopped(setup: Setup) -> None:
    old = setup.ensure().channel
    assert old is not None
    setup.calendar.channels[old.channel_id]["stopped"] = True  # stopped elsewhere meanwhile
    assert stop_retired(setup.store, setup.calendar, old, setup.clock())
    record = setup.store.get_channel(old.channel_id)
    assert record is not None and record.state == "stopped"


@pytest.mark.parametrize(
    ("address", "reason"),
    [(None, NOT_SET), ("", NOT_SET), ("http://hooks.example.com/n", NOT_HTTPS), ("ftp://x/y", NOT_HTTPS)],
)
def test_without_an_https_address_there_is_no_watch_and_status_says_why(
    setup: Setup, address: str | None, reason: str
) -> None:
    outcome = setup.ensure(address)
    assert outcome.action == "off" and outcome.reason == reason
    assert setup.calendar.requests == 0 and setup.calendar.channels == {}
    status = channel_status(setup.store, "staff-1")
    assert status["push"] == "off" and status["channel_state"] == reason


def test_turning_push_off_stops_the_channels_there_are(setup: Setup) -> None:
    channel = setup.ensure().channel
    assert channel is not None
    outcome = setup.ensure(None)
    assert outcome.action == "off" and outcome.stopped == 1
    assert setup.calendar.live_channels() == []


def test_a_new_address_calendar_or_filter_gets_a_new_channel_and_the_old_one_stops() -> None:
    setup = Setup()
    first = setup.ensure().channel
    assert first is not None
    moved = setup.ensure("https://new.example.com/booking_hook/notifications")
    assert moved.action == "opened" and moved.stopped == 1
    assert moved.channel is not None and setup.calendar.live_channels() == [moved.channel.channel_id]
    setup.ctx.config = dataclasses.replace(setup.ctx.config, event_types=("default", "outOfOffice"))
    refiltered = setup.ensure("https://new.example.com/booking_hook/notifications")
    assert refiltered.action == "opened" and refiltered.channel is not None
    assert setup.calendar.channels[refiltered.channel.channel_id]["event_types"] == ("default", "outOfOffice")
    assert setup.calendar.live_channels() == [refiltered.channel.channel_id]


def test_two_channels_opened_by_racing_instances_end_as_one(setup: Setup) -> None:
    first = setup.ensure().channel
    assert first is not None
    racer = dataclasses.replace(first, channel_id="racer-channel", created_at=setup.clock())
    setup.calendar.channels["racer-channel"] = dict(
        setup.calendar.channels[first.channel_id], id="racer-channel"
    )
    setup.store.put_channel(racer)
    outcome = setup.ensure()
    assert outcome.action == "kept" and outcome.stopped == 1
    assert [c for c, state in setup.states() if state == "active"] == [outcome.channel.channel_id]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "error",
    [
        GoogleQuotaExceeded(403, "quotaExceeded", "Google Calendar watch failed: 403 quotaExceeded"),
        GoogleBadRequest(400, "push.webhookUrlUnauthorized", "Google Calendar watch failed: 400 ..."),
        GoogleAccessRevoked(400, "invalid_grant", "Google refused to refresh the access token"),
    ],
)
def test_a_refused_watch_is_recorded_polling_goes_on_and_it_is_not_asked_again_at_once(
    setup: Setup, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    setup.calendar.fail_next(1, error)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        outcome = setup.ensure()
    assert outcome.action == "failed" and outcome.channel is None
    status = channel_status(setup.store, "staff-1")
    assert status["push"] == "failing" and str(error) in status["reason"]
    assert status["channel_state"].startswith("failing: Google refused the watch")
    requests = setup.calendar.requests
    assert setup.ensure().action == "waiting" and setup.calendar.requests == requests
    setup.clock.advance(RETRY_REFUSED_AFTER.total_seconds())
    assert setup.ensure().action == "opened"
    assert channel_status(setup.store, "staff-1")["push"] == "on"
    assert "push channel not opened" in caplog.text


def test_a_passing_google_failure_is_tried_again_at_the_next_call(setup: Setup) -> None:
    setup.calendar.fail_next(1)  # 503
    assert setup.ensure().action == "failed"
    assert setup.ensure().action == "opened"


def test_a_renewal_google_refuses_keeps_the_live_channel_and_says_so(setup: Setup) -> None:
    old = setup.ensure().channel
    setup.clock.advance((CHANNEL_TTL - timedelta(hours=2)).total_seconds())
    setup.calendar.fail_next(1, GoogleQuotaExceeded(403, "quotaExceeded", "403 quotaExceeded"))
    outcome = setup.ensure()
    assert outcome.action == "failed" and outcome.channel == old
    status = channel_status(setup.store, "staff-1")
    assert status["push"] == "on" and "renewal failed" in status["channel_state"]


def test_disconnect_stops_every_channel_and_forgets_them(setup: Setup) -> None:
    old = setup.ensure().channel
    assert old is not None
    setup.clock.advance((CHANNEL_TTL - timedelta(hours=1)).total_seconds())
    real_stop = setup.calendar.stop_channel
    setup.calendar.stop_channel = lambda *_: (_ for _ in ()).throw(  # type: ignore[method-assign]
        GoogleRetryableError(503, "backendError", "503")
    )
    setup.ensure()  # the new channel opens; the old one's stop fails: both still send
    setup.calendar.stop_channel = real_stop  # type: ignore[method-assign]
    assert len(setup.calendar.live_channels()) == 2
    assert stop_channels(setup.ctx, setup.calendar) == 2
    assert setup.calendar.live_channels() == []
    assert setup.store.list_channels("staff-1") == []
    status = channel_status(setup.store, "staff-1")
    assert status["push"] == "off" and "disconnected" in status["channel_state"]


def test_disconnect_without_credentials_forgets_the_channels_without_calling_google(setup: Setup) -> None:
    setup.ensure()
    requests = setup.calendar.requests
    assert stop_channels(setup.ctx, None) == 0
    assert setup.store.list_channels("staff-1") == [] and setup.calendar.requests == requests


def test_channels_long_expired_are_forgotten(setup: Setup) -> None:
    old = setup.ensure().channel
    assert old is not None
    setup.clock.advance((CHANNEL_TTL + timedelta(days=2)).total_seconds())
    outcome = setup.ensure()
    assert outcome.action == "opened"  # the old one was dead: a new one, nothing to stop
    assert setup.store.get_channel(old.channel_id) is None


def test_the_token_is_never_in_a_log_line(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        channel = setup.ensure().channel
        setup.clock.advance((CHANNEL_TTL - timedelta(hours=1)).total_seconds())
        setup.ensure()
    assert channel is not None and channel.token not in caplog.text
