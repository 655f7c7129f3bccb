"""The SyncStore port: everything the sync remembers between requests.

Adapters: ``sqlite.SqliteSyncStore`` (embedded default), ``firestore.FirestoreSyncStore`` (production) and
``memory.MemorySyncStore`` (the fast test tier). One contract suite (tests/integration/test_store_contract.py)
runs unchanged against all three.

Every record is keyed by a connection id (``calsync.sync.connections``: "default" for an installation from
before staff calendars, which therefore needed no migration), and only ``find_mappings`` looks across
connections (a booking moved to another staff member). Booking keys are always strings (Directus gives ints
or strings). All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

DEFAULT_CONNECTION = "default"

OutboxAction = Literal["upsert", "delete"]
ConnectionState = Literal["not_connected", "connected", "needs_reconnect", "disconnected"]
ChannelState = Literal["active", "replaced", "stopped"]
WatchState = Literal["on", "off", "failing"]


class StoreError(RuntimeError):
    """The store could not be read or written (unreachable, corrupt, misconfigured)."""


class StoreUnavailable(StoreError):
    """The store did not answer in time, or was briefly down: the same call may work later."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclasses.dataclass(frozen=True)
class EventMapping:
    """One booking <-> one Google event."""

    connection: str
    collection: str
    booking_key: str
    calendar_id: str
    event_id: str
    content_hash: str
    google_etag: str | None = None
    google_updated: str | None = None  # RFC 3339 as Google sends it
    directus_updated: str | None = None  # as Directus sends date_updated
    synced_at: datetime = dataclasses.field(default_factory=utcnow)
    # Why the sync must never write to this event (someone else organizes it, a birthday ...); None: ours
    read_only: str | None = None
    # The booking content Google refused for good: not sent again until the booking changes
    refused_hash: str | None = None
    time_zone: str | None = None  # the event's own zone, kept when a booking without one is pushed

    @classmethod
    def of_event(
        cls,
        connection: str,
        collection: str,
        booking_key: str,
        calendar_id: str,
        event: Mapping[str, Any],
        content_hash: str,
        directus_updated: str | None,
        synced_at: datetime,
        read_only: str | None = None,
    ) -> EventMapping:
        """The mapping of a booking to this event, as Google answered it (id, etag, updated, zone)."""
        return cls(
            connection=connection,
            collection=collection,
            booking_key=booking_key,
            calendar_id=calendar_id,
            event_id=str(event["id"]),
            content_hash=content_hash,
            google_etag=event.get("etag"),
            google_updated=event.get("updated"),
            directus_updated=directus_updated,
            synced_at=synced_at,
            read_only=read_only,
            time_zone=event_zone(event),
        )


def event_zone(event: Mapping[str, Any]) -> str | None:
    """The zone a timed event shows in (``""``: none, only an offset); None when the event does not say."""
    start = event.get("start") or {}
    return str(start.get("timeZone") or "") if start.get("dateTime") else None


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the pull (Google -> Directus) and the repair push (Directus -> Google) left off."""

    connection: str
    calendar_id: str
    sync_token: str | None = None
    window_start: datetime | None = None  # timeMin of the full sync the token belongs to
    directus_checkpoint: str | None = None  # Directus time the last repair scan started
    sweep_after: str | None = None  # where the orphan sweep goes on (a booking key; None: from the start)
    updated_at: datetime = dataclasses.field(default_factory=utcnow)
    # The listing filter (eventTypes) the sync token was issued for: another filter needs a full sync
    list_filter: str | None = None


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """The latest pending Directus -> Google intent for one booking.

    ``intent_id`` changes on every enqueue, so a drain removes only the intent it actually pushed and never
    a newer one that arrived meanwhile.
    """

    connection: str
    collection: str
    booking_key: str
    action: OutboxAction
    intent_id: str
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime = dataclasses.field(default_factory=utcnow)
    created_at: datetime = dataclasses.field(default_factory=utcnow)


@dataclasses.dataclass(frozen=True)
class OAuthState:
    """A one-time OAuth ``state`` with the PKCE verifier that belongs to it."""

    state: str
    connection: str
    code_verifier: str
    expires_at: datetime
    created_at: datetime = dataclasses.field(default_factory=utcnow)

    def expired(self, now: datetime | None = None) -> bool:
        return (now or utcnow()) >= self.expires_at


@dataclasses.dataclass(frozen=True)
class ConnectionStatus:
    connection: str
    state: ConnectionState = "not_connected"
    account: str | None = None
    scopes: tuple[str, ...] = ()
    connected_at: datetime | None = None
    last_cycle_at: datetime | None = None
    last_cycle: Mapping[str, Any] | None = None
    last_error: str | None = None
    updated_at: datetime = dataclasses.field(default_factory=utcnow)
    # Directus refused the last status publish: shown by the next one that goes through, in any instance
    publish_error: str | None = None
    # When a sync of this connection was last asked for (a notification, a tick's fan-out): a cycle still
    # running then pulls once more (``App.run_connection``), so a burst costs at most one more cycle
    sync_requested_at: datetime | None = None


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """Something that could not be applied; recorded, surfaced in /status, and skipped."""

    connection: str
    source: Literal["google", "directus"]
    item_id: str  # event id or booking key
    reason: str
    payload: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    created_at: datetime = dataclasses.field(default_factory=utcnow)


@dataclasses.dataclass(frozen=True)
class ChannelRecord:
    """One Google push channel (``events.watch``) on a connection's calendar.

    ``token`` is the channel's own secret: Google echoes it in every notification as
    ``X-Goog-Channel-Token``, and it is what authenticates one. ``active`` channels are the ones in use;
    ``replaced`` ones were superseded by a newer channel and wait for their ``channels.stop`` to succeed;
    ``stopped`` ones are kept only until the stop is recorded (then deleted)."""

    connection: str
    channel_id: str
    resource_id: str
    token: str = dataclasses.field(repr=False)
    address: str
    calendar_id: str
    expiration: datetime
    event_types: tuple[str, ...] = ()
    state: ChannelState = "active"
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    last_error: str | None = None


@dataclasses.dataclass(frozen=True)
class WatchStatus:
    """Whether push notifications work for a connection, and why not: ``on`` (a channel is active),
    ``off`` (push is not configured, or no account is connected), ``failing`` (Google refused the watch;
    ``reason`` says how, and no new attempt is made before ``next_attempt_at`` for ``address``)."""

    connection: str
    state: WatchState = "off"
    reason: str | None = None
    address: str | None = None
    next_attempt_at: datetime | None = None
    updated_at: datetime = dataclasses.field(default_factory=utcnow)


class SyncStore(abc.ABC):
    """Mappings, cursors, outbox, OAuth states, leases, connection status and dead letters."""

    # -- mappings -------------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> dict[str, EventMapping]:
        """Mappings of these bookings, by booking key (absent keys are left out). One round trip per 500."""

    @abc.abstractmethod
    def get_mappings_by_event(
        self, connection: str, calendar_id: str, event_ids: Iterable[str]
    ) -> dict[str, EventMapping]:
        """Mappings of these events, by event id (absent ids are left out)."""

    @abc.abstractmethod
    def find_mappings(self, collection: str, keys: Iterable[str]) -> dict[str, list[EventMapping]]:
        """These bookings' mappings in every connection, by booking key, ordered by connection (a booking
        moved to another staff member's calendar is mapped in both until its old event is removed)."""

    @abc.abstractmethod
    def put_mappings(self, mappings: Iterable[EventMapping]) -> None:
        """Create or replace mappings, in batches of at most 500."""

    @abc.abstractmethod
    def delete_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> None:
        """Forget these bookings' mappings (absent ones are ignored)."""

    @abc.abstractmethod
    def list_mappings(
        self, connection: str, collection: str, after: str | None, limit: int
    ) -> list[EventMapping]:
        """Up to ``limit`` mappings after booking key ``after`` (None: from the first), in the adapter's key
        order, which is stable: paging with the last key returned visits every mapping once."""

    @abc.abstractmethod
    def count_mappings(self, connection: str, calendar_id: str) -> int:
        """How many bookings are mapped to events of this calendar."""

    def get_mapping(self, connection: str, collection: str, key: str) -> EventMapping | None:
        return self.get_mappings(connection, collection, [key]).get(key)

    # -- cursors --------------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_cursor(self, connection: str, calendar_id: str) -> Cursor | None: ...

    @abc.abstractmethod
    def put_cursor(self, cursor: Cursor) -> None: ...

    def cursor(self, connection: str, calendar_id: str) -> Cursor:
        """The cursor, or a fresh one where none was saved."""
        return self.get_cursor(connection, calendar_id) or Cursor(connection, calendar_id)

    def update_cursor(self, connection: str, calendar_id: str, **changes: Any) -> Cursor:
        """Re-read the cursor and change only these fields: the pull, the repair and the sweep each move
        their own part of it, and none may put back another's older value."""
        cursor = dataclasses.replace(self.cursor(connection, calendar_id), **changes, updated_at=utcnow())
        self.put_cursor(cursor)
        return cursor

    # -- outbox ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def enqueue(
        self,
        connection: str,
        collection: str,
        key: str,
        action: OutboxAction,
        error: str | None = None,
        now: datetime | None = None,
    ) -> OutboxEntry:
        """Record the latest intent for a booking, replacing any older one (keeps its created_at)."""

    def enqueue_many(
        self,
        connection: str,
        collection: str,
        keys: Iterable[str],
        action: OutboxAction,
        now: datetime | None = None,
    ) -> int:
        """``enqueue`` for many bookings at once (a delivery too large to push inline); how many. Adapters
        write them in as few round trips as they can."""
        wanted = list(dict.fromkeys(str(k) for k in keys))
        for key in wanted:
            self.enqueue(connection, collection, key, action, now=now)
        return len(wanted)

    @abc.abstractmethod
    def get_outbox(self, connection: str, collection: str, key: str) -> OutboxEntry | None: ...

    @abc.abstractmethod
    def due_outbox(self, connection: str, now: datetime, limit: int) -> list[OutboxEntry]:
        """Entries whose next attempt is due, oldest first."""

    @abc.abstractmethod
    def record_outbox_failure(self, entry: OutboxEntry, error: str, next_attempt_at: datetime) -> bool:
        """Count a failed attempt, if the entry still holds the same intent. True if recorded."""

    @abc.abstractmethod
    def remove_outbox(self, entry: OutboxEntry) -> bool:
        """Remove the entry if it still holds the same intent (a newer intent stays). True if removed."""

    @abc.abstractmethod
    def discard_outbox(self, connection: str, collection: str, key: str) -> None:
        """Remove whatever intent the booking has."""

    @abc.abstractmethod
    def count_outbox(self, connection: str) -> int: ...

    # -- OAuth states ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_oauth_state(self, state: OAuthState) -> None: ...

    @abc.abstractmethod
    def consume_oauth_state(self, state: str) -> OAuthState | None:
        """Atomically remove and return the state; None if unknown or already consumed.

        Expiry is the caller's to check (so it can tell "expired" from "unknown")."""

    # -- leases ---------------------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Take the lease if it is free, expired or already ours. True if ``holder`` holds it now."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease back if ``holder`` holds it."""

    # -- connection status ----------------------------------------------------------------------------
    @abc.abstractmethod
    def get_status(self, connection: str) -> ConnectionStatus:
        """The connection's status; a fresh ``not_connected`` one if nothing was recorded."""

    @abc.abstractmethod
    def update_status(
        self, connection: str, changes: Mapping[str, Any]
    ) -> tuple[ConnectionStatus, ConnectionStatus]:
        """Atomically apply field changes; return (before, after) so a caller can act on a transition once."""

    # -- dead letters ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def add_dead_letter(self, letter: DeadLetter) -> None: ...

    @abc.abstractmethod
    def list_dead_letters(self, connection: str, limit: int = 50) -> list[DeadLetter]:
        """Newest first."""

    @abc.abstractmethod
    def count_dead_letters(self, connection: str) -> int: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- push channels --------------------------------------------------------------------------------
    @abc.abstractmethod
    def put_channel(self, channel: ChannelRecord) -> None:
        """Create or replace the record of this channel id."""

    @abc.abstractmethod
    def get_channel(self, channel_id: str) -> ChannelRecord | None:
        """The channel with this id, whatever its connection (a notification names only the channel)."""

    @abc.abstractmethod
    def list_channels(self, connection: str) -> list[ChannelRecord]:
        """The connection's channels, oldest first."""

    @abc.abstractmethod
    def delete_channel(self, channel_id: str) -> None:
        """Forget the channel (an absent one is fine)."""

    @abc.abstractmethod
    def get_watch_status(self, connection: str) -> WatchStatus:
        """The connection's watch status; a fresh ``off`` one if nothing was recorded."""

    @abc.abstractmethod
    def put_watch_status(self, status: WatchStatus) -> None: ...


STATUS_FIELDS = frozenset(f.name for f in dataclasses.fields(ConnectionStatus)) - {"connection"}


def apply_status_changes(
    before: ConnectionStatus, changes: Mapping[str, Any], now: datetime
) -> ConnectionStatus:
    """The status after ``changes``; unknown field names are a programming error."""
    unknown = set(changes) - STATUS_FIELDS
    if unknown:
        raise ValueError(f"unknown connection status fields: {sorted(unknown)}")
    fields = dict(changes)
    if "scopes" in fields:
        fields["scopes"] = tuple(fields["scopes"] or ())
    fields.setdefault("updated_at", now)
    return dataclasses.replace(before, **fields)


class TokenStore(abc.ABC):
    """Where the Google refresh token lives: Secret Manager in production, a 0600 file locally."""

    @abc.abstractmethod
    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        """The current refresh token, or None if none is stored (or it was deleted)."""

    @abc.abstractmethod
    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        """Store a new refresh token; older ones are no longer readable afterwards."""

    @abc.abstractmethod
    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        """Forget the token (destroy every stored copy)."""
