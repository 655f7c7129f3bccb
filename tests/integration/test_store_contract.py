"""One contract for every SyncStore adapter: in memory (the fast tier), SQLite (embedded default) and the real
Firestore emulator."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from calsync.state.memory import MemorySyncStore
from calsync.state.sqlite import SqliteSyncStore
from calsync.state.store import (
    ChannelRecord,
    ConnectionStatus,
    Cursor,
    DeadLetter,
    EventMapping,
    OAuthState,
    StoreError,
    SyncStore,
    WatchStatus,
    utcnow,
)

C = "default"


@pytest.fixture(params=["memory", "sqlite", pytest.param("firestore", marks=pytest.mark.firestore)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SyncStore]:
    if request.param == "memory":
        yield MemorySyncStore()
    elif request.param == "sqlite":
        sqlite_store = SqliteSyncStore(tmp_path / "state.sqlite3")
        yield sqlite_store
        sqlite_store.close()
    else:
        yield request.getfixturevalue("firestore_store")


@pytest.fixture
def store_factory(
    request: pytest.FixtureRequest, store: SyncStore, tmp_path: Path
) -> Callable[[], SyncStore]:
    """Another handle on the same state, as a second process or function instance would have."""
    if isinstance(store, MemorySyncStore):
        return lambda: store  # one process: the same object is the same state
    if isinstance(store, SqliteSyncStore):
        return lambda: SqliteSyncStore(store.path)
    emulator = request.getfixturevalue("firestore_emulator")
    from calsync.state.firestore import FirestoreSyncStore

    return lambda: FirestoreSyncStore(emulator.client())


def mapping(key: str, event: str | None = None, content_hash: str = "h1", **extra: object) -> EventMapping:
    return EventMapping(
        connection=C,
        collection="bookings",
        booking_key=key,
        calendar_id="primary",
        event_id=event or f"ev{key}x",
        content_hash=content_hash,
        **extra,  # type: ignore[arg-type]
    )


def at(second: int) -> datetime:
    return datetime(2026, 11, 25, 12, 0, second, 123000, tzinfo=UTC)


# -- mappings -----------------------------------------------------------------------------------------


def test_mapping_round_trips_every_field_both_ways(store: SyncStore) -> None:
    m = mapping(
        "a/b 1",  # keys with slashes and spaces must survive document-id encoding
        event="evt0001",
        google_etag='"3181"',
        google_updated="2026-11-25T10:00:00.000Z",
        directus_updated="2026-11-25T09:59:59.000Z",
        synced_at=at(1),
        read_only="organized by someone@example.com",
        refused_hash="r1",
        time_zone="Asia/Kolkata",
    )
    store.put_mappings([m])
    assert store.get_mapping(C, "bookings", "a/b 1") == m
    assert store.get_mappings_by_event(C, "primary", ["evt0001", "nope1"]) == {"evt0001": m}
    assert store.get_mappings(C, "other", ["a/b 1"]) == {}
    assert store.get_mappings(C, "bookings", []) == {}


def test_put_many_mappings_in_batches_and_read_them_back_in_bulk(store: SyncStore) -> None:
    many = [mapping(str(n), synced_at=at(0)) for n in range(1203)]
    store.put_mappings(many)
    keys = [str(n) for n in range(1203)]
    assert store.get_mappings(C, "bookings", keys) == {m.booking_key: m for m in many}
    by_event = store.get_mappings_by_event(C, "primary", [m.event_id for m in many[:700]])
    assert len(by_event) == 700
    assert store.count_mappings(C, "primary") == 1203
    assert store.count_mappings(C, "other-calendar") == 0


def test_find_mappings_looks_in_every_connection_and_only_this_collection(store: SyncStore) -> None:
    """A booking moved to another staff member's calendar is mapped in both until its old event goes."""
    seven, eight = mapping("7", synced_at=at(2)), mapping("8", synced_at=at(2))
    anna = dataclasses.replace(seven, connection="anna", calendar_id="anna@example.com")
    bob = dataclasses.replace(seven, connection="bob", calendar_id="bob@example.com")
    other = dataclasses.replace(seven, collection="visits")
    store.put_mappings([bob, anna, other, eight, dataclasses.replace(mapping("9"), connection="bob")])
    keys = ["7", "8", "missing", *[str(n) for n in range(100, 160)]]  # more than one `in` query's worth
    found = store.find_mappings("bookings", keys)
    assert found == {"7": [anna, bob], "8": [eight]}
    store.delete_mappings("anna", "bookings", ["7"])
    assert store.find_mappings("bookings", ["7"]) == {"7": [bob]}


def test_put_replaces_and_delete_forgets(store: SyncStore) -> None:
    store.put_mappings([mapping("1"), mapping("2")])
    store.put_mappings([mapping("1", content_hash="new", event="evnew1")])
    found = store.get_mapping(C, "bookings", "1")
    assert found is not None and found.content_hash == "new"
    # the old event id no longer points at the booking
    assert store.get_mappings_by_event(C, "primary", ["ev1x"]) == {}
    assert set(store.get_mappings_by_event(C, "primary", ["evnew1"])) == {"evnew1"}
    store.delete_mappings(C, "bookings", ["1", "missing"])
    assert store.get_mappings(C, "bookings", ["1", "2"]).keys() == {"2"}
    assert store.get_mappings_by_event(C, "primary", ["evnew1"]) == {}


def test_connections_do_not_see_each_other(store: SyncStore) -> None:
    store.put_mappings([mapping("1")])
    other = dataclasses.replace(mapping("1", content_hash="other"), connection="staff-2")
    store.put_mappings([other])
    assert store.get_mappings("staff-2", "bookings", ["1"])["1"].content_hash == "other"
    assert store.get_mapping(C, "bookings", "1").content_hash == "h1"  # type: ignore[union-attr]
    assert store.count_mappings("staff-2", "primary") == 1


# -- cursors ------------------------------------------------------------------------------------------


def test_cursor_round_trip(store: SyncStore) -> None:
    assert store.get_cursor(C, "primary") is None
    cursor = Cursor(
        C,
        "primary",
        sync_token="tok-1",
        window_start=at(2),
        directus_checkpoint="2026-11-25T09:00:00.000Z",
        updated_at=at(3),
        list_filter="default",
    )
    store.put_cursor(cursor)
    assert store.get_cursor(C, "primary") == cursor
    cleared = dataclasses.replace(cursor, sync_token=None, window_start=None)
    store.put_cursor(cleared)
    assert store.get_cursor(C, "primary") == cleared
    assert store.get_cursor(C, "other") is None


# -- outbox -------------------------------------------------------------------------------------------


def test_outbox_keeps_the_latest_intent_per_booking(store: SyncStore) -> None:
    first = store.enqueue(C, "bookings", "7", "upsert", error="Google 503", now=at(1))
    second = store.enqueue(C, "bookings", "7", "delete", now=at(5))
    assert second.intent_id != first.intent_id
    current = store.get_outbox(C, "bookings", "7")
    assert current is not None
    assert (current.action, current.intent_id, current.attempts) == ("delete", second.intent_id, 0)
    assert current.created_at == at(1)  # the booking has been waiting since the first intent
    assert store.count_outbox(C) == 1


def test_outbox_drain_never_removes_a_newer_intent(store: SyncStore) -> None:
    pushed = store.enqueue(C, "bookings", "7", "upsert", now=at(1))
    newer = store.enqueue(C, "bookings", "7", "upsert", now=at(2))
    assert store.remove_outbox(pushed) is False
    assert store.record_outbox_failure(pushed, "boom", at(30)) is False
    assert store.get_outbox(C, "bookings", "7") is not None
    assert store.remove_outbox(newer) is True
    assert store.get_outbox(C, "bookings", "7") is None
    assert store.count_outbox(C) == 0


def test_due_outbox_is_oldest_first_and_respects_backoff(store: SyncStore) -> None:
    a = store.enqueue(C, "bookings", "a", "upsert", now=at(3))
    store.enqueue(C, "bookings", "b", "upsert", now=at(1))
    store.enqueue(C, "bookings", "c", "delete", now=at(2))
    store.enqueue("staff-2", "bookings", "z", "upsert", now=at(0))
    assert [e.booking_key for e in store.due_outbox(C, at(10), limit=10)] == ["b", "c", "a"]
    assert [e.booking_key for e in store.due_outbox(C, at(10), limit=2)] == ["b", "c"]
    assert store.record_outbox_failure(a, "Google 503", next_attempt_at=at(40)) is True
    assert [e.booking_key for e in store.due_outbox(C, at(10), limit=10)] == ["b", "c"]
    later = store.due_outbox(C, at(45), limit=10)
    failed = next(e for e in later if e.booking_key == "a")
    assert (failed.attempts, failed.last_error) == (1, "Google 503")
    store.discard_outbox(C, "bookings", "a")
    assert store.get_outbox(C, "bookings", "a") is None


# -- OAuth states -------------------------------------------------------------------------------------


def test_oauth_state_is_consumed_once(store: SyncStore) -> None:
    state = OAuthState("s" * 43, C, "v" * 64, expires_at=utcnow() + timedelta(minutes=10), created_at=at(0))
    store.put_oauth_state(state)
    assert store.consume_oauth_state(state.state) == state
    assert store.consume_oauth_state(state.state) is None
    assert store.consume_oauth_state("never-issued") is None


def test_oauth_state_consumed_concurrently_has_one_winner(
    store: SyncStore, store_factory: Callable[[], SyncStore]
) -> None:
    store.put_oauth_state(
        OAuthState("race-state", C, "verifier", expires_at=utcnow() + timedelta(minutes=10))
    )
    results: list[OAuthState | None] = []
    barrier = threading.Barrier(5)

    def consume() -> None:
        own = store_factory()
        barrier.wait()
        results.append(own.consume_oauth_state("race-state"))

    threads = [threading.Thread(target=consume) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1


def test_expired_state_is_returned_so_the_caller_can_say_expired(store: SyncStore) -> None:
    store.put_oauth_state(OAuthState("old", C, "verifier", expires_at=utcnow() - timedelta(seconds=1)))
    consumed = store.consume_oauth_state("old")
    assert consumed is not None and consumed.expired()
    assert store.consume_oauth_state("old") is None


# -- leases -------------------------------------------------------------------------------------------


def test_lease_is_exclusive_until_it_expires(store: SyncStore) -> None:
    ttl = timedelta(seconds=60)
    assert store.acquire_lease("default/import", "cycle-1", ttl, now=at(0)) is True
    assert store.acquire_lease("default/import", "cycle-2", ttl, now=at(30)) is False
    assert store.acquire_lease("default/import", "cycle-1", ttl, now=at(30)) is True  # renewal by the holder
    assert store.acquire_lease("other/import", "cycle-2", ttl, now=at(30)) is True
    assert store.acquire_lease("default/import", "cycle-2", ttl, now=at(0) + timedelta(seconds=91)) is True
    assert store.acquire_lease("default/import", "cycle-1", ttl, now=at(0) + timedelta(seconds=92)) is False


def test_released_lease_is_free_and_only_the_holder_releases(store: SyncStore) -> None:
    ttl = timedelta(minutes=5)
    assert store.acquire_lease("default/import", "a", ttl) is True
    store.release_lease("default/import", "b")
    assert store.acquire_lease("default/import", "b", ttl) is False
    store.release_lease("default/import", "a")
    assert store.acquire_lease("default/import", "b", ttl) is True


def test_lease_race_has_one_winner(store: SyncStore, store_factory: Callable[[], SyncStore]) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(5)

    def take(n: int) -> None:
        own = store_factory()
        barrier.wait()
        results.append(own.acquire_lease("default/import", f"h{n}", timedelta(minutes=5)))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 4 + [True]


# -- connection status --------------------------------------------------------------------------------


def test_status_defaults_to_not_connected(store: SyncStore) -> None:
    status = store.get_status(C)
    assert (status.connection, status.state, status.account, status.scopes) == (C, "not_connected", None, ())


def test_update_status_returns_before_and_after(store: SyncStore) -> None:
    before, after = store.update_status(
        C,
        {
            "state": "connected",
            "account": "owner@example.com",
            "scopes": ["https://www.googleapis.com/auth/calendar.events"],
            "connected_at": at(1),
            "last_cycle": {"created": 2, "nested": {"ok": True}},
            "last_cycle_at": at(2),
        },
    )
    assert before.state == "not_connected"
    assert after.state == "connected"
    stored = store.get_status(C)
    assert stored == after
    assert stored.scopes == ("https://www.googleapis.com/auth/calendar.events",)
    assert stored.last_cycle == {"created": 2, "nested": {"ok": True}}
    first, _ = store.update_status(C, {"state": "needs_reconnect", "last_error": "invalid_grant"})
    second, _ = store.update_status(C, {"state": "needs_reconnect", "last_error": "invalid_grant"})
    # a caller can tell the transition (log once) from a repeat
    assert (first.state, second.state) == ("connected", "needs_reconnect")
    assert store.get_status(C).account == "owner@example.com"  # untouched fields survive


def test_update_status_rejects_unknown_fields(store: SyncStore) -> None:
    with pytest.raises(ValueError, match="unknown connection status fields"):
        store.update_status(C, {"stat": "connected"})
    # nothing was written: the status is still the untouched default
    assert dataclasses.replace(store.get_status(C), updated_at=at(0)) == ConnectionStatus(C, updated_at=at(0))


# -- dead letters -------------------------------------------------------------------------------------


def test_dead_letters_newest_first(store: SyncStore) -> None:
    for n in range(3):
        store.add_dead_letter(
            DeadLetter(C, "google", f"ev{n}", f"reason {n}", payload={"summary": f"s{n}"}, created_at=at(n))
        )
    store.add_dead_letter(DeadLetter("staff-2", "directus", "9", "bad"))
    letters = store.list_dead_letters(C, limit=2)
    assert [letter.item_id for letter in letters] == ["ev2", "ev1"]
    assert letters[0].payload == {"summary": "s2"} and letters[0].created_at == at(2)
    assert store.count_dead_letters(C) == 3
    assert store.count_dead_letters("staff-2") == 1


def test_an_oauth_state_cannot_be_issued_twice(store: SyncStore) -> None:
    state = OAuthState("dup-state", C, "verifier", expires_at=utcnow() + timedelta(minutes=10))
    store.put_oauth_state(state)
    with pytest.raises(StoreError):
        store.put_oauth_state(state)
    assert store.consume_oauth_state("dup-state") == state


def test_list_mappings_pages_through_one_collection_once(store: SyncStore) -> None:
    keys = [str(n) for n in range(23)] + ["a/b", "_x", "."]
    store.put_mappings([mapping(k) for k in keys])
    store.put_mappings([dataclasses.replace(mapping("other-1"), collection="appointments")])
    store.put_mappings([dataclasses.replace(mapping("9"), connection="staff-2")])
    seen: list[str] = []
    after: str | None = None
    while True:
        page = store.list_mappings(C, "bookings", after, limit=5)
        assert len(page) <= 5
        seen.extend(m.booking_key for m in page)
        if len(page) < 5:
            break
        after = page[-1].booking_key
    assert sorted(seen) == sorted(keys) and len(seen) == len(set(seen))
    assert [m.booking_key for m in store.list_mappings(C, "appointments", None, 10)] == ["other-1"]
    assert store.list_mappings(C, "nothing", None, 10) == []


def test_cursor_keeps_the_sweep_position(store: SyncStore) -> None:
    store.put_cursor(Cursor(C, "primary", sync_token="t", sweep_after="41", updated_at=at(1)))
    cursor = store.get_cursor(C, "primary")
    assert cursor is not None and cursor.sweep_after == "41"


def test_enqueue_many_writes_every_intent_and_keeps_when_each_first_waited(store: SyncStore) -> None:
    earlier = store.enqueue(C, "bookings", "7", "upsert", error="Google down", now=at(1))
    keys = [str(n) for n in range(1200)]  # more than one Firestore batch
    assert store.enqueue_many(C, "bookings", [*keys, "7"], "delete", now=at(5)) == 1200
    assert store.count_outbox(C) == 1200
    entry = store.get_outbox(C, "bookings", "7")
    assert entry is not None and entry.action == "delete" and entry.intent_id != earlier.intent_id
    assert entry.created_at == at(1) and entry.attempts == 0 and entry.last_error is None
    assert not store.remove_outbox(earlier)  # the older intent is not the one there any more
    fresh = store.get_outbox(C, "bookings", "1199")
    assert fresh is not None and fresh.created_at == at(5) and fresh.next_attempt_at == at(5)


# -- push channels ------------------------------------------------------------------------------------


def channel(channel_id: str, connection: str = C, created: int = 1, **extra: object) -> ChannelRecord:
    return ChannelRecord(
        connection=connection,
        channel_id=channel_id,
        resource_id="res-" + channel_id,
        token="tok/+=" + channel_id,
        address="https://hooks.example.com/booking_hook/notifications",
        calendar_id="primary",
        expiration=at(50),
        created_at=at(created),
        **extra,  # type: ignore[arg-type]
    )


def test_channel_round_trips_and_is_found_by_id_alone(store: SyncStore) -> None:
    record = channel("6f1c9a4e-0000-4000-8000-000000000001", event_types=("default", "focusTime"))
    store.put_channel(record)
    assert store.get_channel(record.channel_id) == record
    assert store.get_channel("no-such-channel") is None
    assert store.list_channels(C) == [record]
    assert "tok/+=" not in repr(record)  # the channel's secret stays out of reprs (and so of logs)


def test_channels_are_listed_oldest_first_per_connection_and_replaced_in_place(store: SyncStore) -> None:
    newer, older = channel("ch-b", created=5), channel("ch-a/x", created=2)
    other = channel("ch-c", connection="staff-2", created=1)
    for record in (newer, older, other):
        store.put_channel(record)
    assert [c.channel_id for c in store.list_channels(C)] == ["ch-a/x", "ch-b"]
    assert store.list_channels("staff-2") == [other]
    assert store.list_channels("nobody") == []
    replaced = dataclasses.replace(older, state="replaced", last_error="Google: 503 backendError")
    store.put_channel(replaced)
    assert store.get_channel("ch-a/x") == replaced
    store.delete_channel("ch-a/x")
    store.delete_channel("never-there")
    assert store.list_channels(C) == [newer]
    assert store.get_channel("ch-a/x") is None


def test_watch_status_defaults_to_off_and_round_trips(store: SyncStore) -> None:
    fresh = store.get_watch_status(C)
    assert fresh == WatchStatus(C, updated_at=fresh.updated_at)  # off, no reason, nothing scheduled
    failing = WatchStatus(
        C,
        state="failing",
        reason="Google refused the watch: 403 quotaExceeded",
        address="https://hooks.example.com/n",
        next_attempt_at=at(30),
        updated_at=at(3),
    )
    store.put_watch_status(failing)
    assert store.get_watch_status(C) == failing
    assert store.get_watch_status("staff-2").state == "off"
    on = WatchStatus(C, state="on", updated_at=at(4))
    store.put_watch_status(on)
    assert store.get_watch_status(C) == on
