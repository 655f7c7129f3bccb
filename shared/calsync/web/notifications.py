"""booking_hook's ``POST /notifications``: Google's push notifications in, a sync request out, at once.

A notification has no body, only headers (``X-Goog-Channel-ID``, ``X-Goog-Channel-Token``,
``X-Goog-Resource-ID``, ``X-Goog-Resource-State`` ``sync``/``exists``/``not_exists``,
``X-Goog-Message-Number``, ``X-Goog-Channel-Expiration``). It is authenticated by its channel's own secret
token, compared in constant time, not by WEBHOOK_SECRET. Google counts 200, 201, 202, 204 and 102 as
delivered and retries 500, 502, 503 and 504 with exponential backoff; no answer makes it stop a channel,
so anything we will not act on is answered 200 and forgotten:

- an unknown channel, a wrong token or resource id: 200, nothing changed and no Google call, so a forged
  notification costs one store read;
- ``sync`` (the first message of a channel): 200, acknowledged;
- ``exists``/``not_exists`` on the active channel: the connection's sync is requested (that call returns
  at once) and 200;
- any valid notification on a channel that was replaced or stopped: 200, and the channel is stopped (the
  token proved the message is Google's, so this Google call is earned).

Only our own failures answer 5xx (the store, or the sync request, unavailable): Google then retries.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import flask

from calsync import logs
from calsync.bootstrap import App, UnknownConnection
from calsync.state.store import ChannelRecord, utcnow
from calsync.sync.channels import stop_retired
from calsync.web.http import HttpError, json_response, require_method

log = logging.getLogger(__name__)

MAX_CHANNEL_ID = 64  # Google's limit: a longer id is none of ours, and is not looked up
STATES = ("sync", "exists", "not_exists")


def handle_notification(app: App, request: flask.Request) -> flask.Response:
    """One push notification: 200 for everything a caller can send (JSON saying what was done)."""
    require_method(request, "POST")
    headers = request.headers
    channel_id = headers.get("X-Goog-Channel-ID", "")
    state = headers.get("X-Goog-Resource-State", "")
    if not channel_id or len(channel_id) > MAX_CHANNEL_ID:
        return _answer("unknown", "no channel of ours")
    channel = app.store.get_channel(channel_id)
    if channel is None:
        log.info("notification for an unknown channel ignored", extra=logs.fields(channel=channel_id))
        return _answer("unknown", "no channel of ours")
    logs.register_secret(channel.token)
    if not _authentic(channel, headers.get("X-Goog-Channel-Token", ""), headers.get("X-Goog-Resource-ID")):
        log.warning(
            "notification with a wrong channel token or resource ignored",
            extra=logs.fields(channel=channel_id, connection=channel.connection),
        )
        return _answer("ignored", "not authenticated")
    fields = logs.fields(
        channel=channel_id,
        connection=channel.connection,
        state=state,
        message=headers.get("X-Goog-Message-Number"),
    )
    if channel.state != "active":
        return _stop(app, channel)
    if state == "sync":
        log.info("push channel confirmed by Google", extra=fields)
        return _answer("acknowledged", "channel confirmed")
    if state not in STATES:
        log.warning("notification with an unknown resource state ignored", extra=fields)
        return _answer("ignored", f"unknown resource state {state[:32]!r}")
    try:
        app.request_sync(channel.connection, "notification")
    except UnknownConnection:
        log.warning("notification for a connection that no longer exists ignored", extra=fields)
        return _answer("ignored", "no such connection")
    except HttpError:
        raise
    except Exception as exc:
        log.exception("sync request failed; Google will send the notification again", extra=fields)
        raise HttpError(503, "sync request failed; try again") from exc
    log.info("notification: sync requested", extra=fields)
    return _answer("sync_requested", "the connection's sync was requested")


def _authentic(channel: ChannelRecord, token: str, resource_id: str | None) -> bool:
    """The channel's own secret, compared in constant time; and, when Google names it, its resource."""
    token_ok = hmac.compare_digest(token.encode(), channel.token.encode())
    return token_ok and (resource_id is None or resource_id == channel.resource_id)


def _stop(app: App, channel: ChannelRecord) -> flask.Response:
    """A channel we replaced still sends: stop it now (its stop failed before, or is in flight)."""
    fields = logs.fields(channel=channel.channel_id, connection=channel.connection, state=channel.state)
    try:
        calendar = app.calendar(channel.connection)
    except (UnknownConnection, HttpError):
        calendar = None
    if calendar is None:
        log.warning("notification on a retired channel: no credentials to stop it", extra=fields)
        return _answer("retired", "channel no longer in use; it expires by itself")
    stopped = stop_retired(app.store, calendar, channel, utcnow())
    log.info(
        "notification on a retired channel: stopped it" if stopped else "retired channel not stopped",
        extra=fields,
    )
    return _answer(
        "retired", "channel stopped" if stopped else "channel no longer in use; stop retried later"
    )


def _answer(status: str, detail: str, **extra: Any) -> flask.Response:
    return json_response(200, {"status": status, "detail": detail, **extra})
