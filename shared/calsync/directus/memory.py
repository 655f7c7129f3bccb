"""An in-memory Directus bookings collection (the ``Directus`` port) for the fast tier.

Held to the same contract suite as the real client against a real Directus
(tests/integration/test_directus_contract.py). What it keeps to: integer keys from an auto-increment, read
and written as strings; ``timestamp`` fields come back in UTC as ``...sssZ`` whatever offset was sent;
``date_created`` on create, ``date_updated`` and ``user_updated`` on every update, stamped with the writer;
a request body over Directus's 1 MB ``MAX_PAYLOAD_SIZE`` is refused whole (``400 INVALID_PAYLOAD``), while
fields the collection lacks are ignored and setup's ``required`` is not enforced (both as the API does); bulk updates and deletes skip keys that no longer exist; a single-item
read of a missing item is "no such item".

Test API, as the people around it: ``person_create``, ``person_update``, ``person_update_many``,
``person_delete`` (writes by a
person, which the Flow would deliver: ``on_change`` is called with ``(action, keys, user)`` for every
write, the sync's own included, as Directus fires the Flow for every write); ``rows()``; faults:
``fail_next(n)`` (the next ``n`` calls answer 503), ``blank_reads`` (every read answers no rows, as a
misdirected proxy or a wrong DIRECTUS_URL would; a single-item read then fails unproven), ``hidden`` (keys
that bulk reads leave out while their own route still finds them).
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from calsync.directus.errors import DirectusError, DirectusUnavailable, DirectusValidationError
from calsync.state.store import utcnow
from calsync.sync.booking import FIELDS

MAX_PAYLOAD_SIZE = 1024 * 1024  # Directus's default
SYNC_USER = "sync-user"
PERSON = "a-person"
_TIMESTAMPS = (FIELDS.start, FIELDS.end, FIELDS.date_created, FIELDS.date_updated)


def _utc(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class MemoryDirectus:
    """One bookings collection, as the sync user (``SYNC_USER``) sees it. Thread-safe."""

    def __init__(
        self,
        fields: Iterable[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
        on_change: Callable[[str, list[str], str], None] | None = None,
    ) -> None:
        self.fields = frozenset(fields) if fields is not None else FIELDS.names()
        self.clock = clock
        self.on_change = on_change
        self.requests = 0
        self.blank_reads = False
        self.hidden: set[str] = set()  # keys bulk reads leave out (a lagging replica, a paging bug)
        self._failures = 0
        self._rows: dict[int, dict[str, Any]] = {}
        self._next = 1
        self._lock = threading.RLock()
        # the connections collection by id; None: it does not exist (an installation from before it)
        self.connections: dict[str, dict[str, Any]] | None = None

    # -- faults ---------------------------------------------------------------------------------------
    def fail_next(self, count: int = 1) -> None:
        with self._lock:
            self._failures += count

    def clear_faults(self) -> None:
        with self._lock:
            self._failures = 0
            self.blank_reads = False

    def _call(self, user: str = SYNC_USER) -> None:
        """One request of the sync (a person's writes do not pass through the sync's faults)."""
        if user != SYNC_USER:
            return
        self.requests += 1
        if self._failures:
            self._failures -= 1
            raise DirectusUnavailable("Directus request: 503 SERVICE_UNAVAILABLE", 503, "SERVICE_UNAVAILABLE")

    def _now(self) -> str:
        return str(_utc(self.clock().isoformat()))

    def _clean(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values as Directus stores them: timestamps in UTC; fields the collection lacks are ignored."""
        return {
            k: (_utc(v) if k in _TIMESTAMPS else copy.deepcopy(v))
            for k, v in values.items()
            if k != "id" and k in self.fields
        }

    @staticmethod
    def _within_limit(body: object) -> None:
        if len(json.dumps(body).encode()) > MAX_PAYLOAD_SIZE:
            raise DirectusValidationError(
                "Directus items write: 400 INVALID_PAYLOAD request entity too large", 400
            )

    @staticmethod
    def _out(row: dict[str, Any], fields: Iterable[str] | None) -> dict[str, Any]:
        if fields is None:
            return copy.deepcopy(row)
        wanted = {"id", *fields}
        return {k: copy.deepcopy(v) for k, v in row.items() if k in wanted}

    def _key(self, key: str) -> int | None:
        return int(key) if str(key).isdigit() else None

    def _notify(self, action: str, keys: list[str], user: str) -> None:
        if self.on_change is not None and keys:
            self.on_change(action, keys, user)

    # -- the port -------------------------------------------------------------------------------------
    def get_items(
        self, keys: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        return self.find_items("id", keys, fields)

    def read_item(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            self._call()
            if self.blank_reads:
                raise DirectusError("Directus item read: the answer is not the item asked for")
            number = self._key(key)
            row = self._rows.get(number) if number is not None else None
            return self._out(row, None) if row is not None else None

    def find_items(
        self, field: str, values: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        wanted = {str(v) for v in values}
        with self._lock:
            self._call()
            if self.blank_reads:
                return {}
            found: dict[str, dict[str, Any]] = {}
            for number in sorted(self._rows):
                row = self._rows[number]
                value = str(row.get(field)) if row.get(field) is not None else None
                if value in wanted and value not in found and str(number) not in self.hidden:
                    found[value] = self._out(row, None if fields is None else [field, *fields])
            return found

    def create_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._create(items, SYNC_USER)

    def update_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._update({str(i["id"]): i for i in items}, SYNC_USER)

    def delete_items(self, keys: Iterable[str]) -> None:
        self._delete(list(keys), SYNC_USER)

    def items_changed_since(
        self, checkpoint: str | None, page_size: int = 500, first_page: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        with self._lock:
            self._call()
            if self.blank_reads:
                return iter(())
            since = _utc(checkpoint) if checkpoint else None
            rows = [
                copy.deepcopy(self._rows[n])
                for n in sorted(self._rows)
                if since is None
                or (self._rows[n].get(FIELDS.date_updated) or "") >= since
                or (self._rows[n].get(FIELDS.date_created) or "") >= since
            ]
        first = first_page or page_size
        pages = [rows[:first]] + [rows[i : i + page_size] for i in range(first, len(rows), page_size)]
        return iter([page for page in pages if page])

    def server_time(self) -> datetime:
        with self._lock:
            self._call()
            return self.clock().replace(microsecond=0)

    def booking_fields(self) -> frozenset[str]:
        return self.fields

    def current_user_id(self) -> str | None:
        return SYNC_USER

    def list_connections(self) -> list[dict[str, Any]] | None:
        with self._lock:
            self._call()
            if self.connections is None:
                return None
            return [copy.deepcopy(self.connections[k]) for k in sorted(self.connections)]

    def update_connections(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._call()
            for item in items:
                current = (self.connections or {}).get(str(item["id"]))
                if current is not None:
                    current.update(copy.deepcopy(item))

    # -- test API: connections (the admin's items) ----------------------------------------------------
    def person_add_connection(self, id: str, **values: Any) -> None:
        with self._lock:
            if self.connections is None:
                self.connections = {}
            self.connections[id] = {"id": id, **values}

    def person_remove_connection(self, id: str) -> None:
        with self._lock:
            (self.connections or {}).pop(id, None)

    # -- writes, by whoever makes them ----------------------------------------------------------------
    def _create(self, items: list[dict[str, Any]], user: str) -> list[dict[str, Any]]:
        with self._lock:
            self._call(user)
            self._within_limit(items)
            cleaned = [self._clean(item) for item in items]
            rows = []
            for values in cleaned:
                row = {**{f: None for f in self.fields}, **values, "id": self._next}
                row[FIELDS.date_created] = self._now()
                row[FIELDS.date_updated] = None
                row[FIELDS.user_updated] = None
                self._rows[self._next] = row
                self._next += 1
                rows.append(copy.deepcopy(row))
        self._notify("create", [str(r["id"]) for r in rows], user)
        return rows

    def _update(self, items: dict[str, dict[str, Any]], user: str) -> list[dict[str, Any]]:
        with self._lock:
            self._call(user)
            self._within_limit(list(items.values()))
            cleaned = {key: self._clean(values) for key, values in items.items()}
            rows = []
            for key, values in cleaned.items():
                number = self._key(key)
                row = self._rows.get(number) if number is not None else None
                if row is None:
                    continue  # vanished: skipped, as the client does
                row.update(values)
                row[FIELDS.date_updated] = self._now()
                row[FIELDS.user_updated] = user
                rows.append(copy.deepcopy(row))
        self._notify("update", [str(r["id"]) for r in rows], user)
        return rows

    def _delete(self, keys: list[str], user: str) -> None:
        with self._lock:
            self._call(user)
            gone = []
            for key in keys:
                number = self._key(key)
                if number is not None and self._rows.pop(number, None) is not None:
                    gone.append(str(key))
        self._notify("delete", gone, user)

    # -- test API: people -----------------------------------------------------------------------------
    def person_create(self, **values: Any) -> dict[str, Any]:
        return self._create([values], PERSON)[0]

    def person_update(self, key: str | int, **changes: Any) -> dict[str, Any] | None:
        rows = self._update({str(key): changes}, PERSON)
        return rows[0] if rows else None

    def person_update_many(self, keys: Iterable[str | int], **changes: Any) -> list[dict[str, Any]]:
        """One bulk edit (the Flow delivers it once, with every key)."""
        return self._update({str(key): dict(changes) for key in keys}, PERSON)

    def person_delete(self, *keys: str | int) -> None:
        self._delete([str(k) for k in keys], PERSON)

    def rows(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {str(n): copy.deepcopy(r) for n, r in sorted(self._rows.items())}
