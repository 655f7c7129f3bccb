"""Per-booking leases: deliveries of one booking are serialised, so the last to run writes what Directus holds
last. The import cycle has a lease of its own (``cycle.import_lease_name``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta

from calsync.state.store import SyncStore

LEASE_TTL = timedelta(seconds=60)
LEASE_WAIT_S = 10.0


class BookingLeases:
    """The leases one pusher holds on bookings of one connection and collection."""

    def __init__(
        self,
        store: SyncStore,
        connection: str,
        collection: str,
        sleep: Callable[[float], None] = time.sleep,
        wait_s: float = LEASE_WAIT_S,
    ) -> None:
        self.store = store
        self.connection = connection
        self.collection = collection
        self.sleep = sleep
        self.wait_s = wait_s
        self.holder = uuid.uuid4().hex

    def _name(self, key: str) -> str:
        return f"{self.connection}/booking/{self.collection}/{key}"

    def acquire(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        """(held, busy): waits up to ``wait_s`` for leases another delivery holds."""
        held: list[str] = []
        waiting = list(dict.fromkeys(keys))
        deadline = time.monotonic() + self.wait_s
        delay = 0.01
        while waiting:
            still: list[str] = []
            for key in waiting:
                if self.store.acquire_lease(self._name(key), self.holder, LEASE_TTL):
                    held.append(key)
                else:
                    still.append(key)
            waiting = still
            if not waiting or time.monotonic() >= deadline:
                break
            self.sleep(delay)
            delay = min(delay * 2, 0.5)
        return held, waiting

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.store.release_lease(self._name(key), self.holder)
