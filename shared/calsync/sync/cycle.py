"""One sync cycle: what calendar_import runs on every Cloud Scheduler tick (and ``calsync sync`` locally).

1. Take the connection's import lease (another cycle running -> 409).
2. Pull Google -> Directus (``pull.Puller``), resolving conflicts by the later change.
3. Repair Directus -> Google: drain the outbox (oldest first, bounded, backoff per entry), then push every
   booking changed in Directus since the checkpoint whose content differs from its mapping (webhooks that
   never arrived), then advance the checkpoint.
4. Record the cycle in the connection status (and in Directus when configured).

The pull runs before the repair so that a booking changed on both sides is decided once, by the later
change: the pull sees the Directus edit and the Google edit side by side; pushing first would overwrite the
Google edit before anyone compared them.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from calsync import logs
from calsync.bootstrap import App
from calsync.directus.client import DirectusError
from calsync.google.calendar import GoogleAccessRevoked, GoogleError
from calsync.state.store import Cursor, OutboxEntry, utcnow
from calsync.sync.booking import PRIVATE_HASH, InvalidBooking, booking_to_event
from calsync.sync.connection import mark_needs_reconnect
from calsync.sync.pull import MassCancelRefused, Puller, PullSummary
from calsync.sync.push import Pusher, PushOutcome

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(
    minutes=9
)  # longer than a cycle may run (the function's timeout), shorter than two ticks
OUTBOX_PER_CYCLE = 500
REPAIR_PAGE = 500
SWEEP_PER_CYCLE = 200  # mappings checked for a deleted booking per cycle (one Directus read)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at one hour."""
    return timedelta(seconds=min(30 * 2**attempts, 3600))


@dataclasses.dataclass
class CycleResult:
    status: str
    http_status: int = 200
    body: dict[str, Any] = dataclasses.field(default_factory=dict)


def run_cycle(app: App, now: datetime | None = None) -> CycleResult:
    """Run one cycle under the import lease; never raises for Google or Directus trouble."""
    now = now or utcnow()
    holder = uuid.uuid4().hex
    lease = f"{app.connection}/import"
    if not app.store.acquire_lease(lease, holder, LEASE_TTL):
        return CycleResult("busy", 409, {"status": "busy", "error": "another sync cycle is running"})
    try:
        return _run(app, now)
    finally:
        app.store.release_lease(lease, holder)


def _run(app: App, now: datetime) -> CycleResult:
    started = time.monotonic()
    store, connection = app.store, app.connection
    if app.tokens.get(connection) is None or store.get_status(connection).state == "needs_reconnect":
        app.publish_status()  # keep what Directus shows current even when no cycle can run
    if app.tokens.get(connection) is None:
        return CycleResult(
            "not_connected",
            200,
            {"status": "not_connected", "pending_outbox": store.count_outbox(connection)},
        )
    if store.get_status(connection).state == "needs_reconnect":
        return CycleResult(
            "needs_reconnect",
            200,
            {"status": "needs_reconnect", "pending_outbox": store.count_outbox(connection)},
        )
    calendar = app.calendar()
    assert calendar is not None
    pulled = PullSummary()
    pushed = PushOutcome()
    try:
        pulled = Puller(app, calendar).run(now)
        pusher = Pusher(app)
        with pusher.writing_back():
            pushed.merge(drain_outbox(app, pusher, now))
            pushed.merge(repair_missed(app, pusher))
            pushed.merge(sweep_orphans(app, pusher))
    except GoogleAccessRevoked as exc:
        mark_needs_reconnect(store, connection, str(exc))
        return _finish(app, "needs_reconnect", 200, pulled, pushed, started, error=str(exc))
    except MassCancelRefused as exc:
        log.error("mass cancellation refused", extra=logs.fields(reason=str(exc)))
        return _finish(app, "mass_cancel_refused", 200, pulled, pushed, started, error=str(exc))
    except (GoogleError, DirectusError) as exc:
        # Nothing is lost: the sync token and checkpoint did not move past what was committed.
        log.warning("cycle interrupted; the next one resumes", extra=logs.fields(error=str(exc)))
        return _finish(app, "error", 503, pulled, pushed, started, error=str(exc))
    return _finish(app, "ok", 200, pulled, pushed, started)


def _finish(
    app: App,
    status: str,
    http_status: int,
    pulled: PullSummary,
    pushed: PushOutcome,
    started: float,
    error: str | None = None,
) -> CycleResult:
    body: dict[str, Any] = {
        "status": status,
        "created": pulled.created,
        "updated": pulled.updated,
        "cancelled": pulled.cancelled,
        "pushed": len(pushed.synced) + len(pushed.deleted),
        "skipped_echoes": pulled.skipped_echoes,
        "dead_letters": pulled.dead_letters + len(pushed.dead),
        "queued": len(pushed.failed),
        "conflicts_directus_won": pulled.conflicts_directus_won,
        "pages": pulled.pages,
        "full_sync": pulled.full_sync,
        "duration": round(time.monotonic() - started, 3),
    }
    if error:
        body["error"] = error
    changes: dict[str, Any] = {"last_cycle_at": utcnow(), "last_cycle": body}
    changes["last_error"] = error
    app.store.update_status(app.connection, changes)
    log.log(
        logging.INFO if status == "ok" else logging.WARNING, "sync cycle finished", extra=logs.fields(**body)
    )
    app.publish_status()
    return CycleResult(status, http_status, body)


def drain_outbox(app: App, pusher: Pusher, now: datetime) -> PushOutcome:
    """Push the due outbox entries, oldest first; a failed one is tried again later with backoff."""
    entries = app.store.due_outbox(app.connection, now, OUTBOX_PER_CYCLE)
    groups: dict[str, list[OutboxEntry]] = defaultdict(list)
    for entry in entries:
        groups[entry.action].append(entry)
    total = PushOutcome()
    for action, group in groups.items():
        outcome = pusher.push(action, [e.booking_key for e in group])
        for entry in group:
            reason = outcome.failed.get(entry.booking_key)
            if reason is None:
                app.store.remove_outbox(entry)  # only if no newer intent arrived meanwhile
            else:
                app.store.record_outbox_failure(entry, reason, now + backoff(entry.attempts))
        outcome.failed.clear()  # already recorded on their entries
        total.merge(outcome)
    return total


def repair_missed(app: App, pusher: Pusher) -> PushOutcome:
    """Push bookings changed in Directus since the checkpoint whose content differs from their mapping."""
    store, connection = app.store, app.connection
    calendar_id = app.settings.google_calendar_id
    cursor = store.get_cursor(connection, calendar_id) or Cursor(connection, calendar_id)
    checkpoint = cursor.directus_checkpoint
    # Whatever changes from now on is at or after this instant by Directus's own clock (two seconds of
    # margin for the Date header's resolution): the next cycle starts there.
    scan_start = (app.directus.server_time() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    total = PushOutcome()
    for page in app.directus.items_changed_since(checkpoint, REPAIR_PAGE):
        items = {str(item["id"]): item for item in page}
        mappings = store.get_mappings(connection, app.settings.directus_collection, list(items))
        stale: set[str] = set()
        for key, item in items.items():
            try:
                body = booking_to_event(
                    item,
                    collection=app.settings.directus_collection,
                    key=key,
                    default_timezone=app.settings.timezone,
                    link_base=app.settings.directus_link_base,
                )
            except InvalidBooking:
                if item.get("sync_status") != "error":
                    stale.add(key)  # let the pusher record why on the booking
                continue
            mapping = mappings.get(key)
            if mapping is None or mapping.content_hash != body["extendedProperties"]["private"][PRIVATE_HASH]:
                stale.add(key)
        if stale:
            # push() re-reads them under each booking's lease, so a concurrent delivery cannot interleave
            outcome = pusher.push("upsert", list(stale))
            for key, reason in outcome.failed.items():
                store.enqueue(
                    connection,
                    app.settings.directus_collection,
                    key,
                    outcome.failed_action[key],
                    error=reason,
                )
            total.merge(outcome)
    latest = store.get_cursor(connection, calendar_id) or cursor
    store.put_cursor(dataclasses.replace(latest, directus_checkpoint=scan_start, updated_at=utcnow()))
    return total


def sweep_orphans(app: App, pusher: Pusher) -> PushOutcome:
    """Delete the events of bookings that no longer exist in Directus, a bounded slice per cycle.

    The slice moves on round-robin (the cursor's ``sweep_after``), so every mapping is checked every
    mappings/SWEEP_PER_CYCLE cycles at a fixed cost per cycle, whatever the calendar's size."""
    store, connection, collection = app.store, app.connection, app.settings.directus_collection
    calendar_id = app.settings.google_calendar_id
    cursor = store.get_cursor(connection, calendar_id) or Cursor(connection, calendar_id)
    mappings = store.list_mappings(connection, collection, cursor.sweep_after, SWEEP_PER_CYCLE)
    outcome = PushOutcome()
    if mappings:
        keys = [m.booking_key for m in mappings]
        existing = app.directus.get_items(keys, fields=["id"])
        orphans = [key for key in keys if key not in existing]
        if orphans:
            log.info("bookings deleted in Directus without a webhook", extra=logs.fields(count=len(orphans)))
            outcome = pusher.push("delete", orphans)
            for key, reason in outcome.failed.items():
                store.enqueue(connection, collection, key, "delete", error=reason)
    after = mappings[-1].booking_key if len(mappings) == SWEEP_PER_CYCLE else None
    latest = store.get_cursor(connection, calendar_id) or cursor
    if latest.sweep_after != after:
        store.put_cursor(dataclasses.replace(latest, sweep_after=after, updated_at=utcnow()))
    return outcome
