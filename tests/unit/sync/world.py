"""One connection's whole sync on in-memory ports: Directus, Google Calendar and the state store, wired the way
the composition root wires the real ones, with a clock that only the test moves.

``World.deliver`` is what booking_hook does with a Flow delivery (the Flow's condition drops the sync user's
own writes; ``flow`` holds every delivery the Flow would have sent, so a test can lose, repeat or reorder
them); ``World.cycle`` is what calendar_import does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from calsync.directus.memory import SYNC_USER, MemoryDirectus
from calsync.google.memory import MemoryCalendar
from calsync.state.memory import MemorySyncStore
from calsync.state.store import OutboxAction, SyncStore
from calsync.sync.cycle import CycleResult, run_cycle
from calsync.sync.outcome import PushOutcome
from calsync.sync.ports import Calendar, SyncConfig, SyncContext
from calsync.sync.push import Pusher, queue_failures

START = datetime(2030, 3, 4, 9, 0, tzinfo=UTC)


class Crash(BaseException):
    """The process died (a BaseException: nothing in the product may catch it)."""


class CrashingStore(MemorySyncStore):
    """A store whose ``crash_after(n)``-th call from now kills the process, before that call does anything."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.countdown: int | None = None
        for name in dir(SyncStore):
            if not name.startswith("_") and name != "close" and callable(getattr(SyncStore, name)):
                setattr(self, name, self._counted(getattr(self, name)))

    def crash_after(self, calls: int) -> None:
        self.countdown = calls

    def _counted(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.countdown is not None:
                if self.countdown == 0:
                    self.countdown = None
                    raise Crash
                self.countdown -= 1
            return method(*args, **kwargs)

        return call


class Clock:
    """Moves only when told to (and by a millisecond per reading, so every write has its own instant)."""

    def __init__(self, now: datetime = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclasses.dataclass(frozen=True)
class Delivery:
    action: OutboxAction
    keys: tuple[str, ...]


class World:
    def __init__(self, connected: bool = True, **config: Any) -> None:
        self.clock = Clock()
        self.flow: list[Delivery] = []
        self.directus = MemoryDirectus(clock=self.clock, on_change=self._flow)
        self.google = MemoryCalendar(clock=self.clock)
        self.store = CrashingStore(self.clock)
        self.connected = connected
        self.config = SyncConfig(**config)
        self.ctx = self.context()

    def context(self) -> SyncContext:
        return SyncContext(
            connection="default",
            config=self.config,
            store=self.store,
            directus=self.directus,
            calendar=self._calendar,
            clock=self.clock,
        )

    def lose_store(self) -> None:
        """The state store is gone (a new SQLite file, a wiped Firestore): everything else stays."""
        self.store = CrashingStore(self.clock)
        self.ctx = self.context()

    def _calendar(self) -> Calendar | None:
        return self.google if self.connected else None

    def _flow(self, action: str, keys: list[str], user: str) -> None:
        if user != SYNC_USER:  # the Flow's condition: the sync's own writes are not delivered
            self.flow.append(Delivery("delete" if action == "delete" else "upsert", tuple(keys)))

    def run(self, step: Callable[[], object]) -> None:
        """Run a step of the functions; if the process dies in it, the next instance starts once the dead
        one's leases have expired (what it wrote stays written; what it held in memory is gone)."""
        try:
            step()
        except Crash:
            self.clock.advance(10 * 60)

    def stop_faults(self) -> None:
        self.google.clear_faults()
        self.directus.clear_faults()
        self.store.countdown = None

    # -- the functions --------------------------------------------------------------------------------
    def deliver(self, action: OutboxAction, *keys: str | int) -> PushOutcome:
        """booking_hook: push the keys, queue what failed."""
        outcome = Pusher(self.ctx).push(action, [str(k) for k in keys])
        queue_failures(self.ctx, outcome)
        return outcome

    def deliver_flow(self) -> None:
        """Deliver every delivery the Flow sent since the last call, in order."""
        pending, self.flow = self.flow, []
        for delivery in pending:
            self.deliver(delivery.action, *delivery.keys)

    def cycle(self) -> CycleResult:
        self.clock.advance(60)
        return run_cycle(self.ctx, now=self.clock())

    # -- people ---------------------------------------------------------------------------------------
    def book(self, title: str = "Booking", hour: int = 0, **values: Any) -> str:
        """A person creates a booking in Directus; its key."""
        start = START + timedelta(hours=hour)
        fields = {
            "title": title,
            "start_datetime": start.isoformat(),
            "end_datetime": (start + timedelta(hours=1)).isoformat(),
            **values,
        }
        row = self.directus.person_create(**fields)
        return str(row["id"])

    def live_events(self) -> list[dict[str, Any]]:
        return self.google.events(include_cancelled=False)

    def event_of(self, key: str) -> dict[str, Any]:
        mapping = self.store.get_mapping("default", self.config.collection, key)
        assert mapping is not None, f"booking {key} has no event"
        return self.google.event(mapping.event_id)
