"""The Google connection's lifecycle: connected, needs a new consent, disconnected.

``invalid_grant`` (a revoked or expired refresh token) can surface anywhere the product talks to Google;
every such place calls :func:`mark_needs_reconnect`, which records it once and logs ERROR once.

A connection with ``account_from`` has no consent of its own: it is as connected as the connection whose
Google account it uses, unless it was disconnected itself (which stops only its calendar).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from calsync import logs
from calsync.state.store import ConnectionStatus, Cursor, SyncStore, utcnow
from calsync.sync.channels import channel_status
from calsync.sync.connections import ConnectionSpec, Roster

log = logging.getLogger(__name__)


def mark_connected(
    store: SyncStore, connection: str, account: str, scopes: Sequence[str]
) -> ConnectionStatus:
    _, after = store.update_status(
        connection,
        {
            "state": "connected",
            "account": account,
            "scopes": tuple(scopes),
            "connected_at": utcnow(),
            "last_error": None,
        },
    )
    log.info("Google account connected", extra=logs.fields(connection=connection, account=account))
    return after


def mark_needs_reconnect(store: SyncStore, connection: str, reason: str) -> bool:
    """Record that only a new consent can fix the connection. True if this call made the transition.

    Not for a connection disconnected meanwhile (a cycle still running when an admin disconnected it meets
    the token just revoked): it needs no reconnect, it was let go."""
    if store.get_status(connection).state == "disconnected":
        return False
    before, _ = store.update_status(
        connection, {"state": "needs_reconnect", "last_error": f"Google refused the stored token: {reason}"}
    )
    if before.state == "needs_reconnect":
        return False
    log.error(
        "Google connection needs a new consent (the refresh token was revoked or expired); "
        "changes are queued until an admin reconnects",
        extra=logs.fields(connection=connection, reason=reason),
    )
    return True


def mark_disconnected(store: SyncStore, connection: str, collection: str, calendar_id: str) -> None:
    """The connection is gone, and with it what the sync knew of that account's calendar: its sync token and
    every booking's link to an event there. Whichever account connects next starts from Directus (its bookings
    are pushed anew; an event with a booking's ``google_event_id`` is relinked, not duplicated) and never
    reads or writes the previous account's events through stale mappings. The outbox stays: those are
    Directus's intents."""
    while mappings := store.list_mappings(connection, collection, None, 500):
        store.delete_mappings(connection, collection, [m.booking_key for m in mappings])
    store.put_cursor(Cursor(connection, calendar_id))
    store.update_status(
        connection,
        {"state": "disconnected", "account": None, "scopes": (), "connected_at": None, "last_error": None},
    )


def status_body(store: SyncStore, connection: str, spec: ConnectionSpec | None = None) -> dict[str, Any]:
    """What /status (and Directus) shows of one connection: the account, the last cycle, what waits.
    With its ``spec``, also what the admin defined (name, staff, calendar, account_from)."""
    status = store.get_status(connection)
    consent = status
    if spec is not None and spec.account_from and status.state != "disconnected":
        consent = store.get_status(spec.account_from)  # connected through the other's consent
    body: dict[str, Any] = {
        "connection": connection,
        "connected": consent.state == "connected",
        "state": consent.state,
        "needs_reconnect": consent.state == "needs_reconnect",
        "account": consent.account,
        "scopes": list(consent.scopes),
        "connected_at": consent.connected_at.isoformat() if consent.connected_at else None,
        "last_cycle_at": status.last_cycle_at.isoformat() if status.last_cycle_at else None,
        "last_cycle": dict(status.last_cycle) if status.last_cycle else None,
        "last_error": status.last_error,
        "pending_outbox": store.count_outbox(connection),
        "dead_letters": store.count_dead_letters(connection),
        "push": channel_status(store, connection),
    }
    if spec is not None:
        body.update(
            name=spec.name,
            staff=spec.staff,
            calendar_id=spec.calendar_id,
            account_from=spec.account_from,
        )
    return body


def overview(store: SyncStore, roster: Roster, default: str) -> dict[str, Any]:
    """Every connection's status under ``connections``; the top-level fields are ``default``'s, as /status
    answered before there were several (scripts that read ``connected`` or ``state`` keep working)."""
    return {
        **status_body(store, default, roster.get(default)),
        "connections": [status_body(store, spec.id, spec) for spec in roster.specs],
        "problems": list(roster.problems),
    }
