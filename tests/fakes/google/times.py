"""Event times as Google writes them: RFC 3339 stamps, time zones, start/end objects."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ApiError


def _rfc3339_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ApiError(400, "invalid", f"Invalid time zone definition: {name}") from exc


def _parse_datetime(text: str, zone: str | None = None) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid", f"Invalid value for: {text}") from exc
    if value.tzinfo is None:
        if not zone:
            raise ApiError(400, "required", "Missing time zone definition for start time.")
        value = value.replace(tzinfo=_zone(zone))
    return value


def _render(moment: datetime, zone_name: str | None) -> str:
    local = moment.astimezone(_zone(zone_name)).replace(microsecond=0)
    if local.utcoffset() == timedelta(0):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat()


def _instant(when: Mapping[str, Any]) -> datetime:
    """The instant a start/end object stands for (all-day dates at midnight UTC: the calendar's zone)."""
    if when.get("dateTime"):
        return _parse_datetime(str(when["dateTime"]), when.get("timeZone"))
    if when.get("date"):
        try:
            day = date.fromisoformat(str(when["date"]))
        except ValueError as exc:
            raise ApiError(400, "invalid", f"Invalid value for: {when['date']}") from exc
        return datetime.combine(day, dtime(0), UTC)
    raise ApiError(400, "required", "Missing time.")


def _when(value: datetime | date | Mapping[str, Any], zone: str | None = None) -> dict[str, Any]:
    """A start/end object from a datetime (naive = UTC), a date (all-day) or a ready dict."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        out: dict[str, Any] = {"dateTime": _render(moment, zone)}
        if zone:
            out["timeZone"] = zone
        return out
    return {"date": value.isoformat()}
