"""FirestoreSyncStore on the real emulator: what the shared contract suite does not look at.

The contract (test_store_contract.py) covers behaviour common to every adapter; here: Firestore document
layout (ids, TTL field, plain datetimes), races through separate clients, and failure mapping.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from calsync.state.firestore import FirestoreSyncStore, _doc_id
from calsync.state.store import (
    ConnectionStatus,
    Cursor,
    DeadLetter,
    EventMapping,
    OAuthState,
    StoreError,
    StoreUnavailable,
    utcnow,
)
from tests.parts.firestore import FirestoreEmulator

pytestmark = pytest.mark.firestore

C = "default"


def at(second: int) -> datetime:
    return datetime(2026, 11, 25, 12, 0, second, 123456, tzinfo=UTC)


def mapping(key: str, **extra: Any) -> EventMapping:
    fields: dict[str, Any] = {
        "connection": C,
        "collection": "bookings",
        "booking_key": key,
        "calendar_id": "primary",
        "event_id": f"ev{len(key)}x{abs(hash(key)) % 10**9}",
        "content_hash": "h1",
        "synced_at": at(1),
    }
    fields.update(extra)
    return EventMapping(**fields)


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in n threads released together; results in completion order."""
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait()
            results.append(work(i))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


# -- layout ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a/b 1", ".", "..", "__x__", "_", "100%", "a:b", "ü/ß", "x" * 300])
def test_awkward_keys_round_trip(firestore_store: FirestoreSyncStore, key: str) -> None:
    m = mapping(key)
    firestore_store.put_mappings([m])
    assert firestore_store.get_mapping(C, "bookings", key) == m
    assert firestore_store.get_mappings_by_event(C, "primary", [m.event_id]) == {m.event_id: m}
    firestore_store.enqueue(C, "bookings", key, "upsert", now=at(0))
    assert firestore_store.get_outbox(C, "bookings", key) is not None


def test_doc_ids_are_injective_across_parts() -> None:
    assert _doc_id("a:b", "c") != _doc_id("a", "b:c")
    assert _doc_id("a", "b/c") == "a:b%2Fc"
    assert _doc_id("..") == "%2E%2E"
    assert _doc_id("__x__").startswith("%5F")


def test_records_come_back_as_plain_utc_datetimes(firestore_store: FirestoreSyncStore) -> None:
    berlin = timezone(timedelta(hours=1))
    m = mapping("1", synced_at=datetime(2026, 11, 25, 13, 0, 0, 999999, tzinfo=berlin))
    firestore_store.put_mappings([m])
    got = firestore_store.get_mapping(C, "bookings", "1")
    assert got is not None and got == m
    assert type(got.synced_at) is datetime and got.synced_at.tzinfo is UTC
    assert got.synced_at == datetime(2026, 11, 25, 12, 0, 0, 999999, tzinfo=UTC)

    cursor = Cursor(C, "team@group.calendar.google.com", "tok", at(2), "2026-11-25T09:00:00.000Z", at(3))
    firestore_store.put_cursor(cursor)
    assert firestore_store.get_cursor(C, cursor.calendar_id) == cursor


def test_oauth_state_expires_at_is_a_timestamp_for_the_ttl_policy(
    firestore_store: FirestoreSyncStore,
) -> None:
    expires = utcnow() + timedelta(minutes=10)
    firestore_store.put_oauth_state(OAuthState("st1", C, "verifier", expires_at=expires))
    raw = (
        firestore_store.client.collection_group("oauth_states")
        .where(filter=FieldFilter("state", "==", "st1"))
        .get()[0]
        .to_dict()
    )
    assert raw is not None and isinstance(raw["expires_at"], datetime)  # not text: TTL needs a timestamp
    with pytest.raises(StoreError, match="already exists"):
        firestore_store.put_oauth_state(OAuthState("st1", C, "other", expires_at=expires))


def test_status_and_dead_letters_round_trip(firestore_store: FirestoreSyncStore) -> None:
    _, after = firestore_store.update_status(
        C,
        {
            "state": "connected",
            "account": "owner@example.com",
            "scopes": ["s1", "s2"],
            "connected_at": at(1),
            "last_cycle_at": at(2),
            "last_cycle": {"created": 2, "nested": {"list": [1, "a"], "none": None}},
        },
    )
    stored = firestore_store.get_status(C)
    assert stored == after
    assert stored.scopes == ("s1", "s2") and isinstance(stored.scopes, tuple)
    fresh = firestore_store.get_status("staff-2")
    assert fresh == ConnectionStatus("staff-2", updated_at=fresh.updated_at)

    letter = DeadLetter(
        C, "google", "ev1", "bad", payload={"a": [1, {"b": None}], "when": "x"}, created_at=at(4)
    )
    firestore_store.add_dead_letter(letter)
    assert firestore_store.list_dead_letters(C) == [letter]
    assert firestore_store.list_dead_letters(C, limit=0) == []


# -- batches ----------------------------------------------------------------------------------------


def test_more_than_500_mappings_put_read_count_and_delete(firestore_store: FirestoreSyncStore) -> None:
    many = [mapping(str(n), event_id=f"ev{n:05d}") for n in range(1105)]
    firestore_store.put_mappings(many)
    keys = [m.booking_key for m in many]
    assert firestore_store.get_mappings(C, "bookings", keys) == {m.booking_key: m for m in many}
    assert len(firestore_store.get_mappings_by_event(C, "primary", [m.event_id for m in many[:95]])) == 95
    assert firestore_store.get_mappings_by_event(C, "other-calendar", [many[0].event_id]) == {}
    assert firestore_store.count_mappings(C, "primary") == 1105
    firestore_store.delete_mappings(C, "bookings", keys[:1001])
    assert firestore_store.count_mappings(C, "primary") == 104


# -- races (each thread its own client, like separate function instances; kept small: slow) ---------


def test_consume_state_race_and_twice(
    firestore_emulator: FirestoreEmulator, firestore_store: FirestoreSyncStore
) -> None:
    firestore_store.put_oauth_state(OAuthState("s1", C, "v", expires_at=utcnow() + timedelta(minutes=5)))
    stores = [FirestoreSyncStore(firestore_emulator.client()) for _ in range(5)]
    results = race(5, lambda i: stores[i].consume_oauth_state("s1"))
    assert sum(r is not None for r in results) == 1
    assert firestore_store.consume_oauth_state("s1") is None


def test_lease_race_then_expiry(
    firestore_emulator: FirestoreEmulator, firestore_store: FirestoreSyncStore
) -> None:
    ttl = timedelta(seconds=60)
    stores = [FirestoreSyncStore(firestore_emulator.client()) for _ in range(5)]
    results = race(5, lambda i: stores[i].acquire_lease("default/import", f"h{i}", ttl, now=at(0)))
    assert sorted(results) == [False] * 4 + [True]
    assert firestore_store.acquire_lease("default/import", "late", ttl, now=at(30)) is False
    assert firestore_store.acquire_lease("default/import", "late", ttl, now=at(0) + ttl) is True


def test_outbox_intent_survives_a_racing_enqueue(
    firestore_emulator: FirestoreEmulator, firestore_store: FirestoreSyncStore
) -> None:
    first = firestore_store.enqueue(C, "bookings", "7", "upsert", now=at(1))
    stores = [FirestoreSyncStore(firestore_emulator.client()) for _ in range(4)]
    entries = race(4, lambda i: stores[i].enqueue(C, "bookings", "7", "upsert", now=at(2 + i)))
    current = firestore_store.get_outbox(C, "bookings", "7")
    assert current is not None and current.created_at == first.created_at
    assert current.intent_id in {e.intent_id for e in entries}
    assert firestore_store.remove_outbox(first) is False
    assert firestore_store.record_outbox_failure(first, "x", at(9)) is False
    assert firestore_store.record_outbox_failure(current, "Google 503", at(9)) is True
    again = firestore_store.get_outbox(C, "bookings", "7")
    assert again is not None and (again.attempts, again.last_error, again.next_attempt_at) == (
        1,
        "Google 503",
        at(9),
    )
    assert firestore_store.remove_outbox(current) is True
    assert firestore_store.count_outbox(C) == 0


# -- failures ---------------------------------------------------------------------------------------


def test_unreachable_firestore_is_a_store_error_within_the_deadline(
    firestore_emulator: FirestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    from google.cloud import firestore

    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", dead)
    store = FirestoreSyncStore(firestore.Client(project="calsync-test"), deadline=2)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Firestore"):  # may pass: not a configuration error
        store.get_status(C)
    with pytest.raises(StoreUnavailable, match="Firestore"):
        store.acquire_lease("default/import", "h", timedelta(minutes=1))
    with pytest.raises(StoreUnavailable, match="Firestore"):
        store.put_mappings([mapping("1")])
    assert time.monotonic() - started < 20


def test_the_fixture_does_not_leak_the_emulator_into_the_environment(
    firestore_emulator: FirestoreEmulator, firestore_store: FirestoreSyncStore
) -> None:
    firestore_emulator.client()
    assert os.environ.get("FIRESTORE_EMULATOR_HOST") != firestore_emulator.host


def test_the_emulator_enforces_the_preconditions_compare_and_set_relies_on(
    firestore_store: FirestoreSyncStore,
) -> None:
    """If a stale write went through, the races above could pass by luck of timing: check it directly."""
    ref = firestore_store.client.collection("calsync_leases").document("probe")
    ref.set({"holder": "a"})
    stale = ref.get()
    ref.set({"holder": "b"})
    assert firestore_store._write_if_unchanged(ref, stale, {"holder": "c"}) is False
    assert firestore_store._delete_if_unchanged(ref, stale) is False
    assert firestore_store._write_if_unchanged(ref, ref.get(), {"holder": "c"}) is True
    assert ref.get().to_dict() == {"holder": "c"}
    gone = ref.get()
    ref.delete()
    assert firestore_store._delete_if_unchanged(ref, gone) is False
    assert firestore_store._write_if_unchanged(ref, gone, {"holder": "d"}) is False
