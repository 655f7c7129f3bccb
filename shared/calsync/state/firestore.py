"""SyncStore on Firestore (Native mode): the production adapter (``STORE=firestore`` or ``firestore://DB``).

Layout (``root`` defaults to "calsync"; every id segment is percent-encoded, see ``_doc_id``)::

    {root}_connections/{connection}                       connection status (fields of ConnectionStatus)
    {root}_connections/{connection}/mappings/{coll:key}   one EventMapping per booking
    {root}_connections/{connection}/cursors/{calendar}    one Cursor per calendar
    {root}_connections/{connection}/outbox/{coll:key}     the latest OutboxEntry per booking
    {root}_connections/{connection}/dead_letters/{auto}   DeadLetter
    {root}_global/oauth/oauth_states/{state}              OAuthState; ``expires_at`` is a timestamp field:
                                                          terraform's TTL policy on collection group
                                                          ``oauth_states`` deletes stale states
    {root}_leases/{name}                                  lease holder and expiry
    {root}_channels/{channel_id}                          ChannelRecord: a notification names only the
                                                          channel, so channels are found by id alone
    {root}_connections/{connection}/push/watch            WatchStatus

Design choices (why):

- Lookup by event id is a query ``event_id in [...]`` on the connection's mappings, 30 ids per round trip
  (Firestore's limit for ``in``), with the calendar checked client-side. The mapping document stays the
  only copy of the truth: there is no second index document that a crash, a replace or a concurrent put
  could leave pointing at the wrong booking, and a single-field filter needs only the automatic
  single-field index (no composite index to deploy).
- Read-modify-write operations (enqueue, outbox removal/failure, consuming a state, leases, status) are
  compare-and-set writes: read the document, then write with a precondition (``create()`` if it was
  absent, ``last_update_time`` if it existed) and start over if the precondition fails. That is as atomic
  as a transaction (the write happens only if nothing changed since the read) but takes no server-side
  locks, so racing function instances do not queue behind each other's lock timeouts (the emulator
  serialises contended transactions very slowly), and every RPC gets our retry deadline, so an outage
  surfaces as StoreError in seconds instead of the library's 60-300 s defaults.
- No query needs a composite index: every query filters or orders on a single field of one collection
  (``event_id``, ``calendar_id``, ``created_at``); ``due_outbox`` orders by ``created_at`` and skips
  entries still in back-off client-side.
- Free-form maps (status ``last_cycle``, dead-letter ``payload``) are stored as JSON text, exactly like the
  SQLite adapter: the same values round-trip on both adapters, and arbitrary payload keys neither create
  index entries nor hit Firestore's map restrictions (nested arrays, reserved field names).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import quote

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry, if_exception_type
from google.auth.exceptions import GoogleAuthError
from google.cloud import firestore
from google.cloud.firestore_v1 import CollectionReference, DocumentReference
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from calsync.retry import Backoff
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
    StoreUnavailable,
    SyncStore,
    WatchStatus,
    apply_status_changes,
    utcnow,
)

T = TypeVar("T")

_GET_CHUNK = 500  # documents per get_all / per write batch (Firestore's commit limit is 500 writes)
_IN_CHUNK = 30  # Firestore's limit on the number of values of an ``in`` filter
_CAS_ATTEMPTS = 25  # compare-and-set rounds before giving up; each lost round means another writer won
_CAS_BACKOFF = Backoff(base_s=0.01, cap_s=0.5)  # short pauses that spread the next round of racing writers
_MAX_JSON = 256 * 1024  # dead-letter payloads beyond this are cut (a document may not exceed 1 MiB)

# Retried: the request most likely never took effect, or the server asks us to come back.
_TRANSIENT = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.InternalServerError,
    gexc.ResourceExhausted,
    gexc.Aborted,
)
# A compare-and-set write lost against another writer: re-read and decide again.
_CONFLICT = (gexc.AlreadyExists, gexc.FailedPrecondition, gexc.NotFound, gexc.Conflict)


def _doc_id(*parts: str) -> str:
    """An injective document id for these parts: percent-encoded, joined by ':'.

    Keys may contain '/', which Firestore would read as a path separator, and ids may not be '.' or '..'
    nor look like ``__reserved__``: quoting every part (no safe characters) and escaping a leading '_'
    and lone dots keeps every id legal while ``unquote`` of each ':'-separated part gives the original.
    """
    encoded = ":".join(quote(part, safe="") for part in parts)
    if encoded.startswith("_"):
        encoded = "%5F" + encoded[1:]
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return encoded


def _utc(value: datetime) -> datetime:
    """A plain aware UTC datetime (Firestore returns DatetimeWithNanoseconds; records must compare equal)."""
    # Naive values are UTC by this package's convention (and Firestore's), not local time.
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return datetime(
        value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond, UTC
    )


def _opt_utc(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class FirestoreSyncStore(SyncStore):
    """SyncStore on a ``google.cloud.firestore.Client``.

    ``deadline`` bounds each operation's retries of transient errors (seconds); after it the operation
    raises StoreError. The default suits a Cloud Function with a 60 s request timeout.
    """

    def __init__(self, client: firestore.Client, root: str = "calsync", *, deadline: float = 20.0) -> None:
        self.client = client
        self.root = root
        self._deadline = deadline
        self._connections = client.collection(f"{root}_connections")
        # The collection id must be exactly "oauth_states" whatever the root: the TTL policy
        # (terraform/firestore.tf) names that collection group.
        self._states = client.collection(f"{root}_global").document("oauth").collection("oauth_states")
        self._leases = client.collection(f"{root}_leases")
        self._channels = client.collection(f"{root}_channels")

    # -- plumbing -------------------------------------------------------------------------------------
    def _rpc(self) -> dict[str, Any]:
        """retry/timeout keyword arguments for one RPC: our deadline instead of the library's 60-300 s."""
        retry = Retry(
            predicate=if_exception_type(*_TRANSIENT),
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=self._deadline,
        )
        return {"retry": retry, "timeout": self._deadline}

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """Turn every Firestore/transport failure into StoreError, naming the operation."""
        try:
            yield
        except gexc.RetryError as exc:
            raise StoreUnavailable(
                f"Firestore did not answer {what} within {self._deadline:g} s: {exc.cause or exc}"
            ) from exc
        except _TRANSIENT as exc:
            raise StoreUnavailable(f"Firestore failed {what}: {exc}") from exc
        except gexc.GoogleAPICallError as exc:
            raise StoreError(f"Firestore failed {what}: {exc}") from exc
        except GoogleAuthError as exc:
            raise StoreError(f"Firestore credentials are not usable for {what}: {exc}") from exc

    def _cas(self, what: str, attempt: Callable[[], T | None]) -> T:
        """Run a read-then-conditional-write ``attempt`` until it completes (returns non-None).

        ``attempt`` returns None when its conditional write lost to another writer (it catches the
        conflict itself); a short random pause spreads the next round of racing writers.
        """
        with self._guard(what):
            for round_ in range(_CAS_ATTEMPTS):
                result = attempt()
                if result is not None:
                    return result
                time.sleep(_CAS_BACKOFF.delay(round_))
        raise StoreUnavailable(f"Firestore {what}: still contended after {_CAS_ATTEMPTS} attempts")

    def _connection(self, connection: str) -> DocumentReference:
        return self._connections.document(_doc_id(connection))

    def _mappings(self, connection: str) -> CollectionReference:
        return cast(CollectionReference, self._connection(connection).collection("mappings"))

    def _outbox(self, connection: str) -> CollectionReference:
        return cast(CollectionReference, self._connection(connection).collection("outbox"))

    def _dead_letters(self, connection: str) -> CollectionReference:
        return cast(CollectionReference, self._connection(connection).collection("dead_letters"))

    def _count(self, query: Any, what: str) -> int:
        with self._guard(what):
            results = query.count(alias="n").get(**self._rpc())
        return int(results[0][0].value) if results else 0

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

    # -- mappings -------------------------------------------------------------------------------------
    @staticmethod
    def _mapping_doc(m: EventMapping) -> dict[str, Any]:
        return {
            "connection": m.connection,
            "collection": m.collection,
            "booking_key": m.booking_key,
            "calendar_id": m.calendar_id,
            "event_id": m.event_id,
            "content_hash": m.content_hash,
            "google_etag": m.google_etag,
            "google_updated": m.google_updated,
            "directus_updated": m.directus_updated,
            "synced_at": m.synced_at,
            "read_only": m.read_only,
            "refused_hash": m.refused_hash,
            "time_zone": m.time_zone,
        }

    @staticmethod
    def _mapping(data: Mapping[str, Any]) -> EventMapping:
        return EventMapping(
            connection=data["connection"],
            collection=data["collection"],
            booking_key=data["booking_key"],
            calendar_id=data["calendar_id"],
            event_id=data["event_id"],
            content_hash=data["content_hash"],
            google_etag=data.get("google_etag"),
            google_updated=data.get("google_updated"),
            directus_updated=data.get("directus_updated"),
            synced_at=_utc(data["synced_at"]),
            read_only=data.get("read_only"),
            refused_hash=data.get("refused_hash"),
            time_zone=data.get("time_zone"),
        )

    def _mapping_ref(self, connection: str, collection: str, key: str) -> DocumentReference:
        return self._mappings(connection).document(_doc_id(collection, str(key)))

    def get_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> dict[str, EventMapping]:
        found: dict[str, EventMapping] = {}
        wanted = sorted({str(k) for k in keys})
        with self._guard("get_mappings"):
            for chunk in _chunks(wanted, _GET_CHUNK):
                refs = [self._mapping_ref(connection, collection, key) for key in chunk]
                for snap in self.client.get_all(refs, **self._rpc()):
                    data = snap.to_dict() if snap.exists else None
                    if data is not None:
                        mapping = self._mapping(data)
                        found[mapping.booking_key] = mapping
        return found

    def get_mappings_by_event(
        self, connection: str, calendar_id: str, event_ids: Iterable[str]
    ) -> dict[str, EventMapping]:
        found: dict[str, EventMapping] = {}
        wanted = sorted(set(event_ids))
        with self._guard("get_mappings_by_event"):
            for chunk in _chunks(wanted, _IN_CHUNK):
                query = self._mappings(connection).where(filter=FieldFilter("event_id", "in", chunk))
                for snap in query.stream(**self._rpc()):
                    data = snap.to_dict()
                    # Filtering the calendar here keeps the query on one field (no composite index).
                    if data is not None and data.get("calendar_id") == calendar_id:
                        mapping = self._mapping(data)
                        found[mapping.event_id] = mapping
        return found

    def find_mappings(self, collection: str, keys: Iterable[str]) -> dict[str, list[EventMapping]]:
        """A collection-group query over every connection's ``mappings`` (production needs the
        collection-group index on ``booking_key`` that terraform declares); the collection is filtered here,
        and so is the root, since a collection group spans every root in the database."""
        found: dict[str, list[EventMapping]] = {}
        prefix = f"{self._connections.id}/"
        with self._guard("find_mappings"):
            for chunk in _chunks(sorted({str(k) for k in keys}), _IN_CHUNK):
                query = self.client.collection_group("mappings").where(
                    filter=FieldFilter("booking_key", "in", chunk)
                )
                for snap in query.stream(**self._rpc()):
                    data = snap.to_dict()
                    if (
                        data is not None
                        and data.get("collection") == collection
                        and snap.reference.path.startswith(prefix)
                    ):
                        found.setdefault(data["booking_key"], []).append(self._mapping(data))
        return {key: sorted(ms, key=lambda m: m.connection) for key, ms in found.items()}

    def put_mappings(self, mappings: Iterable[EventMapping]) -> None:
        items = list(mappings)
        with self._guard("put_mappings"):
            for chunk in _chunks(items, _GET_CHUNK):
                batch = self.client.batch()
                for m in chunk:
                    batch.set(
                        self._mapping_ref(m.connection, m.collection, m.booking_key), self._mapping_doc(m)
                    )
                batch.commit(**self._rpc())

    def delete_mappings(self, connection: str, collection: str, keys: Iterable[str]) -> None:
        wanted = sorted({str(k) for k in keys})
        with self._guard("delete_mappings"):
            for chunk in _chunks(wanted, _GET_CHUNK):
                batch = self.client.batch()
                for key in chunk:
                    batch.delete(self._mapping_ref(connection, collection, key))
                batch.commit(**self._rpc())

    def list_mappings(
        self, connection: str, collection: str, after: str | None, limit: int
    ) -> list[EventMapping]:
        # Document-id order (ids start with the collection) needs no composite index.
        mappings = self._mappings(connection)
        query = mappings.order_by(FieldPath.document_id())
        if after is None:
            query = query.start_at([mappings.document(_doc_id(collection, ""))])
        else:
            query = query.start_after([mappings.document(_doc_id(collection, after))])
        found: list[EventMapping] = []
        with self._guard("list_mappings"):
            for snap in query.limit(limit).stream(**self._rpc()):
                data = snap.to_dict()
                if data is None or data.get("collection") != collection:
                    break  # past this collection's ids
                found.append(self._mapping(data))
        return found

    def count_mappings(self, connection: str, calendar_id: str) -> int:
        query = self._mappings(connection).where(filter=FieldFilter("calendar_id", "==", calendar_id))
        return self._count(query, "count_mappings")

    # -- cursors --------------------------------------------------------------------------------------
    def _cursor_ref(self, connection: str, calendar_id: str) -> DocumentReference:
        cursors = cast(CollectionReference, self._connection(connection).collection("cursors"))
        return cursors.document(_doc_id(calendar_id))

    def get_cursor(self, connection: str, calendar_id: str) -> Cursor | None:
        with self._guard("get_cursor"):
            snap = self._cursor_ref(connection, calendar_id).get(**self._rpc())
        data = snap.to_dict() if snap.exists else None
        if data is None:
            return None
        return Cursor(
            connection=connection,
            calendar_id=calendar_id,
            sync_token=data.get("sync_token"),
            window_start=_opt_utc(data.get("window_start")),
            directus_checkpoint=data.get("directus_checkpoint"),
            sweep_after=data.get("sweep_after"),
            updated_at=_utc(data["updated_at"]),
            list_filter=data.get("list_filter"),
        )

    def put_cursor(self, cursor: Cursor) -> None:
        doc = {
            "connection": cursor.connection,
            "calendar_id": cursor.calendar_id,
            "sync_token": cursor.sync_token,
            "window_start": cursor.window_start,
            "directus_checkpoint": cursor.directus_checkpoint,
            "sweep_after": cursor.sweep_after,
            "updated_at": cursor.updated_at,
            "list_filter": cursor.list_filter,
        }
        with self._guard("put_cursor"):
            self._cursor_ref(cursor.connection, cursor.calendar_id).set(doc, **self._rpc())

    # -- outbox ---------------------------------------------------------------------------------------
    @staticmethod
    def _entry(data: Mapping[str, Any]) -> OutboxEntry:
        return OutboxEntry(
            connection=data["connection"],
            collection=data["collection"],
            booking_key=data["booking_key"],
            action=data["action"],
            intent_id=data["intent_id"],
            attempts=int(data.get("attempts") or 0),
            last_error=data.get("last_error"),
            next_attempt_at=_utc(data["next_attempt_at"]),
            created_at=_utc(data["created_at"]),
        )

    def _outbox_ref(self, connection: str, collection: str, key: str) -> DocumentReference:
        return self._outbox(connection).document(_doc_id(collection, str(key)))

    def _write_if_unchanged(self, ref: DocumentReference, snap: Any, doc: dict[str, Any]) -> bool:
        """Create ``doc`` if ``snap`` saw no document, else replace its fields if it is unchanged since.

        False if another writer got there first (the caller re-reads and decides again).
        """
        try:
            if snap.exists:
                option = self.client.write_option(last_update_time=snap.update_time)
                ref.update(doc, option=option, **self._rpc())
            else:
                ref.create(doc, **self._rpc())
        except _CONFLICT:
            return False
        return True

    def _delete_if_unchanged(self, ref: DocumentReference, snap: Any) -> bool:
        try:
            ref.delete(option=self.client.write_option(last_update_time=snap.update_time), **self._rpc())
        except _CONFLICT:
            return False
        return True

    def enqueue(
        self,
        connection: str,
        collection: str,
        key: str,
        action: OutboxAction,
        error: str | None = None,
        now: datetime | None = None,
    ) -> OutboxEntry:
        now = _utc(now or utcnow())
        ref = self._outbox_ref(connection, collection, key)

        def attempt() -> OutboxEntry | None:
            snap = ref.get(**self._rpc())
            data = snap.to_dict() if snap.exists else None
            entry = OutboxEntry(
                connection=connection,
                collection=collection,
                booking_key=str(key),
                action=action,
                intent_id=uuid.uuid4().hex,
                attempts=0,
                last_error=error,
                next_attempt_at=now,
                # the booking has been waiting since its first intent
                created_at=_utc(data["created_at"]) if data else now,
            )
            return entry if self._write_if_unchanged(ref, snap, self._entry_doc(entry)) else None

        return self._cas("enqueue", attempt)

    @staticmethod
    def _entry_doc(entry: OutboxEntry) -> dict[str, Any]:
        return {
            "connection": entry.connection,
            "collection": entry.collection,
            "booking_key": entry.booking_key,
            "action": entry.action,
            "intent_id": entry.intent_id,
            "attempts": entry.attempts,
            "last_error": entry.last_error,
            "next_attempt_at": entry.next_attempt_at,
            "created_at": entry.created_at,
        }

    def enqueue_many(
        self,
        connection: str,
        collection: str,
        keys: Iterable[str],
        action: OutboxAction,
        now: datetime | None = None,
    ) -> int:
        """One read and one atomic batch of conditional writes per 500 bookings; a batch that lost a race to
        another writer is done again key by key."""
        now = _utc(now or utcnow())
        wanted = list(dict.fromkeys(str(k) for k in keys))
        with self._guard("enqueue_many"):
            for chunk in _chunks(wanted, _GET_CHUNK):
                refs = {key: self._outbox_ref(connection, collection, key) for key in chunk}
                snaps = {
                    snap.reference.path: snap
                    for snap in self.client.get_all(list(refs.values()), **self._rpc())
                }
                batch = self.client.batch()
                for key, ref in refs.items():
                    snap = snaps.get(ref.path)
                    data = snap.to_dict() if snap is not None and snap.exists else None
                    doc = self._entry_doc(
                        OutboxEntry(
                            connection,
                            collection,
                            key,
                            action,
                            uuid.uuid4().hex,
                            0,
                            None,
                            now,
                            _utc(data["created_at"]) if data else now,
                        )
                    )
                    if data is not None and snap is not None:
                        batch.update(
                            ref, doc, option=self.client.write_option(last_update_time=snap.update_time)
                        )
                    else:
                        batch.create(ref, doc)
                try:
                    batch.commit(**self._rpc())
                except _CONFLICT:
                    for key in chunk:
                        self.enqueue(connection, collection, key, action, now=now)
        return len(wanted)

    def get_outbox(self, connection: str, collection: str, key: str) -> OutboxEntry | None:
        with self._guard("get_outbox"):
            snap = self._outbox_ref(connection, collection, key).get(**self._rpc())
        data = snap.to_dict() if snap.exists else None
        return self._entry(data) if data is not None else None

    def due_outbox(self, connection: str, now: datetime, limit: int) -> list[OutboxEntry]:
        due: list[OutboxEntry] = []
        if limit <= 0:
            return due
        # Oldest first on the server (a single-field order, no composite index); entries still in
        # back-off are skipped here. Firestore cannot filter one field and order by another without a
        # composite index, and filtering next_attempt_at server-side would have to read every due entry
        # to find the oldest. Ties in created_at fall back to the document id (collection:key).
        query = self._outbox(connection).order_by("created_at")
        with self._guard("due_outbox"):
            for snap in query.stream(**self._rpc()):
                data = snap.to_dict()
                if data is None:
                    continue
                entry = self._entry(data)
                if entry.next_attempt_at <= now:
                    due.append(entry)
                    if len(due) >= limit:
                        break
        return due

    def _if_same_intent(
        self, what: str, entry: OutboxEntry, write: Callable[[DocumentReference, Any], bool]
    ) -> bool:
        ref = self._outbox_ref(entry.connection, entry.collection, entry.booking_key)

        def attempt() -> bool | None:
            snap = ref.get(**self._rpc())
            data = snap.to_dict() if snap.exists else None
            if data is None or data.get("intent_id") != entry.intent_id:
                return False  # a newer intent (or none) is there: leave it alone
            return True if write(ref, snap) else None

        return self._cas(what, attempt)

    def record_outbox_failure(self, entry: OutboxEntry, error: str, next_attempt_at: datetime) -> bool:
        def write(ref: DocumentReference, snap: Any) -> bool:
            data = snap.to_dict() or {}
            changes = {
                "attempts": int(data.get("attempts") or 0) + 1,
                "last_error": error,
                "next_attempt_at": next_attempt_at,
            }
            return self._write_if_unchanged(ref, snap, changes)

        return self._if_same_intent("record_outbox_failure", entry, write)

    def remove_outbox(self, entry: OutboxEntry) -> bool:
        return self._if_same_intent("remove_outbox", entry, self._delete_if_unchanged)

    def discard_outbox(self, connection: str, collection: str, key: str) -> None:
        with self._guard("discard_outbox"):
            self._outbox_ref(connection, collection, key).delete(**self._rpc())

    def count_outbox(self, connection: str) -> int:
        return self._count(self._outbox(connection), "count_outbox")

    # -- OAuth states ---------------------------------------------------------------------------------
    def put_oauth_state(self, state: OAuthState) -> None:
        doc = {
            "state": state.state,
            "connection": state.connection,
            "code_verifier": state.code_verifier,
            # A timestamp field: the TTL policy (terraform) deletes documents once this is past.
            "expires_at": state.expires_at,
            "created_at": state.created_at,
        }
        with self._guard("put_oauth_state"):
            try:
                # Never overwrite: a state must bind to exactly one verifier.
                self._states.document(_doc_id(state.state)).create(doc, **self._rpc())
            except gexc.AlreadyExists as exc:
                raise StoreError("OAuth state already exists; states must be unique") from exc

    def consume_oauth_state(self, state: str) -> OAuthState | None:
        ref = self._states.document(_doc_id(state))
        with self._guard("consume_oauth_state"):
            snap = ref.get(**self._rpc())
            data = snap.to_dict() if snap.exists else None
            # Deleting only the version we read makes the read+delete one atomic step: of racing
            # consumers exactly one delete succeeds; the others find it changed or gone.
            if data is None or not self._delete_if_unchanged(ref, snap):
                return None
        return OAuthState(
            state=data["state"],
            connection=data["connection"],
            code_verifier=data["code_verifier"],
            expires_at=_utc(data["expires_at"]),
            created_at=_utc(data["created_at"]),
        )

    # -- leases ---------------------------------------------------------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: timedelta, now: datetime | None = None) -> bool:
        now = _utc(now or utcnow())
        ref = self._leases.document(_doc_id(name))

        def attempt() -> bool | None:
            snap = ref.get(**self._rpc())
            data = snap.to_dict() if snap.exists else None
            if data is not None and data.get("holder") != holder and _utc(data["expires_at"]) > now:
                return False
            doc = {"name": name, "holder": holder, "expires_at": now + ttl}
            return True if self._write_if_unchanged(ref, snap, doc) else None

        return self._cas("acquire_lease", attempt)

    def release_lease(self, name: str, holder: str) -> None:
        ref = self._leases.document(_doc_id(name))
        with self._guard("release_lease"):
            snap = ref.get(**self._rpc())
            data = snap.to_dict() if snap.exists else None
            if data is not None and data.get("holder") == holder:
                # If it changed meanwhile someone else took the (expired) lease: theirs now, keep it.
                self._delete_if_unchanged(ref, snap)

    # -- connection status ----------------------------------------------------------------------------
    @staticmethod
    def _status(connection: str, data: Mapping[str, Any] | None) -> ConnectionStatus:
        if data is None:
            return ConnectionStatus(connection=connection)
        last_cycle = data.get("last_cycle_json")
        return ConnectionStatus(
            connection=connection,
            state=data.get("state") or "not_connected",
            account=data.get("account"),
            scopes=tuple(data.get("scopes") or ()),
            connected_at=_opt_utc(data.get("connected_at")),
            last_cycle_at=_opt_utc(data.get("last_cycle_at")),
            last_cycle=json.loads(last_cycle) if last_cycle is not None else None,
            last_error=data.get("last_error"),
            updated_at=_utc(data["updated_at"]),
            publish_error=data.get("publish_error"),
            sync_requested_at=_opt_utc(data.get("sync_requested_at")),
        )

    @staticmethod
    def _status_doc(status: ConnectionStatus) -> dict[str, Any]:
        return {
            "connection": status.connection,
            "state": status.state,
            "account": status.account,
            "scopes": list(status.scopes),
            "connected_at": status.connected_at,
            "last_cycle_at": status.last_cycle_at,
            "last_cycle_json": (
                json.dumps(dict(status.last_cycle), default=str) if status.last_cycle is not None else None
            ),
            "last_error": status.last_error,
            "updated_at": status.updated_at,
            "publish_error": status.publish_error,
            "sync_requested_at": status.sync_requested_at,
        }

    def get_status(self, connection: str) -> ConnectionStatus:
        with self._guard("get_status"):
            snap = self._connection(connection).get(**self._rpc())
        return self._status(connection, snap.to_dict() if snap.exists else None)

    def update_status(
        self, connection: str, changes: Mapping[str, Any]
    ) -> tuple[ConnectionStatus, ConnectionStatus]:
        ref = self._connection(connection)

        def attempt() -> tuple[ConnectionStatus, ConnectionStatus] | None:
            snap = ref.get(**self._rpc())
            before = self._status(connection, snap.to_dict() if snap.exists else None)
            # Raises ValueError on unknown fields before anything is written.
            after = apply_status_changes(before, changes, utcnow())
            # Stored values come back at microsecond precision in UTC: return what a later get gives.
            after = self._status(connection, self._status_doc(after))
            return (before, after) if self._write_if_unchanged(ref, snap, self._status_doc(after)) else None

        return self._cas("update_status", attempt)

    # -- dead letters ---------------------------------------------------------------------------------
    def add_dead_letter(self, letter: DeadLetter) -> None:
        payload = json.dumps(dict(letter.payload), default=str)
        if len(payload) > _MAX_JSON:
            # Recording a cut payload beats failing the write (and with it the cycle) on a 1 MiB limit.
            payload = json.dumps({"truncated": True, "json_prefix": payload[:4096]})
        doc = {
            "connection": letter.connection,
            "source": letter.source,
            "item_id": letter.item_id,
            "reason": letter.reason,
            "payload_json": payload,
            "created_at": letter.created_at,
        }
        with self._guard("add_dead_letter"):
            self._dead_letters(letter.connection).document().set(doc, **self._rpc())

    def list_dead_letters(self, connection: str, limit: int = 50) -> list[DeadLetter]:
        if limit <= 0:
            return []
        query = (
            self._dead_letters(connection)
            .order_by("created_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        letters: list[DeadLetter] = []
        with self._guard("list_dead_letters"):
            for snap in query.stream(**self._rpc()):
                data = snap.to_dict()
                if data is None:
                    continue
                letters.append(
                    DeadLetter(
                        connection=data["connection"],
                        source=data["source"],
                        item_id=data["item_id"],
                        reason=data["reason"],
                        payload=json.loads(data["payload_json"]),
                        created_at=_utc(data["created_at"]),
                    )
                )
        return letters

    def count_dead_letters(self, connection: str) -> int:
        return self._count(self._dead_letters(connection), "count_dead_letters")

    # -- push channels --------------------------------------------------------------------------------
    @staticmethod
    def _channel(data: Mapping[str, Any]) -> ChannelRecord:
        return ChannelRecord(
            connection=data["connection"],
            channel_id=data["channel_id"],
            resource_id=data["resource_id"],
            token=data["token"],
            address=data["address"],
            calendar_id=data["calendar_id"],
            expiration=_utc(data["expiration"]),
            event_types=tuple(data.get("event_types") or ()),
            state=data["state"],
            created_at=_utc(data["created_at"]),
            last_error=data.get("last_error"),
        )

    def put_channel(self, channel: ChannelRecord) -> None:
        doc = {
            "connection": channel.connection,
            "channel_id": channel.channel_id,
            "resource_id": channel.resource_id,
            "token": channel.token,
            "address": channel.address,
            "calendar_id": channel.calendar_id,
            "expiration": channel.expiration,
            "event_types": list(channel.event_types),
            "state": channel.state,
            "created_at": channel.created_at,
            "last_error": channel.last_error,
        }
        with self._guard("put_channel"):
            self._channels.document(_doc_id(channel.channel_id)).set(doc, **self._rpc())

    def get_channel(self, channel_id: str) -> ChannelRecord | None:
        with self._guard("get_channel"):
            snap = self._channels.document(_doc_id(channel_id)).get(**self._rpc())
        data = snap.to_dict() if snap.exists else None
        return self._channel(data) if data is not None else None

    def list_channels(self, connection: str) -> list[ChannelRecord]:
        # One equality filter on one field: the automatic single-field index serves it; a connection has
        # one or two channels, so they are sorted here rather than by a composite index.
        query = self._channels.where(filter=FieldFilter("connection", "==", connection))
        with self._guard("list_channels"):
            found = [self._channel(data) for snap in query.stream(**self._rpc()) if (data := snap.to_dict())]
        return sorted(found, key=lambda c: (c.created_at, c.channel_id))

    def delete_channel(self, channel_id: str) -> None:
        with self._guard("delete_channel"):
            self._channels.document(_doc_id(channel_id)).delete(**self._rpc())

    def _watch_ref(self, connection: str) -> DocumentReference:
        return cast(DocumentReference, self._connection(connection).collection("push").document("watch"))

    def get_watch_status(self, connection: str) -> WatchStatus:
        with self._guard("get_watch_status"):
            snap = self._watch_ref(connection).get(**self._rpc())
        data = snap.to_dict() if snap.exists else None
        if data is None:
            return WatchStatus(connection)
        return WatchStatus(
            connection=connection,
            state=data["state"],
            reason=data.get("reason"),
            address=data.get("address"),
            next_attempt_at=_opt_utc(data.get("next_attempt_at")),
            updated_at=_utc(data["updated_at"]),
        )

    def put_watch_status(self, status: WatchStatus) -> None:
        doc = {
            "connection": status.connection,
            "state": status.state,
            "reason": status.reason,
            "address": status.address,
            "next_attempt_at": status.next_attempt_at,
            "updated_at": status.updated_at,
        }
        with self._guard("put_watch_status"):
            self._watch_ref(status.connection).set(doc, **self._rpc())
