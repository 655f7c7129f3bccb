"""Calendar v3: calendars, the events store, list/get/insert/patch/update/delete, sync and page tokens."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from .copies import (
    RESPONSES,
    TYPE_DEFAULTS,
    UNKNOWN_ORGANIZER,
    ForeignWrite,
    check_content,
    check_insert,
    check_write,
    guest_attendees,
    is_organizer_copy,
    minimal,
    own_attendees,
    self_attendee,
)
from .errors import _MESSAGES, ApiError, Headers, Reply, _json_reply
from .oauth import CALENDAR_EVENTS_SCOPE, CALENDAR_SCOPE, DEFAULT_ACCOUNT, _Access
from .recurrence import _parse_rrule, expand
from .server import _first, _flag
from .times import _instant, _parse_datetime, _render, _rfc3339_ms, _when

MAX_RESULTS_DEFAULT = 250
MAX_RESULTS_LIMIT = 2500
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
_SYNC_FORBIDDEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
_READ_ONLY = ("kind", "etag", "created", "updated", "htmlLink", "creator", "organizer", "sequence")
# Set when an event is created and kept by every later write (PUT included).
_KEPT = (
    "created",
    "sequence",
    "etag",
    "iCalUID",
    "recurringEventId",
    "originalStartTime",
    "creator",
    "organizer",
    "eventType",
    "privateCopy",
    "birthdayProperties",
)
_WHOLE_ON_PATCH = ("start", "end", "originalStartTime", "recurrence", "attendees", "attachments")
_SEND_UPDATES = ("all", "externalOnly", "none")


def _random_id(length: int = 26) -> str:
    return "".join(secrets.choice(_BASE32HEX) for _ in range(length))


def _merge(target: dict[str, Any], patch: Mapping[str, Any], depth: int = 0) -> None:
    """Patch semantics: objects merge key by key, ``null`` removes a key, arrays and times are replaced."""
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


@dataclasses.dataclass
class _Calendar:
    account: str  # the owner
    id: str = ""  # the account's email for its primary calendar
    summary: str = ""
    time_zone: str | None = None  # None: the fake's time_zone
    events: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # incl. exceptions
    changed: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> change sequence

    def __post_init__(self) -> None:
        self.id = self.id or self.account
        self.summary = self.summary or self.id


@dataclasses.dataclass
class _SyncToken:
    account: str
    seq: int
    epoch: int
    single_events: bool
    show_deleted: bool
    event_types: frozenset[str] | None = None  # None: eventTypes not given (all types)


@dataclasses.dataclass
class _Page:
    account: str
    items: list[dict[str, Any]]
    max_results: int
    sync_token: str


@dataclasses.dataclass(frozen=True)
class SendUpdates:
    """One event write and the ``sendUpdates`` it asked for (None: not given, Google then emails nobody)."""

    method: str
    event_id: str
    value: str | None


class CalendarMixin:
    """The Calendar API and the calendar owner's test API."""

    def _init_calendar(self) -> None:
        self.time_zone = "UTC"
        self._calendars: dict[str, _Calendar] = {}
        self._seq = 0
        self._etag = 1_700_000_000_000_000
        self._last_write = datetime.now(UTC)
        self._epoch = 0
        self._sync_tokens: dict[str, _SyncToken] = {}
        self._pages: dict[str, _Page] = {}
        self._send_updates: list[SendUpdates] = []
        self._foreign_writes: list[ForeignWrite] = []

    def send_updates(self, event_id: str | None = None) -> list[SendUpdates]:
        """The ``sendUpdates`` of every API event write that succeeded (owner edits are not API calls)."""
        with self._lock:
            return [r for r in self._send_updates if event_id is None or r.event_id == event_id]

    def foreign_writes(self, event_id: str | None = None) -> list[ForeignWrite]:
        """API writes that changed another organizer's meeting (guestsCanModify) or deleted an attendee's copy.

        A sync should never make one: assert ``fake.foreign_writes() == []``."""
        with self._lock:
            return [w for w in self._foreign_writes if event_id is None or w.event_id == event_id]

    # -- test API: accounts and calendars -------------------------------------------------------------
    def add_calendar(
        self, account: str, calendar_id: str, summary: str | None = None, time_zone: str | None = None
    ) -> str:
        """A secondary calendar ``calendar_id`` owned by ``account`` (its primary is its email, made on first
        use). Only ``account``'s tokens see it; test-API methods address it as ``calendar=calendar_id``."""
        with self._lock:
            if calendar_id in self._calendars or calendar_id == "primary":
                raise ValueError(f"calendar {calendar_id} exists")
            self._calendar(account)
            self._calendars[calendar_id] = _Calendar(account, calendar_id, summary or "", time_zone)
            return calendar_id

    def calendars(self, account: str = DEFAULT_ACCOUNT) -> list[str]:
        """The ids of ``account``'s calendars (its primary first once used)."""
        with self._lock:
            return [c.id for c in self._calendars.values() if c.account == account]

    # -- test API: the calendar owner -----------------------------------------------------------------
    def events(self, calendar: str = "primary", include_cancelled: bool = True) -> list[dict[str, Any]]:
        """Stored events (series unexpanded, exceptions included), as copies."""
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            return [
                self._public(e)
                for e in cal.events.values()
                if include_cancelled or e.get("status") != "cancelled"
            ]

    def event(self, event_id: str, calendar: str = "primary") -> dict[str, Any]:
        with self._lock:
            return self._public(self._get(self._calendar(self._owner(calendar)), event_id))

    def create_event(
        self,
        summary: str = "Event",
        start: datetime | date | Mapping[str, Any] | None = None,
        end: datetime | date | Mapping[str, Any] | None = None,
        *,
        calendar: str = "primary",
        event_id: str | None = None,
        time_zone: str | None = None,
        event_type: str = "default",
        organizer: str | None = None,
        attendees: Iterable[str | Mapping[str, Any]] | None = None,
        response_status: str = "needsAction",
        guests_can_modify: bool = False,
        private_copy: bool | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create an event as it shows in the calendar (the owner's own, unless ``organizer`` names another).

        ``event_type`` any of Google's types, with the type's properties filled in unless given in ``fields``
        (birthday: yearly, all-day; fromGmail: organized by Google's "Unknown Organizer"). ``organizer``
        another person's email: the attendee's copy of their meeting, the owner among ``attendees`` with
        ``self: true`` and ``response_status``. ``attendees`` emails or dicts of the other guests."""
        begin = start if start is not None else datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        if end is None:
            if isinstance(begin, datetime):
                end = begin + timedelta(hours=1)
            elif isinstance(begin, date):
                end = begin + timedelta(days=1)
            else:
                raise ValueError("give end with a dict start")
        body = {
            "summary": summary,
            "start": _when(begin, time_zone),
            "end": _when(end, time_zone),
            **copy.deepcopy(TYPE_DEFAULTS.get(event_type, {})),
            **fields,
        }
        if event_id is not None:
            body["id"] = event_id
        if guests_can_modify:  # Google leaves the default (false) out
            body["guestsCanModify"] = True
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            account = cal.account
            given: dict[str, Any] = {"eventType": event_type}
            if private_copy is not None:
                given["privateCopy"] = private_copy
            if event_type == "fromGmail" and organizer is None:
                given["organizer"] = dict(UNKNOWN_ORGANIZER)
            if organizer is not None and organizer != account:
                given["organizer"] = {"email": organizer}
                given["creator"] = {"email": organizer}
                given["attendees"] = guest_attendees(account, organizer, response_status, attendees or ())
            elif attendees is not None:
                given["attendees"] = own_attendees(account, attendees)
            return self._public(self._insert(cal, body, given))

    def add_invitation(
        self,
        organizer: str,
        summary: str = "Meeting",
        start: datetime | date | Mapping[str, Any] | None = None,
        end: datetime | date | Mapping[str, Any] | None = None,
        *,
        response_status: str = "needsAction",
        guests_can_modify: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """The owner's copy of a meeting ``organizer`` invited them to (see ``create_event``)."""
        return self.create_event(
            summary,
            start,
            end,
            organizer=organizer,
            response_status=response_status,
            guests_can_modify=guests_can_modify,
            **kwargs,
        )

    def set_response(self, event_id: str, status: str, calendar: str = "primary") -> dict[str, Any]:
        """The owner answers an invitation (``needsAction|accepted|tentative|declined``); a declined
        meeting stays listed, with the owner's ``responseStatus`` declined."""
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            event = self._materialize(cal, event_id)
            own = self_attendee(event)
            if own is None:
                raise ValueError(f"the owner is no attendee of {event_id}")
            if status not in RESPONSES:
                raise ValueError(f"responseStatus must be one of {RESPONSES}")
            own["responseStatus"] = status
            self._stamp(cal, event)
            return self._public(event)

    def remove_attendee_self(self, event_id: str, calendar: str = "primary") -> dict[str, Any]:
        """The organizer takes the owner off the guest list: the copy comes back cancelled for this
        calendar."""
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            event = self._materialize(cal, event_id)
            event["attendees"] = [a for a in event.get("attendees") or [] if not a.get("self")]
            event["status"] = "cancelled"
            self._stamp(cal, event)
            return self._public(event)

    def edit_event(self, event_id: str, calendar: str = "primary", **changes: Any) -> dict[str, Any]:
        """Patch an event (or an instance) as the owner would; ``None`` values remove fields."""
        for name in ("start", "end"):
            if name in changes and not isinstance(changes[name], Mapping):
                changes[name] = _when(changes[name])
        with self._lock:
            return self._public(self._patch(self._calendar(self._owner(calendar)), event_id, changes))

    def cancel_event(self, event_id: str, calendar: str = "primary") -> None:
        """Delete an event as the owner would (soft: it stays, cancelled)."""
        with self._lock:
            self._delete(self._calendar(self._owner(calendar)), event_id)

    def add_recurring(
        self,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        count: int,
        freq: str = "DAILY",
        *,
        calendar: str = "primary",
        time_zone: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A recurring series (``RRULE:FREQ=...;COUNT=n``) created by the owner."""
        body = {
            "summary": summary,
            "start": _when(start, time_zone),
            "end": _when(end, time_zone),
            "recurrence": [f"RRULE:FREQ={freq.upper()};COUNT={count}"],
            **fields,
        }
        with self._lock:
            return self._public(self._insert(self._calendar(self._owner(calendar)), body))

    def instance_ids(self, series_id: str, calendar: str = "primary") -> list[str]:
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            return [i["id"] for i in self._instances(cal, cal.events[series_id])]

    def cancel_instance(self, instance_id: str, calendar: str = "primary") -> None:
        """Cancel one occurrence of a series (an exception with status cancelled)."""
        self.cancel_event(instance_id, calendar)

    def invalidate_sync_tokens(self) -> None:
        """Every sync token issued so far now answers 410 fullSyncRequired."""
        with self._lock:
            self._epoch += 1
            self._pages.clear()

    # -- Calendar API ---------------------------------------------------------------------------------
    def _owner(self, calendar_id: str, access: _Access | None = None) -> str:
        """The calendar's id; through the API only the token's account's own calendars exist (404 for others,
        as Google answers for calendars the caller cannot see)."""
        if calendar_id == "primary":
            return access.account if access else DEFAULT_ACCOUNT
        if access is not None:
            cal = self._calendars.get(calendar_id)
            owner = cal.account if cal is not None else calendar_id  # an account's primary, not yet used
            if owner != access.account:
                raise ApiError(404, "notFound", "Not Found")
        return calendar_id

    def _calendar(self, calendar_id: str) -> _Calendar:
        """A calendar by id; an id never added is an account's primary calendar (made on first use)."""
        cal = self._calendars.get(calendar_id)
        if cal is None:
            cal = self._calendars[calendar_id] = _Calendar(calendar_id)
        return cal

    def _zone_of(self, cal: _Calendar) -> str:
        return cal.time_zone or self.time_zone

    def _calendar_resource(self, cal: _Calendar) -> dict[str, Any]:
        return {
            "kind": "calendar#calendar",
            "etag": f'"{self._etag}"',
            "id": cal.id,
            "summary": cal.summary,
            "timeZone": self._zone_of(cal),
            "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
        }

    def _calendar_list(self, account: str) -> dict[str, Any]:
        items = []
        for cal in self._calendars.values():
            if cal.account == account:
                entry = {
                    **self._calendar_resource(cal),
                    "kind": "calendar#calendarListEntry",
                    "accessRole": "owner",
                }
                if cal.id == account:
                    entry["primary"] = True
                items.append(entry)
        return {"kind": "calendar#calendarList", "etag": f'"{self._etag}"', "items": items}

    def _calendar_api(
        self, method: str, rest: str, query: Mapping[str, list[str]], headers: Headers, body: bytes
    ) -> Reply:
        access = self._bearer(headers)
        if access is None:
            raise ApiError(401, "authError", "Invalid Credentials")
        if CALENDAR_EVENTS_SCOPE not in access.scopes and CALENDAR_SCOPE not in access.scopes:
            raise ApiError(
                403,
                "insufficientPermissions",
                "Insufficient Permission: Request had insufficient authentication scopes.",
            )
        segments = [unquote(s) for s in rest.strip("/").split("/")]
        if segments[:3] == ["users", "me", "calendarList"] and len(segments) == 3 and method == "GET":
            with self._lock:
                self._calendar(access.account)
                return _json_reply(200, self._calendar_list(access.account))
        if segments == ["channels", "stop"] and method == "POST":
            with self._lock:
                self._stop_channel(access.account, self._json(body))
                return 204, {}, b""
        if len(segments) < 2 or segments[0] != "calendars":
            raise ApiError(404, "notFound", "Not Found")
        with self._lock:
            cal = self._calendar(self._owner(segments[1], access))
            if len(segments) == 2 and method == "GET":
                return _json_reply(200, self._calendar_resource(cal))
            if segments[2:] == ["events", "watch"] and method == "POST":
                types = query.get("eventTypes") or None
                return _json_reply(200, self._watch(cal.id, cal.account, self._json(body), types))
            if len(segments) < 3 or segments[2] != "events":
                raise ApiError(404, "notFound", "Not Found")
            send_updates = _first(query, "sendUpdates")
            if method != "GET" and send_updates not in (None, *_SEND_UPDATES):
                raise ApiError(400, "invalid", f"Invalid value for: sendUpdates {send_updates}")
            if len(segments) == 3:
                if method == "GET":
                    return _json_reply(200, self._list(cal, query))
                if method == "POST":
                    new = self._json(body)
                    check_insert(new)
                    event = self._insert(cal, new)
                    self._send_updates.append(SendUpdates(method, event["id"], send_updates))
                    return _json_reply(200, self._view(event))
            elif len(segments) == 4:
                event_id = segments[3]
                if method == "GET":
                    return _json_reply(200, self._view(self._get(cal, event_id)))
                if_match = headers.get("if-match")
                reply: Reply | None = None
                if method == "PATCH":
                    reply = _json_reply(
                        200, self._view(self._patch(cal, event_id, self._json(body), if_match, api=True))
                    )
                elif method == "PUT":
                    reply = _json_reply(
                        200, self._view(self._update(cal, event_id, self._json(body), if_match, api=True))
                    )
                elif method == "DELETE":
                    self._delete(cal, event_id, if_match, api=True)
                    reply = 204, {}, b""
                if reply is not None:
                    self._send_updates.append(SendUpdates(method, event_id, send_updates))
                    return reply
        raise ApiError(404, "notFound", "Not Found")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "parseError", "Parse Error") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "parseError", "Parse Error")
        return value

    def _public(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(event))

    def _view(self, event: Mapping[str, Any], brief: bool = False) -> dict[str, Any]:
        """The event as the API shows it to this calendar: ``source`` only to its creator; with ``brief`` a
        cancelled event in its minimal shape."""
        if brief and event.get("status") == "cancelled":
            return copy.deepcopy(minimal(event))
        out = self._public(event)
        if not (out.get("creator") or {}).get("self"):
            out.pop("source", None)
        return out

    # state changes (callers hold the lock)
    def _stamp(self, cal: _Calendar, event: dict[str, Any], created: bool = False) -> None:
        now = datetime.now(UTC)
        if now <= self._last_write:
            now = self._last_write + timedelta(milliseconds=1)
        self._last_write = now
        self._etag += 1
        self._seq += 1
        event["etag"] = f'"{self._etag}"'
        event["updated"] = _rfc3339_ms(now)
        if created:
            event["created"] = event["updated"]
            event["sequence"] = 0
        else:
            event["sequence"] = int(event.get("sequence", 0)) + 1
        cal.events[event["id"]] = event
        cal.changed[event["id"]] = self._seq
        self._changed(cal.id, event)

    def _normalize(self, cal: _Calendar, event: dict[str, Any]) -> None:
        """Validate times and render them as Google does (in the event's zone, else the calendar's)."""
        if "start" not in event or not isinstance(event["start"], Mapping):
            raise ApiError(400, "required", "Missing start time.")
        if "end" not in event or not isinstance(event["end"], Mapping):
            raise ApiError(400, "required", "Missing end time.")
        start, end = event["start"], event["end"]
        if bool(start.get("date")) != bool(end.get("date")):
            raise ApiError(
                400, "invalid", "Start and end times must either both be date or both be dateTime."
            )
        begin, finish = _instant(start), _instant(end)
        if finish < begin or (start.get("date") and finish == begin):
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.")
        for name, moment in (("start", begin), ("end", finish)):
            when = dict(event[name])
            if when.get("dateTime"):
                when["dateTime"] = _render(moment, when.get("timeZone") or self._zone_of(cal))
                when.pop("date", None)
            event[name] = when
        if event.get("recurrence"):
            _parse_rrule(event["recurrence"])
        check_content(event)
        status = event.get("status", "confirmed")
        if status not in ("confirmed", "tentative", "cancelled"):
            raise ApiError(400, "invalid", f"Invalid value for: status {status}")
        event["status"] = status

    def _base(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        return {
            "kind": "calendar#event",
            "id": event_id,
            "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            "creator": {"email": cal.account, "self": True},
            "organizer": {"email": cal.id, "self": True}
            | ({"displayName": cal.summary} if cal.id != cal.account else {}),
            "iCalUID": f"{event_id}@google.com",
            "reminders": {"useDefault": True},
            "eventType": "default",
        }

    def _insert(
        self, cal: _Calendar, body: Mapping[str, Any], given: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``given``: read-only fields Google itself sets (organizer, creator ...), for the test API."""
        event_id = body.get("id")
        if event_id is None:
            event_id = _random_id()
        elif not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in cal.events:
            raise ApiError(409, "duplicate", _MESSAGES["duplicate"])
        event = self._base(cal, event_id)
        event.update({k: copy.deepcopy(v) for k, v in body.items() if k not in _READ_ONLY and v is not None})
        event.update(copy.deepcopy(dict(given or {})))
        event["id"] = event_id
        event.pop("recurringEventId", None)
        event.pop("originalStartTime", None)
        self._normalize(cal, event)
        self._stamp(cal, event, created=True)
        return event

    def _series_of(self, cal: _Calendar, event_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(series, virtual instance) for an instance id that has no exception yet."""
        series_id, sep, _suffix = event_id.partition("_")
        series = cal.events.get(series_id)
        if not sep or series is None or not series.get("recurrence"):
            return None
        for instance in self._instances(cal, series, virtual_only=True):
            if instance["id"] == event_id:
                return series, instance
        return None

    def _get(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        event = cal.events.get(event_id)
        if event is not None:
            return event
        found = self._series_of(cal, event_id)
        if found is None:
            raise ApiError(404, "notFound", "Not Found")
        return found[1]

    def _materialize(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        """The stored event to change; an instance becomes an exception of its own."""
        event = cal.events.get(event_id)
        if event is not None:
            return copy.deepcopy(event)
        found = self._series_of(cal, event_id)
        if found is None:
            raise ApiError(404, "notFound", "Not Found")
        return copy.deepcopy(found[1])

    @staticmethod
    def _check_etag(event: Mapping[str, Any], if_match: str | None) -> None:
        if if_match is not None and if_match.strip() not in ("*", event.get("etag")):
            raise ApiError(412, "conditionNotMet", _MESSAGES["conditionNotMet"])

    def _guard(self, method: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        """Refuse what this copy may not change; record a change that reaches another organizer's meeting."""
        shared = check_write(old, new)
        if shared:
            organizer = str((old.get("organizer") or {}).get("email", ""))
            self._foreign_writes.append(ForeignWrite(method, str(old["id"]), organizer, shared))

    def _patch(
        self,
        cal: _Calendar,
        event_id: str,
        body: Mapping[str, Any],
        if_match: str | None = None,
        api: bool = False,
    ) -> dict[str, Any]:
        event = self._materialize(cal, event_id)
        self._check_etag(event, if_match)
        old = copy.deepcopy(event)
        changes = {k: v for k, v in body.items() if k not in (*_READ_ONLY, "id", "recurringEventId")}
        _merge(event, changes)
        self._normalize(cal, event)
        if api:
            self._guard("PATCH", old, event)
        self._stamp(cal, event)
        return event

    def _update(
        self,
        cal: _Calendar,
        event_id: str,
        body: Mapping[str, Any],
        if_match: str | None = None,
        api: bool = False,
    ) -> dict[str, Any]:
        old = self._materialize(cal, event_id)
        self._check_etag(old, if_match)
        event = self._base(cal, event_id)
        for keep in _KEPT:
            if keep in old:
                event[keep] = copy.deepcopy(old[keep])
        event.update(
            {
                k: copy.deepcopy(v)
                for k, v in body.items()
                if k not in (*_READ_ONLY, "id", "recurringEventId", "originalStartTime") and v is not None
            }
        )
        self._normalize(cal, event)
        if api:
            self._guard("PUT", old, event)
        self._stamp(cal, event)
        return event

    def _delete(self, cal: _Calendar, event_id: str, if_match: str | None = None, api: bool = False) -> None:
        event = self._materialize(cal, event_id)
        if event.get("status") == "cancelled":
            raise ApiError(410, "deleted", _MESSAGES["deleted"])
        self._check_etag(event, if_match)
        event["status"] = "cancelled"
        own = self_attendee(event)
        if api and not is_organizer_copy(event) and own is not None:
            # An attendee's delete takes the meeting off their own calendar, as declining does; the
            # organizer's meeting stays. Allowed, and recorded: a sync should never do it.
            own["responseStatus"] = "declined"
            organizer = str((event.get("organizer") or {}).get("email", ""))
            self._foreign_writes.append(ForeignWrite("DELETE", event_id, organizer, ()))
        self._stamp(cal, event)

    # expansion
    def _instances(
        self, cal: _Calendar, series: Mapping[str, Any], virtual_only: bool = False
    ) -> list[dict[str, Any]]:
        return expand(cal.events, series, virtual_only)

    # listing
    def _list(self, cal: _Calendar, query: Mapping[str, list[str]]) -> dict[str, Any]:
        page_token = _first(query, "pageToken")
        if page_token:
            page = self._pages.get(page_token)
            if page is None or page.account != cal.id:
                raise ApiError(400, "invalid", "Invalid page token value.")
            return self._page_out(cal, page)
        max_raw = _first(query, "maxResults")
        try:
            max_results = int(max_raw) if max_raw else MAX_RESULTS_DEFAULT
        except ValueError as exc:
            raise ApiError(
                400,
                "invalid",
                f"Invalid value '{max_raw}'. Values must match the following regular expression: '[0-9]+'",
            ) from exc
        if max_results < 1:
            raise ApiError(400, "invalid", f"Invalid value '{max_results}'. Values must be at least 1.")
        max_results = min(max_results, MAX_RESULTS_LIMIT)
        single = _flag(query, "singleEvents")
        show_deleted = _flag(query, "showDeleted")
        types = frozenset(query["eventTypes"]) if query.get("eventTypes") else None
        sync = _first(query, "syncToken")
        if sync:
            for name in _SYNC_FORBIDDEN:
                if name in query:
                    raise ApiError(
                        400, "invalid", f"The '{name}' parameter cannot be used with a sync token."
                    )
            token = self._sync_tokens.get(sync)
            if token is None or token.epoch != self._epoch or token.account != cal.id:
                raise ApiError(410, "fullSyncRequired", _MESSAGES["fullSyncRequired"])
            if token.single_events != single:
                raise ApiError(
                    400, "invalid", "singleEvents must be the same as in the initial synchronization."
                )
            if token.event_types != types:
                # Google calls a change "undefined behavior"; the fake refuses it (stricter than Google).
                raise ApiError(
                    400, "invalid", "eventTypes must be the same as in the initial synchronization."
                )
            items = self._changed_since(cal, token.seq, single)
        else:
            items = self._full(cal, query, single, show_deleted)
        if types is not None:  # unknown types are accepted and match nothing (new types do appear)
            items = [e for e in items if e.get("eventType", "default") in types]
        next_sync = "sync_" + secrets.token_urlsafe(24)
        self._sync_tokens[next_sync] = _SyncToken(cal.id, self._seq, self._epoch, single, show_deleted, types)
        page = _Page(cal.id, [self._view(i, brief=not show_deleted) for i in items], max_results, next_sync)
        return self._page_out(cal, page)

    def _page_out(self, cal: _Calendar, page: _Page) -> dict[str, Any]:
        head, rest = page.items[: page.max_results], page.items[page.max_results :]
        out: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"p{self._etag}"',
            "summary": cal.summary,
            "description": "",
            "updated": _rfc3339_ms(self._last_write),
            "timeZone": self._zone_of(cal),
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": head,
        }
        if rest:
            token = "page_" + secrets.token_urlsafe(24)
            self._pages[token] = dataclasses.replace(page, items=rest)
            out["nextPageToken"] = token
        else:
            out["nextSyncToken"] = page.sync_token
        return out

    def _all(self, cal: _Calendar, single: bool) -> list[dict[str, Any]]:
        """Events as a listing sees them: instances instead of series when single."""
        out: list[dict[str, Any]] = []
        for event in sorted(cal.events.values(), key=lambda e: cal.changed[e["id"]]):
            if event.get("recurringEventId") and single:
                continue  # exceptions come out of their series' expansion
            if event.get("recurrence") and single:
                series_gone = event.get("status") == "cancelled"
                for instance in self._instances(cal, event):
                    out.append({**instance, "status": "cancelled"} if series_gone else instance)
            else:
                out.append(event)
        return out

    def _changed_since(self, cal: _Calendar, seq: int, single: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self._all(cal, single):
            series_id = event.get("recurringEventId")
            ids = [event["id"]] + ([series_id] if single and series_id else [])
            if any(cal.changed.get(i, 0) > seq for i in ids):
                out.append(event)
        return out

    def _full(
        self, cal: _Calendar, query: Mapping[str, list[str]], single: bool, show_deleted: bool
    ) -> list[dict[str, Any]]:
        time_min = _first(query, "timeMin")
        time_max = _first(query, "timeMax")
        updated_min = _first(query, "updatedMin")
        low = _parse_datetime(time_min) if time_min else None
        high = _parse_datetime(time_max) if time_max else None
        since = _parse_datetime(updated_min) if updated_min else None
        text = (_first(query, "q") or "").lower()
        ical = _first(query, "iCalUID")
        private = [p.partition("=") for p in query.get("privateExtendedProperty", [])]
        order = _first(query, "orderBy")
        if order == "startTime" and not single:
            raise ApiError(
                400, "invalid", "The requested ordering is not available for the particular query."
            )
        live_series = {
            e["id"] for e in cal.events.values() if e.get("recurrence") and e.get("status") != "cancelled"
        }
        out = []
        for event in self._all(cal, single):
            # Cancelled exceptions of a live series stay visible when neither flag is set.
            if (
                event.get("status") == "cancelled"
                and not show_deleted
                and (single or event.get("recurringEventId") not in live_series)
            ):
                continue
            if low is not None or high is not None:
                start, end = self._span(cal, event)
                if low is not None and end <= low:
                    continue
                if high is not None and start >= high:
                    continue
            if since is not None and _parse_datetime(event["updated"]) < since:
                continue
            if text and not any(
                text in str(event.get(f, "")).lower() for f in ("summary", "description", "location")
            ):
                continue
            if ical and event.get("iCalUID") != ical:
                continue
            props = (event.get("extendedProperties") or {}).get("private") or {}
            if any(props.get(k) != v for k, _, v in private):
                continue
            out.append(event)
        if order == "startTime":
            out.sort(key=lambda e: _instant(e["start"]))
        elif order == "updated":
            out.sort(key=lambda e: e["updated"])
        return out

    def _span(self, cal: _Calendar, event: Mapping[str, Any]) -> tuple[datetime, datetime]:
        if event.get("status") == "cancelled" and "start" not in event:
            return datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        start, end = _instant(event["start"]), _instant(event["end"])
        if event.get("recurrence"):
            instances = self._instances(cal, event)
            if instances:
                end = max(_instant(i["end"]) for i in instances)
        return start, end
