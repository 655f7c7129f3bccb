"""A state file from schema version 1 is upgraded in place, keeping its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from calsync.state.sqlite import SCHEMA_VERSION, SqliteSyncStore


def test_version_1_state_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE cursors (connection TEXT NOT NULL, calendar_id TEXT NOT NULL, sync_token TEXT,
            window_start TEXT, directus_checkpoint TEXT, updated_at TEXT NOT NULL, PRIMARY KEY (connection, calendar_id));
        INSERT INTO cursors VALUES ('default', 'primary', 'tok-1', NULL, '2026-01-01T00:00:00.000Z',
            '2026-01-01T00:00:00.000000Z');
        """
    )
    db.close()
    store = SqliteSyncStore(path)
    cursor = store.get_cursor("default", "primary")
    assert cursor is not None and cursor.sync_token == "tok-1" and cursor.sweep_after is None
    version = sqlite3.connect(path).execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION == 4


def test_version_2_state_is_migrated_with_its_mappings(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE mappings (connection TEXT NOT NULL, collection TEXT NOT NULL, booking_key TEXT NOT NULL,
            calendar_id TEXT NOT NULL, event_id TEXT NOT NULL, content_hash TEXT NOT NULL, google_etag TEXT,
            google_updated TEXT, directus_updated TEXT, synced_at TEXT NOT NULL,
            PRIMARY KEY (connection, collection, booking_key));
        INSERT INTO mappings VALUES ('default', 'bookings', '7', 'primary', 'ev7', 'h7', NULL, NULL, NULL,
            '2026-01-01T00:00:00.000000Z');
        CREATE TABLE cursors (connection TEXT NOT NULL, calendar_id TEXT NOT NULL, sync_token TEXT,
            window_start TEXT, directus_checkpoint TEXT, updated_at TEXT NOT NULL, sweep_after TEXT,
            PRIMARY KEY (connection, calendar_id));
        INSERT INTO cursors VALUES ('default', 'primary', 'tok-2', NULL, NULL, '2026-01-01T00:00:00.000000Z', '5');
        """
    )
    db.close()
    store = SqliteSyncStore(path)
    mapping = store.get_mapping("default", "bookings", "7")
    assert mapping is not None and mapping.event_id == "ev7" and mapping.read_only is None
    cursor = store.get_cursor("default", "primary")
    assert cursor is not None and cursor.sync_token == "tok-2" and cursor.list_filter is None
    store.put_mappings([mapping])  # and it can be written in the new shape
