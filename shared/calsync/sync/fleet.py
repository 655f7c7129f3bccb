"""What a tick or a routed delivery works with: every connection, and the collaborators to reach them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import datetime

from calsync.state.store import SyncStore, utcnow
from calsync.sync.connections import ConnectionSpec, Roster
from calsync.sync.ports import Directus, SyncContext


@dataclasses.dataclass
class Fleet:
    """What a tick works with, handed in by the composition root."""

    roster: Roster
    context: Callable[[ConnectionSpec], SyncContext]
    store: SyncStore
    directus: Directus
    collection: str
    booking_fields: Callable[[], frozenset[str]]
    publish: Callable[[Sequence[str]], None] = lambda ids: None
    concurrency: int = 4
    budget_seconds: float = 420.0
    clock: Callable[[], datetime] = utcnow
    # Fan-out (Pub/Sub): instead of running the cycles here, queue each connection's work in its outbox and
    # ask for one cycle per connection, which the function's other instances run (``calsync.fanout``)
    dispatch: Callable[[Sequence[str]], None] | None = None
