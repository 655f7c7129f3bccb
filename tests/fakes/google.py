"""A faithful fake of Google Calendar API v3 and Google's OAuth 2.0 endpoints (pytest plugin).

Served for real over HTTP on 127.0.0.1 (werkzeug, threaded), so the production client libraries
(google-api-python-client, google-auth, google-auth-oauthlib, requests) talk to it unchanged. Every test gets
a fresh server (``google_fake`` fixture, function scope; starting one takes a few milliseconds).

Endpoints (``api_root`` is ``http://127.0.0.1:PORT/``):

- Calendar v3: ``{api_root}calendar/v3/calendars/{calendarId}`` (GET) and ``.../events`` (list, insert),
  ``.../events/{eventId}`` (get, patch, update, delete), batch ``POST {api_root}batch/calendar/v3``.
- OAuth: ``auth_uri`` (GET, auto-consents with a 302 back to the redirect URI), ``token_uri`` (POST,
  authorization_code with PKCE S256 and refresh_token grants), ``revoke_uri`` (POST), and
  ``GET {api_root}oauth2/v3/userinfo``.

What it holds to (see /work/shared/FACTS.md): client ids ``[a-v0-9]{5,1024}``; an existing id, even of a
cancelled event, is ``409 duplicate``; delete is soft (``status: cancelled``), twice is ``410 deleted``; a
patch with ``status: confirmed`` restores; ``extendedProperties.private`` merges key by key with ``null``
removing a key; ``If-Match`` mismatch is ``412 conditionNotMet``; every write bumps ``etag``, ``updated`` and
``sequence``; list pages with ``nextSyncToken`` on the last page only; incremental sync returns cancelled
events and refuses ``timeMin`` & co with ``400``; ``invalidate_sync_tokens()`` turns old tokens into
``410 fullSyncRequired``; recurring series expand into instances ``{seriesId}_{YYYYMMDDTHHMMSSZ}`` with
``singleEvents=true``. Errors always have Google's shape
``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}``. Unknown query parameters
(``alt=json`` ...) are ignored.

Test API (``GoogleFake``): ``api_root``/``auth_uri``/``token_uri``/``revoke_uri``/``userinfo_uri``;
``client_id``/``client_secret`` of a pre-registered client; ``register_client``, ``consent(account, deny,
scopes, refresh_token)``; ``issue_refresh_token``, ``issue_access_token``, ``refresh_token_valid``,
``revoke_all``, ``expire_access_tokens``; as the calendar owner ``create_event``, ``edit_event``,
``cancel_event``, ``add_recurring``, ``instance_ids``, ``cancel_instance``; ``events``/``event`` (copies);
``invalidate_sync_tokens``; ``fail_next``, ``lose_response_next`` (filters: ``path_contains``, ``method``,
``match`` = a path substring or a predicate on a ``Call``), ``set_fault_rate``, ``clear_faults``, ``latency``;
``requests``, ``count``, ``count_parts``, ``clear_log``; ``send_updates`` (what each event write asked for).
``start()``/``stop()`` or ``with GoogleFake() as fake:``.

Faults and latency apply per HTTP request (a batch is one HTTP request); ``fail_next`` rules and the random
fault rate's 429/5xx also apply to batch parts, auth is checked per part (each part carries its own
``Authorization``, as Google's batch does). Everything is logged; ``count()`` counts HTTP requests and
``count_parts()`` batch parts.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import email
import email.message
import email.policy
import hashlib
import json
import random
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

DEFAULT_ACCOUNT = "owner@example.com"
DEFAULT_CLIENT_ID = "calsync-test.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "fake-client-secret"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
DEFAULT_SCOPES = (CALENDAR_EVENTS_SCOPE, "openid", EMAIL_SCOPE)
ACCESS_TOKEN_LIFETIME_S = 3599
MAX_BATCH_PARTS = 1000
MAX_RESULTS_DEFAULT = 250
MAX_RESULTS_LIMIT = 2500
MAX_INSTANCES = 400  # expansion cap for series without COUNT/UNTIL
_EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
_BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
_SYNC_FORBIDDEN = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
_READ_ONLY = ("kind", "etag", "created", "updated", "htmlLink", "creator", "sequence")
_WHOLE_ON_PATCH = ("start", "end", "originalStartTime", "recurrence", "attendees", "attachments")
_SEND_UPDATES = ("all", "externalOnly", "none")
_CALENDAR_API = "/calendar/v3/"
_BATCH_PATH = "/batch/calendar/v3"

Headers = dict[str, str]
Reply = tuple[int, Headers, bytes]


class ApiError(Exception):
    """A Calendar API error in Google's shape."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _error_reply(status: int, reason: str, message: str) -> Reply:
    body = {
        "error": {
            "errors": [{"domain": "global", "reason": reason, "message": message}],
            "code": status,
            "message": message,
        }
    }
    return _json_reply(status, body)


def _json_reply(status: int, body: Any, headers: Headers | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json; charset=UTF-8", **(headers or {})},
        json.dumps(body).encode(),
    )


def _oauth_error(status: int, error: str, description: str | None = None) -> Reply:
    body = {"error": error}
    if description:
        body["error_description"] = description
    return _json_reply(status, body)


_MESSAGES = {
    "rateLimitExceeded": "Rate Limit Exceeded",
    "userRateLimitExceeded": "User Rate Limit Exceeded",
    "quotaExceeded": "Calendar usage limits exceeded.",
    "dailyLimitExceeded": "Daily Limit Exceeded",
    "backendError": "Backend Error",
    "notFound": "Not Found",
    "duplicate": "The requested identifier already exists.",
    "deleted": "Resource has been deleted",
    "conditionNotMet": "Precondition Failed",
    "fullSyncRequired": "Sync token is no longer valid, a full sync is required.",
    "authError": "Invalid Credentials",
    "forbidden": "Forbidden",
    "invalid": "Invalid Value",
}


# -- small helpers ------------------------------------------------------------------------------------


def _rfc3339_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ApiError(400, "invalid", f"Invalid time zone definition: {name}") from exc


def _parse_datetime(text: str, zone: str | None = None) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ApiError(400, "invalid", f"Invalid value for: {text}") from exc
    if value.tzinfo is None:
        if not zone:
            raise ApiError(400, "required", "Missing time zone definition for start time.")
        value = value.replace(tzinfo=_zone(zone))
    return value


def _render(moment: datetime, zone_name: str | None) -> str:
    local = moment.astimezone(_zone(zone_name)).replace(microsecond=0)
    if local.utcoffset() == timedelta(0):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat()


def _instant(when: Mapping[str, Any]) -> datetime:
    """The instant a start/end object stands for (all-day dates at midnight UTC: the calendar's zone)."""
    if when.get("dateTime"):
        return _parse_datetime(str(when["dateTime"]), when.get("timeZone"))
    if when.get("date"):
        try:
            day = date.fromisoformat(str(when["date"]))
        except ValueError as exc:
            raise ApiError(400, "invalid", f"Invalid value for: {when['date']}") from exc
        return datetime.combine(day, dtime(0), UTC)
    raise ApiError(400, "required", "Missing time.")


def _when(value: datetime | date | Mapping[str, Any], zone: str | None = None) -> dict[str, Any]:
    """A start/end object from a datetime (naive = UTC), a date (all-day) or a ready dict."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        out: dict[str, Any] = {"dateTime": _render(moment, zone)}
        if zone:
            out["timeZone"] = zone
        return out
    return {"date": value.isoformat()}


def _random_id(length: int = 26) -> str:
    return "".join(secrets.choice(_BASE32HEX) for _ in range(length))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _merge(target: dict[str, Any], patch: Mapping[str, Any], depth: int = 0) -> None:
    """Patch semantics: objects merge key by key, ``null`` removes a key, arrays and times are replaced."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif (
            isinstance(value, Mapping)
            and isinstance(target.get(key), dict)
            and not (depth == 0 and key in _WHOLE_ON_PATCH)
        ):
            _merge(target[key], value, depth + 1)
        else:
            target[key] = copy.deepcopy(value)


def _first(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return (_first(query, name) or "").lower() == "true"


# -- recurrence ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Rule:
    step: timedelta
    count: int | None
    until: datetime | None


def _parse_rrule(recurrence: Iterable[str]) -> _Rule:
    for line in recurrence:
        if not line.upper().startswith("RRULE:"):
            continue
        parts = dict(p.split("=", 1) for p in line[6:].split(";") if "=" in p)
        freq = parts.get("FREQ", "").upper()
        interval = int(parts.get("INTERVAL", "1"))
        if freq not in ("DAILY", "WEEKLY") or interval < 1:
            raise ApiError(400, "invalid", "Invalid recurrence rule.")
        step = timedelta(days=interval if freq == "DAILY" else 7 * interval)
        until = None
        if "UNTIL" in parts:
            raw = parts["UNTIL"]
            fmt = "%Y%m%dT%H%M%SZ" if "T" in raw else "%Y%m%d"
            until = datetime.strptime(raw, fmt).replace(tzinfo=UTC)
            if fmt == "%Y%m%d":
                until += timedelta(days=1) - timedelta(seconds=1)
        count = int(parts["COUNT"]) if "COUNT" in parts else None
        return _Rule(step, count, until)
    raise ApiError(400, "invalid", "Invalid recurrence rule.")


def _instance_suffix(when: Mapping[str, Any]) -> str:
    if when.get("date"):
        return str(when["date"]).replace("-", "")
    return _instant(when).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _shift(when: Mapping[str, Any], delta: timedelta) -> dict[str, Any]:
    out = dict(when)
    if when.get("date"):
        out["date"] = (date.fromisoformat(str(when["date"])) + delta).isoformat()
    else:
        zone = when.get("timeZone")
        if zone:  # wall-clock recurrence in the event's zone (DST keeps the local time)
            local = _instant(when).astimezone(_zone(zone))
            shifted = (local.replace(tzinfo=None) + delta).replace(tzinfo=_zone(zone))
        else:
            shifted = _instant(when) + delta
        out["dateTime"] = _render(shifted, zone)
    return out


# -- state --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Calendar:
    account: str
    events: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # incl. exceptions
    changed: dict[str, int] = dataclasses.field(default_factory=dict)  # id -> change sequence


@dataclasses.dataclass
class _SyncToken:
    account: str
    seq: int
    epoch: int
    single_events: bool
    show_deleted: bool


@dataclasses.dataclass
class _Page:
    account: str
    items: list[dict[str, Any]]
    max_results: int
    sync_token: str


@dataclasses.dataclass
class _Client:
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]


@dataclasses.dataclass
class _Code:
    client_id: str
    redirect_uri: str
    account: str
    scopes: tuple[str, ...]
    challenge: str | None
    method: str | None
    refresh: bool
    expires_at: float
    used: bool = False


@dataclasses.dataclass
class _Refresh:
    client_id: str
    account: str
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclasses.dataclass
class _Access:
    client_id: str
    account: str
    scopes: tuple[str, ...]
    expires_at: float
    refresh_token: str | None
    revoked: bool = False


@dataclasses.dataclass
class _Consent:
    account: str = DEFAULT_ACCOUNT
    deny: bool = False
    scopes: tuple[str, ...] | None = None
    refresh_token: bool = True


@dataclasses.dataclass(frozen=True)
class Call:
    """What a fault filter sees of a request (a batch part is a call of its own, ``in_batch`` set)."""

    method: str
    path: str
    query: str
    in_batch: bool


Match = str | Callable[[Call], bool]


@dataclasses.dataclass
class _Fault:
    remaining: int
    status: int | None  # None: lose the response
    reason: str
    path_contains: str | None
    method: str | None
    match: Match | None = None

    def matches(self, call: Call) -> bool:
        if self.remaining <= 0:
            return False
        if self.path_contains is not None and self.path_contains not in call.path:
            return False
        if self.method is not None and self.method.upper() != call.method.upper():
            return False
        if isinstance(self.match, str):
            return self.match in call.path
        return self.match is None or bool(self.match(call))


@dataclasses.dataclass(frozen=True)
class SendUpdates:
    """One event write and the ``sendUpdates`` it asked for (None: not given, Google then emails nobody)."""

    method: str
    event_id: str
    value: str | None


@dataclasses.dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int  # 0 for a lost response
    batch: bool  # the HTTP request was a batch
    part: bool  # a part inside a batch (not an HTTP request of its own)


class _Lost(Exception):
    """Commit done; the connection is to be closed without an answer."""


class _Handler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # without it every response stalls ~40 ms

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class GoogleFake:
    """Google Calendar v3 + OAuth 2.0, in process, over real HTTP. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.latency = 0.0
        self.time_zone = "UTC"
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self._consented: set[tuple[str, str]] = set()
        self._granted: dict[tuple[str, str], set[str]] = {}
        self._consent = _Consent()
        self._calendars: dict[str, _Calendar] = {}
        self._seq = 0
        self._etag = 1_700_000_000_000_000
        self._last_write = datetime.now(UTC)
        self._epoch = 0
        self._sync_tokens: dict[str, _SyncToken] = {}
        self._pages: dict[str, _Page] = {}
        self._faults: list[_Fault] = []
        self._fault_rate = 0.0
        self._rng = random.Random(0)
        self._log: list[LoggedRequest] = []
        self._send_updates: list[SendUpdates] = []
        self.register_client(self.client_id, self.client_secret, ())

    # -- server ---------------------------------------------------------------------------------------
    def start(self) -> GoogleFake:
        server = make_server("127.0.0.1", 0, self._wsgi, threaded=True, request_handler=_Handler)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="google-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GoogleFake:
        return self if self._server is not None else self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the fake is not started"
        return int(self._server.server_address[1])

    @property
    def api_root(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def auth_uri(self) -> str:
        return f"{self.api_root}o/oauth2/auth"

    @property
    def token_uri(self) -> str:
        return f"{self.api_root}token"

    @property
    def revoke_uri(self) -> str:
        return f"{self.api_root}revoke"

    @property
    def userinfo_uri(self) -> str:
        return f"{self.api_root}oauth2/v3/userinfo"

    # -- test API: OAuth ------------------------------------------------------------------------------
    def register_client(self, client_id: str, client_secret: str, redirect_uris: Iterable[str]) -> None:
        with self._lock:
            self._clients[client_id] = _Client(client_id, client_secret, tuple(redirect_uris))

    def consent(
        self,
        account: str = DEFAULT_ACCOUNT,
        deny: bool = False,
        scopes: Iterable[str] | None = None,
        refresh_token: bool = True,
    ) -> None:
        """How the next consents go: which account, denied or not, granted scopes (None: as requested)."""
        with self._lock:
            self._consent = _Consent(
                account, deny, tuple(scopes) if scopes is not None else None, refresh_token
            )

    def issue_refresh_token(
        self,
        account: str = DEFAULT_ACCOUNT,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        client_id: str | None = None,
    ) -> str:
        """The refresh token a completed consent would leave (for the default client unless told)."""
        with self._lock:
            token = "1//" + secrets.token_urlsafe(40)
            self._refresh[token] = _Refresh(client_id or self.client_id, account, tuple(scopes))
            self._calendar(account)
            return token

    def issue_access_token(
        self,
        account: str = DEFAULT_ACCOUNT,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        lifetime_s: float = ACCESS_TOKEN_LIFETIME_S,
    ) -> str:
        with self._lock:
            return self._new_access(self.client_id, account, tuple(scopes), None, lifetime_s)

    def revoke_all(self) -> None:
        with self._lock:
            for grant in self._refresh.values():
                grant.revoked = True
            for access in self._access.values():
                access.revoked = True

    def expire_access_tokens(self) -> None:
        with self._lock:
            for access in self._access.values():
                access.expires_at = 0.0

    def refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            grant = self._refresh.get(token)
            return grant is not None and not grant.revoked

    # -- test API: faults, latency, log ---------------------------------------------------------------
    def fail_next(
        self,
        n: int,
        status: int,
        reason: str,
        path_contains: str | None = None,
        method: str | None = None,
        match: Match | None = None,
    ) -> None:
        """The next n matching requests (HTTP requests, or batch parts) fail with status/reason.

        Every filter given must hold; ``match`` is a path substring or a predicate on a ``Call``."""
        with self._lock:
            self._faults.append(_Fault(n, status, reason, path_contains, method, match))

    def lose_response_next(
        self,
        n: int,
        path_contains: str | None = None,
        method: str | None = None,
        match: Match | None = None,
    ) -> None:
        """The next n matching HTTP requests are carried out, then the connection closes unanswered.

        Batch parts are never lost on their own (a batch answer is all or nothing): to lose a batch,
        match its path ``/batch/``."""
        with self._lock:
            self._faults.append(_Fault(n, None, "lost", path_contains, method, match))

    def set_fault_rate(self, rate: float, seed: int = 0) -> None:
        """Random 429/500/503/lost responses on this share of Calendar HTTP requests (and 429/5xx on parts)."""
        with self._lock:
            self._fault_rate = rate
            self._rng = random.Random(seed)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._fault_rate = 0.0

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()
            self._send_updates.clear()

    def send_updates(self, event_id: str | None = None) -> list[SendUpdates]:
        """The ``sendUpdates`` of every API event write that succeeded (owner edits are not API calls)."""
        with self._lock:
            return [r for r in self._send_updates if event_id is None or r.event_id == event_id]

    def count(
        self, method: str | None = None, path_contains: str | None = None, batch: bool | None = None
    ) -> int:
        """HTTP requests seen (a batch is one, whatever it holds)."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if not r.part
                and (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
                and (batch is None or r.batch == batch)
            )

    def count_parts(self, method: str | None = None, path_contains: str | None = None) -> int:
        """Calls carried inside batch requests."""
        with self._lock:
            return sum(
                1
                for r in self._log
                if r.part
                and (method is None or r.method == method.upper())
                and (path_contains is None or path_contains in r.path)
            )

    # -- test API: the calendar owner -----------------------------------------------------------------
    def events(self, calendar: str = "primary", include_cancelled: bool = True) -> list[dict[str, Any]]:
        """Stored events (series unexpanded, exceptions included), as copies."""
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            return [
                self._public(e)
                for e in cal.events.values()
                if include_cancelled or e.get("status") != "cancelled"
            ]

    def event(self, event_id: str, calendar: str = "primary") -> dict[str, Any]:
        with self._lock:
            return self._public(self._get(self._calendar(self._owner(calendar)), event_id))

    def create_event(
        self,
        summary: str = "Event",
        start: datetime | date | Mapping[str, Any] | None = None,
        end: datetime | date | Mapping[str, Any] | None = None,
        *,
        calendar: str = "primary",
        event_id: str | None = None,
        time_zone: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Create an event as the calendar's owner would in the Calendar UI."""
        begin = start if start is not None else datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
        if end is None:
            if isinstance(begin, datetime):
                end = begin + timedelta(hours=1)
            elif isinstance(begin, date):
                end = begin + timedelta(days=1)
            else:
                raise ValueError("give end with a dict start")
        body = {"summary": summary, "start": _when(begin, time_zone), "end": _when(end, time_zone), **fields}
        if event_id is not None:
            body["id"] = event_id
        with self._lock:
            return self._public(self._insert(self._calendar(self._owner(calendar)), body))

    def edit_event(self, event_id: str, calendar: str = "primary", **changes: Any) -> dict[str, Any]:
        """Patch an event (or an instance) as the owner would; ``None`` values remove fields."""
        for name in ("start", "end"):
            if name in changes and not isinstance(changes[name], Mapping):
                changes[name] = _when(changes[name])
        with self._lock:
            return self._public(self._patch(self._calendar(self._owner(calendar)), event_id, changes))

    def cancel_event(self, event_id: str, calendar: str = "primary") -> None:
        """Delete an event as the owner would (soft: it stays, cancelled)."""
        with self._lock:
            self._delete(self._calendar(self._owner(calendar)), event_id)

    def add_recurring(
        self,
        summary: str,
        start: datetime | date,
        end: datetime | date,
        count: int,
        freq: str = "DAILY",
        *,
        calendar: str = "primary",
        time_zone: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """A recurring series (``RRULE:FREQ=...;COUNT=n``) created by the owner."""
        body = {
            "summary": summary,
            "start": _when(start, time_zone),
            "end": _when(end, time_zone),
            "recurrence": [f"RRULE:FREQ={freq.upper()};COUNT={count}"],
            **fields,
        }
        with self._lock:
            return self._public(self._insert(self._calendar(self._owner(calendar)), body))

    def instance_ids(self, series_id: str, calendar: str = "primary") -> list[str]:
        with self._lock:
            cal = self._calendar(self._owner(calendar))
            return [i["id"] for i in self._instances(cal, cal.events[series_id])]

    def cancel_instance(self, instance_id: str, calendar: str = "primary") -> None:
        """Cancel one occurrence of a series (an exception with status cancelled)."""
        self.cancel_event(instance_id, calendar)

    def invalidate_sync_tokens(self) -> None:
        """Every sync token issued so far now answers 410 fullSyncRequired."""
        with self._lock:
            self._epoch += 1
            self._pages.clear()

    # -- WSGI -----------------------------------------------------------------------------------------
    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "/"))
        query_string = str(environ.get("QUERY_STRING", ""))
        headers = {
            key[5:].replace("_", "-").lower(): str(value)
            for key, value in environ.items()
            if key.startswith("HTTP_")
        }
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = str(environ["CONTENT_TYPE"])
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        if self.latency:
            time.sleep(self.latency)
        is_batch = path == _BATCH_PATH
        try:
            status, out_headers, out_body = self._serve(method, path, query_string, headers, body, is_batch)
        except _Lost:
            self._record(LoggedRequest(method, path, query_string, 0, is_batch, False))
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("response lost on purpose") from None
        self._record(LoggedRequest(method, path, query_string, status, is_batch, False))
        phrase = HTTPStatus(status).phrase
        out_headers.setdefault("Content-Length", str(len(out_body)))
        start_response(f"{status} {phrase}", list(out_headers.items()))
        return [out_body]

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _take_fault(self, method: str, path: str, query: str, part: bool) -> _Fault | None:
        """A configured fault for this request, or a random one; None: serve normally."""
        call = Call(method, path, query, part)
        with self._lock:
            for fault in self._faults:
                if fault.matches(call) and not (part and fault.status is None):
                    fault.remaining -= 1
                    return dataclasses.replace(fault)
            api = path.startswith((_CALENDAR_API, _BATCH_PATH))
            if api and self._fault_rate and self._rng.random() < self._fault_rate:
                kinds: list[tuple[int | None, str]] = [
                    (429, "rateLimitExceeded"),
                    (500, "backendError"),
                    (503, "backendError"),
                ]
                if not part:
                    kinds.append((None, "lost"))
                status, reason = self._rng.choice(kinds)
                return _Fault(1, status, reason, None, None)
        return None

    def _fault_reply(self, fault: _Fault, path: str) -> Reply:
        assert fault.status is not None
        message = _MESSAGES.get(fault.reason, fault.reason)
        if path.startswith(("/token", "/revoke", "/o/oauth2")):
            return _oauth_error(fault.status, fault.reason, message)
        return _error_reply(fault.status, fault.reason, message)

    def _serve(
        self, method: str, path: str, query_string: str, headers: Headers, body: bytes, is_batch: bool
    ) -> Reply:
        fault = self._take_fault(method, path, query_string, part=False)
        if fault is not None and fault.status is not None:
            return self._fault_reply(fault, path)
        if is_batch:
            reply = (
                self._batch(method, headers, body) if method == "POST" else _error_reply(405, "invalid", "")
            )
        else:
            reply = self._route(method, path, query_string, headers, body)
        if fault is not None:  # lost: the work is done, the answer never arrives
            raise _Lost
        return reply

    def _route(self, method: str, path: str, query_string: str, headers: Headers, body: bytes) -> Reply:
        query = parse_qs(query_string, keep_blank_values=True)
        if path == "/o/oauth2/auth" and method == "GET":
            return self._authorize(query)
        if path == "/token" and method == "POST":
            return self._token(headers, body)
        if path == "/revoke" and method == "POST":
            return self._revoke(query, headers, body)
        if path == "/oauth2/v3/userinfo" and method == "GET":
            return self._userinfo(headers)
        if path.startswith(_CALENDAR_API):
            try:
                return self._calendar_api(method, path[len(_CALENDAR_API) :], query, headers, body)
            except ApiError as exc:
                return _error_reply(exc.status, exc.reason, exc.message)
        return _error_reply(404, "notFound", "Not Found")

    # -- batch ----------------------------------------------------------------------------------------
    def _batch(self, method: str, headers: Headers, body: bytes) -> Reply:
        content_type = headers.get("content-type", "")
        if not content_type.startswith("multipart/mixed"):
            return _error_reply(400, "invalid", "Batch requests must be multipart/mixed.")
        message = email.message_from_bytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body, policy=email.policy.compat32
        )
        parts = message.get_payload()
        if not isinstance(parts, list) or not parts:
            return _error_reply(400, "invalid", "Batch request contains no parts.")
        if len(parts) > MAX_BATCH_PARTS:
            return _error_reply(
                400, "invalid", f"A batch request may contain at most {MAX_BATCH_PARTS} calls."
            )
        boundary = "batch_" + secrets.token_hex(12)
        out: list[str] = []
        for part in parts:
            if not isinstance(part, email.message.Message):
                return _error_reply(400, "invalid", "Malformed batch part.")
            content_id = str(part.get("Content-ID", "")).strip()
            inner = (
                content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
            )
            payload = part.get_payload(decode=False)
            status, part_headers, part_body = self._batch_part(str(payload))
            lines = [
                f"--{boundary}",
                "Content-Type: application/http",
                f"Content-ID: <response-{inner}>",
                "",
                f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
                *(f"{k}: {v}" for k, v in part_headers.items()),
                f"Content-Length: {len(part_body)}",
                "",
                part_body.decode(),
            ]
            out.append("\r\n".join(lines) + "\r\n")
        out.append(f"--{boundary}--\r\n")
        return 200, {"Content-Type": f"multipart/mixed; boundary={boundary}"}, "".join(out).encode()

    def _batch_part(self, payload: str) -> Reply:
        normalized = payload.replace("\r\n", "\n")
        head, _, part_body = normalized.partition("\n\n")
        lines = head.split("\n")
        try:
            method, target, _version = lines[0].split(" ", 2)
        except ValueError:
            return _error_reply(400, "invalid", "Malformed batch part.")
        part_headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                part_headers[name.strip().lower()] = value.strip()
        split = urlsplit(target)
        path = unquote(split.path)
        method = method.upper()
        fault = self._take_fault(method, path, split.query, part=True)
        if fault is not None:
            reply = self._fault_reply(fault, path)
        else:
            reply = self._route(method, path, split.query, part_headers, part_body.rstrip("\n").encode())
        self._record(LoggedRequest(method, path, split.query, reply[0], False, True))
        return reply

    # -- OAuth ----------------------------------------------------------------------------------------
    def _new_access(
        self, client_id: str, account: str, scopes: tuple[str, ...], refresh: str | None, lifetime: float
    ) -> str:
        token = "ya29." + secrets.token_urlsafe(40)
        self._access[token] = _Access(client_id, account, scopes, time.time() + lifetime, refresh)
        return token

    def _bearer(self, headers: Headers) -> _Access | None:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        with self._lock:
            access = self._access.get(auth[7:].strip())
            if access is None or access.revoked or access.expires_at <= time.time():
                return None
            if access.refresh_token is not None and self._refresh[access.refresh_token].revoked:
                return None
            return access

    def _page(self, status: int, title: str) -> Reply:
        return status, {"Content-Type": "text/html; charset=utf-8"}, f"<h1>{title}</h1>".encode()

    def _authorize(self, query: Mapping[str, list[str]]) -> Reply:
        client_id = _first(query, "client_id") or ""
        redirect_uri = _first(query, "redirect_uri") or ""
        state = _first(query, "state")
        with self._lock:
            client = self._clients.get(client_id)
            if client is None:
                return self._page(401, "Error 401: invalid_client")
            if redirect_uri not in client.redirect_uris:
                return self._page(400, "Error 400: redirect_uri_mismatch")

            def back(**params: str) -> Reply:
                if state is not None:
                    params["state"] = state
                sep = "&" if urlsplit(redirect_uri).query else "?"
                return 302, {"Location": f"{redirect_uri}{sep}{urlencode(params)}"}, b""

            if _first(query, "response_type") != "code":
                return back(error="unsupported_response_type")
            requested = tuple((_first(query, "scope") or "").split())
            if not requested:
                return self._page(400, "Error 400: invalid_request (Missing required parameter: scope)")
            challenge = _first(query, "code_challenge")
            method = _first(query, "code_challenge_method")
            if challenge is not None and (method or "plain") != "S256":
                return self._page(400, "Error 400: invalid_request (code_challenge_method must be S256)")
            consent = self._consent
            if consent.deny:
                return back(error="access_denied")
            granted = list(consent.scopes if consent.scopes is not None else requested)
            pair = (consent.account, client_id)
            if _first(query, "include_granted_scopes") == "true":
                granted += [s for s in sorted(self._granted.get(pair, set())) if s not in granted]
            self._granted.setdefault(pair, set()).update(granted)
            first_time = pair not in self._consented
            self._consented.add(pair)
            refresh = (
                consent.refresh_token
                and _first(query, "access_type") == "offline"
                and (first_time or "consent" in (_first(query, "prompt") or "").split())
            )
            code = "4/" + secrets.token_urlsafe(32)
            self._codes[code] = _Code(
                client_id,
                redirect_uri,
                consent.account,
                tuple(granted),
                challenge,
                method,
                bool(refresh),
                time.time() + 600,
            )
            self._calendar(consent.account)
            return back(code=code, scope=" ".join(granted), authuser="0", prompt="consent")

    def _client_auth(self, headers: Headers, form: Mapping[str, list[str]]) -> _Client | Reply:
        client_id = _first(form, "client_id")
        secret = _first(form, "client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
            except ValueError:
                return _oauth_error(401, "invalid_client", "Unauthorized")
            basic_id, _, basic_secret = decoded.partition(":")
            client_id, secret = unquote(basic_id), unquote(basic_secret)
        if not client_id:
            return _oauth_error(400, "invalid_request", "Could not determine client ID from request.")
        client = self._clients.get(client_id)
        if client is None:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if secret != client.client_secret:
            return _oauth_error(401, "invalid_client", "Unauthorized")
        return client

    def _id_token(self, client_id: str, account: str, scopes: tuple[str, ...]) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com",
            "azp": client_id,
            "aud": client_id,
            "sub": str(int(hashlib.sha256(account.encode()).hexdigest(), 16))[:21],
            "iat": now,
            "exp": now + 3600,
        }
        if "email" in scopes or EMAIL_SCOPE in scopes:
            claims["email"] = account
            claims["email_verified"] = True
        header = {"alg": "RS256", "kid": "fake-google-key", "typ": "JWT"}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        return signing_input + "." + _b64url(hashlib.sha256(signing_input.encode()).digest())

    def _token_response(
        self, client_id: str, account: str, scopes: tuple[str, ...], refresh: str | None, new_refresh: bool
    ) -> Reply:
        body: dict[str, Any] = {
            "access_token": self._new_access(client_id, account, scopes, refresh, ACCESS_TOKEN_LIFETIME_S),
            "expires_in": ACCESS_TOKEN_LIFETIME_S,
            "scope": " ".join(scopes),
            "token_type": "Bearer",
        }
        if new_refresh and refresh:
            body["refresh_token"] = refresh
        if "openid" in scopes:
            body["id_token"] = self._id_token(client_id, account, scopes)
        return _json_reply(200, body, {"Cache-Control": "no-cache, no-store, max-age=0, must-revalidate"})

    def _token(self, headers: Headers, body: bytes) -> Reply:
        form = parse_qs(body.decode(), keep_blank_values=True)
        grant_type = _first(form, "grant_type")
        with self._lock:
            client = self._client_auth(headers, form)
            if not isinstance(client, _Client):
                return client
            if grant_type == "authorization_code":
                return self._exchange_code(client, form)
            if grant_type == "refresh_token":
                grant = self._refresh.get(_first(form, "refresh_token") or "")
                if grant is None or grant.revoked:
                    return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
                if grant.client_id != client.client_id:
                    return _oauth_error(401, "unauthorized_client", "Unauthorized")
                scopes = grant.scopes
                asked = tuple((_first(form, "scope") or "").split())
                if asked:
                    if not set(asked) <= set(grant.scopes):
                        return _oauth_error(400, "invalid_scope", "Bad Request")
                    scopes = asked
                token = _first(form, "refresh_token")
                return self._token_response(client.client_id, grant.account, scopes, token, False)
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _exchange_code(self, client: _Client, form: Mapping[str, list[str]]) -> Reply:
        code = self._codes.get(_first(form, "code") or "")
        if code is None or code.used or code.expires_at < time.time() or code.client_id != client.client_id:
            return _oauth_error(400, "invalid_grant", "Malformed auth code.")
        if _first(form, "redirect_uri") != code.redirect_uri:
            return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if code.challenge is not None:
            verifier = _first(form, "code_verifier")
            if not verifier:
                return _oauth_error(400, "invalid_grant", "Missing code verifier.")
            if _b64url(hashlib.sha256(verifier.encode()).digest()) != code.challenge:
                return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
        code.used = True
        refresh = None
        if code.refresh:
            refresh = "1//" + secrets.token_urlsafe(40)
            self._refresh[refresh] = _Refresh(client.client_id, code.account, code.scopes)
        return self._token_response(client.client_id, code.account, code.scopes, refresh, True)

    def _revoke(self, query: Mapping[str, list[str]], headers: Headers, body: bytes) -> Reply:
        form = parse_qs(body.decode(), keep_blank_values=True) if body else {}
        token = _first(form, "token") or _first(query, "token") or ""
        with self._lock:
            grant = self._refresh.get(token)
            access = self._access.get(token)
            if grant is not None and not grant.revoked:
                grant.revoked = True
                for item in self._access.values():
                    if item.refresh_token == token:
                        item.revoked = True
                return 200, {"Content-Type": "application/json; charset=utf-8"}, b"{}"
            if access is not None and not access.revoked and access.expires_at > time.time():
                access.revoked = True
                if access.refresh_token is not None:  # Google revokes the refresh token behind it too
                    self._refresh[access.refresh_token].revoked = True
                    for item in self._access.values():
                        if item.refresh_token == access.refresh_token:
                            item.revoked = True
                return 200, {"Content-Type": "application/json; charset=utf-8"}, b"{}"
        return _oauth_error(400, "invalid_token", "Token expired or revoked")

    def _userinfo(self, headers: Headers) -> Reply:
        access = self._bearer(headers)
        if access is None:
            return _error_reply(401, "authError", "Invalid Credentials")
        return _json_reply(
            200,
            {
                "sub": str(int(hashlib.sha256(access.account.encode()).hexdigest(), 16))[:21],
                "email": access.account,
                "email_verified": True,
            },
        )

    # -- Calendar API ---------------------------------------------------------------------------------
    def _owner(self, calendar_id: str, access: _Access | None = None) -> str:
        if calendar_id == "primary":
            return access.account if access else DEFAULT_ACCOUNT
        if access is not None and calendar_id != access.account:
            raise ApiError(404, "notFound", "Not Found")
        return calendar_id

    def _calendar(self, account: str) -> _Calendar:
        cal = self._calendars.get(account)
        if cal is None:
            cal = self._calendars[account] = _Calendar(account)
        return cal

    def _calendar_api(
        self, method: str, rest: str, query: Mapping[str, list[str]], headers: Headers, body: bytes
    ) -> Reply:
        access = self._bearer(headers)
        if access is None:
            raise ApiError(401, "authError", "Invalid Credentials")
        if CALENDAR_EVENTS_SCOPE not in access.scopes and CALENDAR_SCOPE not in access.scopes:
            raise ApiError(
                403,
                "insufficientPermissions",
                "Insufficient Permission: Request had insufficient authentication scopes.",
            )
        segments = [unquote(s) for s in rest.strip("/").split("/")]
        if len(segments) < 2 or segments[0] != "calendars":
            raise ApiError(404, "notFound", "Not Found")
        with self._lock:
            account = self._owner(segments[1], access)
            cal = self._calendar(account)
            if len(segments) == 2 and method == "GET":
                return _json_reply(
                    200,
                    {
                        "kind": "calendar#calendar",
                        "etag": f'"{self._etag}"',
                        "id": account,
                        "summary": account,
                        "timeZone": self.time_zone,
                        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]},
                    },
                )
            if len(segments) < 3 or segments[2] != "events":
                raise ApiError(404, "notFound", "Not Found")
            send_updates = _first(query, "sendUpdates")
            if method != "GET" and send_updates not in (None, *_SEND_UPDATES):
                raise ApiError(400, "invalid", f"Invalid value for: sendUpdates {send_updates}")
            if len(segments) == 3:
                if method == "GET":
                    return _json_reply(200, self._list(cal, query))
                if method == "POST":
                    event = self._insert(cal, self._json(body))
                    self._send_updates.append(SendUpdates(method, event["id"], send_updates))
                    return _json_reply(200, self._public(event))
            elif len(segments) == 4:
                event_id = segments[3]
                if method == "GET":
                    return _json_reply(200, self._public(self._get(cal, event_id)))
                if_match = headers.get("if-match")
                reply: Reply | None = None
                if method == "PATCH":
                    reply = _json_reply(
                        200, self._public(self._patch(cal, event_id, self._json(body), if_match))
                    )
                elif method == "PUT":
                    reply = _json_reply(
                        200, self._public(self._update(cal, event_id, self._json(body), if_match))
                    )
                elif method == "DELETE":
                    self._delete(cal, event_id, if_match)
                    reply = 204, {}, b""
                if reply is not None:
                    self._send_updates.append(SendUpdates(method, event_id, send_updates))
                    return reply
        raise ApiError(404, "notFound", "Not Found")

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            value = json.loads(body or b"{}")
        except ValueError as exc:
            raise ApiError(400, "parseError", "Parse Error") from exc
        if not isinstance(value, dict):
            raise ApiError(400, "parseError", "Parse Error")
        return value

    def _public(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(event))

    # state changes (callers hold the lock)
    def _stamp(self, cal: _Calendar, event: dict[str, Any], created: bool = False) -> None:
        now = datetime.now(UTC)
        if now <= self._last_write:
            now = self._last_write + timedelta(milliseconds=1)
        self._last_write = now
        self._etag += 1
        self._seq += 1
        event["etag"] = f'"{self._etag}"'
        event["updated"] = _rfc3339_ms(now)
        if created:
            event["created"] = event["updated"]
            event["sequence"] = 0
        else:
            event["sequence"] = int(event.get("sequence", 0)) + 1
        cal.events[event["id"]] = event
        cal.changed[event["id"]] = self._seq

    def _normalize(self, cal: _Calendar, event: dict[str, Any]) -> None:
        """Validate times and render them as Google does (in the event's zone, else the calendar's)."""
        if "start" not in event or not isinstance(event["start"], Mapping):
            raise ApiError(400, "required", "Missing start time.")
        if "end" not in event or not isinstance(event["end"], Mapping):
            raise ApiError(400, "required", "Missing end time.")
        start, end = event["start"], event["end"]
        if bool(start.get("date")) != bool(end.get("date")):
            raise ApiError(
                400, "invalid", "Start and end times must either both be date or both be dateTime."
            )
        begin, finish = _instant(start), _instant(end)
        if finish < begin or (start.get("date") and finish == begin):
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.")
        for name, moment in (("start", begin), ("end", finish)):
            when = dict(event[name])
            if when.get("dateTime"):
                when["dateTime"] = _render(moment, when.get("timeZone") or self.time_zone)
                when.pop("date", None)
            event[name] = when
        if event.get("recurrence"):
            _parse_rrule(event["recurrence"])
        status = event.get("status", "confirmed")
        if status not in ("confirmed", "tentative", "cancelled"):
            raise ApiError(400, "invalid", f"Invalid value for: status {status}")
        event["status"] = status

    def _base(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        return {
            "kind": "calendar#event",
            "id": event_id,
            "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            "creator": {"email": cal.account, "self": True},
            "organizer": {"email": cal.account, "self": True},
            "iCalUID": f"{event_id}@google.com",
            "reminders": {"useDefault": True},
            "eventType": "default",
        }

    def _insert(self, cal: _Calendar, body: Mapping[str, Any]) -> dict[str, Any]:
        event_id = body.get("id")
        if event_id is None:
            event_id = _random_id()
        elif not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            raise ApiError(400, "invalid", "Invalid resource id value.")
        if event_id in cal.events:
            raise ApiError(409, "duplicate", _MESSAGES["duplicate"])
        event = self._base(cal, event_id)
        event.update({k: copy.deepcopy(v) for k, v in body.items() if k not in _READ_ONLY and v is not None})
        event["id"] = event_id
        event.pop("recurringEventId", None)
        event.pop("originalStartTime", None)
        self._normalize(cal, event)
        self._stamp(cal, event, created=True)
        return event

    def _series_of(self, cal: _Calendar, event_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """(series, virtual instance) for an instance id that has no exception yet."""
        series_id, sep, _suffix = event_id.partition("_")
        series = cal.events.get(series_id)
        if not sep or series is None or not series.get("recurrence"):
            return None
        for instance in self._instances(cal, series, virtual_only=True):
            if instance["id"] == event_id:
                return series, instance
        return None

    def _get(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        event = cal.events.get(event_id)
        if event is not None:
            return event
        found = self._series_of(cal, event_id)
        if found is None:
            raise ApiError(404, "notFound", "Not Found")
        return found[1]

    def _materialize(self, cal: _Calendar, event_id: str) -> dict[str, Any]:
        """The stored event to change; an instance becomes an exception of its own."""
        event = cal.events.get(event_id)
        if event is not None:
            return copy.deepcopy(event)
        found = self._series_of(cal, event_id)
        if found is None:
            raise ApiError(404, "notFound", "Not Found")
        return copy.deepcopy(found[1])

    @staticmethod
    def _check_etag(event: Mapping[str, Any], if_match: str | None) -> None:
        if if_match is not None and if_match.strip() not in ("*", event.get("etag")):
            raise ApiError(412, "conditionNotMet", _MESSAGES["conditionNotMet"])

    def _patch(
        self, cal: _Calendar, event_id: str, body: Mapping[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        event = self._materialize(cal, event_id)
        self._check_etag(event, if_match)
        changes = {k: v for k, v in body.items() if k not in (*_READ_ONLY, "id", "recurringEventId")}
        _merge(event, changes)
        self._normalize(cal, event)
        self._stamp(cal, event)
        return event

    def _update(
        self, cal: _Calendar, event_id: str, body: Mapping[str, Any], if_match: str | None = None
    ) -> dict[str, Any]:
        old = self._materialize(cal, event_id)
        self._check_etag(old, if_match)
        event = self._base(cal, event_id)
        for keep in ("created", "sequence", "etag", "iCalUID", "recurringEventId", "originalStartTime"):
            if keep in old:
                event[keep] = old[keep]
        event.update(
            {
                k: copy.deepcopy(v)
                for k, v in body.items()
                if k not in (*_READ_ONLY, "id", "recurringEventId", "originalStartTime") and v is not None
            }
        )
        self._normalize(cal, event)
        self._stamp(cal, event)
        return event

    def _delete(self, cal: _Calendar, event_id: str, if_match: str | None = None) -> None:
        event = self._materialize(cal, event_id)
        if event.get("status") == "cancelled":
            raise ApiError(410, "deleted", _MESSAGES["deleted"])
        self._check_etag(event, if_match)
        event["status"] = "cancelled"
        self._stamp(cal, event)

    # expansion
    def _instances(
        self, cal: _Calendar, series: Mapping[str, Any], virtual_only: bool = False
    ) -> list[dict[str, Any]]:
        rule = _parse_rrule(series.get("recurrence") or [])
        first = _instant(series["start"])
        out: list[dict[str, Any]] = []
        limit = rule.count if rule.count is not None else MAX_INSTANCES
        for index in range(min(limit, MAX_INSTANCES)):
            start = _shift(series["start"], rule.step * index)
            if rule.until is not None and _instant(start) > rule.until:
                break
            if index and _instant(start) <= first:
                break
            instance_id = f"{series['id']}_{_instance_suffix(start)}"
            exception = cal.events.get(instance_id)
            if exception is not None:
                if not virtual_only:
                    out.append(exception)
                continue
            instance = {k: copy.deepcopy(v) for k, v in series.items() if k != "recurrence"}
            instance.update(
                id=instance_id,
                start=start,
                end=_shift(series["end"], rule.step * index),
                recurringEventId=series["id"],
                originalStartTime=dict(start),
            )
            out.append(instance)
        return out

    # listing
    def _list(self, cal: _Calendar, query: Mapping[str, list[str]]) -> dict[str, Any]:
        page_token = _first(query, "pageToken")
        if page_token:
            page = self._pages.get(page_token)
            if page is None or page.account != cal.account:
                raise ApiError(400, "invalid", "Invalid page token value.")
            return self._page_out(cal, page)
        max_raw = _first(query, "maxResults")
        try:
            max_results = int(max_raw) if max_raw else MAX_RESULTS_DEFAULT
        except ValueError as exc:
            raise ApiError(
                400,
                "invalid",
                f"Invalid value '{max_raw}'. Values must match the following regular expression: '[0-9]+'",
            ) from exc
        if max_results < 1:
            raise ApiError(400, "invalid", f"Invalid value '{max_results}'. Values must be at least 1.")
        max_results = min(max_results, MAX_RESULTS_LIMIT)
        single = _flag(query, "singleEvents")
        show_deleted = _flag(query, "showDeleted")
        sync = _first(query, "syncToken")
        if sync:
            for name in _SYNC_FORBIDDEN:
                if name in query:
                    raise ApiError(
                        400, "invalid", f"The '{name}' parameter cannot be used with a sync token."
                    )
            token = self._sync_tokens.get(sync)
            if token is None or token.epoch != self._epoch or token.account != cal.account:
                raise ApiError(410, "fullSyncRequired", _MESSAGES["fullSyncRequired"])
            if token.single_events != single:
                raise ApiError(
                    400, "invalid", "singleEvents must be the same as in the initial synchronization."
                )
            items = self._changed_since(cal, token.seq, single)
        else:
            items = self._full(cal, query, single, show_deleted)
        next_sync = "sync_" + secrets.token_urlsafe(24)
        self._sync_tokens[next_sync] = _SyncToken(cal.account, self._seq, self._epoch, single, show_deleted)
        page = _Page(cal.account, [copy.deepcopy(i) for i in items], max_results, next_sync)
        return self._page_out(cal, page)

    def _page_out(self, cal: _Calendar, page: _Page) -> dict[str, Any]:
        head, rest = page.items[: page.max_results], page.items[page.max_results :]
        out: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"p{self._etag}"',
            "summary": cal.account,
            "description": "",
            "updated": _rfc3339_ms(self._last_write),
            "timeZone": self.time_zone,
            "accessRole": "owner",
            "defaultReminders": [{"method": "popup", "minutes": 10}],
            "items": head,
        }
        if rest:
            token = "page_" + secrets.token_urlsafe(24)
            self._pages[token] = dataclasses.replace(page, items=rest)
            out["nextPageToken"] = token
        else:
            out["nextSyncToken"] = page.sync_token
        return out

    def _all(self, cal: _Calendar, single: bool) -> list[dict[str, Any]]:
        """Events as a listing sees them: instances instead of series when single."""
        out: list[dict[str, Any]] = []
        for event in sorted(cal.events.values(), key=lambda e: cal.changed[e["id"]]):
            if event.get("recurringEventId") and single:
                continue  # exceptions come out of their series' expansion
            if event.get("recurrence") and single:
                series_gone = event.get("status") == "cancelled"
                for instance in self._instances(cal, event):
                    out.append({**instance, "status": "cancelled"} if series_gone else instance)
            else:
                out.append(event)
        return out

    def _changed_since(self, cal: _Calendar, seq: int, single: bool) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self._all(cal, single):
            series_id = event.get("recurringEventId")
            ids = [event["id"]] + ([series_id] if single and series_id else [])
            if any(cal.changed.get(i, 0) > seq for i in ids):
                out.append(event)
        return out

    def _full(
        self, cal: _Calendar, query: Mapping[str, list[str]], single: bool, show_deleted: bool
    ) -> list[dict[str, Any]]:
        time_min = _first(query, "timeMin")
        time_max = _first(query, "timeMax")
        updated_min = _first(query, "updatedMin")
        low = _parse_datetime(time_min) if time_min else None
        high = _parse_datetime(time_max) if time_max else None
        since = _parse_datetime(updated_min) if updated_min else None
        text = (_first(query, "q") or "").lower()
        ical = _first(query, "iCalUID")
        private = [p.partition("=") for p in query.get("privateExtendedProperty", [])]
        order = _first(query, "orderBy")
        if order == "startTime" and not single:
            raise ApiError(
                400, "invalid", "The requested ordering is not available for the particular query."
            )
        live_series = {
            e["id"] for e in cal.events.values() if e.get("recurrence") and e.get("status") != "cancelled"
        }
        out = []
        for event in self._all(cal, single):
            # Cancelled exceptions of a live series stay visible when neither flag is set.
            if (
                event.get("status") == "cancelled"
                and not show_deleted
                and (single or event.get("recurringEventId") not in live_series)
            ):
                continue
            if low is not None or high is not None:
                start, end = self._span(cal, event)
                if low is not None and end <= low:
                    continue
                if high is not None and start >= high:
                    continue
            if since is not None and _parse_datetime(event["updated"]) < since:
                continue
            if text and not any(
                text in str(event.get(f, "")).lower() for f in ("summary", "description", "location")
            ):
                continue
            if ical and event.get("iCalUID") != ical:
                continue
            props = (event.get("extendedProperties") or {}).get("private") or {}
            if any(props.get(k) != v for k, _, v in private):
                continue
            out.append(event)
        if order == "startTime":
            out.sort(key=lambda e: _instant(e["start"]))
        elif order == "updated":
            out.sort(key=lambda e: e["updated"])
        return out

    def _span(self, cal: _Calendar, event: Mapping[str, Any]) -> tuple[datetime, datetime]:
        if event.get("status") == "cancelled" and "start" not in event:
            return datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
        start, end = _instant(event["start"]), _instant(event["end"])
        if event.get("recurrence"):
            instances = self._instances(cal, event)
            if instances:
                end = max(_instant(i["end"]) for i in instances)
        return start, end


@pytest.fixture
def google_fake() -> Iterator[GoogleFake]:
    """A fresh Google fake (Calendar + OAuth) on its own port for this test."""
    with GoogleFake() as fake:
        yield fake
