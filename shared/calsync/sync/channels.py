"""Google push channels of one connection: opened when it connects, renewed before they expire, stopped when
it disconnects; and what status shows of them.

Google's rules (Calendar API push guide, ``events.watch``, ``channels.stop``): a channel cannot be renewed,
only replaced, so the new channel is opened first and the old one stopped after (for a moment both send,
which the receiver and the fan-out take as the duplicates they may be anyway); ``channels.stop`` needs the
channel id and the resource id and the credentials that opened it; the address must be HTTPS with a valid
certificate; an events channel lives 7 days unless ``params.ttl`` says otherwise, and the answer's
``expiration`` is what counts, so the renewal margin is measured on it. Delivery is not guaranteed: push only
makes the scheduled cycle come sooner, and nothing here ever stops the polling. A watch Google refuses is
recorded in the connection's :class:`~calsync.state.store.WatchStatus` and never raised.

Every channel carries its own secret token (``secrets.token_urlsafe(32)``), which Google echoes in each
notification; it is registered with the log scrubber and never logged.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from calsync import logs
from calsync.google.errors import GoogleError, GoogleNotFound, GoogleRetryableError
from calsync.state.store import ChannelRecord, SyncStore, WatchStatus
from calsync.sync.ports import Calendar, SyncContext

log = logging.getLogger(__name__)

RENEW_MARGIN = timedelta(days=1)  # renew this long before expiry (at most half the channel's lifetime)
DEFAULT_TTL = timedelta(days=7)  # Google's default, for an answer without an expiration
RETRY_REFUSED_AFTER = timedelta(hours=1)  # a watch Google refused for good is not asked again sooner
KEEP_STOPPED = timedelta(days=1)  # a stopped channel's record outlives its expiry this long, then goes

NOT_SET = "push off: NOTIFICATION_URL is not set"
NOT_HTTPS = "push off: NOTIFICATION_URL is not https"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

Action = Literal["kept", "opened", "renewed", "off", "failed", "waiting"]


@dataclasses.dataclass(frozen=True)
class ChannelOutcome:
    """What :func:`ensure_channel` did: the channel in use afterwards (None: none), how many old ones it
    stopped, and why push is off or failing."""

    action: Action
    channel: ChannelRecord | None = None
    stopped: int = 0
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "channel_id": self.channel.channel_id if self.channel else None,
            "expires_at": self.channel.expiration.isoformat() if self.channel else None,
            "stopped": self.stopped,
            "reason": self.reason,
        }


def address_problem(address: str | None) -> str | None:
    """Why ``address`` cannot receive Google's notifications, or None. Plain http is accepted on the
    loopback only: Google would refuse it, but a local fake of Google delivers there."""
    if not address:
        return NOT_SET
    split = urlsplit(address)
    if split.scheme == "https" and split.hostname:
        return None
    if split.scheme == "http" and split.hostname in _LOOPBACK:
        return None
    return NOT_HTTPS


def renew_margin(channel: ChannelRecord) -> timedelta:
    """How long before its expiry a channel is replaced: a day, or half its lifetime if that is shorter."""
    return min(RENEW_MARGIN, (channel.expiration - channel.created_at) / 2)


# -- the lifecycle --------------------------------------------------------------------------------------


def ensure_channel(
    ctx: SyncContext, calendar: Calendar, address: str | None, now: datetime | None = None
) -> ChannelOutcome:
    """Make the connection's channel what the settings ask for: none when push is off; else one active
    channel on the connection's calendar, to ``address``, with the import's ``eventTypes``, replaced when it
    is due to expire (new first, then ``channels.stop`` on the old). Old channels whose stop failed before
    are stopped again. Call it on connect and on every cycle: when nothing is due it makes no Google call.
    Never raises GoogleError."""
    now = now or ctx.clock()
    store, connection = ctx.store, ctx.connection
    stopped = _retry_stops(store, calendar, store.list_channels(connection), now)
    active = [c for c in store.list_channels(connection) if c.state == "active"]

    problem = address_problem(address)
    if problem is not None:
        # Push was turned off (or never on): channels to an address we no longer name are of no use.
        stopped += _retire(store, calendar, active, now)
        _put_watch(store, connection, "off", problem, address, None, now)
        return ChannelOutcome("off", None, stopped, problem)
    assert address is not None

    event_types = tuple(ctx.config.event_types)
    fitting = sorted(
        (c for c in active if _fits(c, address, ctx.config.calendar_id, event_types)),
        key=lambda c: c.expiration,
    )
    current = fitting[-1] if fitting else None
    # Channels of another address, calendar or filter, and the older of two opened by racing instances.
    stale = [c for c in active if c is not current]
    if current is not None and current.expiration - now > renew_margin(current):
        stopped += _retire(store, calendar, stale, now)
        _put_watch(store, connection, "on", None, address, None, now)
        return ChannelOutcome("kept", current, stopped)

    status = store.get_watch_status(connection)
    if status.address == address and status.next_attempt_at is not None and now < status.next_attempt_at:
        # Google refused this watch for good a moment ago: not asked again before then.
        return ChannelOutcome("waiting", current, stopped, status.reason)

    try:
        opened = _open(ctx, calendar, address, event_types, now)
    except GoogleError as exc:
        reason = f"Google refused the watch: {exc}"
        retry_at = None if isinstance(exc, GoogleRetryableError) else now + RETRY_REFUSED_AFTER
        log.warning(
            "push channel not opened; polling goes on",
            extra=logs.fields(connection=connection, status=exc.status, reason=exc.reason),
        )
        if current is not None and current.expiration > now:
            # The old channel still sends until it expires: push is on, with a warning.
            _put_watch(store, connection, "on", f"renewal failed: {reason}", address, retry_at, now)
            return ChannelOutcome("failed", current, stopped, reason)
        _put_watch(store, connection, "failing", reason, address, retry_at, now)
        return ChannelOutcome("failed", None, stopped, reason)

    stopped += _retire(store, calendar, [c for c in active if c is not opened], now)
    _put_watch(store, connection, "on", None, address, None, now)
    return ChannelOutcome("renewed" if current is not None else "opened", opened, stopped)


def stop_channels(ctx: SyncContext, calendar: Calendar | None, now: datetime | None = None) -> int:
    """On disconnect: stop every channel of the connection that may still send (while its credentials
    still work: call this before revoking them) and forget them all; push is off. How many were stopped.
    Never raises GoogleError: a channel that cannot be stopped only sends notifications that are then
    unknown, and answered without a Google call, until it expires."""
    now = now or ctx.clock()
    store, connection = ctx.store, ctx.connection
    count = 0
    for channel in store.list_channels(connection):
        if calendar is not None and channel.state != "stopped" and _stop(calendar, channel) is None:
            count += 1
        store.delete_channel(channel.channel_id)
    _put_watch(store, connection, "off", "push off: the connection is disconnected", None, None, now)
    log.info("push channels stopped", extra=logs.fields(connection=connection, stopped=count))
    return count


def stop_retired(store: SyncStore, calendar: Calendar, channel: ChannelRecord, now: datetime) -> bool:
    """Stop one channel that is no longer the active one (a notification came through it); True once
    Google has stopped it (or no longer knows it)."""
    return _retire(store, calendar, [channel], now) == 1


# -- status ---------------------------------------------------------------------------------------------


def channel_status(store: SyncStore, connection: str) -> dict[str, Any]:
    """What /status shows of push: on/off/failing, the active channel's expiry, why push is off or
    failing, how many channels are in each state; ``channel_state`` is the one line for Directus."""
    watch = store.get_watch_status(connection)
    channels = store.list_channels(connection)
    active = sorted((c for c in channels if c.state == "active"), key=lambda c: c.expiration)
    counts = {
        state: sum(1 for c in channels if c.state == state) for state in ("active", "replaced", "stopped")
    }
    expires = active[-1].expiration if active else None
    state = watch.state if watch.state != "on" or active else "off"
    if state == "on" and expires is not None:
        line = f"on until {expires.isoformat(timespec='minutes')}" + (
            f" ({watch.reason})" if watch.reason else ""
        )
    elif state == "failing":
        line = f"failing: {watch.reason}"
    else:
        line = watch.reason or "push off: no channel yet"
    return {
        "push": state,
        "channel_expires_at": expires.isoformat() if expires else None,
        "reason": watch.reason,
        "next_attempt_at": watch.next_attempt_at.isoformat() if watch.next_attempt_at else None,
        "channels": counts,
        "channel_state": line,
    }


# -- doing it -------------------------------------------------------------------------------------------


def _fits(channel: ChannelRecord, address: str, calendar_id: str, event_types: tuple[str, ...]) -> bool:
    return (
        channel.address == address
        and channel.calendar_id == calendar_id
        and channel.event_types == event_types
    )


def _open(
    ctx: SyncContext, calendar: Calendar, address: str, event_types: tuple[str, ...], now: datetime
) -> ChannelRecord:
    """``events.watch`` with a fresh id and secret; recorded before anything else happens."""
    token = secrets.token_urlsafe(32)
    logs.register_secret(token)
    channel_id = str(uuid.uuid4())
    watched = calendar.watch(channel_id, address, token, event_types)
    record = ChannelRecord(
        connection=ctx.connection,
        channel_id=watched.channel_id,
        resource_id=watched.resource_id,
        token=token,
        address=address,
        calendar_id=ctx.config.calendar_id,
        expiration=watched.expiration or now + DEFAULT_TTL,
        event_types=event_types,
        state="active",
        created_at=now,
    )
    ctx.store.put_channel(record)
    log.info(
        "push channel opened",
        extra=logs.fields(
            connection=ctx.connection, channel=record.channel_id, expires=record.expiration.isoformat()
        ),
    )
    return record


def _stop(calendar: Calendar, channel: ChannelRecord) -> str | None:
    """``channels.stop``; None when Google has stopped it (404: it no longer knows it, expired or stopped
    already), else why not."""
    try:
        calendar.stop_channel(channel.channel_id, channel.resource_id)
    except GoogleNotFound:
        return None
    except GoogleError as exc:
        return str(exc)
    return None


def _retire(store: SyncStore, calendar: Calendar, channels: Iterable[ChannelRecord], now: datetime) -> int:
    """Mark these channels replaced, then stop them; a failed stop stays ``replaced`` with its error and is
    tried again by the next :func:`ensure_channel`. How many Google stopped."""
    count = 0
    for channel in channels:
        if channel.state == "stopped":
            continue
        if channel.expiration <= now:  # Google stopped it itself
            _still(store, channel, state="stopped", last_error=None)
            continue
        if channel.state != "replaced":
            _still(store, channel, state="replaced")
        error = _stop(calendar, channel)
        if error is None:
            _still(store, channel, state="stopped", last_error=None)
            count += 1
        else:
            _still(store, channel, state="replaced", last_error=error)
            log.warning(
                "push channel not stopped; tried again later",
                extra=logs.fields(connection=channel.connection, channel=channel.channel_id, error=error),
            )
    return count


def _still(store: SyncStore, channel: ChannelRecord, **changes: Any) -> None:
    """Record the channel's new state, unless its record is gone meanwhile (a disconnect forgot every
    channel while a notification was stopping this one): a stop must not bring a forgotten channel back."""
    if store.get_channel(channel.channel_id) is not None:
        store.put_channel(dataclasses.replace(channel, **changes))


def _retry_stops(store: SyncStore, calendar: Calendar, channels: list[ChannelRecord], now: datetime) -> int:
    """Stop again the replaced channels whose stop failed; forget channels long past their expiry (Google
    sends nothing through them any more, whatever their state)."""
    count = 0
    for channel in channels:
        if channel.expiration + KEEP_STOPPED < now:
            store.delete_channel(channel.channel_id)
        elif channel.state == "replaced" and channel.expiration > now:
            count += _retire(store, calendar, [channel], now)
    return count


def _put_watch(
    store: SyncStore,
    connection: str,
    state: Literal["on", "off", "failing"],
    reason: str | None,
    address: str | None,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    """Record the watch status, writing only when it changed (every cycle calls this)."""
    before = store.get_watch_status(connection)
    after = WatchStatus(connection, state, reason, address, next_attempt_at, now)
    if dataclasses.replace(before, updated_at=now) != after:
        store.put_watch_status(after)
