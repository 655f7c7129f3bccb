"""The Directus REST client the sync uses: one session with the static token, bulk reads and writes.

Errors are mapped to a small hierarchy; their messages come from Directus's ``errors[0]`` and never contain
the token. Directus answers 403 FORBIDDEN both for "no permission" and for a missing item or collection.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from calsync import logs

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IN_CHUNK = 200  # keys per filter, so the URL stays well below proxies' limits


class DirectusError(Exception):
    """Directus refused or failed a request."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(logs.scrub(message))
        self.status = status
        self.code = code


class DirectusUnavailable(DirectusError):
    """Unreachable, 5xx or 429 even after retries: try again later."""


class DirectusAuthError(DirectusError):
    """The token is wrong, or lacks permission on the collection."""


class DirectusNotFound(DirectusError):
    """The item or collection does not exist (Directus says 403 for these)."""


class DirectusValidationError(DirectusError):
    """Directus rejected the data (400), e.g. RECORD_NOT_UNIQUE or a failed validation."""


def _error_from(response: requests.Response, what: str) -> DirectusError:
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
        return (
            DirectusNotFound(text, status, code)
            if what.startswith("item")
            else DirectusAuthError(text, status, code)
        )
    if status == 404:
        return DirectusNotFound(text, status, code)
    if status == 400:
        return DirectusValidationError(text, status, code)
    return DirectusError(text, status, code)


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
        self.retries = retries
        self.sleep = sleep
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.session.headers["Accept"] = "application/json"
        self.requests = 0  # HTTP requests sent, retries included (benchmarks read it)
        logs.register_secret(token)

    # -- plumbing -------------------------------------------------------------------------------------
    def request(self, method: str, path: str, what: str, *, params: Any = None, body: Any = None) -> Any:
        """One call with bounded retries on 429/5xx/connection errors; returns the ``data`` envelope."""
        url = f"{self.base_url}{path}"
        payload = json.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if payload is not None else None
        for attempt in range(self.retries + 1):
            self.requests += 1
            try:
                response = self.session.request(
                    method, url, params=params, data=payload, headers=headers, timeout=self.timeout
                )
            except requests.RequestException as exc:
                error: DirectusError = DirectusUnavailable(
                    f"Directus {what}: cannot connect ({type(exc).__name__})"
                )
            else:
                if response.status_code < 400:
                    if response.status_code == 204 or not response.content:
                        return None
                    return response.json().get("data")
                error = _error_from(response, what)
            if not isinstance(error, DirectusUnavailable) or attempt == self.retries:
                raise error
            delay = min(4.0, 0.25 * 2**attempt) * (0.5 + random.random() / 2)  # noqa: S311 - jitter only
            log.warning(
                "Directus call failed; retrying", extra=logs.fields(what=what, error=str(error), delay=delay)
            )
            self.sleep(delay)
        raise AssertionError("unreachable")

    def _items(self) -> str:
        return f"/items/{self.collection}"

    # -- items ----------------------------------------------------------------------------------------
    def get_items(
        self, keys: Iterable[str], fields: Iterable[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """The items with these keys, by key as text (missing ones are left out). One call per 200 keys."""
        wanted = list(dict.fromkeys(str(k) for k in keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            chunk = wanted[start : start + IN_CHUNK]
            params = {"filter": json.dumps({"id": {"_in": chunk}}), "limit": "-1"}
            if fields is not None:
                params["fields"] = ",".join(fields)
            rows = self.request("GET", self._items(), "items read", params=params) or []
            found.update((str(row["id"]), row) for row in rows)
        return found

    def create_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create these items in one call; returns the created rows in the same order."""
        if not items:
            return []
        rows = self.request("POST", self._items(), "items create", body=items)
        return list(rows or [])

    def update_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update items with different data each (every dict carries its ``id``), in one call."""
        if not items:
            return []
        rows = self.request("PATCH", self._items(), "items update", body=items)
        return list(rows or [])

    def update_many(self, keys: Iterable[str], data: dict[str, Any]) -> list[dict[str, Any]]:
        """Set the same data on many items, in one call."""
        rows = self.request("PATCH", self._items(), "items update", body={"keys": list(keys), "data": data})
        return list(rows or [])

    def delete_items(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.request("DELETE", self._items(), "items delete", body=keys)

    def items_changed_since(
        self, checkpoint: str | None, page_size: int = 500
    ) -> Iterator[list[dict[str, Any]]]:
        """Items created or updated at or after ``checkpoint`` (all when None), by page in key order.

        Pages follow the key (``id > last``), not page numbers: items the caller updates while scanning keep
        matching and would otherwise shift the pages under it. ``date_updated`` is null until an item's first
        update, so new items are found by ``date_created``. ``_gte``: two changes in one millisecond must not
        hide each other; re-reading the boundary item is harmless."""
        since: list[dict[str, Any]] = []
        if checkpoint:
            since = [
                {"_or": [{"date_updated": {"_gte": checkpoint}}, {"date_created": {"_gte": checkpoint}}]}
            ]
        last: Any = None
        while True:
            conditions = since + ([{"id": {"_gt": last}}] if last is not None else [])
            params = {"sort": "id", "limit": str(page_size)}
            if conditions:
                params["filter"] = json.dumps({"_and": conditions})
            rows = self.request("GET", self._items(), "items read", params=params) or []
            if rows:
                yield list(rows)
                last = rows[-1]["id"]
            if len(rows) < page_size:
                return

    def server_time(self) -> datetime:
        """Directus's own clock (its Date header), so checkpoints never compare two machines' clocks."""
        self.requests += 1
        try:
            response = self.session.get(f"{self.base_url}/server/ping", timeout=self.timeout)
        except requests.RequestException as exc:
            raise DirectusUnavailable(f"Directus ping: cannot connect ({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise _error_from(response, "ping")
        stamp = response.headers.get("Date")
        return parsedate_to_datetime(stamp).astimezone(UTC) if stamp else datetime.now(UTC)

    # -- schema, singletons, users --------------------------------------------------------------------
    def fields(self, collection: str | None = None) -> set[str]:
        rows = self.request("GET", f"/fields/{collection or self.collection}", "fields read") or []
        return {str(row["field"]) for row in rows}

    def sample_item(self) -> dict[str, Any] | None:
        """Any one item with all its fields (None when the collection is empty)."""
        rows = self.request("GET", self._items(), "items read", params={"limit": "1", "fields": "*"}) or []
        return dict(rows[0]) if rows else None

    def get_singleton(self, collection: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/items/{collection}", "singleton read") or {})

    def update_singleton(self, collection: str, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("PATCH", f"/items/{collection}", "singleton update", body=data) or {})

    def current_user_id(self) -> str | None:
        """The id of the user the token belongs to (None for a token of no user)."""
        me = self.request("GET", "/users/me", "current user read", params={"fields": "id"}) or {}
        return str(me["id"]) if me.get("id") else None
