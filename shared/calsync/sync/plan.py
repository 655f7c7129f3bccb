"""Decisions, apart from their execution: what each booking needs from Google, and why.

``plan_upserts`` looks at bookings as Directus holds them and the mappings of what we last wrote, and sorts
each into one of: write its event (new or changed), skip it (Google already holds exactly this, or refused
exactly this for good), leave it read-only (the event is not the owner's to write), or report it invalid
(it cannot become an event). ``push.Pusher`` executes the plan; ``cycle.repair_missed`` uses the
same plan to find the bookings a lost webhook left behind, so "does this booking need a push" has one
answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from calsync.state.store import EventMapping
from calsync.sync.booking import FIELDS, PRIVATE_HASH, InvalidBooking, booking_to_event, was_cut
from calsync.sync.ids import event_id_for
from calsync.sync.ownership import excluded_message, read_only_message, writable
from calsync.sync.ports import SyncConfig
from calsync.sync.text import DESCRIPTION_LIMIT


@dataclasses.dataclass(frozen=True)
class Write:
    """A booking whose event must be written: inserted when it was never mapped, else patched."""

    key: str
    event_id: str
    body: dict[str, Any]
    mapped: bool
    directus_updated: str | None
    read_only: str | None = None  # what the mapping knew of the event's ownership ("": ours to write)

    @property
    def content_hash(self) -> str:
        return str(self.body["extendedProperties"]["private"][PRIVATE_HASH])


@dataclasses.dataclass
class UpsertPlan:
    writes: list[Write] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)
    read_only: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> what the booking says
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # no longer imported: the same
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # written, with something to tell


def event_for(
    config: SyncConfig,
    key: str,
    item: Mapping[str, Any],
    ours: bool = True,
    event_zone: str | None = None,
) -> dict[str, Any]:
    """The event body this booking should have (raises InvalidBooking with a reason people can read)."""
    return booking_to_event(
        item,
        collection=config.collection,
        key=key,
        default_timezone=config.timezone,
        link_base=config.link_base,
        ours=ours,
        with_footer=config.description_footer,
        event_zone=event_zone,
    )


def plan_upserts(
    connection: str,
    config: SyncConfig,
    items: Mapping[str, Mapping[str, Any]],
    mappings: Mapping[str, EventMapping],
) -> UpsertPlan:
    plan = UpsertPlan()
    for key, item in items.items():
        mapping = mappings.get(key)
        derived = event_id_for(connection, config.collection, key)
        event_id = mapping.event_id if mapping else derived
        ours = event_id == derived  # only the sync inserts events under a derived id
        if not writable(mapping, derived):
            # someone else's event, one whose organizer the sync has not seen, or one the settings no longer
            # import: Google is not written
            assert mapping is not None
            excluded = excluded_message(mapping.read_only)
            if excluded:
                plan.excluded[key] = excluded
            else:
                plan.read_only[key] = read_only_message(mapping.read_only)
            continue
        try:
            body = event_for(config, key, item, ours, mapping.time_zone if mapping else None)
        except InvalidBooking as exc:
            # the booking cannot become an event: the booking itself says why
            plan.invalid[key] = str(exc)
            continue
        write = Write(
            key,
            event_id,
            body,
            mapping is not None,
            item.get(FIELDS.date_updated),
            mapping.read_only if mapping else "",
        )
        if mapping is not None and write.content_hash in (mapping.content_hash, mapping.refused_hash):
            # what Google holds is what we last wrote (an echo, or a change that changed nothing), or what
            # Google refused for good: nothing to send until the booking changes
            plan.skipped.append(key)
            continue
        # new to Google, or changed since we last wrote it
        plan.writes.append(write)
        if was_cut(body):
            plan.notes[key] = f"the description was cut to Google's {DESCRIPTION_LIMIT:,} characters"
    return plan


def booking_hash(
    connection: str, config: SyncConfig, key: str, item: Mapping[str, Any], mapping: EventMapping
) -> str | None:
    """The content hash of the event this booking would have (None: the booking is invalid)."""
    ours = mapping.event_id == event_id_for(connection, config.collection, key)
    try:
        return Write(
            key, mapping.event_id, event_for(config, key, item, ours, mapping.time_zone), True, None
        ).content_hash
    except InvalidBooking:
        return None


def needs_push(plan: UpsertPlan, items: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The bookings of a plan a push would change: writes, and bookings whose status does not say yet that
    they are invalid or read-only."""
    pending = [w.key for w in plan.writes]
    for status, keys in (("error", plan.invalid), ("read_only", plan.read_only), ("excluded", plan.excluded)):
        pending += [key for key in keys if items[key].get(FIELDS.sync_status) != status]
    return pending
