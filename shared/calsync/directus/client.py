"""The Directus REST client the sync uses: a session per thread with the static token, bulk reads and writes.

Errors are mapped to a small hierarchy; their messages come from Directus's ``errors[0]`` and never contain
the token. Directus answers 403 FORBIDDEN for "no permission", for a missing collection and, on single-item
routes, for a missing item; it never says 404 for data.

Missing items in bulk writes: an admin token's bulk PATCH/DELETE silently skips keys that do not exist, but a
non-admin token (the least-privilege sync user) gets 403 for the whole call if one key is missing. A booking
deleted in Directus between a read and a write is an ordinary race, so the bulk writes here re-check which
keys still exist after a 403 and write those: the same result whatever the token.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import requests
from urllib3.exceptions import ConnectTimeoutError

from calsync import logs
from calsync.directus.errors import (
    DirectusAuthError,
    DirectusError,
    DirectusNotFound,
    DirectusUnavailable,
    DirectusValidationError,
)
from calsync.directus.limits import body_chunks, in_chunks
from calsync.retry import Backoff, Retry, retrying
from calsync.sync.booking import FIELDS

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Answers given before Directus did any work (rate limiter, pressure limiter): safe to repeat even a create.
REFUSED_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER = 30.0  # a longer Retry-After is not worth holding a function instance for
MISSING_RECHECKS = 2  # re-checks after a 403 on a bulk write; more means items vanish faster than we write

T = TypeVar("T")


def _error_from(response: requests.Response, what: str, single_item: bool) -> DirectusError:
    code = message = None
    try:
        first = response.json()["errors"][0]
        message = str(first.get("message"))
        code = str((first.get("extensions") or {}).get("code"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        message = response.reason
    text = f"Directus {what}: {response.status_code} {code or ''} {message}".replace("  ", " ")
    status = response.status_code
    if status in RETRY_STATUSES:
        return DirectusUnavailable(text, status, code)
    if status == 401:
        return DirectusAuthError(text, status, code)
    if status == 403:
        cls = DirectusNotFound if single_item else DirectusAuthError
        return cls(text, status, code)
    if status == 404:
        return DirectusNotFound(text, status, code)
    if status in (400, 413):
        return DirectusValidationError(text, status, code)
    return DirectusError(text, status, code)


def _never_sent(exc: requests.RequestException) -> bool:
    """True if the request surely did not reach Directus (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    # urllib3's NewConnectionError (refused, unresolvable) is a ConnectTimeoutError too.
    return isinstance(reason, ConnectTimeoutError)


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return min(MAX_RETRY_AFTER, max(0.0, float(value)))
    except ValueError:
        return None  # absent, or an HTTP date (Directus sends seconds)


class DirectusClient:
    """Items of one collection, plus the few other routes the sync needs."""

    def __init__(
        self,
        base_url: str,
        token: str,
        collection: str,
        *,
        timeout: float = 15.0,
        retries: int = 3,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.collection = collection
        self.timeout = timeout
        self.backoff = Backoff(base_s=0.25, cap_s=4.0, retries=retries)
        self.sleep = sleep
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._shared_session = session
        if session is not None:
            session.headers.update(self._headers)
        self._local = threading.local()  # requests.Session is not thread-safe: one per thread
        self._count_lock = threading.Lock()
        self.requests = 0  # HTTP requests sent, retries included (benchmarks read it)
        logs.register_secret(token)

    @property
    def session(self) -> requests.Session:
        """This thread's session (the push writes statuses back from a thread of its own)."""
        if self._shared_session is not None:
            return self._shared_session
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self._headers)
        return session

    def _count(self) -> None:
        with self._count_lock:
            self.requests += 1

    # -- plumbing -------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Any = None,
        body: Any = None,
        single_item: bool = False,
    ) -> Any:
        """One call with bounded retries on 429/5xx/connection errors; returns the ``data`` envelope.

        A POST creates: it is repeated only when Directus surely did not act on it (no connection, 429, 503),
        since a 500/502/504 or a lost answer may hide items that were created after all."""
        url = f"{self.base_url}{path}"
        payload = json.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else None
        repeatable = method.upper() != "POST"

        def attempt() -> Any:
            self._count()
            try:
                response = self.session.request(
                    method, url, params=params, data=payload, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                error: DirectusError = DirectusUnavailable(
                    f"Directus {what}: cannot connect ({type(exc).__name__})"
                )
                if repeatable or _never_sent(exc):
                    raise Retry(error) from None
                raise error from None
            if response.status_code < 400:
                return self._data(response, what)
            error = _error_from(response, what, single_item)
            if isinstance(error, DirectusUnavailable) and (
                repeatable or response.status_code in REFUSED_STATUSES
            ):
                wait = _retry_after(response) if response.status_code in REFUSED_STATUSES else None
                raise Retry(error, at_least=wait or 0.0)
            raise error

        def on_retry(error: Exception, delay: float) -> None:
            log.warning(
                "Directus call failed; retrying", extra=logs.fields(what=what, error=str(error), delay=delay)
            )

        return retrying(attempt, self.backoff, sleep=self.sleep, on_retry=on_retry)

    @staticmethod
    def _data(response: requests.Response, what: str) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            document = response.json()
        except ValueError:
            # e.g. DIRECTUS_URL points at the admin app or a proxy's page rather than the API
            raise DirectusError(
                f"Directus {what}: {response.status_code} answer is not JSON; is DIRECTUS_URL the API's address?",
                response.status_code,
            ) from None
        return document.get("data") if isinstance(document, dict) else None

    def _items(self) -> str:
        return f"/items/{self.collection}"

    def _skipping_missing(
        self, keys: list[str], write: Callable[[list[str]], T], what: str, collection: str | None = None
    ) -> T | None:
        """``write(keys)``; after a 403, again with only the keys that still exist (None if none do).
        ``collection``: where the keys are, when not the bookings.

        A 403 while every key exists is a real permission problem and is raised."""
        for _ in range(MISSING_RECHECKS + 1):
            try:
                return write(keys)
            except DirectusAuthError as exc:
                if exc.status != 403:
                    raise
                present = self._present(keys, collection) if collection else self.get_items(keys, ["id"])
                remaining = [key for key in keys if key in present]
                if len(remaining) == len(keys):
                    raise
                log.info(
                    "Directus items vanished before the write; writing the rest",
                    extra=logs.fields(what=what, missing=sorted(set(keys) - set(remaining))),
                )
                if not remaining:
                    return None
                keys = remaining
        raise DirectusUnavailable(f"Directus {what}: items keep disappearing; try again later")

    # -- items ----------------------------------------------------------------------------------------
    def get_items(
        self, keys: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The items with these keys, by key as text (missing ones are left out). One call per 200 keys."""
        return self.find_items("id", keys, fields)

    def find_items(
        self, field: str, values: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The items whose ``field`` holds one of ``values``, by that value as text; where several items hold
        the same value, the one with the lowest key. One call per 200 values."""
        found: dict[str, dict[str, Any]] = {}
        for chunk in in_chunks(list(dict.fromkeys(str(v) for v in values))):
            params = {"filter": json.dumps({field: {"_in": chunk}}), "limit": "-1", "sort": "id"}
            if fields is not None:
                params["fields"] = ",".join(dict.fromkeys(["id", field, *fields]))  # keyed by field
            rows = self.request("GET", self._items(), "items read", params=params) or []
            for row in rows:
                found.setdefault(str(row[field]), row)
        return found

    def create_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create these items in one call (all or none); returns the created rows in the same order.

        The caller keeps the body under Directus's size limit (``body_chunks``)."""
        if not items:
            return []
        rows = self.request("POST", self._items(), "items create", body=items)
        return list(rows or [])

    def update_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update items with different data each (every dict carries its ``id``), in one call.

        Items that no longer exist are skipped; the rows of the updated ones are returned."""
        if not items:
            return []
        by_key = {str(item["id"]): item for item in items}

        def write(keys: list[str]) -> list[dict[str, Any]]:
            body = [by_key[key] for key in keys]
            return list(self.request("PATCH", self._items(), "items update", body=body) or [])

        rows: list[dict[str, Any]] = []
        for chunk in body_chunks(list(by_key.values())):
            rows.extend(self._skipping_missing([str(i["id"]) for i in chunk], write, "items update") or [])
        return rows

    def delete_items(self, keys: Iterable[str]) -> None:
        """Delete these items in one call; items already gone are fine."""
        wanted = list(dict.fromkeys(str(k) for k in keys))
        if wanted:
            self._skipping_missing(
                wanted,
                lambda keys: self.request("DELETE", self._items(), "items delete", body=keys),
                "items delete",
            )

    def items_changed_since(
        self, checkpoint: str | None, page_size: int = 500, first_page: int | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Items created or updated at or after ``checkpoint`` (all when None), by page in key order.

        Pages follow the key (``id > last``), not page numbers: items the caller updates while scanning keep
        matching and would otherwise shift the pages under it. ``date_updated`` is null until an item's first
        update, so new items are found by ``date_created``. ``_gte``: two changes in one millisecond must not
        hide each other; re-reading the boundary item is harmless. ``first_page``: the first page's size,
        when the caller wants to start working sooner."""
        since: list[dict[str, Any]] = []
        if checkpoint:
            since = [
                {"_or": [{"date_updated": {"_gte": checkpoint}}, {"date_created": {"_gte": checkpoint}}]}
            ]
        last: Any = None
        size = first_page or page_size
        while True:
            conditions = since + ([{"id": {"_gt": last}}] if last is not None else [])
            params = {"sort": "id", "limit": str(size)}
            if conditions:
                params["filter"] = json.dumps({"_and": conditions})
            rows = self.request("GET", self._items(), "items read", params=params) or []
            if rows:
                yield list(rows)
                last = rows[-1]["id"]
            if len(rows) < size:
                return
            size = page_size

    def server_time(self) -> datetime:
        """Directus's own clock (its Date header), so checkpoints never compare two machines' clocks."""
        self._count()
        try:
            response = self.session.get(f"{self.base_url}/server/ping", timeout=self.timeout)
        except requests.RequestException as exc:
            raise DirectusUnavailable(f"Directus ping: cannot connect ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise _error_from(response, "ping", single_item=False)
        stamp = response.headers.get("Date")
        return parsedate_to_datetime(stamp).astimezone(UTC) if stamp else datetime.now(UTC)

    def read_item(self, key: str) -> dict[str, Any] | None:
        """The item on its own route; None only when Directus itself says there is no such item.

        Directus answers a missing item with ``403 FORBIDDEN`` on the single-item route (never 404 for data),
        so that answer, in Directus's own error shape, is the proof of absence; any other answer (a 404 from
        a wrong route, a proxy's page, an empty body) raises DirectusError: not proven."""
        try:
            data = self.request(
                "GET",
                f"{self._items()}/{quote(key, safe='')}",
                "item read",
                single_item=True,
            )
        except DirectusNotFound as exc:
            if exc.status == 403 and exc.code == "FORBIDDEN":
                return None
            raise DirectusError(f"Directus item read: {exc}", exc.status, exc.code) from None
        if not isinstance(data, dict) or str(data.get("id")) != key:
            raise DirectusError(
                "Directus item read: the answer is not the item asked for; is DIRECTUS_URL the API's address?"
            )
        return data

    # -- schema, singletons, users --------------------------------------------------------------------
    def booking_fields(self) -> frozenset[str]:
        """The collection's field names: from the schema, else (the least-privilege sync user may not read
        the schema) from an item, else (an empty collection) the fields setup creates."""
        try:
            rows = self.request("GET", f"/fields/{self.collection}", "fields read") or []
            return frozenset(str(row["field"]) for row in rows)
        except (DirectusAuthError, DirectusNotFound):
            rows = (
                self.request("GET", self._items(), "items read", params={"limit": "1", "fields": "*"}) or []
            )
            return frozenset(rows[0]) if rows else FIELDS.names()

    def update_singleton(self, collection: str, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PATCH", f"/items/{collection}", "singleton update", body=data) or {})

    # -- connections ----------------------------------------------------------------------------------
    def list_connections(self) -> list[dict[str, Any]] | None:
        """Every connection item in one request; None when the collection is not there for us (Directus
        answers 403 alike for a collection that does not exist and one the sync may not read: an
        installation whose setup predates connections)."""
        from calsync.sync.connections import CONNECTIONS_COLLECTION

        try:
            rows = self.request(
                "GET",
                f"/items/{CONNECTIONS_COLLECTION}",
                "connections read",
                params={"limit": "-1", "fields": "id,name,staff,calendar_id,account_from"},
            )
        except DirectusAuthError as exc:
            if exc.status == 401:
                raise
            return None
        return [dict(row) for row in rows or [] if isinstance(row, dict)]

    def update_connections(self, items: list[dict[str, Any]]) -> None:
        """Status fields onto connection items, all in one request: Directus 11 and 12 take an array of
        partial items, each with its key (tests/integration/test_directus_connections.py). A connection an
        admin deleted since the sync read them is skipped: the sync user's bulk PATCH is refused whole (403)
        when one key is missing, as for bookings."""
        from calsync.sync.connections import CONNECTIONS_COLLECTION

        by_key = {str(item["id"]): item for item in items}
        what = "connections status update"

        def write(keys: list[str]) -> None:
            body = [by_key[key] for key in keys]
            self.request("PATCH", f"/items/{CONNECTIONS_COLLECTION}", what, body=body)

        for chunk in body_chunks(list(by_key.values())):  # one, unless the statuses pass Directus's limit
            self._skipping_missing([str(i["id"]) for i in chunk], write, what, CONNECTIONS_COLLECTION)

    def _present(self, keys: list[str], collection: str) -> set[str]:
        """Which of these keys the collection has (one request per 200 keys)."""
        found: set[str] = set()
        for chunk in in_chunks(keys):
            params = {"filter": json.dumps({"id": {"_in": chunk}}), "fields": "id", "limit": "-1"}
            rows = self.request("GET", f"/items/{collection}", "items read", params=params) or []
            found |= {str(row["id"]) for row in rows}
        return found

    def current_user_id(self) -> str | None:
        """The id of the user the token belongs to (None for a token of no user)."""
        me = self.request("GET", "/users/me", "current user read", params={"fields": "id"}) or {}
        return str(me["id"]) if me.get("id") else None
