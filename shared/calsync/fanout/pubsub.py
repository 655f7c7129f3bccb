"""Sync requests on Pub/Sub: the publisher, and the reading of what a push subscription delivers.

The wire format lives here, for both ends: one message per connection, its data the JSON
``{"connection": ID, "reason": ..., "requested_at": ISO-8601}`` and its attributes ``connection`` and
``reason`` (readable in the console and in the dead-letter topic without decoding). Order does not matter.

Publishing goes through Pub/Sub's REST API (``topics.publish``) on google-auth's ``AuthorizedSession``
rather than the google-cloud-pubsub library: a tick's whole fan-out is one HTTP request of up to 1,000
messages, awaited before the function answers (the library batches on a background thread, which Cloud Run
does not give CPU after the response), and it adds nothing to a cold start: google-auth's transport is
already loaded by the other Google clients, where the library's import costs about 0.23 s more and brings
grpc-google-iam-v1 and OpenTelemetry along.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import requests

from calsync import logs
from calsync.fanout.port import SyncRequest
from calsync.retry import Backoff, Retry, retrying
from calsync.state.store import utcnow
from calsync.sync.connections import CONNECTION_ID

log = logging.getLogger(__name__)

PUBSUB_API = "https://pubsub.googleapis.com"
PUBSUB_SCOPE = "https://www.googleapis.com/auth/pubsub"
PUBLISH_BATCH = 1000  # Pub/Sub's limit of messages per publish request (ours are ~150 bytes each)
PUBLISH_TIMEOUT = (3.05, 10.0)  # connect, read (seconds)
# A caller waits at most a few seconds: the tick after this one is the retry that matters.
PUBLISH_RETRY = Backoff(base_s=0.25, cap_s=2.0, retries=3, budget_s=6.0)
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})
MAX_REASON = 100


class MalformedEnvelope(ValueError):
    """A push body that names no usable sync request; the message says what is wrong."""


class PublishFailed(Exception):
    """Pub/Sub did not take the messages."""


def message(connection: str, reason: str, requested_at: datetime) -> dict[str, Any]:
    """One ``PubsubMessage`` asking for one cycle of ``connection``."""
    data = {"connection": connection, "reason": reason, "requested_at": requested_at.isoformat()}
    return {
        "data": base64.b64encode(json.dumps(data, separators=(",", ":")).encode()).decode("ascii"),
        "attributes": {"connection": connection, "reason": reason},
    }


class PubSubRequests:
    """Publishes one message per connection to ``topic`` (``projects/P/topics/NAME``).

    ``emulator_host`` ("HOST:PORT") publishes to a Pub/Sub emulator over plain HTTP without credentials;
    otherwise to Pub/Sub with the process's application default credentials (the function's service
    account), built on first use."""

    def __init__(
        self,
        topic: str,
        *,
        emulator_host: str | None = None,
        session: Callable[[], requests.Session] | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.topic = topic
        self.endpoint = f"http://{emulator_host}" if emulator_host else PUBSUB_API
        self._new_session = session or (requests.Session if emulator_host else _authorized_session)
        self._local = threading.local()  # a session per thread: booking_hook serves many at once
        self._clock = clock
        self._sleep = sleep

    def request(self, connections: Sequence[str], reason: str) -> None:
        wanted = list(dict.fromkeys(connections))
        if not wanted:
            return
        reason = reason[:MAX_REASON]
        now = self._clock()
        messages = [message(connection, reason, now) for connection in wanted]
        published = 0
        for offset in range(0, len(messages), PUBLISH_BATCH):
            chunk = messages[offset : offset + PUBLISH_BATCH]
            try:
                self._publish(chunk)
            except Exception as exc:  # the caller must never fail because of it
                log.error(
                    "could not publish sync requests; the next tick syncs these connections",
                    exc_info=not isinstance(exc, PublishFailed),
                    extra=logs.fields(
                        topic=self.topic,
                        reason=reason,
                        published=published,
                        failed=len(messages) - published,
                        connections=wanted[offset : offset + 20],
                        error=str(exc),
                    ),
                )
                return
            published += len(chunk)
        log.info("sync requested", extra=logs.fields(topic=self.topic, connections=published, reason=reason))

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session()
        return session

    def _publish(self, chunk: list[dict[str, Any]]) -> None:
        url = f"{self.endpoint}/v1/{self.topic}:publish"

        def attempt() -> None:
            try:
                response = self._session().post(url, json={"messages": chunk}, timeout=PUBLISH_TIMEOUT)
            except requests.RequestException as exc:
                raise Retry(PublishFailed(f"Pub/Sub unreachable: {exc}")) from exc
            if response.status_code == 200:
                return
            error = PublishFailed(f"Pub/Sub answered {response.status_code}: {response.text[:300]}")
            if response.status_code in RETRYABLE:
                raise Retry(error)
            raise error

        retrying(attempt, PUBLISH_RETRY, sleep=self._sleep)


def _authorized_session() -> requests.Session:
    import google.auth
    from google.auth.transport.requests import AuthorizedSession

    credentials, _project = google.auth.default(scopes=[PUBSUB_SCOPE])
    session: requests.Session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    return session


# --- the consumer's side: what a push subscription POSTs -------------------------------------------------


def parse_push_envelope(body: Any) -> SyncRequest | None:
    """The sync request a Pub/Sub push delivery carries; None when ``body`` is not a push delivery at all
    (no ``message`` nor ``subscription``: a scheduler tick). Raises MalformedEnvelope naming the problem.

    The body: ``{"message": {"data": base64, "attributes": {...}, "messageId": ..., "publishTime": ...},
    "subscription": ..., "deliveryAttempt": N}``. The connection comes from the data, else from the
    ``connection`` attribute; when both are given they must agree."""
    if not isinstance(body, Mapping) or not ("message" in body or "subscription" in body):
        return None
    envelope = body.get("message")
    if not isinstance(envelope, Mapping):
        raise MalformedEnvelope("push envelope without a message object")
    attributes = envelope.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise MalformedEnvelope("message.attributes must be an object")
    data = _data(envelope.get("data"))
    connection = data.get("connection", attributes.get("connection"))
    if "connection" in data and "connection" in attributes and attributes["connection"] != connection:
        raise MalformedEnvelope("message.data and message.attributes name different connections")
    if not isinstance(connection, str) or not CONNECTION_ID.match(connection):
        raise MalformedEnvelope(
            "message names no connection"
            if connection is None
            else f"message.connection {str(connection)[:60]!r} is not a connection id"
        )
    reason = data.get("reason", attributes.get("reason", "unknown"))
    attempt = body.get("deliveryAttempt")
    return SyncRequest(
        connection=connection,
        reason=str(reason)[:MAX_REASON],
        requested_at=_instant(data.get("requested_at")),
        message_id=_text(envelope.get("messageId") or envelope.get("message_id")),
        delivery_attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
    )


def _data(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    if not isinstance(raw, str):
        raise MalformedEnvelope("message.data must be a base64 string")
    try:
        decoded = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise MalformedEnvelope(f"message.data is not base64 of a JSON object: {exc}") from None
    if not isinstance(decoded, dict):
        raise MalformedEnvelope("message.data is not a JSON object")
    return decoded


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None  # informative only: a cycle runs whenever it was asked for


def _text(value: Any) -> str | None:
    return str(value)[:100] if value is not None else None
