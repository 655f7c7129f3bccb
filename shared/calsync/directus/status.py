"""Show the Google connections' status in Directus, on the items ``calsync directus setup`` creates (one per
connection in ``calendar_sync_connections``; the default connection's also on the settings singleton), so
the people who use Directus see who is connected and whether the sync is healthy.

A publish is one aggregate read (bookings counted by ``sync_status``, and by the routing field when there is
one) and one write per collection, whatever the number of connections (:func:`publish_all`). A
write Directus refuses is remembered in the connection status and shown by the next publish that goes
through (``last_publish_error``), and the refused write is retried at once with only the fields every
version of setup created, so that a cycle that failed never goes on showing the previous cycle's ``ok``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from calsync import logs
from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusError, DirectusUnavailable
from calsync.state.store import DEFAULT_CONNECTION, SyncStore, utcnow
from calsync.sync.channels import channel_status
from calsync.sync.connection import status_body
from calsync.sync.connections import Roster

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


def _aggregate(directus: DirectusClient, group_by: list[str]) -> list[dict[str, Any]]:
    """Bookings counted by ``group_by``, in one aggregate request (Directus answers
    ``[{"sync_status": "error", "staff": "u1", "count": {"id": 3}}, ...]``; some databases give the count as
    a string)."""
    rows = directus.request(
        "GET",
        f"/items/{directus.collection}",
        "booking counts read",
        params={"aggregate[count]": "id", "groupBy[]": group_by},
    )
    return [row for row in rows or [] if isinstance(row, dict)]


def _add(counts: dict[str, int], row: Mapping[str, Any]) -> None:
    field = COUNTED.get(str(row.get("sync_status")))
    if field is not None:
        counts[field] += int((row.get("count") or {}).get("id") or 0)


def booking_counts(directus: DirectusClient) -> dict[str, int]:
    """Bookings by sync status, in one aggregate request."""
    counts = dict.fromkeys(COUNTED.values(), 0)
    for row in _aggregate(directus, ["sync_status"]):
        _add(counts, row)
    return counts


def connection_counts(directus: DirectusClient, roster: Roster) -> dict[str, dict[str, int]]:
    """Each connection's bookings by sync status, in one aggregate request for all of them: grouped by the
    routing field too, each group counted where the roster routes it (bookings nobody serves nowhere: they
    are in error, and say why)."""
    group_by = ["sync_status", *([roster.route_field] if roster.route_field else [])]
    counts = {spec.id: dict.fromkeys(COUNTED.values(), 0) for spec in roster.specs}
    for row in _aggregate(directus, group_by):
        spec = roster.route(row)
        if spec is not None:
            _add(counts[spec.id], row)
    return counts


def _status_item(
    store: SyncStore, connection: str, connect_url: str | None, tick: timedelta
) -> dict[str, Any]:
    """What one connection's item shows: its status, the refusal of an earlier publish, its fresh link."""
    fields = status_fields(store, connection, tick)
    fields["last_publish_error"] = store.get_status(connection).publish_error
    if connect_url:
        fields["connect_url"] = connect_url
    return fields


def _refused(
    store: SyncStore, connection: str, fields: dict[str, Any], exc: DirectusError
) -> tuple[str, dict[str, Any]]:
    """Record in the connection status that Directus refused its publish; returns the refusal and the
    fields every version of setup created, to try again with."""
    refusal = f"{PUBLISH_ERROR_PREFIX} at {utcnow().isoformat(timespec='seconds')}: {exc}"
    previous = fields["last_error"]
    combined = f"{previous}; {refusal}" if previous and PUBLISH_ERROR_PREFIX not in previous else refusal
    store.update_status(connection, {"last_error": combined, "publish_error": refusal})
    return refusal, {name: fields[name] for name in BASIC_FIELDS} | {"last_error": combined}


Items = dict[str, dict[str, Any]]  # connection -> the fields its item shows


def _write(store: SyncStore, items: Items, write: Callable[[Items], None]) -> PublishRefused | None:
    """``write(items)``; when Directus refuses, the refusal is recorded for each connection written and
    returned, after one more write with only the basic fields if Directus refused rather than being down
    (perhaps fields this version added, setup not run again: what every version has still tells the truth
    about the cycle)."""
    try:
        write(items)
    except DirectusError as exc:
        refusal, basic = "", {}
        for connection, fields in items.items():
            refusal, basic[connection] = _refused(store, connection, fields, exc)
        if not isinstance(exc, DirectusUnavailable):
            with contextlib.suppress(DirectusError):
                write(basic)
        refused = PublishRefused(refusal, exc.status, exc.code)
        refused.__cause__ = exc
        return refused
    return None


def _singleton(directus: DirectusClient) -> Callable[[Items], None]:
    def write(items: Items) -> None:
        for fields in items.values():  # the one connection it shows
            directus.update_singleton(SETTINGS_COLLECTION, fields)

    return write


def _collection(directus: DirectusClient) -> Callable[[Items], None]:
    def write(items: Items) -> None:
        directus.update_connections([{"id": connection, **fields} for connection, fields in items.items()])

    return write


def _cleared(store: SyncStore, items: Items, refused: set[str]) -> None:
    """Earlier refusals that this publish showed are dropped: the next one no longer shows them."""
    for connection, fields in items.items():
        if fields["last_publish_error"] and connection not in refused:
            store.update_status(connection, {"publish_error": None})


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
    items = {connection: _status_item(store, connection, connect_url, tick)}
    try:
        items[connection].update(booking_counts(directus))
    except DirectusError as exc:  # the status itself matters more than the counts
        log.warning("could not count the bookings by sync status", extra=logs.fields(error=str(exc)))
    refused = _write(store, items, _singleton(directus))
    if refused is not None:
        raise refused
    _cleared(store, items, set())


def publish_all(
    directus: DirectusClient,
    store: SyncStore,
    roster: Roster,
    connect_urls: Mapping[str, str | None],
    tick: timedelta = timedelta(minutes=5),
) -> None:
    """Every connection's status onto its item of the connections collection, and the default
    connection's onto the settings singleton too (what installations from before connections, and their
    dashboards, look at): three requests whatever the number of connections (one aggregate read for the
    counts, one bulk write of every item, one of the singleton). An installation without the collection
    (the roster's implicit ``default``) gets only the singleton.

    A refusal is recorded per connection, as :func:`publish` does; raises PublishRefused after both writes
    were tried."""
    items = {spec.id: _status_item(store, spec.id, connect_urls.get(spec.id), tick) for spec in roster.specs}
    try:
        for connection, counts in connection_counts(directus, roster).items():
            items[connection].update(counts)
    except DirectusError as exc:
        log.warning("could not count the bookings by sync status", extra=logs.fields(error=str(exc)))
    writes: list[tuple[Items, Callable[[Items], None]]] = []
    if not roster.implicit_default and items:
        # the connections' items also show push notifications (the settings singleton has no such field)
        shown = {
            c: {**fields, "channel_state": channel_status(store, c)["channel_state"]}
            for c, fields in items.items()
        }
        writes.append((shown, _collection(directus)))
    if DEFAULT_CONNECTION in items:
        writes.append(({DEFAULT_CONNECTION: items[DEFAULT_CONNECTION]}, _singleton(directus)))
    refusals: list[PublishRefused] = []
    refused: set[str] = set()
    for part, write in writes:
        refusal = _write(store, part, write)
        if refusal is not None:
            refusals.append(refusal)
            refused |= set(part)
    _cleared(store, items, refused)
    if refusals:
        raise refusals[0]


class PublishRefused(DirectusError):
    """Directus refused the status update; the message says when and why (shown by the next publish)."""
