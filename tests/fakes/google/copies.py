"""Whose copy of an event a calendar holds: event types, organizers and attendees, and what a write may change.

Google keeps one copy of a meeting per attendee's calendar. The organizer's copy is the meeting; an attendee's
copy shows ``organizer`` without ``self`` and the attendee among ``attendees`` with ``self: true``. Private
extended properties, reminders, colour and transparency belong to the copy; everything else is shared and
only the organizer may change it, unless ``guestsCanModify`` is set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ApiError

EVENT_TYPES = ("birthday", "default", "focusTime", "fromGmail", "outOfOffice", "workingLocation")
RESPONSES = ("needsAction", "declined", "tentative", "accepted")
# Google's event-types guide does not say who organizes events that Gmail put in a calendar; real ones show
# this address. The fake gives every fromGmail event this organizer, so the non-organizer rule guards them.
UNKNOWN_ORGANIZER = {"email": "unknownorganizer@calendar.google.com", "displayName": "Unknown Organizer"}
# Undocumented limit (Google's reference gives none): the fake refuses longer descriptions with 400 invalid.
MAX_DESCRIPTION = 8192
FORBIDDEN_FOR_NON_ORGANIZER = "Shared properties can only be changed by the organizer of the event."
PRIVATE_PROPS = "extendedProperties.private"
OWN_RESPONSE = "attendees.self.responseStatus"
_PER_COPY = frozenset({PRIVATE_PROPS, OWN_RESPONSE, "colorId", "reminders", "transparency"})
_BIRTHDAY_WRITABLE = frozenset({PRIVATE_PROPS, "colorId", "reminders"})
_BOOKKEEPING = frozenset({"kind", "etag", "created", "updated", "htmlLink", "sequence", "id", "iCalUID"})
# What each special type carries when the test API seeds one without saying (shapes from the Events resource).
TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "focusTime": {
        "transparency": "opaque",
        "focusTimeProperties": {
            "autoDeclineMode": "declineOnlyNewConflictingInvitations",
            "chatStatus": "doNotDisturb",
        },
    },
    "outOfOffice": {
        "transparency": "opaque",
        "outOfOfficeProperties": {
            "autoDeclineMode": "declineAllConflictingInvitations",
            "declineMessage": "Away",
        },
    },
    "workingLocation": {
        "transparency": "transparent",
        "visibility": "public",
        "workingLocationProperties": {"type": "homeOffice", "homeOffice": {}},
    },
    "birthday": {
        "transparency": "transparent",
        "visibility": "private",
        "recurrence": ["RRULE:FREQ=YEARLY"],
        "birthdayProperties": {"type": "birthday"},
    },
}


@dataclasses.dataclass(frozen=True)
class ForeignWrite:
    """An API write that reached another organizer's meeting (PATCH/PUT with guestsCanModify: the shared
    ``fields`` changed for every attendee) or removed it from this calendar (DELETE by an attendee)."""

    method: str
    event_id: str
    organizer: str
    fields: tuple[str, ...]


def is_organizer_copy(event: Mapping[str, Any]) -> bool:
    return bool((event.get("organizer") or {}).get("self"))


def attendee(entry: str | Mapping[str, Any]) -> dict[str, Any]:
    """An attendee from an email or a dict (``responseStatus`` needsAction unless given)."""
    out = {"email": entry} if isinstance(entry, str) else dict(entry)
    out.setdefault("responseStatus", "needsAction")
    return out


def own_attendees(owner: str, others: Iterable[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The owner organizes: Google lists the organizer first, accepted."""
    return [
        {"email": owner, "organizer": True, "self": True, "responseStatus": "accepted"},
        *(attendee(o) for o in others),
    ]


def guest_attendees(
    owner: str, organizer: str, response: str, others: Iterable[str | Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Someone else organizes: the owner is an attendee with ``self`` and a response."""
    if response not in RESPONSES:
        raise ValueError(f"responseStatus must be one of {RESPONSES}")
    return [
        {"email": organizer, "organizer": True, "responseStatus": "accepted"},
        {"email": owner, "self": True, "responseStatus": response},
        *(attendee(o) for o in others),
    ]


def self_attendee(event: Mapping[str, Any]) -> dict[str, Any] | None:
    for entry in event.get("attendees") or []:
        if entry.get("self"):
            return entry  # type: ignore[no-any-return]
    return None


def _others(event: Mapping[str, Any]) -> list[Any]:
    return [a for a in event.get("attendees") or [] if not a.get("self")]


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> set[str]:
    """The fields a write changes, private properties and the owner's own response told apart."""
    out: set[str] = set()
    for key in (set(old) | set(new)) - _BOOKKEEPING:
        if key == "extendedProperties":
            before, after = old.get(key) or {}, new.get(key) or {}
            for part in ("private", "shared"):
                if (before.get(part) or {}) != (after.get(part) or {}):
                    out.add(f"extendedProperties.{part}")
            if set(before) - {"private", "shared"} or set(after) - {"private", "shared"}:
                out.add(key)
        elif key == "attendees":
            if _others(old) != _others(new) or (self_attendee(old) is None) != (self_attendee(new) is None):
                out.add(key)
            elif self_attendee(old) != self_attendee(new):
                out.add(OWN_RESPONSE)
        elif old.get(key) != new.get(key):
            out.add(key)
    return out


def check_write(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """Raise as Google does for a write this copy may not make; else the shared fields it changes on another
    organizer's meeting (empty on the owner's own events)."""
    if new.get("eventType", "default") != old.get("eventType", "default"):
        raise ApiError(400, "invalid", "The event type cannot be changed.")
    changed = changed_fields(old, new)
    if old.get("eventType") == "birthday":
        # Google restricts what birthday events may change without documenting the error; the fake answers
        # 400 invalid for anything but private properties, colour and reminders.
        refused = changed - _BIRTHDAY_WRITABLE
        if refused:
            raise ApiError(
                400, "invalid", f"Birthday events cannot change these fields: {', '.join(sorted(refused))}."
            )
        return ()
    if is_organizer_copy(old):
        return ()
    shared = tuple(sorted(changed - _PER_COPY))
    if shared and not old.get("guestsCanModify"):
        raise ApiError(403, "forbiddenForNonOrganizer", FORBIDDEN_FOR_NON_ORGANIZER)
    return shared


def check_insert(body: Mapping[str, Any]) -> None:
    event_type = body.get("eventType", "default")
    if event_type not in EVENT_TYPES:
        raise ApiError(400, "invalid", f"Invalid value for: eventType {event_type}")
    if event_type == "fromGmail":
        raise ApiError(400, "invalid", "Events of type fromGmail cannot be created.")


def check_content(event: Mapping[str, Any]) -> None:
    """Field limits that hold for every write."""
    description = event.get("description")
    if isinstance(description, str) and len(description) > MAX_DESCRIPTION:
        raise ApiError(400, "invalid", "The description is too long.")
    source = event.get("source")
    if source is not None:
        url = source.get("url") if isinstance(source, Mapping) else None
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise ApiError(400, "invalid", "Invalid value for: source.url (HTTP or HTTPS required)")


def minimal(event: Mapping[str, Any]) -> dict[str, Any]:
    """A cancelled event as listings without showDeleted carry it: Google guarantees only ``id`` for a deleted
    event and ``id``, ``recurringEventId``, ``originalStartTime`` for a cancelled occurrence."""
    out = {k: event[k] for k in ("kind", "etag", "id", "status") if k in event}
    for key in ("recurringEventId", "originalStartTime"):
        if key in event:
            out[key] = event[key]
    return out
