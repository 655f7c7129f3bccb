"""Several connections' sync on in-memory ports: one Directus with a ``staff`` routing field, one calendar per
connection, one state store, wired the way the composition root wires a tick (``calsync.sync.tick.Fleet``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from calsync.directus.memory import MemoryDirectus
from calsync.google.errors import GoogleError
from calsync.google.memory import MemoryCalendar
from calsync.state.store import OutboxAction
from calsync.sync.booking import FIELDS
from calsync.sync.connections import ConnectionSpec, Roster
from calsync.sync.fleet import Fleet
from calsync.sync.outcome import PushOutcome
from calsync.sync.ports import Calendar, EventsPage, EventWrite, SyncConfig, SyncContext
from calsync.sync.routing import push_routed
from calsync.sync.tick import TickResult, run_tick
from tests.unit.sync.world import START, Clock, CrashingStore

ROUTE = "staff"


class CountingCalendar:
    """A calendar that counts what it is asked (the floor of a quiet cycle is one incremental list)."""

    def __init__(self, inner: MemoryCalendar) -> None:
        self.inner = inner
        self.lists = 0
        self.writes = 0

    def list_events(self, *args: Any, **kwargs: Any) -> EventsPage:
        self.lists += 1
        return self.inner.list_events(*args, **kwargs)

    def write(self, write: EventWrite) -> dict[str, Any]:
        self.writes += 1
        return self.inner.write(write)

    def batch(self, writes: Sequence[EventWrite]) -> list[dict[str, Any] | GoogleError]:
        self.writes += len(writes)
        return self.inner.batch(writes)


class FleetWorld:
    def __init__(self, *connections: dict[str, Any], route_field: str | None = ROUTE, **config: Any) -> None:
        self.clock = Clock()
        self.directus = MemoryDirectus(fields=FIELDS.names() | {ROUTE}, clock=self.clock)
        self.store = CrashingStore(self.clock)
        self.route_field = route_field
        self.config = config
        self.calendars: dict[str, CountingCalendar] = {}  # by connection id
        self.revoked: set[str] = set()  # connections whose account is not (or no longer) connected
        self.concurrency = 4
        self.budget_seconds = 420.0
        for values in connections:
            self.add(**values)

    def add(self, id: str, **values: Any) -> None:
        self.directus.person_add_connection(id, **values)
        self.calendars[id] = CountingCalendar(MemoryCalendar(account=f"{id}@example.com", clock=self.clock))

    @property
    def roster(self) -> Roster:
        return Roster.from_items(self.directus.list_connections() or [], self.route_field)

    def context(self, spec: ConnectionSpec) -> SyncContext:
        config = SyncConfig(
            calendar_id=spec.calendar_id,
            route_field=self.route_field,
            route_value=spec.staff,
            **self.config,
        )
        return SyncContext(
            connection=spec.id,
            config=config,
            store=self.store,
            directus=self.directus,
            calendar=lambda: self._calendar(spec),
            clock=self.clock,
        )

    def _calendar(self, spec: ConnectionSpec) -> Calendar | None:
        return None if spec.token_owner in self.revoked else self.calendars[spec.id]

    def fleet(self) -> Fleet:
        return Fleet(
            roster=self.roster,
            context=self.context,
            store=self.store,
            directus=self.directus,
            collection="bookings",
            booking_fields=lambda: self.directus.fields,
            concurrency=self.concurrency,
            budget_seconds=self.budget_seconds,
            clock=self.clock,
        )

    # -- the functions --------------------------------------------------------------------------------
    def tick(self) -> TickResult:
        self.clock.advance(60)
        return run_tick(self.fleet())

    def deliver(self, action: OutboxAction, *keys: str | int) -> PushOutcome:
        """booking_hook: route the keys and push them."""
        return push_routed(self.fleet(), action, [str(k) for k in keys])

    # -- people ---------------------------------------------------------------------------------------
    def book(self, title: str = "Booking", staff: str | None = None, hour: int = 0) -> str:
        from datetime import timedelta

        start = START + timedelta(hours=hour)
        row = self.directus.person_create(
            title=title,
            start_datetime=start.isoformat(),
            end_datetime=(start + timedelta(hours=1)).isoformat(),
            **({ROUTE: staff} if staff is not None else {}),
        )
        return str(row["id"])

    def titles(self, connection: str) -> list[str]:
        """The titles of the live events in a connection's calendar, sorted."""
        return sorted(
            e.get("summary", "") for e in self.calendars[connection].inner.events(include_cancelled=False)
        )

    def mapped_in(self, key: str) -> list[str]:
        return [m.connection for m in self.store.find_mappings("bookings", [key]).get(key, [])]
