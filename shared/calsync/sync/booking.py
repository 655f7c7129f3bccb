"""The mapping between a Directus booking and a Google event, both ways, and the content hash of both.

The content hash is computed over a canonical form (instants in UTC, all-day dates, text, cancelled or not)
that both sides produce identically for the same appointment. Equal hashes mean "nothing changed since we
last wrote it", which is how echoes of our own writes are recognised on either side.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from calsync.sync.text import CUT_MARK, DESCRIPTION_LIMIT, as_text, fit

PRIVATE_KEY = "calsync_key"
PRIVATE_COLLECTION = "calsync_collection"
PRIVATE_HASH = "calsync_hash"
FOOTER_MARK = "\n\n— Booking "  # what starts the footer we append; stripped when reading back
CANCELLED = "cancelled"
DEFAULT_DURATION = timedelta(hours=1)


class InvalidBooking(ValueError):
    """The booking cannot become an event; the message is shown to people in ``sync_error``."""


@dataclasses.dataclass(frozen=True)
class BookingFields:
    """The booking's Directus field names: the one place push, pull, the write-back and setup take them from."""

    title: str = "title"
    start: str = "start_datetime"
    end: str = "end_datetime"
    all_day: str = "all_day"
    description: str = "description"
    location: str = "location"
    status: str = "status"
    timezone: str = "timezone"
    google_event_id: str = "google_event_id"
    sync_status: str = "sync_status"
    sync_error: str = "sync_error"
    date_created: str = "date_created"
    date_updated: str = "date_updated"
    user_updated: str = "user_updated"

    def names(self) -> frozenset[str]:
        """Every field name, with the primary key."""
        return frozenset({"id", *(getattr(self, f.name) for f in dataclasses.fields(self))})


FIELDS = BookingFields()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidBooking(f"unknown time zone {name!r}") from None


def parse_instant(value: Any, zone: ZoneInfo, field: str) -> datetime:
    """A Directus timestamp/dateTime value as an aware datetime; naive values are read in ``zone``."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise InvalidBooking(f"{field} is not a date and time: {value!r}") from None
    else:
        raise InvalidBooking(f"{field} is empty")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=zone)


def _utc_text(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def canonical(summary: str, description: str, location: str, start: str, end: str, cancelled: bool) -> str:
    return json.dumps([summary, description, location, start, end, cancelled], ensure_ascii=False)


def content_hash(canonical_form: str) -> str:
    return hashlib.sha256(canonical_form.encode()).hexdigest()[:32]


def _event_time_canonical(value: Mapping[str, Any]) -> str:
    if value.get("date"):
        return str(value["date"])
    raw = str(value.get("dateTime", ""))
    try:
        return _utc_text(datetime.fromisoformat(raw.replace("Z", "+00:00")))
    except ValueError:
        return raw


def event_canonical(event: Mapping[str, Any]) -> str:
    """The canonical form of a Google event (as Google returns it or as we send it).

    It holds what the booking holds, so our footer is left out and an HTML description counts as its text:
    an event created in Google and imported (no footer, HTML) hashes the same as the event we would write
    back for that booking (its text, with or without footer)."""
    return canonical(
        str(event.get("summary") or "").strip(),
        as_text(strip_footer(str(event.get("description") or ""))).strip(),
        str(event.get("location") or "").strip(),
        _event_time_canonical(event.get("start") or {}),
        _event_time_canonical(event.get("end") or {}),
        event.get("status") == CANCELLED,
    )


def event_hash(event: Mapping[str, Any]) -> str:
    return content_hash(event_canonical(event))


def item_link(link_base: str, collection: str, key: str) -> str:
    return f"{link_base}/admin/content/{collection}/{key}"


def footer(collection: str, key: str, link_base: str | None) -> str:
    """The line that ties an event to its booking, with a link to the item when Directus's URL is known."""
    if link_base:
        return f"{FOOTER_MARK}#{key}: {item_link(link_base, collection, key)}"
    return f"{FOOTER_MARK}#{key} in Directus ({collection})"


def strip_footer(description: str) -> str:
    index = description.rfind(FOOTER_MARK)
    return description[:index] if index >= 0 else description


def booking_to_event(
    item: Mapping[str, Any],
    *,
    collection: str,
    key: str,
    default_timezone: str,
    link_base: str | None,
    ours: bool = True,
    with_footer: bool = True,
    event_zone: str | None = None,
    fields: BookingFields = FIELDS,
) -> dict[str, Any]:
    """The Google event body for a booking (without id). Raises InvalidBooking with a readable reason.

    ``ours``: the sync created the event (or will): only then does it carry our footer (``with_footer``) and
    the link back in ``source``. Its zone is the booking's ``timezone``, else ``event_zone`` (the zone the
    event already has; ``""``: it has none, and gets none), else ``default_timezone``: a push never changes
    the zone an event shows in."""
    zone_name = str(item.get(fields.timezone) or (default_timezone if event_zone is None else event_zone))
    zone = _zone(zone_name or default_timezone)
    start = parse_instant(item.get(fields.start), zone, fields.start)
    end_value = item.get(fields.end)
    end = parse_instant(end_value, zone, fields.end) if end_value else start + DEFAULT_DURATION
    if end < start:
        raise InvalidBooking(
            f"{fields.end} ({end_value}) is before {fields.start} ({item.get(fields.start)})"
        )
    tail = footer(collection, key, link_base) if ours and with_footer else ""
    text, _cut = fit(str(item.get(fields.description) or ""), DESCRIPTION_LIMIT - len(tail))
    body: dict[str, Any] = {
        "summary": str(item.get(fields.title) or ""),  # Google shows "(No title)" itself
        "description": text + tail,
        "location": str(item.get(fields.location) or ""),
        "status": CANCELLED if str(item.get(fields.status) or "").lower() == CANCELLED else "confirmed",
    }
    if ours and link_base:
        body["source"] = {
            "title": f"Booking #{key} in Directus",
            "url": item_link(link_base, collection, key),
        }
    if item.get(fields.all_day):
        first = start.astimezone(zone).date()
        local_end = end.astimezone(zone)
        # An end at local midnight after the start is already exclusive; any other end is the last day.
        last_exclusive = (
            local_end.date()
            if local_end.time() == time(0) and end > start
            else local_end.date() + timedelta(days=1)
        )
        body["start"] = {"date": first.isoformat()}
        body["end"] = {"date": max(last_exclusive, first + timedelta(days=1)).isoformat()}
    else:
        if end == start:
            end = start + timedelta(minutes=1) if end_value else start + DEFAULT_DURATION
        zoned = {"timeZone": zone_name} if zone_name else {}
        body["start"] = {"dateTime": start.astimezone(zone).isoformat(), **zoned}
        body["end"] = {"dateTime": end.astimezone(zone).isoformat(), **zoned}
    body["extendedProperties"] = {
        "private": {PRIVATE_KEY: key, PRIVATE_COLLECTION: collection, PRIVATE_HASH: event_hash(body)}
    }
    return body


def was_cut(body: Mapping[str, Any]) -> bool:
    """The body's description had to be cut to Google's limit."""
    return CUT_MARK in strip_footer(str(body.get("description") or ""))


def _event_instant(value: Mapping[str, Any], zone: ZoneInfo) -> tuple[datetime, bool]:
    if value.get("date"):
        day = date.fromisoformat(str(value["date"]))
        return datetime.combine(day, time(0), tzinfo=zone), True
    instant = datetime.fromisoformat(str(value["dateTime"]).replace("Z", "+00:00"))
    return (instant if instant.tzinfo else instant.replace(tzinfo=zone)), False


def event_to_booking(
    event: Mapping[str, Any], *, default_timezone: str, fields: BookingFields = FIELDS
) -> dict[str, Any]:
    """The booking fields a Google event sets (timestamps in UTC with an explicit offset; the event's own
    zone, or none; the description as text)."""
    event_zone = (event.get("start") or {}).get("timeZone")
    zone = ZoneInfo(str(event_zone or default_timezone))
    start, all_day = _event_instant(event.get("start") or {}, zone)
    end, _ = _event_instant(event.get("end") or event.get("start") or {}, zone)
    return {
        fields.title: str(event.get("summary") or ""),
        fields.description: as_text(strip_footer(str(event.get("description") or ""))),
        fields.timezone: None if all_day else (event_zone or None),
        fields.location: str(event.get("location") or ""),
        fields.start: _utc_text(start),
        fields.end: _utc_text(end),
        fields.all_day: all_day,
        fields.status: CANCELLED if event.get("status") == CANCELLED else "confirmed",
    }


def private_properties(event: Mapping[str, Any]) -> dict[str, str]:
    extended = event.get("extendedProperties") or {}
    return dict(extended.get("private") or {})
