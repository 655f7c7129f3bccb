"""Show the Google connection's status in Directus, on the settings singleton ``calsync directus setup``
creates, so the people who use Directus see who is connected and whether the sync is healthy."""

from __future__ import annotations

from typing import Any

from calsync.directus.client import DirectusClient
from calsync.state.store import SyncStore
from calsync.sync.connection import status_body

SETTINGS_COLLECTION = "calendar_sync"


def status_fields(store: SyncStore, connection: str) -> dict[str, Any]:
    body = status_body(store, connection)
    last = body["last_cycle"] or {}
    return {
        "google_account": body["account"],
        "connection_state": body["state"],
        "last_cycle_at": body["last_cycle_at"],
        "last_cycle_result": last.get("status"),
        "last_error": body["last_error"],
        "pending_changes": body["pending_outbox"],
        "dead_letters": body["dead_letters"],
    }


def publish(directus: DirectusClient, store: SyncStore, connection: str, connect_url: str | None) -> None:
    """Write the status fields onto the settings singleton, with a fresh signed Connect link when the
    settings to sign one are there (raises DirectusError if Directus refuses). Every cycle publishes, so
    the link shown never gets older than a tick."""
    fields = status_fields(store, connection)
    if connect_url:
        fields["connect_url"] = connect_url
    directus.update_singleton(SETTINGS_COLLECTION, fields)
