"""Decisions, apart from their execution: what each booking needs from Google, and why.

``plan_upserts`` looks at bookings as Directus holds them and the mappings of what we last wrote, and sorts
each into one of: write its event (new or changed), skip it (Google already holds exactly this), or report
it invalid (it cannot become an event). ``push.Pusher`` executes the plan; ``cycle.repair_missed`` uses the
same plan to find the bookings a lost webhook left behind, so "does this booking need a push" has one
answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from calsync.state.store import EventMapping
from calsync.sync.booking import FIELDS, PRIVATE_HASH, InvalidBooking, booking_to_event
from calsync.sync.ids import event_id_for
from calsync.sync.ports import SyncConfig


@dataclasses.dataclass(frozen=True)
class Write:
    """A booking whose event must be written: inserted when it was never mapped, else patched."""

    key: str
    event_id: str
    body: dict[str, Any]
    mapped: bool
    directus_updated: str | None

    @property
    def content_hash(self) -> str:
        return str(self.body["extendedProperties"]["private"][PRIVATE_HASH])


@dataclasses.dataclass
class UpsertPlan:
    writes: list[Write] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)


def event_for(config: SyncConfig, key: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The event body this booking should have (raises InvalidBooking with a reason people can read)."""
    return booking_to_event(
        item,
        collection=config.collection,
        key=key,
        default_timezone=config.timezone,
        link_base=config.link_base,
    )


def plan_upserts(
    connection: str,
    config: SyncConfig,
    items: Mapping[str, Mapping[str, Any]],
    mappings: Mapping[str, EventMapping],
) -> UpsertPlan:
    plan = UpsertPlan()
    for key, item in items.items():
        try:
            body = event_for(config, key, item)
        except InvalidBooking as exc:
            # the booking cannot become an event: the booking itself says why
            plan.invalid[key] = str(exc)
            continue
        mapping = mappings.get(key)
        write = Write(
            key,
            mapping.event_id if mapping else event_id_for(connection, config.collection, key),
            body,
            mapping is not None,
            item.get(FIELDS.date_updated),
        )
        if mapping is not None and mapping.content_hash == write.content_hash:
            # what Google holds is what we last wrote: an echo of our own write, or a change that changed nothing
            plan.skipped.append(key)
            continue
        # new to Google, or changed since we last wrote it
        plan.writes.append(write)
    return plan


def needs_push(plan: UpsertPlan, items: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The bookings of a plan a push would change: writes, and invalid bookings not yet marked as such."""
    marked = {key for key in plan.invalid if items[key].get(FIELDS.sync_status) == "error"}
    return [w.key for w in plan.writes] + [key for key in plan.invalid if key not in marked]
