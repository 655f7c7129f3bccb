"""What the sync needs from the world, and nothing more: the Directus and Calendar ports, the per-connection
configuration, and the context that hands them in.

The composition root (``calsync.bootstrap``) builds one :class:`SyncContext` per connection from real adapters
(``calsync.directus.client``, ``calsync.google.calendar``, ``calsync.state``); tests build it from the in-memory
ones (``calsync.directus.memory``, ``calsync.google.memory``, ``calsync.state.memory``). Push, pull and the cycle
receive a context and never look further: they do not import an adapter or the composition root.

Failures cross the ports as the two error hierarchies ``calsync.directus.errors`` and ``calsync.google.errors``,
which both the real and the in-memory adapters raise.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from calsync.google.errors import GoogleError
from calsync.state.store import SyncStore, utcnow

SendUpdates = Literal["none", "all", "externalOnly"]


def route_text(value: Any) -> str | None:
    """A routing value as text (a relation may come expanded, as an object with its ``id``); None: none."""
    if value is None:
        return None
    text = str(value.get("id") if isinstance(value, dict) else value).strip()
    return text or None


class Directus(Protocol):
    """The bookings collection of one Directus, as the sync user sees it. Keys are strings."""

    def get_items(
        self, keys: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The items with these keys, by key (missing ones are left out)."""

    def read_item(self, key: str) -> dict[str, Any] | None:
        """The item (all its fields) on its own route; None only when Directus says there is no such item."""

    def find_items(
        self, field: str, values: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The items whose ``field`` holds one of ``values``, by that value (lowest key wins)."""

    def create_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create all or none; the created rows in order."""

    def update_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update each item (each carries its ``id``); vanished ones are skipped; the updated rows."""

    def delete_items(self, keys: Iterable[str]) -> None:
        """Delete these items; items already gone are fine."""

    def items_changed_since(
        self, checkpoint: str | None, page_size: int = 500, first_page: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Items created or updated at or after ``checkpoint`` (all when None), by page in key order; the
        first page of ``first_page`` items when given."""

    def server_time(self) -> datetime:
        """Directus's own clock."""

    def booking_fields(self) -> frozenset[str]:
        """The collection's field names (write-backs touch only fields that exist)."""

    def current_user_id(self) -> str | None:
        """The user behind the sync's token: deliveries it caused are our own echoes."""

    def list_connections(self) -> list[dict[str, Any]] | None:
        """Every item of the connections collection (``calsync.sync.connections``), in one request; None
        when the collection does not exist (an installation from before connections: one implicit one)."""

    def update_connections(self, items: list[dict[str, Any]]) -> None:
        """Write status fields onto connection items (each carries its ``id``), in one request."""


@dataclasses.dataclass(frozen=True)
class EventWrite:
    """One write to an event: ``insert`` (``body`` carries the id), ``patch`` or ``delete``."""

    verb: Literal["insert", "patch", "delete"]
    event_id: str
    body: dict[str, Any] | None = None
    send_updates: SendUpdates = "none"


@dataclasses.dataclass(frozen=True)
class EventsPage:
    items: list[dict[str, Any]]
    next_page_token: str | None
    next_sync_token: str | None


@dataclasses.dataclass(frozen=True)
class WatchedChannel:
    """What Google answered to ``events.watch``: the channel, the opaque id of the resource it watches
    (``channels.stop`` needs both) and when Google will stop sending (None when the answer did not say)."""

    channel_id: str
    resource_id: str
    expiration: datetime | None


class Calendar(Protocol):
    """One calendar of one connected Google account."""

    def list_events(
        self,
        sync_token: str | None = None,
        time_min: datetime | None = None,
        page_token: str | None = None,
        max_results: int = 2500,
        event_types: Sequence[str] = (),
    ) -> EventsPage:
        """One page of ``singleEvents``, cancelled ones included (with a sync token: the changes since it)."""

    def write(self, write: EventWrite) -> dict[str, Any]:
        """One write; the event as Google answers (``{}`` for a delete). Raises GoogleError."""

    def batch(self, writes: Sequence[EventWrite]) -> list[dict[str, Any] | GoogleError]:
        """Many writes in as few requests as Google allows; one outcome per write, in order, never raising."""

    def watch(
        self, channel_id: str, address: str, token: str, event_types: Sequence[str] = ()
    ) -> WatchedChannel:
        """Open a push channel on this calendar's events (``events.watch``, type ``web_hook``): Google
        POSTs to ``address`` with ``token`` on every change of the events of ``event_types`` (all when
        empty) until the channel expires or is stopped. Raises GoogleError."""

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        """Stop a channel this account opened (``channels.stop``). Raises GoogleError (GoogleNotFound: no
        such live channel, e.g. stopped or expired already)."""


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """The settings one connection's sync reads."""

    collection: str = "bookings"
    calendar_id: str = "primary"
    timezone: str = "UTC"
    link_base: str | None = None
    send_updates: SendUpdates = "none"
    import_window_days: int = 30
    max_cancel_share: float = 0.2
    max_delete_share: float = 0.2
    on_google_delete: Literal["cancel", "delete"] = "cancel"
    event_types: tuple[str, ...] = ("default",)
    import_invitations: Literal["accepted", "all", "none"] = "accepted"
    description_footer: bool = True
    # Staff calendars: the booking field that routes bookings (None: all go to the default connection),
    # and the value this connection serves (None: bookings without one)
    route_field: str | None = None
    route_value: str | None = None
    # Where Google sends push notifications (booking_hook's /notifications); None: no channels
    notification_url: str | None = None

    def serves(self, item: dict[str, Any]) -> bool:
        """Whether this connection serves the booking (routing, ``calsync.sync.connections``): without a
        route field, the default connection (no value of its own) serves every booking, the others none."""
        value = route_text(item.get(self.route_field)) if self.route_field is not None else None
        return value == self.route_value

    @property
    def list_filter(self) -> str:
        """What decides which listed events are bookings: when it changes, a full sync looks at every event
        again (Google also wants the same eventTypes on every incremental sync of a token)."""
        return f"eventTypes={','.join(self.event_types)};invitations={self.import_invitations}"


class SyncContext:
    """Everything one connection's sync works with, handed in by the composition root.

    ``calendar()`` gives the connection's Calendar, or None while no account is connected; ``publish_status``
    shows the connection's status wherever people look (Directus), best effort. ``booking_fields`` and
    ``sync_user_id`` are read from Directus once per context, unless the root hands in what it read once
    for every context."""

    def __init__(
        self,
        *,
        connection: str,
        config: SyncConfig,
        store: SyncStore,
        directus: Directus,
        calendar: Callable[[], Calendar | None],
        clock: Callable[[], datetime] = utcnow,
        publish_status: Callable[[], None] = lambda: None,
        booking_fields: Callable[[], frozenset[str]] | None = None,
        sync_user_id: Callable[[], str | None] | None = None,
    ) -> None:
        self.connection = connection
        self.config = config
        self.store = store
        self.directus = directus
        self.calendar = calendar
        self.clock = clock
        self.publish_status = publish_status
        self._fields = booking_fields or directus.booking_fields
        self._user = sync_user_id or directus.current_user_id

    @functools.cached_property
    def booking_fields(self) -> frozenset[str]:
        return self._fields()

    @functools.cached_property
    def sync_user_id(self) -> str | None:
        return self._user()
