"""An App whose connections run on in-memory ports, for the entry points' tests (calendar_import served over
HTTP to the Pub/Sub emulator, or called through a Flask test client).

Each :class:`MemoryConnection` is one staff calendar with its own Google calendar, Directus collection and
store, on the real clock (Pub/Sub's requests carry wall-clock times). ``cycles`` counts the cycles that got
past the import lease; ``cycle_seconds`` makes each one last that long (so that deliveries overlap), and
while ``gate`` is clear every cycle waits for it.
"""

from __future__ import annotations

import threading
import time

from calsync.bootstrap import App, UnknownConnection
from calsync.directus.memory import MemoryDirectus
from calsync.google.memory import MemoryCalendar
from calsync.settings import load_settings
from calsync.state.memory import MemorySyncStore
from calsync.sync.ports import Calendar, SyncConfig, SyncContext

SYNC_SETTINGS = {
    "directus_url": "http://127.0.0.1:9/",
    "directus_token": "directus-token-for-tests",
    "google_client_id": "client-id.apps.googleusercontent.com",
    "google_client_secret": "google-client-secret-for-tests",
}


class MemoryConnection:
    def __init__(self, connection: str, cycle_seconds: float = 0.0) -> None:
        self.id = connection
        self.google = MemoryCalendar(account=f"{connection}@example.com")
        self.directus = MemoryDirectus()
        self.store = MemorySyncStore()
        self.cycle_seconds = cycle_seconds
        self.cycles = 0
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self.ctx = SyncContext(
            connection=connection,
            config=SyncConfig(),
            store=self.store,
            directus=self.directus,
            calendar=self._calendar,
        )

    def _calendar(self) -> Calendar:
        """Called once by every cycle that holds the lease."""
        with self._lock:
            self.cycles += 1
        self.gate.wait(30)
        time.sleep(self.cycle_seconds)
        return self.google


class MemoryApp(App):
    """The composition root with its connections' contexts handed in."""

    def __init__(self, *connections: MemoryConnection) -> None:
        super().__init__(load_settings(**SYNC_SETTINGS))
        self.connections = {c.id: c for c in connections}

    def context(self, connection: str | None = None) -> SyncContext:
        found = self.connections.get(connection or self.connection)
        if found is None:
            raise UnknownConnection(f"no connection {connection!r}")
        return found.ctx
