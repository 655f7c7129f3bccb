"""The Google event id of a booking: the reason one booking can only ever have one event.

Deterministic per (connection, collection, key), so a retried, duplicated or concurrent delivery addresses the
same event, and an insert whose answer was lost comes back as ``409`` on the same id ("already created").
"""

from __future__ import annotations

import base64
import hashlib


def event_id_for(connection: str, collection: str, key: str) -> str:
    """base32hex (a-v, 0-9, as Google requires of client-chosen ids) of a SHA-256: 52 characters."""
    digest = hashlib.sha256(
        b"calsync-event-v1\0" + connection.encode() + b"\0" + collection.encode() + b"\0" + key.encode()
    ).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()
