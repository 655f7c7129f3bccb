"""In-memory SyncStore and TokenStore: the fast tier's state, held to the same contract suites as SQLite,
Firestore, the 0600 file and Secret Manager (tests/integration/test_store_contract.py,
tests/integration/test_token_store_contract.py). Thread-safe; everything is lost with the object, which is
the point: a test can also "lose the store" by making a new one."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from calsync.state.store import (
    DEFAULT_CONNECTION,
    ChannelRecord,
    ConnectionStatus,
    Cursor,
    DeadLetter,
    EventMapping,
    OAuthState,
    OutboxAction,
    OutboxEntry,
    StoreError,
    SyncStore,
    TokenStore,
    WatchStatus,
    apply_status_changes,
    utcnow,
)


class MemorySyncStore(SyncStore):
    """``clock`` is when leases are taken and expire, if the caller says no other time."""

    def __init__(self, clock: Callable[[], datetime] = utcnow) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._mappings: dict[tuple[str, str, str], EventMapping] = {}
        self._cursors: dict[tuple[str, str], Cursor] = {}
        self._outbox: dict[tuple[str, str, str], OutboxEntry] = {}
        self._states: dict[str, OAuthState] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._status: dict[str, ConnectionStatus] = {}
        self._dead: list[DeadLetter] = []
        self._channels: dict[str, ChannelRecord] = {}
        self._watch: dict[str, WatchStatus] = {}

    # -- mappings -------------------------------------------------------------------------------------
    def get_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> dict[str, EventMapping]:
        with self._lock:
            found = ((str(k), self._mappings.get((connection, collection, str(k)))) for k in keys)
            return {key: m for key, m in found if m is not None}

    def get_mappings_by_event(
        self, connection: str, calendar_id: str, event_ids: Iterable[str]
    ) -> dict[str, EventMapping]:
        wanted = set(event_ids)
        with self._lock:
            return {
                m.event_id: m
                for m in self._mappings.values()
                if m.connection == connection and m.calendar_id == calendar_id and m.event_id in wanted
            }

    def find_mappings(self, collection: str, keys: Iterable[str]) -> dict[str, list[EventMapping]]:
        wanted = {str(k) for k in keys}
        found: dict[str, list[EventMapping]] = {}
        with self._lock:
            for (_, coll, key), m in sorted(self._mappings.items()):
                if coll == collection and key in wanted:
                    found.setdefault(key, []).append(m)
        return found

    def put_mappings(self, mappings: Iterable[EventMapping]) -> None:
        with self._lock:
            for m in mappings:
                self._mappings[(m.connection, m.collection, m.booking_key)] = m

    def delete_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._mappings.pop((connection, collection, str(key)), None)

    def list_mappings(
        self, connection: str, collection: str, after: str | None, limit: int
    ) -> list[EventMapping]:
        with self._lock:
            keys = sorted(
                k
                for c, col, k in self._mappings
                if c == connection and col == collection and k > (after or "")
            )
            return [self._mappings[(connection, collection, k)] for k in keys[:limit]]

    def count_mappings(self, connection: str, calendar_id: str) -> int:
        with self._lock:
            return sum(
                1
                for m in self._mappings.values()
                if (m.connection, m.calendar_id) == (connection, calendar_id)
            )

    # -- cursors --------------------------------------------------------------------------------------
    def get_cursor(self, connection: str, calendar_id: str) -> Cursor | None:
        with self._lock:
            return self._cursors.get((connection, calendar_id))

    def put_cursor(self, cursor: Cursor) -> None:
        with self._lock:
            self._cursors[(cursor.connection, cursor.calendar_id)] = cursor

    # -- outbox ---------------------------------------------------------------------------------------
    def enqueue(
        self,
        connection: str,
        collection: str,
        key: str,
        action: OutboxAction,
        error: str | None = None,
        now: datetime | None = None,
    ) -> OutboxEntry:
        now = now or utcnow()
        with self._lock:
            ident = (connection, collection, str(key))
            before = self._outbox.get(ident)
            entry = OutboxEntry(
                connection,
                collection,
                str(key),
                action,
                uuid.uuid4().hex,
                0,
                error,
                now,
                before.created_at if before else now,
            )
            self._outbox[ident] = entry
            return entry

    def get_outbox(self, connection: str, collection: str, key: str) -> OutboxEntry | None:
        with self._lock:
            return self._outbox.get((connection, collection, str(key)))

    def due_outbox(self, connection: str, now: datetime, limit: int) -> list[OutboxEntry]:
        with self._lock:
            due = [
                e for e in self._outbox.values() if e.connection == connection and e.next_attempt_at <= now
            ]
        return sorted(due, key=lambda e: (e.created_at, e.booking_key))[:limit]

    def _same_intent(self, entry: OutboxEntry) -> bool:
        current = self._outbox.get((entry.connection, entry.collection, entry.booking_key))
        return current is not None and current.intent_id == entry.intent_id

    def record_outbox_failure(self, entry: OutboxEntry, error: str, next_attempt_at: datetime) -> bool:
        with self._lock:
            if not self._same_intent(entry):
                return False
            current = self._outbox[(entry.connection, entry.collection, entry.booking_key)]
            self._outbox[(entry.connection, entry.collection, entry.booking_key)] = dataclasses.replace(
                current, attempts=current.attempts + 1, last_error=error, next_attempt_at=next_attempt_at
            )
            return True

    def remove_outbox(self, entry: OutboxEntry) -> bool:
        with self._lock:
            if not self._same_intent(entry):
                return False
            del self._outbox[(entry.connection, entry.collection, entry.booking_key)]
            return True

    def discard_outbox(self, connection: str, collection: str, key: str) -> None:
        with self._lock:
            self._outbox.pop((connection, collection, str(key)), None)

    def count_outbox(self, connection: str) -> int:
        with self._lock:
            return sum(1 for e in self._outbox.values() if e.connection == connection)

    # -- OAuth states ---------------------------------------------------------------------------------
    def put_oauth_state(self, state: OAuthState) -> None:
        with self._lock:
            if state.state in self._states:
                raise StoreError("an OAuth state with this value exists already")
            self._states[state.state] = state

    def consume_oauth_state(self, state: str) -> OAuthState | None:
        with self._lock:
            return self._states.pop(state, None)

    # -- leases ---------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        now = now or self.clock()
        with self._lock:
            current = self._leases.get(name)
            if current is not None and current[0] != holder and current[1] > now:
                return False
            self._leases[name] = (holder, now + ttl)
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(name, ("", None))[0] == holder:
                del self._leases[name]

    # -- connection status ----------------------------------------------------------------------------
    def get_status(self, connection: str) -> ConnectionStatus:
        with self._lock:
            return self._status.get(connection) or ConnectionStatus(connection)

    def update_status(
        self, connection: str, changes: Mapping[str, Any]
    ) -> tuple[ConnectionStatus, ConnectionStatus]:
        with self._lock:
            before = self.get_status(connection)
            after = apply_status_changes(before, changes, utcnow())
            self._status[connection] = after
            return before, after

    # -- dead letters ---------------------------------------------------------------------------------
    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._lock:
            self._dead.append(letter)

    def list_dead_letters(self, connection: str, limit: int = 50) -> list[DeadLetter]:
        with self._lock:
            return [d for d in reversed(self._dead) if d.connection == connection][:limit]

    def count_dead_letters(self, connection: str) -> int:
        with self._lock:
            return sum(1 for d in self._dead if d.connection == connection)

    # -- push channels --------------------------------------------------------------------------------
    def put_channel(self, channel: ChannelRecord) -> None:
        with self._lock:
            self._channels[channel.channel_id] = channel

    def get_channel(self, channel_id: str) -> ChannelRecord | None:
        with self._lock:
            return self._channels.get(channel_id)

    def list_channels(self, connection: str) -> list[ChannelRecord]:
        with self._lock:
            mine = [c for c in self._channels.values() if c.connection == connection]
        return sorted(mine, key=lambda c: (c.created_at, c.channel_id))

    def delete_channel(self, channel_id: str) -> None:
        with self._lock:
            self._channels.pop(channel_id, None)

    def get_watch_status(self, connection: str) -> WatchStatus:
        with self._lock:
            return self._watch.get(connection) or WatchStatus(connection)

    def put_watch_status(self, status: WatchStatus) -> None:
        with self._lock:
            self._watch[status.connection] = status


class MemoryTokenStore(TokenStore):
    def __init__(self) -> None:
        self._tokens: dict[str, str] = {}

    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        return self._tokens.get(connection)

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        self._tokens[connection] = token

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        self._tokens.pop(connection, None)
