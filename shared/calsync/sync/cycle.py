"""One connection's sync cycle: what the tick (``calsync.sync.tick``) runs for each connection, what a sync
request runs for one (``App.run_connection``), and ``calsync sync`` locally.

1. Take the connection's import lease (another cycle running -> 409).
2. Pull Google -> Directus (``pull.Puller``), resolving conflicts by the later change.
3. Keep the connection's push channel (``channels.ensure_channel``): made, renewed before it expires.
4. Repair Directus -> Google: drain the outbox (oldest first, bounded, backoff per entry), then push what
   the tick's shared reads found for this connection (``CycleWork``); or, without them (one connection,
   or a connection's first cycle), push every booking routed here and changed in Directus since the
   checkpoint whose content differs from its mapping (webhooks that never arrived), and advance the
   checkpoint.
5. Record the cycle in the connection status (and in Directus when configured).

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
from calsync.directus.errors import DirectusError
from calsync.google.errors import GoogleAccessRevoked, GoogleError
from calsync.state.store import OutboxEntry, StoreError
from calsync.sync.channels import ensure_channel
from calsync.sync.connection import mark_needs_reconnect
from calsync.sync.outcome import PushOutcome
from calsync.sync.plan import needs_push, plan_upserts
from calsync.sync.ports import Calendar, Directus, SyncContext
from calsync.sync.pull import MassCancelRefused, Puller, PullSummary
from calsync.sync.push import Pusher, queue_failures

log = logging.getLogger(__name__)

LEASE_TTL = timedelta(
    minutes=9
)  # longer than a cycle may run (the function's timeout), shorter than two ticks
OUTBOX_PER_CYCLE = 500
REPAIR_PAGE = 500
# A small first page starts Google and the status write-back sooner; the later pages overlap with them.
REPAIR_FIRST_PAGE = 50
SWEEP_PER_CYCLE = 200  # mappings checked for a deleted booking per cycle (one Directus read)


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at one hour: how long a failed outbox entry waits."""
    return timedelta(seconds=min(30 * 2**attempts, 3600))


@dataclasses.dataclass
class CycleWork:
    """What the tick found for one connection in its shared Directus reads (``calsync.sync.tick``): the
    bookings routed here that changed, the mapped ones Directus no longer lists (candidates: the push proves
    them gone), and the mapped ones another connection serves now (moved: released after the new calendar
    has them)."""

    changed: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    orphans: list[str] = dataclasses.field(default_factory=list)
    moved: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.changed or self.orphans or self.moved)


@dataclasses.dataclass
class CycleResult:
    status: str
    http_status: int = 200
    body: dict[str, Any] = dataclasses.field(default_factory=dict)


def import_lease_name(connection: str) -> str:
    return f"{connection}/import"


def run_cycle(
    ctx: SyncContext, now: datetime | None = None, work: CycleWork | None = None, publish: bool = True
) -> CycleResult:
    """Run one cycle of this connection under its import lease; never raises for Google or Directus trouble.

    ``work``: what the tick's shared reads found for this connection, pushed instead of a Directus scan of
    its own; None: the cycle scans Directus itself (one connection's own cycle, and a connection's first,
    which looks at every booking routed to it). ``publish``: show the status in Directus (the tick
    publishes every connection's at once instead)."""
    now = now or ctx.clock()
    holder = uuid.uuid4().hex
    lease = import_lease_name(ctx.connection)
    if not ctx.store.acquire_lease(lease, holder, LEASE_TTL):
        return CycleResult("busy", 409, {"status": "busy", "error": "another sync cycle is running"})
    try:
        return _run(ctx, now, work, publish)
    finally:
        ctx.store.release_lease(lease, holder)


def _run(ctx: SyncContext, now: datetime, work: CycleWork | None, publish: bool) -> CycleResult:
    started = time.monotonic()
    store, connection = ctx.store, ctx.connection
    state = store.get_status(connection).state
    calendar = ctx.calendar() if state != "needs_reconnect" else None
    if calendar is None:
        if publish:
            ctx.publish_status()  # keep what Directus shows current even when no cycle can run
        status = "needs_reconnect" if state == "needs_reconnect" else "not_connected"
        return CycleResult(status, 200, {"status": status, "pending_outbox": store.count_outbox(connection)})
    pulled = PullSummary()
    pushed = PushOutcome()
    watch: dict[str, Any] | None = None
    try:
        pulled = Puller(ctx, calendar).run(now)
        watch = _watch(ctx, calendar)
        pusher = Pusher(ctx)
        with pusher.writing_back():
            pushed.merge(drain_outbox(ctx, pusher, now))
            if work is None:
                pushed.merge(repair_missed(ctx, pusher))
                pushed.merge(sweep_orphans(ctx, pusher))
            else:
                pushed.merge(push_work(ctx, pusher, work))
    except GoogleAccessRevoked as exc:
        mark_needs_reconnect(store, connection, str(exc))
        return _finish(ctx, "needs_reconnect", 200, pulled, pushed, started, publish, str(exc), watch)
    except MassCancelRefused as exc:
        log.error("mass cancellation refused", extra=logs.fields(reason=str(exc)))
        return _finish(ctx, "mass_cancel_refused", 200, pulled, pushed, started, publish, str(exc), watch)
    except (GoogleError, DirectusError) as exc:
        # Nothing is lost: the sync token and checkpoint did not move past what was committed.
        log.warning("cycle interrupted; the next one resumes", extra=logs.fields(error=str(exc)))
        return _finish(ctx, "error", 503, pulled, pushed, started, publish, str(exc), watch)
    if pushed.guard:
        return _finish(ctx, "mass_delete_refused", 200, pulled, pushed, started, publish, pushed.guard, watch)
    return _finish(ctx, "ok", 200, pulled, pushed, started, publish, None, watch)


def _watch(ctx: SyncContext, calendar: Calendar) -> dict[str, Any] | None:
    """Keep the connection's push channel as the settings want it (made, renewed before it expires, or
    stopped); a channel that cannot be made leaves polling as it is, and the status says why."""
    try:
        return ensure_channel(ctx, calendar, ctx.config.notification_url).as_json()
    except StoreError as exc:
        log.warning("could not keep the push channel", extra=logs.fields(error=str(exc)))
        return None


def _finish(
    ctx: SyncContext,
    status: str,
    http_status: int,
    pulled: PullSummary,
    pushed: PushOutcome,
    started: float,
    publish: bool,
    error: str | None = None,
    watch: dict[str, Any] | None = None,
) -> CycleResult:
    body: dict[str, Any] = {
        "status": status,
        "created": pulled.created,
        "updated": pulled.updated,
        "cancelled": pulled.cancelled,
        "pushed": len(pushed.synced) + len(pushed.deleted) + len(pushed.moved),
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
    if watch is not None:
        body["push_channel"] = watch
    ctx.store.update_status(
        ctx.connection, {"last_cycle_at": ctx.clock(), "last_cycle": body, "last_error": error}
    )
    log.log(
        logging.INFO if status == "ok" else logging.WARNING, "sync cycle finished", extra=logs.fields(**body)
    )
    if publish:
        ctx.publish_status()
    return CycleResult(status, http_status, body)


def drain_outbox(ctx: SyncContext, pusher: Pusher, now: datetime) -> PushOutcome:
    """Push the due outbox entries, oldest first; a failed one is tried again later with backoff."""
    entries = ctx.store.due_outbox(ctx.connection, now, OUTBOX_PER_CYCLE)
    groups: dict[str, list[OutboxEntry]] = defaultdict(list)
    for entry in entries:
        groups[entry.action].append(entry)
    total = PushOutcome()
    for action, group in groups.items():
        outcome = pusher.push("delete" if action == "delete" else "upsert", [e.booking_key for e in group])
        for entry in group:
            reason = outcome.failed.get(entry.booking_key)
            if reason is None:
                ctx.store.remove_outbox(entry)  # only if no newer intent arrived meanwhile
            else:
                ctx.store.record_outbox_failure(entry, reason, now + backoff(entry.attempts))
        outcome.failed.clear()  # already recorded on their entries
        total.merge(outcome)
    return total


def scan_start(directus: Directus) -> str:
    """Where the next changed-since scan starts, taken before this one: whatever changes from now on is at
    or after this instant by Directus's own clock (two seconds of margin for the Date header's resolution)."""
    return (directus.server_time() - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def repair_missed(ctx: SyncContext, pusher: Pusher) -> PushOutcome:
    """Push bookings changed in Directus since the checkpoint whose content differs from their mapping."""
    store, connection, config = ctx.store, ctx.connection, ctx.config
    checkpoint = store.cursor(connection, config.calendar_id).directus_checkpoint
    start = scan_start(ctx.directus)
    total = PushOutcome()
    for page in ctx.directus.items_changed_since(checkpoint, REPAIR_PAGE, first_page=REPAIR_FIRST_PAGE):
        items = {str(item["id"]): item for item in page if config.serves(item)}
        total.merge(push_stale(ctx, pusher, items))
    store.update_cursor(connection, config.calendar_id, directus_checkpoint=start)
    return total


def push_stale(ctx: SyncContext, pusher: Pusher, items: dict[str, dict[str, Any]]) -> PushOutcome:
    """Push those of these scanned bookings whose content differs from their mapping."""
    config = ctx.config
    plan = plan_upserts(
        ctx.connection, config, items, ctx.store.get_mappings(ctx.connection, config.collection, list(items))
    )
    stale = needs_push(plan, items)
    if not stale:
        return PushOutcome()
    # under each booking's lease push() checks the row did not change since this scan read it (and reads it
    # again if it did), so a concurrent delivery cannot interleave
    outcome = pusher.push("upsert", stale, seen=items)
    queue_failures(ctx, outcome)
    return outcome


def push_work(ctx: SyncContext, pusher: Pusher, work: CycleWork) -> PushOutcome:
    """Push what the tick found for this connection (``CycleWork``). Moved bookings are released by the
    tick after every connection's cycle, so that their new calendars have them first."""
    total = push_stale(ctx, pusher, work.changed)
    if work.orphans:
        log.info("bookings deleted in Directus without a webhook", extra=logs.fields(count=len(work.orphans)))
        outcome = pusher.push("delete", work.orphans)
        queue_failures(ctx, outcome)
        total.merge(outcome)
    return total


def sweep_orphans(ctx: SyncContext, pusher: Pusher) -> PushOutcome:
    """Delete the events of bookings that no longer exist in Directus, a bounded slice per cycle.

    The slice moves on round-robin (the cursor's ``sweep_after``), so every mapping is checked every
    mappings/SWEEP_PER_CYCLE cycles at a fixed cost per cycle, whatever the calendar's size. A booking
    missing from the read is only a candidate: the push proves it absent before deleting anything."""
    store, connection, config = ctx.store, ctx.connection, ctx.config
    cursor = store.cursor(connection, config.calendar_id)
    mappings = store.list_mappings(connection, config.collection, cursor.sweep_after, SWEEP_PER_CYCLE)
    outcome = PushOutcome()
    if mappings:
        keys = [m.booking_key for m in mappings]
        existing = ctx.directus.get_items(keys, fields=["id"])
        orphans = [key for key in keys if key not in existing]
        if orphans:
            log.info("bookings deleted in Directus without a webhook", extra=logs.fields(count=len(orphans)))
            outcome = pusher.push("delete", orphans)
            queue_failures(ctx, outcome)
    after = mappings[-1].booking_key if len(mappings) == SWEEP_PER_CYCLE else None
    if cursor.sweep_after != after:
        store.update_cursor(connection, config.calendar_id, sweep_after=after)
    return outcome
