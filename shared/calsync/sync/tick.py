"""One tick for every connection: what calendar_import runs on each Cloud Scheduler call.

1. Under the tick's lease, read Directus once for all connections: the bookings changed since the tick's
   checkpoint (one scan, routed by ``ROUTE_FIELD``), and a slice of every connection's mappings (one read:
   bookings deleted without a webhook, or moved to another staff member). What Directus costs does not grow
   with the number of connections.
2. Run each connection's cycle (``cycle.run_cycle``) with what was found for it, at most
   ``SYNC_CONCURRENCY`` at once, the connections least recently synced first. A connection whose cycle
   cannot start inside ``SYNC_BUDGET_SECONDS`` gets its work in its outbox and goes first next tick; one
   that is not connected gets its work in its outbox too (it shows as pending); a failing or slow one
   holds one worker and nothing else.
3. Release the moved bookings' old events, now that their new calendars had their turn (``Pusher``
   removes an old event only once the new calendar has it).
4. Advance the checkpoint (nothing found is lost: it was pushed or is in an outbox), tell bookings that no
   connection serves why they are not synced, and show every connection's status at once.

A connection never synced before (no checkpoint of its own) runs a cycle that scans Directus itself, for
every booking routed to it: what was routed to it before it existed or was connected.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from calsync import logs
from calsync.directus.errors import DirectusError
from calsync.state.store import utcnow
from calsync.sync.connections import ConnectionSpec, Roster
from calsync.sync.cycle import (
    LEASE_TTL,
    REPAIR_PAGE,
    SWEEP_PER_CYCLE,
    CycleResult,
    CycleWork,
    run_cycle,
    scan_start,
)
from calsync.sync.fleet import Fleet
from calsync.sync.push import Pusher, queue_failures
from calsync.sync.routing import mark_unrouted

log = logging.getLogger(__name__)

TICK = "_tick"  # the tick's own cursor and lease (connection ids start with a letter or digit)
NEUTRAL = frozenset({"ok", "not_connected"})  # a tick is fine if every connection is one of these
RAN = frozenset({"ok", "mass_delete_refused", "mass_cancel_refused"})  # the cycle did its work


@dataclasses.dataclass
class TickResult:
    status: str
    http_status: int
    body: dict[str, Any]


@dataclasses.dataclass
class _Found:
    """What the shared reads found, by connection."""

    work: dict[str, CycleWork] = dataclasses.field(default_factory=lambda: defaultdict(CycleWork))
    unrouted: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    sweep_after: dict[str, str | None] = dataclasses.field(default_factory=dict)
    first: set[str] = dataclasses.field(default_factory=set)  # never synced: their cycle scans itself


def run_tick(fleet: Fleet) -> TickResult:
    """Every connection's cycle, under the tick's lease; never raises for Google or Directus trouble."""
    holder = uuid.uuid4().hex
    lease = f"{TICK}/import"
    if not fleet.store.acquire_lease(lease, holder, LEASE_TTL):
        return TickResult("busy", 409, {"status": "busy", "error": "another tick is running"})
    try:
        return _tick(fleet)
    finally:
        fleet.store.release_lease(lease, holder)


def _tick(fleet: Fleet) -> TickResult:
    started = time.monotonic()
    roster, store = fleet.roster, fleet.store
    if roster.route_field is None and len(roster.specs) == 1:
        return _one(fleet, roster.specs[0], started)
    specs = sorted(
        roster.specs,
        key=lambda s: store.get_status(s.id).last_cycle_at or datetime.min.replace(tzinfo=utcnow().tzinfo),
    )
    try:
        next_checkpoint, found = _read_directus(fleet, specs)
    except DirectusError as exc:
        log.warning("tick could not read Directus; the next one retries", extra=logs.fields(error=str(exc)))
        return TickResult("error", 503, {"status": "error", "error": str(exc), "connections": {}})
    if fleet.dispatch is not None:
        return _fan_out(fleet, fleet.dispatch, specs, found, next_checkpoint, started)
    results = _run_cycles(fleet, specs, found, started)
    _release_moved(fleet, specs, found, results)
    store.update_cursor(TICK, fleet.collection, directus_checkpoint=next_checkpoint)
    _save_sweep(fleet, found)
    mark_unrouted(fleet.directus, roster, fleet.booking_fields(), found.unrouted)
    fleet.publish([s.id for s in specs])
    return _summary(roster, results, len(found.unrouted), started)


def _fan_out(
    fleet: Fleet,
    dispatch: Callable[[Sequence[str]], None],
    specs: list[ConnectionSpec],
    found: _Found,
    next_checkpoint: str,
    started: float,
) -> TickResult:
    """Fan-out: each connection's work goes to its outbox and one sync request per connection goes to
    Pub/Sub, whose deliveries run the cycles in other instances, as many at once as terraform allows. A
    moved booking's release waits in its old connection's outbox until its new calendar has it."""
    for spec in specs:
        if spec.id not in found.first:
            _park(fleet, spec, found.work.get(spec.id) or CycleWork(), "fanned out")
    dispatch([s.id for s in specs])
    fleet.store.update_cursor(TICK, fleet.collection, directus_checkpoint=next_checkpoint)
    _save_sweep(fleet, found)
    mark_unrouted(fleet.directus, fleet.roster, fleet.booking_fields(), found.unrouted)
    body = {
        "status": "dispatched",
        "connections": [s.id for s in specs],
        "unrouted": len(found.unrouted),
        "duration": round(time.monotonic() - started, 3),
    }
    return TickResult("dispatched", 200, body)


def _save_sweep(fleet: Fleet, found: _Found) -> None:
    for cid, after in found.sweep_after.items():
        spec = fleet.roster.get(cid)
        if spec is not None and fleet.store.cursor(cid, spec.calendar_id).sweep_after != after:
            fleet.store.update_cursor(cid, spec.calendar_id, sweep_after=after)


def _one(fleet: Fleet, spec: ConnectionSpec, started: float) -> TickResult:
    """One connection and no routing: its cycle scans Directus itself, page by page, pushing each page
    while the next is read (the tick's shared reads would only add a wait)."""
    result = run_cycle(fleet.context(spec), publish=False)
    fleet.publish([spec.id])
    return _summary(fleet.roster, {spec.id: result}, 0, started)


def _checkpoint(fleet: Fleet) -> str | None:
    """Where the tick's scan starts: its own checkpoint, else (one connection until now) the earliest
    connection's own repair checkpoint, so that a second connection does not make it rescan every booking."""
    own = fleet.store.cursor(TICK, fleet.collection).directus_checkpoint
    if own is not None:
        return own
    known = [fleet.store.cursor(spec.id, spec.calendar_id).directus_checkpoint for spec in fleet.roster.specs]
    return min((c for c in known if c is not None), default=None)


def _read_directus(fleet: Fleet, specs: list[ConnectionSpec]) -> tuple[str, _Found]:
    """The tick's shared reads: one changed-since scan and one read of every connection's sweep slice."""
    roster, store, collection = fleet.roster, fleet.store, fleet.collection
    found = _Found()
    checkpoint = _checkpoint(fleet)
    start = scan_start(fleet.directus)
    for page in fleet.directus.items_changed_since(checkpoint, REPAIR_PAGE):
        for item in page:
            key = str(item["id"])
            spec = roster.route(item)
            if spec is None:
                found.unrouted[key] = item
            else:
                found.work[spec.id].changed[key] = item
    # Bookings routed to one connection but mapped in another: moved (a reassignment).
    routed = {key: cid for cid, work in found.work.items() for key in work.changed}
    for key, mappings in store.find_mappings(collection, list(routed)).items():
        for mapping in mappings:
            if mapping.connection != routed[key] and roster.get(mapping.connection) is not None:
                found.work[mapping.connection].moved.append(key)
    _sweep(fleet, specs, found)
    return start, found


def _sweep(fleet: Fleet, specs: list[ConnectionSpec], found: _Found) -> None:
    """A slice of every connection's mappings, read back from Directus in one go: a booking missing is an
    orphan candidate (the push proves it gone), one routed elsewhere has moved. The slices share
    ``SWEEP_PER_CYCLE`` keys and move on round-robin, so every mapping is checked in turn at a fixed cost
    per tick, whatever the number of connections."""
    roster, store, collection = fleet.roster, fleet.store, fleet.collection
    per = max(1, SWEEP_PER_CYCLE // max(1, len(specs)))
    slices: dict[str, list[str]] = {}
    for spec in specs:
        cursor = store.cursor(spec.id, spec.calendar_id)
        if cursor.directus_checkpoint is None:
            found.first.add(spec.id)
            continue
        after = cursor.sweep_after
        mappings = store.list_mappings(spec.id, collection, after, per)
        slices[spec.id] = [m.booking_key for m in mappings]
        found.sweep_after[spec.id] = mappings[-1].booking_key if len(mappings) == per else None
    keys = sorted({key for keys in slices.values() for key in keys})
    if not keys:
        return
    fields = ["id"] + ([roster.route_field] if roster.route_field else [])
    existing = fleet.directus.get_items(keys, fields=fields)
    for cid, keys_here in slices.items():
        work = found.work[cid]
        for key in keys_here:
            item = existing.get(key)
            if item is None:
                work.orphans.append(key)
            elif key not in work.changed and key not in work.moved:
                home = roster.route(item)
                if home is None or home.id != cid:
                    work.moved.append(key)


def _run_cycles(
    fleet: Fleet, specs: list[ConnectionSpec], found: _Found, started: float
) -> dict[str, CycleResult]:
    deadline = started + fleet.budget_seconds

    def run(spec: ConnectionSpec) -> CycleResult:
        work = found.work.get(spec.id) or CycleWork()
        first = spec.id in found.first
        if time.monotonic() > deadline:
            if not first:
                _park(fleet, spec, work, "the tick's time budget ran out: it goes first next tick")
            return CycleResult("skipped", 200, {"status": "skipped", "error": "time budget"})
        try:
            ctx = fleet.context(spec)
            result = run_cycle(ctx, work=None if first else _ahead(work), publish=False)
        except Exception as exc:  # one connection's bug must not stop the others
            log.exception("connection cycle failed", extra=logs.fields(connection=spec.id))
            result = CycleResult("error", 500, {"status": "error", "error": f"{type(exc).__name__}: {exc}"})
        if result.status not in RAN and not first:
            _park(fleet, spec, work, f"not synced in this tick ({result.status})")
        return result

    with ThreadPoolExecutor(max_workers=fleet.concurrency, thread_name_prefix="tick") as pool:
        return dict(zip([s.id for s in specs], pool.map(run, specs), strict=True))


def _ahead(work: CycleWork) -> CycleWork:
    """The part of the work a cycle does itself (moved bookings are released after every cycle)."""
    return CycleWork(changed=work.changed, orphans=work.orphans)


def _park(fleet: Fleet, spec: ConnectionSpec, work: CycleWork, why: str) -> None:
    """Put a connection's work in its outbox: the tick's checkpoint moves on, and nothing is lost. A
    connection never synced is not parked: its first cycle looks at everything routed to it."""
    if not work:
        return
    upserts = [*work.changed, *work.moved]
    if upserts:
        fleet.store.enqueue_many(spec.id, fleet.collection, upserts, "upsert")
    if work.orphans:
        fleet.store.enqueue_many(spec.id, fleet.collection, work.orphans, "delete")
    log.info("connection's work queued", extra=logs.fields(connection=spec.id, reason=why))


def _release_moved(
    fleet: Fleet, specs: list[ConnectionSpec], found: _Found, results: dict[str, CycleResult]
) -> None:
    """Remove the old events of moved bookings, in each old connection that ran; the others have them in
    their outbox already (``_park``)."""
    for spec in specs:
        moved = found.work[spec.id].moved if spec.id in found.work else []
        if not moved or results[spec.id].status not in RAN:
            continue
        ctx = fleet.context(spec)
        outcome = Pusher(ctx).push("upsert", moved)
        queue_failures(ctx, outcome)
        results[spec.id].body["moved_away"] = len(outcome.moved)


def _summary(roster: Roster, results: dict[str, CycleResult], unrouted: int, started: float) -> TickResult:
    bodies = {cid: result.body for cid, result in results.items()}
    statuses = {result.status for result in results.values()}
    body: dict[str, Any] = {
        "connections": bodies,
        "unrouted": unrouted,
        "duration": round(time.monotonic() - started, 3),
    }
    if roster.problems:
        body["connection_problems"] = list(roster.problems)
    if len(results) == 1:
        only = next(iter(results.values()))
        return TickResult(only.status, only.http_status, {**only.body, **body, "status": only.status})
    if not results:
        status, http = "no_connections", 200
    elif statuses <= NEUTRAL:
        status, http = ("ok" if "ok" in statuses else "not_connected"), 200
    elif statuses & NEUTRAL:
        status, http = "partial", 200
    else:
        first = next(r for r in results.values())
        status, http = first.status, first.http_status
    return TickResult(status, http, {"status": status, **body})
