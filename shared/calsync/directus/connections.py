"""Adding and removing connection items (``calsync connections add`` / ``remove``).

The sync itself only reads the connections collection and writes status onto its items; creating and
deleting items is an admin's act, so the CLI does it with ``DIRECTUS_ADMIN_TOKEN`` when given (the sync
service user may not create or delete them), else with ``DIRECTUS_TOKEN``.
"""

from __future__ import annotations

from typing import Any

from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusNotFound
from calsync.sync.connections import CONNECTIONS_COLLECTION, ConnectionSpec


def connection_item(spec: ConnectionSpec) -> dict[str, Any]:
    """The item that defines ``spec``: what :func:`calsync.sync.connections.spec_from_item` reads back."""
    return {
        "id": spec.id,
        "name": spec.name or None,
        "staff": spec.staff,
        "calendar_id": spec.calendar_id,
        "account_from": spec.account_from,
    }


def create_connection(client: DirectusClient, spec: ConnectionSpec) -> dict[str, Any]:
    """Create the item; Directus answers 400 RECORD_NOT_UNIQUE (a DirectusValidationError) for a taken id."""
    created = client.request(
        "POST", f"/items/{CONNECTIONS_COLLECTION}", "connection create", body=connection_item(spec)
    )
    return dict(created or {})


def delete_connection(client: DirectusClient, connection: str) -> bool:
    """Delete the item; False when it was not there (Directus answers 403 for a missing item)."""
    try:
        client.request(
            "DELETE",
            f"/items/{CONNECTIONS_COLLECTION}/{connection}",
            "connection delete",
            single_item=True,
        )
    except DirectusNotFound:
        return False
    return True
