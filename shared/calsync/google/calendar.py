"""Google Calendar API v3: the one client the sync uses, with Google's failures sorted into a few kinds.

Built on google-api-python-client from its bundled discovery document (no network at build time), pointed
at ``api_root`` (``https://www.googleapis.com/`` in production, the local fake in tests) for single calls
and batches alike. Retries are ours, not the library's: truncated exponential backoff with jitter on 429,
5xx, 403 rate-limit reasons and connection failures, bounded by a count and a time budget, with an
injectable ``sleep`` (and ``clock``), through the one policy in ``calsync.retry``. Every failure surfaces as a
``GoogleError`` subclass (``calsync.google.errors``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import HttpRequest

from calsync.google.errors import (
    REVOKED_GRANTS,
    GoogleAccessRevoked,
    GoogleBadRequest,
    GoogleError,
    GoogleRetryableError,
    error_details,
    error_from_status,
)
from calsync.retry import Backoff, Retry, retrying
from calsync.sync.ports import EventsPage, EventWrite, WatchedChannel

BATCH_LIMIT = 50  # Google advises batches of 50 or fewer
HTTP_TIMEOUT_S = 30.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 16.0


def _from_http_error(exc: HttpError, call: str) -> GoogleError:
    reason, message = error_details(exc.content)
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
    if error in REVOKED_GRANTS:
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


# -- the service ----------------------------------------------------------------------------------------


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


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


# -- the client ---------------------------------------------------------------------------------------


class GoogleCalendar:
    """One calendar of one connected account (the ``Calendar`` port). Calls are serialised (httplib2 is not
    thread-safe, and Google throttles bursty writes to one calendar)."""

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
        self.backoff = Backoff(base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S, retries=retries, budget_s=budget_s)
        self.sleep = sleep
        self.clock = clock
        self.http_requests = 0
        self._lock = threading.RLock()

    def _call(self, call: str, request: HttpRequest) -> Any:
        def attempt() -> Any:
            with self._lock:
                self.http_requests += 1
                try:
                    return request.execute(num_retries=0)
                except Exception as exc:
                    error = _from_exception(exc, call)
                    if error is None:
                        raise
            if isinstance(error, GoogleRetryableError):
                raise Retry(error)
            raise error

        return retrying(attempt, self.backoff, sleep=self.sleep, clock=self.clock)

    def _events(self) -> Any:
        # service.events() builds a new Resource (all its methods, from the discovery document) on every
        # call, about 3.5 ms: build it once.
        if self._events_resource is None:
            self._events_resource = self.service.events()
        return self._events_resource

    def _request(self, write: EventWrite) -> HttpRequest:
        events = self._events()
        common = {"calendarId": self.calendar_id, "sendUpdates": write.send_updates}
        if write.verb == "insert":
            request: HttpRequest = events.insert(body={**(write.body or {}), "id": write.event_id}, **common)
        elif write.verb == "patch":
            request = events.patch(eventId=write.event_id, body=write.body or {}, **common)
        else:
            request = events.delete(eventId=write.event_id, **common)
        return request

    # -- the port -------------------------------------------------------------------------------------
    def write(self, write: EventWrite) -> dict[str, Any]:
        result = self._call(write.verb, self._request(write))
        return result if isinstance(result, dict) else {}

    def list_events(
        self,
        sync_token: str | None = None,
        time_min: datetime | None = None,
        page_token: str | None = None,
        max_results: int = 2500,
        event_types: Sequence[str] = (),
    ) -> EventsPage:
        """One page. With a sync token, timeMin is not sent (Google forbids it); singleEvents, showDeleted
        and eventTypes always are, and must equal the full sync's. showDeleted: a full sync (the first, or
        after a 410) also sees the events cancelled since the last token, so their bookings follow; without
        it they would stay live for good, since nothing is cancelled for being absent from a listing."""
        params: dict[str, Any] = {
            "calendarId": self.calendar_id,
            "maxResults": max_results,
            "singleEvents": True,
            "showDeleted": True,
        }
        if event_types:
            params["eventTypes"] = list(event_types)
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

    def batch(self, writes: Sequence[EventWrite]) -> list[dict[str, Any] | GoogleError]:
        """These writes in HTTP batches of at most 50; parts that failed with a retryable error are sent
        again (bounded, with backoff inside the budget). One outcome per write, in order: the response, or
        the GoogleError it ended with. Per-part failures never raise."""
        outcomes: list[dict[str, Any] | GoogleError | None] = [None] * len(writes)
        pending = list(range(len(writes)))
        started = self.clock()
        attempt = 0
        while pending:
            for offset in range(0, len(pending), BATCH_LIMIT):
                chunk = pending[offset : offset + BATCH_LIMIT]
                answers = self._run_batch([self._request(writes[i]) for i in chunk])
                for index, outcome in zip(chunk, answers, strict=True):
                    outcomes[index] = outcome
            pending = [i for i in pending if isinstance(outcomes[i], GoogleRetryableError)]
            delay = self.backoff.wait(attempt, self.clock() - started) if pending else None
            if delay is None:
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

    # -- push channels --------------------------------------------------------------------------------
    def watch(
        self, channel_id: str, address: str, token: str, event_types: Sequence[str] = ()
    ) -> WatchedChannel:
        """No ``params.ttl``: Google's default lifetime (7 days for events) is what the caller plans with,
        read back from the answer's ``expiration``. A lost answer retried can come back ``400
        channelIdNotUnique``: the channel then exists unrecorded, and its notifications are ignored as
        unknown until it expires."""
        params: dict[str, Any] = {"calendarId": self.calendar_id}
        if event_types:
            params["eventTypes"] = list(event_types)
        body = {"id": channel_id, "type": "web_hook", "address": address, "token": token}
        data = self._call("watch", self._events().watch(body=body, **params))
        answer: dict[str, Any] = data if isinstance(data, dict) else {}
        expiration = str(answer.get("expiration") or "")
        return WatchedChannel(
            channel_id=str(answer.get("id") or channel_id),
            resource_id=str(answer.get("resourceId") or ""),
            expiration=(
                datetime.fromtimestamp(int(expiration) / 1000, UTC) if expiration.isdigit() else None
            ),
        )

    def stop_channel(self, channel_id: str, resource_id: str) -> None:
        body = {"id": channel_id, "resourceId": resource_id}
        self._call("channels.stop", self.service.channels().stop(body=body))
