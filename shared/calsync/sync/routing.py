"""booking_hook's push with several connections: each booking to the calendar of the connection that serves
it (``calsync.sync.connections``), a reassigned booking moved, and a booking nobody serves told why.

One Directus read routes the delivery; each connection's ``Pusher`` then does what it always does (reads
the bookings again under their leases, proves an absence before deleting). A booking whose events live in
another connection (it was reassigned) is pushed to its new calendar first and released from the old one
after, so a fault in between leaves it in two calendars, never in none; the old connection's outbox keeps
the release until it happens.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from calsync import logs
from calsync.directus.errors import DirectusError, DirectusUnavailable
from calsync.state.store import OutboxAction
from calsync.sync.booking import FIELDS
from calsync.sync.connections import Roster
from calsync.sync.fleet import Fleet
from calsync.sync.outcome import PushOutcome
from calsync.sync.ports import Directus
from calsync.sync.push import Pusher, queue_failures

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Routes:
    """Where a delivery's bookings go: the connections to push them in, then those to release them from."""

    targets: dict[str, list[str]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    releases: dict[str, list[str]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    unrouted: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)


def single(fleet: Fleet) -> str | None:
    """The one connection when nothing is routed (no ROUTE_FIELD, one connection): today's path."""
    roster = fleet.roster
    return roster.specs[0].id if roster.route_field is None and len(roster.specs) == 1 else None


def route(fleet: Fleet, keys: list[str], fields: list[str] | None = None) -> Routes:
    """One Directus read (and one store read) to tell where each booking goes. Raises DirectusError."""
    roster = fleet.roster
    items = fleet.directus.get_items(keys, fields=fields)
    homes = fleet.store.find_mappings(fleet.collection, keys)
    routes = Routes()
    for key in keys:
        item = items.get(key)
        mapped = [m.connection for m in homes.get(key, []) if roster.get(m.connection) is not None]
        if item is None:  # maybe deleted: each connection that has its event proves it and deletes
            for connection in mapped:
                routes.targets[connection].append(key)
            continue
        spec = roster.route(item)
        if spec is None:
            routes.unrouted[key] = item
        else:
            routes.targets[spec.id].append(key)
        for connection in mapped:
            if spec is None or connection != spec.id:
                routes.releases[connection].append(key)
    return routes


def push_routed(fleet: Fleet, action: OutboxAction, keys: Iterable[str]) -> PushOutcome:
    """Push these bookings, each in the connection that serves it; queue what failed in that connection's
    outbox."""
    wanted = list(dict.fromkeys(str(k) for k in keys))
    total = PushOutcome()
    only = single(fleet)
    if only is not None:
        _push(fleet, only, action, wanted, total)
        return total
    try:
        routes = route(fleet, wanted)
    except DirectusUnavailable as exc:
        # Cannot tell where they go: nothing is written, and the tick's scan (changes) and sweep (deletions)
        # find these bookings by themselves.
        total.fail(wanted, f"{exc}; the next sync cycle picks the bookings up", action)
        return total
    for connection, ks in routes.targets.items():
        _push(fleet, connection, action, ks, total)
    for connection, ks in routes.releases.items():
        _push(fleet, connection, "upsert", ks, total)
    mark_unrouted(fleet.directus, fleet.roster, fleet.booking_fields(), routes.unrouted)
    total.invalid.update({key: fleet.roster.unrouted_reason(item) for key, item in routes.unrouted.items()})
    return total


def queue_routed(fleet: Fleet, action: OutboxAction, keys: Iterable[str]) -> int:
    """A delivery too large to push inline goes to the outboxes of the connections that serve its bookings
    (one light Directus read to route them), for the next cycle; how many intents were queued."""
    wanted = list(dict.fromkeys(str(k) for k in keys))
    only = single(fleet)
    if only is not None:
        return fleet.store.enqueue_many(only, fleet.collection, wanted, action)
    route_field = fleet.roster.route_field
    routes = route(fleet, wanted, fields=["id", *([route_field] if route_field else [])])
    queued = 0
    for connection, ks in routes.targets.items():
        queued += fleet.store.enqueue_many(connection, fleet.collection, ks, action)
    for connection, ks in routes.releases.items():
        queued += fleet.store.enqueue_many(connection, fleet.collection, ks, "upsert")
    return queued


def _push(fleet: Fleet, connection: str, action: OutboxAction, keys: list[str], total: PushOutcome) -> None:
    spec = fleet.roster.get(connection)
    assert spec is not None
    ctx = fleet.context(spec)
    outcome = Pusher(ctx).push(action, keys)
    queue_failures(ctx, outcome)
    total.merge(outcome)


def mark_unrouted(
    directus: Directus, roster: Roster, fields: frozenset[str], unrouted: dict[str, dict[str, Any]]
) -> None:
    """Say on each booking no connection serves why it is not synced, only where it does not say so yet
    (so that the write does not come back as a change every tick). Best effort."""
    if not unrouted or not {FIELDS.sync_status, FIELDS.sync_error} <= fields:
        return
    patches = []
    for key, item in unrouted.items():
        reason = roster.unrouted_reason(item)
        if item.get(FIELDS.sync_error) != reason or item.get(FIELDS.sync_status) != "error":
            patches.append({"id": key, FIELDS.sync_status: "error", FIELDS.sync_error: reason})
    if patches:
        try:
            directus.update_items(patches)
        except DirectusError as exc:
            log.warning("could not mark the bookings no calendar serves", extra=logs.fields(error=str(exc)))
