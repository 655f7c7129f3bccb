"""RRULE expansion (DAILY/WEEKLY/YEARLY with COUNT/UNTIL/INTERVAL) into instances ``{seriesId}_{suffix}``."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from .errors import ApiError
from .times import _instant, _render, _zone

_D = TypeVar("_D", date, datetime)

MAX_INSTANCES = 400  # expansion cap for series without COUNT/UNTIL


@dataclasses.dataclass(frozen=True)
class _Rule:
    step: timedelta
    count: int | None
    until: datetime | None
    years: int = 0  # YEARLY: whole years per step (birthdays), step is then zero


def _parse_rrule(recurrence: Iterable[str]) -> _Rule:
    for line in recurrence:
        if not line.upper().startswith("RRULE:"):
            continue
        parts = dict(p.split("=", 1) for p in line[6:].split(";") if "=" in p)
        freq = parts.get("FREQ", "").upper()
        interval = int(parts.get("INTERVAL", "1"))
        if freq not in ("DAILY", "WEEKLY", "YEARLY") or interval < 1:
            raise ApiError(400, "invalid", "Invalid recurrence rule.")
        years = interval if freq == "YEARLY" else 0
        step = timedelta(days=0 if years else interval if freq == "DAILY" else 7 * interval)
        until = None
        if "UNTIL" in parts:
            raw = parts["UNTIL"]
            fmt = "%Y%m%dT%H%M%SZ" if "T" in raw else "%Y%m%d"
            until = datetime.strptime(raw, fmt).replace(tzinfo=UTC)
            if fmt == "%Y%m%d":
                until += timedelta(days=1) - timedelta(seconds=1)
        count = int(parts["COUNT"]) if "COUNT" in parts else None
        return _Rule(step, count, until, years)
    raise ApiError(400, "invalid", "Invalid recurrence rule.")


def _instance_suffix(when: Mapping[str, Any]) -> str:
    if when.get("date"):
        return str(when["date"]).replace("-", "")
    return _instant(when).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _add_years(moment: _D, years: int) -> _D:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a common year: the 28th
        return moment.replace(year=moment.year + years, day=28)


def _shift(when: Mapping[str, Any], delta: timedelta, years: int = 0) -> dict[str, Any]:
    out = dict(when)
    if when.get("date"):
        out["date"] = _add_years(date.fromisoformat(str(when["date"])) + delta, years).isoformat()
    else:
        zone = when.get("timeZone")
        if zone:  # wall-clock recurrence in the event's zone (DST keeps the local time)
            local = _instant(when).astimezone(_zone(zone))
            wall = _add_years(local.replace(tzinfo=None) + delta, years)
            shifted = wall.replace(tzinfo=_zone(zone))
        else:
            shifted = _add_years(_instant(when) + delta, years)
        out["dateTime"] = _render(shifted, zone)
    return out


def expand(
    events: Mapping[str, dict[str, Any]], series: Mapping[str, Any], virtual_only: bool = False
) -> list[dict[str, Any]]:
    """A series' instances, stored exceptions in their place (left out with ``virtual_only``)."""
    rule = _parse_rrule(series.get("recurrence") or [])
    first = _instant(series["start"])
    out: list[dict[str, Any]] = []
    limit = rule.count if rule.count is not None else MAX_INSTANCES
    for index in range(min(limit, MAX_INSTANCES)):
        start = _shift(series["start"], rule.step * index, rule.years * index)
        if rule.until is not None and _instant(start) > rule.until:
            break
        if index and _instant(start) <= first:
            break
        instance_id = f"{series['id']}_{_instance_suffix(start)}"
        exception = events.get(instance_id)
        if exception is not None:
            if not virtual_only:
                out.append(exception)
            continue
        instance = {k: copy.deepcopy(v) for k, v in series.items() if k != "recurrence"}
        instance.update(
            id=instance_id,
            start=start,
            end=_shift(series["end"], rule.step * index, rule.years * index),
            recurringEventId=series["id"],
            originalStartTime=dict(start),
        )
        out.append(instance)
    return out
