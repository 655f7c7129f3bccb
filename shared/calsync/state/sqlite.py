"""SyncStore on one SQLite file: the embedded default, so the product runs on a laptop with nothing but Python.

Every write is one transaction (``BEGIN IMMEDIATE``), so a failure midway leaves nothing half-written, and
the database lock makes create-if-absent, state consumption and leases atomic across threads and processes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from calsync.state.store import (
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
    WatchStatus,
    apply_status_changes,
    utcnow,
)

SCHEMA_VERSION = 4
# The columns later versions added (version, table, column): an older file gets those it lacks. Tables a
# version added (4: channels, watch_status) come from the CREATE TABLE IF NOT EXISTS of the schema itself.
_ADDED_COLUMNS = (
    (2, "cursors", "sweep_after"),  # the orphan sweep's position
    (3, "mappings", "read_only"),  # ownership, final refusals, zones, and the sync token's list filter
    (3, "mappings", "refused_hash"),
    (3, "mappings", "time_zone"),
    (3, "cursors", "list_filter"),
)
_CHUNK = 500  # SQLite's default limit on host parameters is 999 (older builds); stay well below it.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS mappings (
    connection TEXT NOT NULL, collection TEXT NOT NULL, booking_key TEXT NOT NULL,
    calendar_id TEXT NOT NULL, event_id TEXT NOT NULL, content_hash TEXT NOT NULL,
    google_etag TEXT, google_updated TEXT, directus_updated TEXT, synced_at TEXT NOT NULL,
    read_only TEXT, refused_hash TEXT, time_zone TEXT,
    PRIMARY KEY (connection, collection, booking_key)
);
CREATE INDEX IF NOT EXISTS mappings_by_event ON mappings (connection, calendar_id, event_id);
CREATE INDEX IF NOT EXISTS mappings_by_booking ON mappings (collection, booking_key);
CREATE TABLE IF NOT EXISTS cursors (
    connection TEXT NOT NULL, calendar_id TEXT NOT NULL, sync_token TEXT, window_start TEXT,
    directus_checkpoint TEXT, updated_at TEXT NOT NULL, sweep_after TEXT, list_filter TEXT,
    PRIMARY KEY (connection, calendar_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    connection TEXT NOT NULL, collection TEXT NOT NULL, booking_key TEXT NOT NULL, action TEXT NOT NULL,
    intent_id TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, next_attempt_at TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (connection, collection, booking_key)
);
CREATE TABLE IF NOT EXISTS oauth_states (
    state TEXT PRIMARY KEY, connection TEXT NOT NULL, code_verifier TEXT NOT NULL,
    expires_at TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS status (connection TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT, connection TEXT NOT NULL, source TEXT NOT NULL,
    item_id TEXT NOT NULL, reason TEXT NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_by_connection ON dead_letters (connection, id);
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY, connection TEXT NOT NULL, resource_id TEXT NOT NULL, token TEXT NOT NULL,
    address TEXT NOT NULL, calendar_id TEXT NOT NULL, expiration TEXT NOT NULL, event_types TEXT NOT NULL,
    state TEXT NOT NULL, created_at TEXT NOT NULL, last_error TEXT
);
CREATE INDEX IF NOT EXISTS channels_by_connection ON channels (connection, created_at);
CREATE TABLE IF NOT EXISTS watch_status (
    connection TEXT PRIMARY KEY, state TEXT NOT NULL, reason TEXT, address TEXT, next_attempt_at TEXT,
    updated_at TEXT NOT NULL
);
"""


def _ts(value: datetime) -> str:
    """Fixed-width UTC text, so string order is time order (the outbox query relies on it)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dt(value: str | None) -> datetime | None:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC) if value else None


def _req_dt(value: str) -> datetime:
    parsed = _dt(value)
    assert parsed is not None
    return parsed


def _chunks(items: list[str], size: int = _CHUNK) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqliteSyncStore(SyncStore):
    """SyncStore on a SQLite file (``sqlite:///path``); ``:memory:`` is refused (state must survive)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        try:
            self._create_private()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the state database {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot create the state database {self.path}: {exc.strerror}") from exc

    # -- plumbing -------------------------------------------------------------------------------------
    def _create_private(self) -> None:
        """The database and its -wal/-shm files readable by this user only (0600; a new folder 0700).

        SQLite creates -wal and -shm with the database file's own mode, so the file is made 0600 before
        SQLite first opens it; files an earlier version left wider are narrowed. No umask change: it is
        process-wide and connections open on request threads."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if path.exists() and path.stat().st_mode & 0o077:
                path.chmod(0o600)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; taken up front so read-then-write sequences are atomic."""
        db = self._db()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"state database {self.path} is not usable: {exc}") from exc
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        db = self._db()
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"state database {self.path} is not usable: {exc}") from exc

    def _migrate(self) -> None:
        with self._write() as db:
            # Statement by statement: executescript() would COMMIT the open transaction first.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) < SCHEMA_VERSION:
                for version, table, column in _ADDED_COLUMNS:
                    present = {info[1] for info in db.execute(f"PRAGMA table_info({table})")}
                    if version > int(row[0]) and column not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} TEXT")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
            elif int(row[0]) > SCHEMA_VERSION:
                raise StoreError(
                    f"state database {self.path} has schema {row[0]}, newer than this version understands"
                )

    def close(self) -> None:
        with self._lock:
            for db in self._connections:
                db.close()
            self._connections.clear()
        self._local = threading.local()

    # -- mappings -------------------------------------------------------------------------------------
    @staticmethod
    def _mapping(row: sqlite3.Row) -> EventMapping:
        return EventMapping(
            connection=row["connection"],
            collection=row["collection"],
            booking_key=row["booking_key"],
            calendar_id=row["calendar_id"],
            event_id=row["event_id"],
            content_hash=row["content_hash"],
            google_etag=row["google_etag"],
            google_updated=row["google_updated"],
            directus_updated=row["directus_updated"],
            synced_at=_req_dt(row["synced_at"]),
            read_only=row["read_only"],
            refused_hash=row["refused_hash"],
            time_zone=row["time_zone"],
        )

    @staticmethod
    def _mapping_row(m: EventMapping) -> tuple[Any, ...]:
        return (
            m.connection,
            m.collection,
            m.booking_key,
            m.calendar_id,
            m.event_id,
            m.content_hash,
            m.google_etag,
            m.google_updated,
            m.directus_updated,
            _ts(m.synced_at),
            m.read_only,
            m.refused_hash,
            m.time_zone,
        )

    def get_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> dict[str, EventMapping]:
        found: dict[str, EventMapping] = {}
        for chunk in _chunks(sorted({str(k) for k in keys})):
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT * FROM mappings WHERE connection = ? AND collection = ? AND booking_key IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                [connection, collection, *chunk],
            )
            found.update((row["booking_key"], self._mapping(row)) for row in rows)
        return found

    def get_mappings_by_event(
        self, connection: str, calendar_id: str, event_ids: Iterable[str]
    ) -> dict[str, EventMapping]:
        found: dict[str, EventMapping] = {}
        for chunk in _chunks(sorted(set(event_ids))):
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT * FROM mappings WHERE connection = ? AND calendar_id = ? AND event_id IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                [connection, calendar_id, *chunk],
            )
            found.update((row["event_id"], self._mapping(row)) for row in rows)
        return found

    def find_mappings(self, collection: str, keys: Iterable[str]) -> dict[str, list[EventMapping]]:
        found: dict[str, list[EventMapping]] = {}
        for chunk in _chunks(sorted({str(k) for k in keys})):
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT * FROM mappings WHERE collection = ? AND booking_key IN ({marks})"  # noqa: S608 - only placeholders are interpolated
                " ORDER BY connection",
                [collection, *chunk],
            )
            for row in rows:
                found.setdefault(row["booking_key"], []).append(self._mapping(row))
        return found

    def put_mappings(self, mappings: Iterable[EventMapping]) -> None:
        rows = [self._mapping_row(m) for m in mappings]
        for start in range(0, len(rows), _CHUNK):
            with self._write() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO mappings (connection, collection, booking_key, calendar_id, event_id,"
                    " content_hash, google_etag, google_updated, directus_updated, synced_at, read_only,"
                    " refused_hash, time_zone) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    rows[start : start + _CHUNK],
                )

    def delete_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> None:
        for chunk in _chunks(sorted({str(k) for k in keys})):
            marks = ",".join("?" * len(chunk))
            with self._write() as db:
                db.execute(
                    f"DELETE FROM mappings WHERE connection = ? AND collection = ? AND booking_key IN ({marks})",  # noqa: S608 - only placeholders are interpolated
                    [connection, collection, *chunk],
                )

    def list_mappings(
        self, connection: str, collection: str, after: str | None, limit: int
    ) -> list[EventMapping]:
        rows = self._read(
            "SELECT * FROM mappings WHERE connection = ? AND collection = ? AND booking_key > ? "
            "ORDER BY booking_key LIMIT ?",
            [connection, collection, after if after is not None else "", limit],
        )
        return [self._mapping(row) for row in rows]

    def count_mappings(self, connection: str, calendar_id: str) -> int:
        rows = self._read(
            "SELECT COUNT(*) AS n FROM mappings WHERE connection = ? AND calendar_id = ?",
            [connection, calendar_id],
        )
        return int(rows[0]["n"])

    # -- cursors --------------------------------------------------------------------------------------
    def get_cursor(self, connection: str, calendar_id: str) -> Cursor | None:
        rows = self._read(
            "SELECT * FROM cursors WHERE connection = ? AND calendar_id = ?", [connection, calendar_id]
        )
        if not rows:
            return None
        row = rows[0]
        return Cursor(
            connection=row["connection"],
            calendar_id=row["calendar_id"],
            sync_token=row["sync_token"],
            window_start=_dt(row["window_start"]),
            directus_checkpoint=row["directus_checkpoint"],
            sweep_after=row["sweep_after"],
            updated_at=_req_dt(row["updated_at"]),
            list_filter=row["list_filter"],
        )

    def put_cursor(self, cursor: Cursor) -> None:
        window = _ts(cursor.window_start) if cursor.window_start else None
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO cursors (connection, calendar_id, sync_token, window_start,"
                " directus_checkpoint, updated_at, sweep_after, list_filter) VALUES (?,?,?,?,?,?,?,?)",
                (
                    cursor.connection,
                    cursor.calendar_id,
                    cursor.sync_token,
                    window,
                    cursor.directus_checkpoint,
                    _ts(cursor.updated_at),
                    cursor.sweep_after,
                    cursor.list_filter,
                ),
            )

    # -- outbox ---------------------------------------------------------------------------------------
    @staticmethod
    def _entry(row: sqlite3.Row) -> OutboxEntry:
        return OutboxEntry(
            connection=row["connection"],
            collection=row["collection"],
            booking_key=row["booking_key"],
            action=row["action"],
            intent_id=row["intent_id"],
            attempts=row["attempts"],
            last_error=row["last_error"],
            next_attempt_at=_req_dt(row["next_attempt_at"]),
            created_at=_req_dt(row["created_at"]),
        )

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
        intent = uuid.uuid4().hex
        with self._write() as db:
            row = db.execute(
                "SELECT created_at FROM outbox WHERE connection = ? AND collection = ? AND booking_key = ?",
                (connection, collection, str(key)),
            ).fetchone()
            created = row[0] if row else _ts(now)
            db.execute(
                "INSERT OR REPLACE INTO outbox VALUES (?,?,?,?,?,?,?,?,?)",
                (connection, collection, str(key), action, intent, 0, error, _ts(now), created),
            )
        return OutboxEntry(connection, collection, str(key), action, intent, 0, error, now, _req_dt(created))

    def enqueue_many(
        self,
        connection: str,
        collection: str,
        keys: Iterable[str],
        action: OutboxAction,
        now: datetime | None = None,
    ) -> int:
        """Every intent in one transaction; each booking keeps the time it first waited."""
        stamp = _ts(now or utcnow())
        wanted = list(dict.fromkeys(str(k) for k in keys))
        with self._write() as db:
            db.executemany(
                "INSERT INTO outbox VALUES (?,?,?,?,?,0,NULL,?,?) ON CONFLICT (connection, collection, booking_key)"
                " DO UPDATE SET action = excluded.action, intent_id = excluded.intent_id, attempts = 0,"
                " last_error = NULL, next_attempt_at = excluded.next_attempt_at",
                [(connection, collection, key, action, uuid.uuid4().hex, stamp, stamp) for key in wanted],
            )
        return len(wanted)

    def get_outbox(self, connection: str, collection: str, key: str) -> OutboxEntry | None:
        rows = self._read(
            "SELECT * FROM outbox WHERE connection = ? AND collection = ? AND booking_key = ?",
            [connection, collection, str(key)],
        )
        return self._entry(rows[0]) if rows else None

    def due_outbox(self, connection: str, now: datetime, limit: int) -> list[OutboxEntry]:
        rows = self._read(
            "SELECT * FROM outbox WHERE connection = ? AND next_attempt_at <= ? "
            "ORDER BY created_at, booking_key LIMIT ?",
            [connection, _ts(now), limit],
        )
        return [self._entry(row) for row in rows]

    def record_outbox_failure(self, entry: OutboxEntry, error: str, next_attempt_at: datetime) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
                "WHERE connection = ? AND collection = ? AND booking_key = ? AND intent_id = ?",
                (
                    error,
                    _ts(next_attempt_at),
                    entry.connection,
                    entry.collection,
                    entry.booking_key,
                    entry.intent_id,
                ),
            )
            return cursor.rowcount == 1

    def remove_outbox(self, entry: OutboxEntry) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE connection = ? AND collection = ? AND booking_key = ? AND intent_id = ?",
                (entry.connection, entry.collection, entry.booking_key, entry.intent_id),
            )
            return cursor.rowcount == 1

    def discard_outbox(self, connection: str, collection: str, key: str) -> None:
        with self._write() as db:
            db.execute(
                "DELETE FROM outbox WHERE connection = ? AND collection = ? AND booking_key = ?",
                (connection, collection, str(key)),
            )

    def count_outbox(self, connection: str) -> int:
        return int(self._read("SELECT COUNT(*) AS n FROM outbox WHERE connection = ?", [connection])[0]["n"])

    # -- OAuth states ---------------------------------------------------------------------------------
    def put_oauth_state(self, state: OAuthState) -> None:
        try:
            self._put_oauth_state(state)
        except sqlite3.IntegrityError:
            raise StoreError("an OAuth state with this value exists already") from None

    def _put_oauth_state(self, state: OAuthState) -> None:
        with self._write() as db:
            # Expired states are useless; dropping them here keeps the table small without a sweeper.
            db.execute("DELETE FROM oauth_states WHERE expires_at < ?", (_ts(utcnow() - timedelta(days=1)),))
            db.execute(
                "INSERT INTO oauth_states VALUES (?,?,?,?,?)",
                (
                    state.state,
                    state.connection,
                    state.code_verifier,
                    _ts(state.expires_at),
                    _ts(state.created_at),
                ),
            )

    def consume_oauth_state(self, state: str) -> OAuthState | None:
        with self._write() as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM oauth_states WHERE state = ?", (state,)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM oauth_states WHERE state = ?", (state,))
        return OAuthState(
            state=row["state"],
            connection=row["connection"],
            code_verifier=row["code_verifier"],
            expires_at=_req_dt(row["expires_at"]),
            created_at=_req_dt(row["created_at"]),
        )

    # -- leases ---------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        now = now or utcnow()
        with self._write() as db:
            row = db.execute("SELECT holder, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and _req_dt(row[1]) > now:
                return False
            db.execute("INSERT OR REPLACE INTO leases VALUES (?,?,?)", (name, holder, _ts(now + ttl)))
            return True

    def release_lease(self, name: str, holder: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    # -- connection status ----------------------------------------------------------------------------
    @staticmethod
    def _status_from(connection: str, body: str | None) -> ConnectionStatus:
        if body is None:
            return ConnectionStatus(connection=connection)
        data = json.loads(body)
        for name in ("connected_at", "last_cycle_at", "updated_at", "sync_requested_at"):
            data[name] = _dt(data.get(name))
        if data["updated_at"] is None:
            del data["updated_at"]
        data["scopes"] = tuple(data.get("scopes") or ())
        return ConnectionStatus(connection=connection, **data)

    @staticmethod
    def _status_body(status: ConnectionStatus) -> str:
        return json.dumps(
            {
                "state": status.state,
                "account": status.account,
                "scopes": list(status.scopes),
                "connected_at": _ts(status.connected_at) if status.connected_at else None,
                "last_cycle_at": _ts(status.last_cycle_at) if status.last_cycle_at else None,
                "last_cycle": dict(status.last_cycle) if status.last_cycle is not None else None,
                "last_error": status.last_error,
                "updated_at": _ts(status.updated_at),
                "publish_error": status.publish_error,
                "sync_requested_at": _ts(status.sync_requested_at) if status.sync_requested_at else None,
            }
        )

    def get_status(self, connection: str) -> ConnectionStatus:
        rows = self._read("SELECT body FROM status WHERE connection = ?", [connection])
        return self._status_from(connection, rows[0]["body"] if rows else None)

    def update_status(
        self, connection: str, changes: Mapping[str, Any]
    ) -> tuple[ConnectionStatus, ConnectionStatus]:
        with self._write() as db:
            row = db.execute("SELECT body FROM status WHERE connection = ?", (connection,)).fetchone()
            before = self._status_from(connection, row[0] if row else None)
            after = apply_status_changes(before, changes, utcnow())
            db.execute("INSERT OR REPLACE INTO status VALUES (?, ?)", (connection, self._status_body(after)))
        return before, after

    # -- dead letters ---------------------------------------------------------------------------------
    def add_dead_letter(self, letter: DeadLetter) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO dead_letters (connection, source, item_id, reason, payload, created_at) "
                "VALUES (?,?,?,?,?,?)",
                (
                    letter.connection,
                    letter.source,
                    letter.item_id,
                    letter.reason,
                    json.dumps(dict(letter.payload), default=str),
                    _ts(letter.created_at),
                ),
            )

    def list_dead_letters(self, connection: str, limit: int = 50) -> list[DeadLetter]:
        rows = self._read(
            "SELECT * FROM dead_letters WHERE connection = ? ORDER BY id DESC LIMIT ?", [connection, limit]
        )
        return [
            DeadLetter(
                connection=row["connection"],
                source=row["source"],
                item_id=row["item_id"],
                reason=row["reason"],
                payload=json.loads(row["payload"]),
                created_at=_req_dt(row["created_at"]),
            )
            for row in rows
        ]

    def count_dead_letters(self, connection: str) -> int:
        rows = self._read("SELECT COUNT(*) AS n FROM dead_letters WHERE connection = ?", [connection])
        return int(rows[0]["n"])

    # -- push channels --------------------------------------------------------------------------------
    @staticmethod
    def _channel(row: sqlite3.Row) -> ChannelRecord:
        return ChannelRecord(
            connection=row["connection"],
            channel_id=row["channel_id"],
            resource_id=row["resource_id"],
            token=row["token"],
            address=row["address"],
            calendar_id=row["calendar_id"],
            expiration=_req_dt(row["expiration"]),
            event_types=tuple(json.loads(row["event_types"])),
            state=row["state"],
            created_at=_req_dt(row["created_at"]),
            last_error=row["last_error"],
        )

    def put_channel(self, channel: ChannelRecord) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO channels (channel_id, connection, resource_id, token, address,"
                " calendar_id, expiration, event_types, state, created_at, last_error)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    channel.channel_id,
                    channel.connection,
                    channel.resource_id,
                    channel.token,
                    channel.address,
                    channel.calendar_id,
                    _ts(channel.expiration),
                    json.dumps(list(channel.event_types)),
                    channel.state,
                    _ts(channel.created_at),
                    channel.last_error,
                ),
            )

    def get_channel(self, channel_id: str) -> ChannelRecord | None:
        rows = self._read("SELECT * FROM channels WHERE channel_id = ?", [channel_id])
        return self._channel(rows[0]) if rows else None

    def list_channels(self, connection: str) -> list[ChannelRecord]:
        rows = self._read(
            "SELECT * FROM channels WHERE connection = ? ORDER BY created_at, channel_id", [connection]
        )
        return [self._channel(row) for row in rows]

    def delete_channel(self, channel_id: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM channels WHERE channel_id = ?", (channel_id,))

    def get_watch_status(self, connection: str) -> WatchStatus:
        rows = self._read("SELECT * FROM watch_status WHERE connection = ?", [connection])
        if not rows:
            return WatchStatus(connection)
        row = rows[0]
        return WatchStatus(
            connection=connection,
            state=row["state"],
            reason=row["reason"],
            address=row["address"],
            next_attempt_at=_dt(row["next_attempt_at"]),
            updated_at=_req_dt(row["updated_at"]),
        )

    def put_watch_status(self, status: WatchStatus) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO watch_status VALUES (?,?,?,?,?,?)",
                (
                    status.connection,
                    status.state,
                    status.reason,
                    status.address,
                    _ts(status.next_attempt_at) if status.next_attempt_at else None,
                    _ts(status.updated_at),
                ),
            )
