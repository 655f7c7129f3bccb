"""An in-memory Calendar (the ``Calendar`` port) that behaves as Google Calendar v3 does, for the fast tier.

Held to the same contract suite as the real client against the HTTP fake of Google
(tests/integration/test_calendar_contract.py). What it keeps to: client-chosen ids ``[a-v0-9]{5,1024}``; an
existing id, even of a cancelled event, is ``409 duplicate``; delete is soft (``status: cancelled``), twice
is ``410 deleted``; a patch with ``status: confirmed`` restores; ``extendedProperties.private`` merges key by
key, ``None`` removing a key; every write bumps ``etag``, ``updated`` and ``sequence``; listings page by
``max_results`` with ``nextSyncToken`` on the last page only; always as with ``showDeleted``: a full listing
holds cancelled events too, and with a sync token only what changed since, a cancelled event in Google's
minimal shape; ``invalidate_sync_tokens()`` makes old
tokens ``410 fullSyncRequired``; ``eventTypes`` filters, and a sync token only works with the event types it
was issued for. It has no recurrence (the HTTP fake covers series and instances).

Push channels as Google keeps them: ``watch`` opens one (id at most 64 characters and unique, token at
most 256, an https address, else ``400``; it expires ``CHANNEL_TTL`` after the clock's now), ``stop_channel``
needs its id and resource id (else, or once stopped, ``404 notFound``); ``channels`` shows them all. No
notification is sent (the HTTP fake of Google delivers them).

Test API, as the calendar's owner: ``create_event``, ``edit_event``, ``cancel_event``, ``event``,
``events``; faults: ``fail_next(n, error)`` (the next ``n`` calls raise ``error``, nothing applied),
``lose_next(n)`` (applied, then the answer is lost: a retryable error); ``requests`` counts HTTP requests as
Google would (a batch of up to 50 is one).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from calsync.google.errors import (
    GoogleBadRequest,
    GoogleConflict,
    GoogleError,
    GoogleGone,
    GoogleNotFound,
    GoogleRetryableError,
)
from calsync.state.store import utcnow
from calsync.sync.ports import EventsPage, EventWrite, WatchedChannel

_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_READ_ONLY = ("kind", "etag", "created", "updated", "creator", "sequence", "id")
_WHOLE_ON_PATCH = ("start", "end")
BATCH_LIMIT = 50
CHANNEL_TTL = timedelta(days=7)  # Google's default lifetime of an events channel (params.ttl unset)


def _merge(target: dict[str, Any], patch: Mapping[str, Any], depth: int = 0) -> None:
    """Patch semantics: objects merge key by key, ``None`` removes a key, arrays and times are replaced."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif (
            isinstance(value, Mapping)
            and isinstance(target.get(key), dict)
            and not (depth == 0 and key in _WHOLE_ON_PATCH)
        ):
            _merge(target[key], value, depth + 1)
        else:
            target[key] = copy.deepcopy(value)


def _instant(when: Mapping[str, Any]) -> datetime:
    if when.get("date"):
        return datetime.combine(date.fromisoformat(str(when["date"])), datetime.min.time(), tzinfo=UTC)
    moment = datetime.fromisoformat(str(when["dateTime"]).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _when(value: datetime | date | Mapping[str, Any], zone: str | None = None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return {"dateTime": value.isoformat(), **({"timeZone": zone} if zone else {})}
    return {"date": value.isoformat()}


def _bad(message: str, reason: str = "invalid") -> GoogleBadRequest:
    return GoogleBadRequest(400, reason, f"Google Calendar request failed: 400 {reason} ({message})")


class MemoryCalendar:
    """One calendar of one account, in memory. Thread-safe."""

    def __init__(self, account: str = "owner@example.com", clock: Callable[[], datetime] = utcnow) -> None:
        self.account = account
        self.clock = clock
        self.requests = 0
        self._lock = threading.RLock()
        self._events: dict[str, dict[str, Any]] = {}
        self._changed: dict[str, int] = {}
        self._seq = 0
        self._epoch = 0
        self._etag = itertools.count(1)
        self._ids = itertools.count(1)
        self._last_write = datetime.min.replace(tzinfo=UTC)
        self._tokens: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        self._pages: dict[str, tuple[list[dict[str, Any]], int, str]] = {}
        self._failures: list[GoogleError] = []
        self._lose = 0
        self.allow_http_push = False  # Google wants https; tests may allow http://127.0.0.1 receivers
        self.channels: dict[str, dict[str, Any]] = {}

    # -- faults ---------------------------------------------------------------------------------------
    def fail_next(self, count: int = 1, error: GoogleError | None = None) -> None:
        """The next ``count`` calls fail with ``error`` (default: 503) before anything is applied."""
        failure = error or GoogleRetryableError(
            503, "backendError", "Google Calendar failed: 503 backendError"
        )
        with self._lock:
            self._failures.extend([failure] * count)

    def lose_next(self, count: int = 1) -> None:
        """The next ``count`` writes are applied, then their answers are lost."""
        with self._lock:
            self._lose += count

    def clear_faults(self) -> None:
        with self._lock:
            self._failures.clear()
            self._lose = 0

    def _fault(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    # -- the port -------------------------------------------------------------------------------------
    def list_events(
        self,
        sync_token: str | None = None,
        time_min: datetime | None = None,
        page_token: str | None = None,
        max_results: int = 2500,
        event_types: Sequence[str] = (),
    ) -> EventsPage:
        with self._lock:
            self.requests += 1
            self._fault()
            if page_token:
                if page_token not in self._pages:
                    raise _bad("Invalid page token value.")
                items, size, next_sync = self._pages.pop(page_token)
                return self._page(items, size, next_sync)
            types = tuple(sorted(event_types))
            if sync_token:
                token = self._tokens.get(sync_token)
                if token is None or token[1] != self._epoch:
                    raise GoogleGone(
                        410, "fullSyncRequired", "Google Calendar list failed: 410 fullSyncRequired"
                    )
                if token[2] != types:
                    raise _bad("eventTypes must be the same as in the initial synchronization.")
                items = [self._listed(e) for e in self._ordered() if self._changed[e["id"]] > token[0]]
            else:
                items = [  # showDeleted: cancelled events too, in full
                    copy.deepcopy(e)
                    for e in self._ordered()
                    if time_min is None or _instant(e["end"]) > time_min
                ]
            items = [
                e
                for e in items
                if not types or e.get("eventType", "default") in types or "eventType" not in e
            ]
            next_sync = f"sync{next(self._ids)}"
            self._tokens[next_sync] = (self._seq, self._epoch, types)
            return self._page(items, min(max_results, 2500), next_sync)

    def _page(self, items: list[dict[str, Any]], size: int, next_sync: str) -> EventsPage:
        head, rest = items[:size], items[size:]
        if rest:
            token = f"page{next(self._ids)}"
            self._pages[token] = (rest, size, next_sync)
            return EventsPage(head, token, None)
        return EventsPage(head, None, next_sync)

    def write(self, write: EventWrite) -> dict[str, Any]:
        with self._lock:
            self.requests += 1
            return self._apply(write)

    def batch(self, writes: Sequence[EventWrite]) -> list[dict[str, Any] | GoogleError]:
        with self._lock:
            self.requests += (len(writes) + BATCH_LIMIT - 1) // BATCH_LIMIT
            results: list[dict[str, Any] | GoogleError] = []
            for write in writes:
                try:
                    results.append(self._apply(write))
                except GoogleError as exc:
                    results.append(exc)
            return results

    def _apply(self, write: EventWrite) -> dict[str, Any]:
        self._fault()
        if write.verb == "insert":
            result = self._insert({**(write.body or {}), "id": write.event_id})
        elif write.verb == "patch":
            result = self._patch(write.event_id, write.body or {})
        else:
            self._delete(write.event_id)
            result = {}
        if self._lose:
            self._lose -= 1
            raise GoogleRetryableError(0, "transportError", "Google Calendar call failed in transport (lost)")
        return result

    # -- Google's semantics ---------------------------------------------------------------------------
    def _stamp(self, event: dict[str, Any], created: bool = False) -> dict[str, Any]:
        now = self.clock()
        if now <= self._last_write:
            now = self._last_write + timedelta(milliseconds=1)
        self._last_write = now
        event["etag"] = f'"{next(self._etag)}"'
        event["updated"] = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        if created:
            event["created"] = event["updated"]
            event["sequence"] = 0
        else:
            event["sequence"] = int(event.get("sequence", 0)) + 1
        self._seq += 1
        self._events[event["id"]] = event
        self._changed[event["id"]] = self._seq
        return copy.deepcopy(event)

    @staticmethod
    def _validate(event: dict[str, Any]) -> None:
        if not isinstance(event.get("start"), Mapping) or not isinstance(event.get("end"), Mapping):
            raise _bad("Missing start or end time.", "required")
        if bool(event["start"].get("date")) != bool(event["end"].get("date")):
            raise _bad("Start and end times must either both be date or both be dateTime.")
        begin, finish = _instant(event["start"]), _instant(event["end"])
        if finish < begin or (event["start"].get("date") and finish == begin):
            raise _bad("The specified time range is empty.", "timeRangeEmpty")
        event.setdefault("status", "confirmed")
        if event["status"] not in ("confirmed", "tentative", "cancelled"):
            raise _bad(f"Invalid value for: status {event['status']}")

    def _insert(self, body: Mapping[str, Any]) -> dict[str, Any]:
        event_id = body.get("id") or f"ev{next(self._ids):08d}"
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise _bad("Invalid resource id value.")
        if event_id in self._events:
            raise GoogleConflict(409, "duplicate", "Google Calendar insert failed: 409 duplicate")
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "id": event_id,
            "creator": {"email": self.account, "self": True},
            "organizer": {"email": self.account, "self": True},
            "eventType": "default",
        }
        event.update({k: copy.deepcopy(v) for k, v in body.items() if k not in _READ_ONLY and v is not None})
        self._validate(event)
        return self._stamp(event, created=True)

    def _stored(self, event_id: str) -> dict[str, Any]:
        event = self._events.get(event_id)
        if event is None:
            raise GoogleNotFound(404, "notFound", "Google Calendar call failed: 404 notFound")
        return copy.deepcopy(event)

    def _patch(self, event_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        event = self._stored(event_id)
        _merge(event, {k: v for k, v in body.items() if k not in _READ_ONLY})
        self._validate(event)
        return self._stamp(event)

    def _delete(self, event_id: str) -> None:
        event = self._stored(event_id)
        if event.get("status") == "cancelled":
            raise GoogleGone(410, "deleted", "Google Calendar delete failed: 410 deleted")
        event["status"] = "cancelled"
        self._stamp(event)

    def _ordered(self) -> list[dict[str, Any]]:
        return sorted(self._events.values(), key=lambda e: self._changed[e["id"]])

    @staticmethod
    def _listed(event: Mapping[str, Any]) -> dict[str, Any]:
        """An event as an incremental listing shows it: a cancelled one in Google's minimal shape."""
        if event.get("status") == "cancelled":
            return {
                k: copy.deepcopy(event[k]) for k in ("kind", "etag", "id", "status", "updated") if k in event
            }
        return copy.deepcopy(dict(event))

    # -- test API: the calendar's owner ---------------------------------------------------------------
    def create_event(
        self,
        summary: str = "Event",
        start: datetime | date | Mapping[str, Any] | None = None,
        end: datetime | date | Mapping[str, Any] | None = None,
        *,
        time_zone: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create an event as the owner would in the Calendar UI (a server-chosen id)."""
        begin = start if start is not None else self.clock().replace(microsecond=0) + timedelta(days=1)
        if end is None:
            if isinstance(begin, Mapping):
                raise ValueError("give end with a dict start")
            end = begin + (timedelta(hours=1) if isinstance(begin, datetime) else timedelta(days=1))
        body = {"summary": summary, "start": _when(begin, time_zone), "end": _when(end, time_zone), **fields}
        with self._lock:
            return self._insert(body)

    def edit_event(self, event_id: str, **changes: Any) -> dict[str, Any]:
        """Patch an event as the owner would; ``None`` values remove fields."""
        for name in ("start", "end"):
            if name in changes and not isinstance(changes[name], Mapping):
                changes[name] = _when(changes[name])
        with self._lock:
            return self._patch(event_id, changes)

    def cancel_event(self, event_id: str) -> None:
        with self._lock:
            self._delete(event_id)

    def invalidate_sync_tokens(self) -> None:
        with self._lock:
            self._epoch += 1

    def event(self, event_id: str) -> dict[str, Any]:
        with self._lock:
            return self._stored(event_id)

    def events(self, include_cancelled: bool = True) -> list[dict[str, Any]]:
        with self._lock:
            return [
                copy.deepcopy(e)
                for e in self._ordered()
                if include_cancelled or e.get("status") != "cancelled"
            ]

    # -- push channels --------------------------------------------------------------------------------
    def watch(
        self, channel_id: str, address: str, token: str, event_types: Sequence[str] = ()
    ) -> WatchedChannel:
        with self._lock:
            self.requests += 1
            self._fault()
            if not channel_id or len(channel_id) > 64:
                raise _bad("Channel id must be 1 to 64 characters.")
            if channel_id in self.channels:
                raise _bad("Channel id not unique.", "channelIdNotUnique")
            if len(token) > 256:
                raise _bad("Channel token must be at most 256 characters.")
            local = address.startswith(("http://127.0.0.1", "http://localhost"))
            if not address.startswith("https://") and not (self.allow_http_push and local):
                raise _bad(f"WebHook callback must be HTTPS: {address}", "push.webhookUrlNotHttps")
            expiration = self.clock() + CHANNEL_TTL
            resource_id = hashlib.sha256(self.account.encode()).hexdigest()[:27]
            self.channels[channel_id] = {
                "id": channel_id,
                "resource_id": resource_id,
                "address": address,
                "token": token,
                "event_types": tuple(event_types),
                "expiration": expiration,
                "stopped": False,
            }
            return WatchedChannel(channel_id, resource_id, expiration)

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        with self._lock:
            self.requests += 1
            self._fault()
            channel = self.channels.get(channel_id)
            if channel is None or channel["stopped"] or channel["resource_id"] != resource_id:
                raise GoogleNotFound(
                    404, "notFound", f"Google Calendar channels.stop failed: 404 notFound ({channel_id})"
                )
            channel["stopped"] = True

    def live_channels(self) -> list[str]:
        """The ids of channels neither stopped nor expired, in the order they were opened."""
        with self._lock:
            now = self.clock()
            return [c["id"] for c in self.channels.values() if not c["stopped"] and c["expiration"] > now]
