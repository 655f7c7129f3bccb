"""Only what is a booking, and only what is ours: which events become bookings, and which the sync may write.

An event is the owner's to write when the connected account organizes it (or created it) and it is an
ordinary event (``eventType`` ``default``); anything else (someone else's meeting, a Gmail copy, a birthday,
an out-of-office block ...) is read-only toward Google: the booking follows it, nothing goes back, and
deleting the booking leaves the event alone. What is imported at all is the settings' choice
(``IMPORT_EVENT_TYPES``, ``IMPORT_INVITATIONS``); a declined invitation is never a booking, and one that
was a booking ends as a cancellation does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from calsync.state.store import EventMapping
from calsync.sync.ports import SyncConfig

ACCEPTED = frozenset({"accepted", "tentative"})
DECLINED = "declined"


def writable(mapping: EventMapping | None, derived_id: str) -> bool:
    """The sync may write this booking's event: it created it (the event has the booking's derived id), or
    it has seen that the account organizes it (``read_only == ""``). Unknown ownership is not writable."""
    return mapping is None or mapping.event_id == derived_id or mapping.read_only == ""


def read_only_reason(event: Mapping[str, Any]) -> str:
    """Why the sync must not write to this event, or ``""`` when it may."""
    kind = str(event.get("eventType") or "default")
    if kind != "default":
        return f"a {kind} event"
    organizer = event.get("organizer") or {}
    creator = event.get("creator") or {}
    if not organizer.get("self") and not creator.get("self"):
        return f"a meeting organized by {organizer.get('email') or 'someone else'}"
    return ""


def owner_answer(event: Mapping[str, Any]) -> str | None:
    """The owner's answer to an invitation (``needsAction``, ``accepted``, ``tentative``, ``declined``), or
    None when the owner organizes the event."""
    if (event.get("organizer") or {}).get("self"):
        return None
    attendees = event.get("attendees") or []
    mine = next((a for a in attendees if isinstance(a, Mapping) and a.get("self")), None)
    if mine is None:
        # no guest list shown (a private copy, or the owner created it for someone): the owner's own
        return None if (event.get("creator") or {}).get("self") or not attendees else "removed"
    return str(mine.get("responseStatus") or "needsAction")


def not_imported(config: SyncConfig, event: Mapping[str, Any]) -> str | None:
    """Why this (live) event is not a booking under the settings, or None when it is one."""
    kind = str(event.get("eventType") or "default")
    if kind not in config.event_types:
        return f"its type {kind!r} is not in IMPORT_EVENT_TYPES"
    answer = owner_answer(event)
    if answer is None:
        return None
    if config.import_invitations == "none":
        return "invitations are not imported (IMPORT_INVITATIONS=none)"
    if config.import_invitations == "accepted" and answer not in ACCEPTED:
        return f"the invitation is {answer}, not accepted (IMPORT_INVITATIONS=accepted)"
    return None


def ends_booking(event: Mapping[str, Any]) -> bool:
    """The owner declined, or was taken off the guest list: the booking ends as a cancellation does."""
    return owner_answer(event) in (DECLINED, "removed")


EXCLUDED = "no longer imported"


def excluded_mark(reason: str) -> str:
    """What the mapping of a booking the settings no longer import records (it is read-only from then on)."""
    return f"{EXCLUDED} ({reason})"


def excluded_message(mark: str | None) -> str | None:
    """What such a booking says (sync_error), or None when the mark is not an exclusion."""
    if not mark or not mark.startswith(EXCLUDED):
        return None
    return "no longer synced: " + mark[len(EXCLUDED) :].strip().removeprefix("(").removesuffix(")")


def read_only_message(reason: str | None) -> str:
    """What the booking says (sync_error) when it is linked to an event the sync does not write."""
    if not reason:
        return (
            "read-only: the sync has not yet seen who organizes this event (it will at the next full sync); "
            "change it in Google Calendar"
        )
    return f"read-only: {reason}; change it in Google Calendar, the booking follows"
