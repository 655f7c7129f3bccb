"""Push notifications: ``events.watch``, ``channels.stop`` and the webhook messages, delivered off-thread."""

from __future__ import annotations

import dataclasses
import hashlib
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError

DEFAULT_TTL_S = 7 * 24 * 3600  # Google's default when params.ttl is not given
MAX_CHANNEL_ID = 64
MAX_CHANNEL_TOKEN = 256
# Google retries a message the receiver answered 500, 502, 503 or 504 with exponential backoff (push guide);
# every other status, 2xx or not, ends it. The fake's backoff is scaled down to tenths of a second.
RETRIED_STATUSES = frozenset({500, 502, 503, 504})
RETRIES = 3
RETRY_BASE_S = 0.1
_LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclasses.dataclass
class _Channel:
    id: str
    resource_id: str
    resource_uri: str
    calendar_id: str
    account: str
    address: str
    token: str | None
    expiration_ms: int
    event_types: frozenset[str] | None
    number: int = 0
    stopped: bool = False


@dataclasses.dataclass(frozen=True)
class Notification:
    """One delivery attempt of a message the fake sent (or dropped): ``status`` is the receiver's HTTP
    status, 0 if it could not be reached, -1 if dropped on purpose; ``attempt`` counts Google's retries of
    the same message (same number) after a 500/502/503/504."""

    channel_id: str
    state: str  # sync | exists
    number: int
    status: int
    attempt: int = 1


class PushMixin:
    """Channels on calendars' events and their delivery."""

    def _init_push(self) -> None:
        self.allow_http_push = False  # Google wants https; tests may allow http://127.0.0.1 receivers
        self.channel_ttl_s = (
            DEFAULT_TTL_S  # a channel's life when the watch asks for no ttl (Google's default)
        )
        self._channels: dict[str, _Channel] = {}
        self._sent: list[Notification] = []
        self._drop = 0
        self._duplicate = 0
        self._outbox: queue.Queue[tuple[_Channel, str, int, dict[str, str], int] | None] = queue.Queue()
        self._courier: threading.Thread | None = None
        self._retries: list[threading.Timer] = []
        self._sent_event = threading.Condition(self._lock)

    # -- test API -------------------------------------------------------------------------------------
    def channels(self, calendar: str | None = None) -> list[dict[str, Any]]:
        """Channels opened so far (stopped and expired ones too), as dicts."""
        with self._lock:
            return [
                dataclasses.asdict(c) | {"expired": c.expiration_ms <= time.time() * 1000}
                for c in self._channels.values()
                if calendar is None or c.calendar_id == calendar
            ]

    def notifications(self, channel_id: str | None = None) -> list[Notification]:
        with self._lock:
            return [n for n in self._sent if channel_id is None or n.channel_id == channel_id]

    def wait_for_notifications(self, count: int, timeout: float = 5.0) -> list[Notification]:
        """Block until ``count`` messages were handled (sent, failed or dropped); all of them."""
        deadline = time.monotonic() + timeout
        with self._sent_event:
            while len(self._sent) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self._sent)} of {count} notifications after {timeout} s")
                self._sent_event.wait(left)
            return list(self._sent)

    def drop_notifications(self, n: int = 1) -> None:
        """The next n messages are lost (their numbers are used up, as a lost message's would be)."""
        with self._lock:
            self._drop += n

    def duplicate_notifications(self, n: int = 1) -> None:
        """The next n messages arrive twice (same number)."""
        with self._lock:
            self._duplicate += n

    def expire_channel_in(self, channel_id: str, seconds: float) -> None:
        """The channel's expiration comes ``seconds`` from now (time passing, in short)."""
        with self._lock:
            self._channels[channel_id].expiration_ms = int((time.time() + seconds) * 1000)

    def expire_channels(self, channel_id: str | None = None) -> None:
        """Channels (all, or one) reach their expiration now: no more messages."""
        with self._lock:
            for channel in self._channels.values():
                if channel_id is None or channel.id == channel_id:
                    channel.expiration_ms = int(time.time() * 1000)

    # -- API ------------------------------------------------------------------------------------------
    def _watch(
        self, calendar_id: str, account: str, body: Mapping[str, Any], event_types: Iterable[str] | None
    ) -> dict[str, Any]:
        channel_id = body.get("id")
        if not isinstance(channel_id, str) or not channel_id:
            raise ApiError(400, "required", "Required: id")
        if len(channel_id) > MAX_CHANNEL_ID:
            raise ApiError(400, "invalid", f"Channel id must be at most {MAX_CHANNEL_ID} characters.")
        if channel_id in self._channels:
            raise ApiError(400, "channelIdNotUnique", "Channel id not unique.")
        if body.get("type") not in ("web_hook", "webhook"):
            raise ApiError(400, "invalid", f"Invalid value for: type {body.get('type')}")
        token = body.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > MAX_CHANNEL_TOKEN):
            raise ApiError(400, "invalid", f"Channel token must be at most {MAX_CHANNEL_TOKEN} characters.")
        address = str(body.get("address") or "")
        split = urlsplit(address)
        local_http = self.allow_http_push and split.scheme == "http" and split.hostname in _LOCAL_HOSTS
        if split.scheme != "https" and not local_http:
            raise ApiError(400, "push.webhookUrlNotHttps", f"WebHook callback must be HTTPS: {address}")
        try:
            ttl = int((body.get("params") or {}).get("ttl", self.channel_ttl_s))
        except (TypeError, ValueError) as exc:
            raise ApiError(400, "invalid", "Invalid value for: params.ttl") from exc
        if ttl < 1:
            raise ApiError(400, "invalid", "Invalid value for: params.ttl")
        channel = _Channel(
            id=channel_id,
            resource_id=hashlib.sha256(calendar_id.encode()).hexdigest()[:27],
            resource_uri=f"https://www.googleapis.com/calendar/v3/calendars/{calendar_id}/events?alt=json",
            calendar_id=calendar_id,
            account=account,
            address=address,
            token=token,
            expiration_ms=int((time.time() + ttl) * 1000),
            event_types=frozenset(event_types) if event_types else None,
        )
        self._channels[channel_id] = channel
        self._post(channel, "sync")
        out: dict[str, Any] = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": str(channel.expiration_ms),
        }
        if token is not None:
            out["token"] = token
        return out

    def _stop_channel(self, account: str, body: Mapping[str, Any]) -> None:
        channel = self._channels.get(str(body.get("id", "")))
        if (
            channel is None
            or channel.stopped
            or channel.resource_id != body.get("resourceId")
            or channel.account != account
        ):
            raise ApiError(404, "notFound", f"Channel '{body.get('id')}' not found for project")
        channel.stopped = True

    # -- delivery -------------------------------------------------------------------------------------
    def _changed(self, calendar_id: str, event: Mapping[str, Any]) -> None:
        """An event of this calendar changed (callers hold the lock): ``exists`` to each live channel."""
        if not self._channels:
            return
        now_ms = time.time() * 1000
        for channel in self._channels.values():
            if channel.calendar_id != calendar_id or channel.stopped or channel.expiration_ms <= now_ms:
                continue
            if (
                channel.event_types is not None
                and event.get("eventType", "default") not in channel.event_types
            ):
                continue
            self._post(channel, "exists")

    def _post(self, channel: _Channel, state: str) -> None:
        channel.number += 1
        headers = {
            "X-Goog-Channel-ID": channel.id,
            "X-Goog-Channel-Expiration": formatdate(channel.expiration_ms / 1000, usegmt=True),
            "X-Goog-Resource-ID": channel.resource_id,
            "X-Goog-Resource-URI": channel.resource_uri,
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(channel.number),
        }
        if channel.token is not None:
            headers["X-Goog-Channel-Token"] = channel.token
        if self._drop:
            self._drop -= 1
            self._record_sent(Notification(channel.id, state, channel.number, -1))
            return
        copies = 1
        if self._duplicate:
            self._duplicate -= 1
            copies = 2
        for _ in range(copies):
            self._outbox.put((channel, state, channel.number, headers, 1))
        if self._courier is None:
            self._courier = threading.Thread(target=self._deliver, name="google-fake-push", daemon=True)
            self._courier.start()

    def _record_sent(self, sent: Notification) -> None:
        with self._sent_event:
            self._sent.append(sent)
            self._sent_event.notify_all()

    def _deliver(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            channel, state, number, headers, attempt = item
            request = urllib.request.Request(channel.address, data=b"", headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status = int(answer.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            self._record_sent(Notification(channel.id, state, number, status, attempt))
            if status in RETRIED_STATUSES and attempt <= RETRIES and not channel.stopped:
                again = (channel, state, number, headers, attempt + 1)
                timer = threading.Timer(RETRY_BASE_S * 2 ** (attempt - 1), self._outbox.put, (again,))
                timer.daemon = True
                self._retries.append(timer)
                timer.start()

    def _stop_push(self) -> None:
        for timer in self._retries:
            timer.cancel()
        courier = self._courier
        if courier is not None:
            self._outbox.put(None)
            courier.join(timeout=5)
            self._courier = None
