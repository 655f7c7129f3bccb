"""Google Calendar API v3: the one client the sync uses, with Google's failures sorted into a few kinds.

Built on google-api-python-client from its bundled discovery document (no network at build time), pointed
at ``api_root`` (``https://www.googleapis.com/`` in production, the local fake in tests) for single calls
and batches alike. Retries are ours, not the library's: truncated exponential backoff with jitter on 429,
5xx, 403 rate-limit reasons and connection failures, bounded by a count and a time budget, with an
injectable ``sleep`` (and ``clock``). Every failure surfaces as a ``GoogleError`` subclass; messages carry
Google's reason and message, never a token.

Event ids are ours (``event_id_for``): deterministic per booking, so a retried insert whose answer was lost
comes back as ``GoogleConflict`` on the same id, which callers read as "already created".
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import HttpRequest

T = TypeVar("T")

BATCH_LIMIT = 50  # Google advises batches of 50 or fewer
HTTP_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 16.0
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
_QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded"})
_SCOPE_REASONS = frozenset({"insufficientPermissions", "ACCESS_TOKEN_SCOPE_INSUFFICIENT"})
_REVOKED_GRANTS = frozenset({"invalid_grant", "unauthorized_client", "invalid_client"})


# -- errors -------------------------------------------------------------------------------------------


class GoogleError(Exception):
    """A Calendar call failed. ``status`` is the HTTP status (0 when none arrived), ``reason`` Google's."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class GoogleRetryableError(GoogleError):
    """429, 5xx, 403 rate limits, connection failures: still failing after the retries and budget."""


class GoogleNotFound(GoogleError):
    """404: no such event (or calendar)."""


class GoogleGone(GoogleError):
    """410: the event was already deleted, or the sync token expired (``full_sync_required``)."""

    @property
    def full_sync_required(self) -> bool:
        return self.reason == "fullSyncRequired"


class GoogleConflict(GoogleError):
    """409: an event with this id exists (maybe cancelled)."""


class GooglePreconditionFailed(GoogleError):
    """412: the event changed since the etag given in If-Match."""


class GoogleAccessRevoked(GoogleError):
    """The refresh token is revoked or expired (invalid_grant), or access is refused after a refresh:
    only a new consent helps."""


class GoogleQuotaExceeded(GoogleError):
    """403 quotaExceeded / dailyLimitExceeded: lasts hours; not retried here."""


class GoogleBadRequest(GoogleError):
    """400 and any other 4xx: Google refuses this request as it is."""


def _error_details(content: bytes | str | None) -> tuple[str, str]:
    """(reason, message) from Google's error body."""
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    try:
        data = json.loads(content or "")
    except ValueError:
        return "", ""
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return (str(error), "") if isinstance(error, str) else ("", "")
    message = str(error.get("message") or "")
    errors = error.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("reason") or ""), message or str(errors[0].get("message") or "")
    details = error.get("details")
    if isinstance(details, list):
        for detail in details:
            if isinstance(detail, dict) and detail.get("reason"):
                return str(detail["reason"]), message
    return str(error.get("status") or ""), message


def error_from_status(status: int, reason: str, message: str, call: str = "request") -> GoogleError:
    """The GoogleError for an HTTP status and Google's reason."""
    text = f"Google Calendar {call} failed: {status} {reason or 'error'}" + (
        f" ({message})" if message else ""
    )
    if status == 429 or status >= 500:
        return GoogleRetryableError(status, reason, text)
    if status == 403 and reason in _RATE_LIMIT_REASONS:
        return GoogleRetryableError(status, reason, text)
    if status == 403 and reason in _QUOTA_REASONS:
        return GoogleQuotaExceeded(status, reason, text)
    if status == 401 or (status == 403 and reason in _SCOPE_REASONS):
        return GoogleAccessRevoked(status, reason or "authError", text)
    if status == 404:
        return GoogleNotFound(status, reason, text)
    if status == 409:
        return GoogleConflict(status, reason, text)
    if status == 410:
        return GoogleGone(status, reason, text)
    if status == 412:
        return GooglePreconditionFailed(status, reason, text)
    return GoogleBadRequest(status, reason, text)


def _from_http_error(exc: HttpError, call: str) -> GoogleError:
    reason, message = _error_details(exc.content)
    return error_from_status(int(exc.resp.status), reason, message, call)


def _from_refresh_error(exc: RefreshError, call: str) -> GoogleError:
    """google-auth's RefreshError: ``"invalid_grant: Token has been expired or revoked."`` + the body."""
    body = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    error = str(body.get("error") or "")
    if not error and exc.args:
        error = str(exc.args[0]).split(":", 1)[0].strip()
    description = str(body.get("error_description") or "")
    text = f"Google refused to refresh the access token for {call}: {error or 'error'}" + (
        f" ({description})" if description else ""
    )
    if error in _REVOKED_GRANTS:
        return GoogleAccessRevoked(400 if error == "invalid_grant" else 401, error, text)
    if getattr(exc, "retryable", False) or not error:
        return GoogleRetryableError(0, error or "tokenEndpointError", text)
    return GoogleAccessRevoked(400, error, text)


def _from_exception(exc: BaseException, call: str) -> GoogleError | None:
    """Map what executing a request raised; None when it is not Google's doing (a bug: re-raise)."""
    if isinstance(exc, HttpError):
        return _from_http_error(exc, call)
    if isinstance(exc, RefreshError):
        return _from_refresh_error(exc, call)
    if isinstance(exc, TransportError):
        return GoogleRetryableError(
            0, "transportError", f"Google's token endpoint could not be reached for {call}"
        )
    if isinstance(exc, socket.timeout | TimeoutError):
        return GoogleRetryableError(0, "timeout", f"Google Calendar {call} timed out")
    if isinstance(exc, OSError | BatchError) or type(exc).__module__.startswith("httplib2"):
        return GoogleRetryableError(
            0, "transportError", f"Google Calendar {call} failed in transport ({type(exc).__name__})"
        )
    return None


# -- ids and the service ------------------------------------------------------------------------------


def event_id_for(connection: str, collection: str, key: str) -> str:
    """The event id of a booking: base32hex (a-v, 0-9) of a SHA-256, 52 characters, deterministic."""
    digest = hashlib.sha256(
        b"calsync-event-v1\0" + connection.encode() + b"\0" + collection.encode() + b"\0" + key.encode()
    ).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


def build_credentials(
    refresh_token: str, token_uri: str, client_id: str, client_secret: str, scopes: Sequence[str]
) -> Any:
    """User credentials that start without an access token: google-auth fetches one from ``token_uri`` on
    the first call and again whenever it expires (or the API answers 401)."""
    from google.oauth2.credentials import Credentials

    return Credentials(  # type: ignore[no-untyped-call]
        None,
        refresh_token=refresh_token,
        token_uri=token_uri,
        client_id=client_id,
        client_secret=client_secret,
        scopes=list(scopes),
    )


def build_calendar_service(credentials: Any, api_root: str) -> Any:
    """A Calendar v3 Resource on ``api_root`` (single calls and batches), built offline."""
    import google_auth_httplib2
    import httplib2
    from googleapiclient.discovery import build_from_document
    from googleapiclient.discovery_cache import get_static_doc

    doc_text = get_static_doc("calendar", "v3")
    if doc_text is None:  # pragma: no cover - the document ships with the library
        raise RuntimeError("google-api-python-client has no bundled calendar v3 discovery document")
    doc: dict[str, Any] = json.loads(doc_text)
    root = api_root if api_root.endswith("/") else api_root + "/"
    doc["rootUrl"] = root
    doc["mtlsRootUrl"] = root
    doc["baseUrl"] = root + str(doc.get("servicePath", "calendar/v3/"))
    doc["batchPath"] = "batch/calendar/v3"
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=HTTP_TIMEOUT_S))
    return build_from_document(doc, http=http)


@dataclasses.dataclass(frozen=True)
class EventsPage:
    items: list[dict[str, Any]]
    next_page_token: str | None
    next_sync_token: str | None


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


# -- the client ---------------------------------------------------------------------------------------


class GoogleCalendar:
    """One calendar of one connected account. Calls are serialised (httplib2 is not thread-safe, and
    Google throttles bursty writes to one calendar)."""

    def __init__(
        self,
        service: Any,
        calendar_id: str,
        *,
        retries: int = 5,
        budget_s: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service = service
        self._events_resource: Any = None
        self.calendar_id = calendar_id
        self.retries = retries
        self.budget_s = budget_s
        self.sleep = sleep
        self.clock = clock
        self.http_requests = 0
        self._lock = threading.RLock()
        self._random = random.Random()  # noqa: S311 - backoff jitter, not a secret

    # -- retry machinery ------------------------------------------------------------------------------
    def _delay(self, attempt: int) -> float:
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt)
        jitter: float = self._random.random()
        return ceiling * (0.5 + jitter / 2)

    def _call(self, call: str, request: HttpRequest) -> Any:
        started = self.clock()
        attempt = 0
        while True:
            with self._lock:
                self.http_requests += 1
                try:
                    return request.execute(num_retries=0)
                except Exception as exc:
                    error = _from_exception(exc, call)
                    if error is None:
                        raise
            if not isinstance(error, GoogleRetryableError) or attempt >= self.retries:
                raise error
            delay = self._delay(attempt)
            if self.clock() - started + delay > self.budget_s:
                raise error
            self.sleep(delay)
            attempt += 1

    def _events(self) -> Any:
        # service.events() builds a new Resource (all its methods, from the discovery document) on every
        # call, about 3.5 ms: build it once.
        if self._events_resource is None:
            self._events_resource = self.service.events()
        return self._events_resource

    # -- single calls ---------------------------------------------------------------------------------
    def insert_request(self, body: dict[str, Any], send_updates: str = "none") -> HttpRequest:
        request: HttpRequest = self._events().insert(
            calendarId=self.calendar_id, body=body, sendUpdates=send_updates
        )
        return request

    def patch_request(self, event_id: str, body: dict[str, Any], send_updates: str = "none") -> HttpRequest:
        request: HttpRequest = self._events().patch(
            calendarId=self.calendar_id, eventId=event_id, body=body, sendUpdates=send_updates
        )
        return request

    def insert_event(self, body: dict[str, Any], send_updates: str = "none") -> dict[str, Any]:
        result: dict[str, Any] = self._call("insert", self.insert_request(body, send_updates))
        return result

    def get_event(self, event_id: str) -> dict[str, Any]:
        request = self._events().get(calendarId=self.calendar_id, eventId=event_id)
        result: dict[str, Any] = self._call("get", request)
        return result

    def patch_event(self, event_id: str, body: dict[str, Any], send_updates: str = "none") -> dict[str, Any]:
        result: dict[str, Any] = self._call("patch", self.patch_request(event_id, body, send_updates))
        return result

    def update_event(
        self, event_id: str, body: dict[str, Any], etag: str | None = None, send_updates: str = "none"
    ) -> dict[str, Any]:
        request = self._events().update(
            calendarId=self.calendar_id, eventId=event_id, body=body, sendUpdates=send_updates
        )
        if etag is not None:
            request.headers["If-Match"] = etag
        result: dict[str, Any] = self._call("update", request)
        return result

    def delete_event(self, event_id: str, send_updates: str = "none") -> None:
        request = self._events().delete(
            calendarId=self.calendar_id, eventId=event_id, sendUpdates=send_updates
        )
        self._call("delete", request)

    def list_events(
        self,
        sync_token: str | None = None,
        time_min: datetime | None = None,
        page_token: str | None = None,
        max_results: int = 2500,
        single_events: bool = True,
    ) -> EventsPage:
        """One page. With a sync token, timeMin is not sent (Google forbids it); singleEvents always is, and
        must equal the full sync's."""
        params: dict[str, Any] = {
            "calendarId": self.calendar_id,
            "maxResults": max_results,
            "singleEvents": single_events,
        }
        if sync_token:
            params["syncToken"] = sync_token
        elif time_min is not None:
            params["timeMin"] = _rfc3339(time_min)
        if page_token:
            params["pageToken"] = page_token
        data: dict[str, Any] = self._call("list", self._events().list(**params))
        return EventsPage(
            items=list(data.get("items") or []),
            next_page_token=data.get("nextPageToken") or None,
            next_sync_token=data.get("nextSyncToken") or None,
        )

    def get_calendar(self, calendar_id: str = "primary") -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "calendars.get", self.service.calendars().get(calendarId=calendar_id)
        )
        return result

    # -- batches --------------------------------------------------------------------------------------
    def batch(self, requests: Sequence[HttpRequest]) -> list[dict[str, Any] | GoogleError]:
        """Run these requests in HTTP batches of at most 50; parts that failed with a retryable error are
        sent again (bounded, with backoff inside the budget). One outcome per request, in order: the
        response, or the GoogleError it ended with. Per-part failures never raise."""
        outcomes: list[dict[str, Any] | GoogleError | None] = [None] * len(requests)
        pending = list(range(len(requests)))
        started = self.clock()
        attempt = 0
        while pending:
            for offset in range(0, len(pending), BATCH_LIMIT):
                chunk = pending[offset : offset + BATCH_LIMIT]
                for index, outcome in zip(chunk, self._run_batch([requests[i] for i in chunk]), strict=True):
                    outcomes[index] = outcome
            pending = [i for i in pending if isinstance(outcomes[i], GoogleRetryableError)]
            if not pending or attempt >= self.retries:
                break
            delay = self._delay(attempt)
            if self.clock() - started + delay > self.budget_s:
                break
            self.sleep(delay)
            attempt += 1
        return [outcome for outcome in outcomes if outcome is not None]

    def _run_batch(self, requests: list[HttpRequest]) -> list[dict[str, Any] | GoogleError]:
        """One HTTP batch request; a failure of the whole request becomes every part's outcome."""
        results: dict[str, dict[str, Any] | GoogleError] = {}

        def collect(request_id: str, response: Any, exception: BaseException | None) -> None:
            if exception is None:
                results[request_id] = response if isinstance(response, dict) else {}
            else:
                error = _from_exception(exception, "batch part")
                results[request_id] = error or GoogleBadRequest(
                    0, "unknown", "Google Calendar batch part failed"
                )

        batch = self.service.new_batch_http_request(callback=collect)
        for number, request in enumerate(requests):
            batch.add(request, request_id=str(number))
        with self._lock:
            self.http_requests += 1
            try:
                batch.execute()
            except Exception as exc:
                error = _from_exception(exc, "batch")
                if error is None:
                    raise
                return [error] * len(requests)
        missing = GoogleRetryableError(0, "missingPart", "Google Calendar batch answered without this part")
        return [results.get(str(number), missing) for number in range(len(requests))]
