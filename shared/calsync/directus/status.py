"""Show the Google connection's status in Directus, on the settings singleton ``calsync directus setup``
creates, so the people who use Directus see who is connected and whether the sync is healthy.

Every publish is one aggregate read (bookings counted by ``sync_status``) and one write of the item. A
write Directus refuses is remembered in the connection status and shown by the next publish that goes
through (``last_publish_error``), and the refused write is retried at once with only the fields every
version of setup created, so that a cycle that failed never goes on showing the previous cycle's ``ok``.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from calsync import logs
from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusError, DirectusUnavailable
from calsync.state.store import SyncStore, utcnow
from calsync.sync.connection import status_body

log = logging.getLogger(__name__)

SETTINGS_COLLECTION = "calendar_sync"
# sync_status value -> the settings item's field that counts it
COUNTED = {
    "error": "bookings_in_error",
    "queued": "bookings_queued",
    "read_only": "bookings_read_only",
    "excluded": "bookings_excluded",
}
# Fields the very first setup created: what a refused publish falls back to (an older Directus schema).
BASIC_FIELDS = ("last_cycle_at", "last_cycle_result", "last_error")
# A cycle is overdue once this many scheduler ticks passed without one.
OVERDUE_TICKS = 3
PUBLISH_ERROR_PREFIX = "Directus refused the status update"


def next_cycle_expected_by(last_cycle_at: datetime | None, tick: timedelta) -> datetime | None:
    """When the next cycle must have finished: ``OVERDUE_TICKS`` scheduler ticks after the last one.

    The functions cannot say "overdue" themselves: when no cycle runs, nothing runs that could write it. So
    they publish a deadline, and Directus compares it with the clock when someone looks: the field's
    display is a relative time ("in 12 minutes", "3 hours ago"), and its note says that "ago" means
    overdue. A field display rather than an Insights panel, because Directus 12's metric and list panels
    refuse singleton collections (their queries skip them), and the settings item is one; the display is
    where the admin already looks."""
    return last_cycle_at + OVERDUE_TICKS * tick if last_cycle_at else None


def status_fields(
    store: SyncStore, connection: str, tick: timedelta = timedelta(minutes=5)
) -> dict[str, Any]:
    body = status_body(store, connection)
    last = body["last_cycle"] or {}
    status = store.get_status(connection)
    expected = next_cycle_expected_by(status.last_cycle_at, tick)
    return {
        "google_account": body["account"],
        "connection_state": body["state"],
        "last_connected_at": body["connected_at"],
        "last_cycle_at": body["last_cycle_at"],
        "last_cycle_result": last.get("status"),
        "next_cycle_expected_by": expected.isoformat() if expected else None,
        "last_error": body["last_error"],
        "pending_changes": body["pending_outbox"],
        "dead_letters": body["dead_letters"],
    }


def booking_counts(directus: DirectusClient) -> dict[str, int]:
    """Bookings by sync status, in one aggregate request (Directus 12 answers
    ``[{"sync_status": "error", "count": {"id": 3}}, ...]``; some databases give the count as a string)."""
    rows = directus.request(
        "GET",
        f"/items/{directus.collection}",
        "booking counts read",
        params={"aggregate[count]": "id", "groupBy[]": "sync_status"},
    )
    counts = dict.fromkeys(COUNTED.values(), 0)
    for row in rows or []:
        field = COUNTED.get(str(row.get("sync_status")))
        if field is not None:
            counts[field] = int((row.get("count") or {}).get("id") or 0)
    return counts


def publish(
    directus: DirectusClient,
    store: SyncStore,
    connection: str,
    connect_url: str | None,
    tick: timedelta = timedelta(minutes=5),
) -> None:
    """Write the status fields onto the settings singleton, with a fresh signed Connect link when the
    settings to sign one are there, and the booking counts. Every cycle publishes, so the link shown never
    gets older than a tick.

    A refused publish is recorded in the connection status (``publish_error``, kept across cycles and
    instances, where ``last_error`` is overwritten by the next cycle) and shown in ``last_publish_error`` by
    the next publish that goes through, which then clears it.

    Raises DirectusError if Directus refuses; the refusal is recorded first (see module docstring)."""
    fields = status_fields(store, connection, tick)
    earlier = store.get_status(connection).publish_error
    fields["last_publish_error"] = earlier
    if connect_url:
        fields["connect_url"] = connect_url
    try:
        fields.update(booking_counts(directus))
    except DirectusError as exc:  # the status itself matters more than the counts
        log.warning("could not count the bookings by sync status", extra=logs.fields(error=str(exc)))
    try:
        directus.update_singleton(SETTINGS_COLLECTION, fields)
    except DirectusError as exc:
        refusal = f"{PUBLISH_ERROR_PREFIX} at {utcnow().isoformat(timespec='seconds')}: {exc}"
        previous = fields["last_error"]
        combined = f"{previous}; {refusal}" if previous and PUBLISH_ERROR_PREFIX not in previous else refusal
        store.update_status(connection, {"last_error": combined, "publish_error": refusal})
        if not isinstance(exc, DirectusUnavailable):
            # Refused, not down: perhaps fields this version added (setup not run again). What every
            # version has still tells the truth about the cycle.
            basic = {name: fields[name] for name in BASIC_FIELDS} | {"last_error": combined}
            with contextlib.suppress(DirectusError):
                directus.update_singleton(SETTINGS_COLLECTION, basic)
        raise PublishRefused(refusal, exc.status, exc.code) from exc
    if earlier:
        store.update_status(connection, {"publish_error": None})  # shown now: the next publish drops it


class PublishRefused(DirectusError):
    """Directus refused the status update; the message says when and why (shown by the next publish)."""
