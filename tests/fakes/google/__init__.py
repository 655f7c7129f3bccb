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

Layout: one module per concern, joined in ``GoogleFake`` as mixins that share one lock: ``server`` (HTTP
plumbing, routing, request log, faults, latency), ``oauth`` (clients, consent, codes, tokens, revoke,
userinfo), ``calendar`` (calendars, events store, list/insert/patch/update/delete, sync tokens), ``batch``
(multipart wire format), ``recurrence`` (RRULE expansion), ``times`` (start/end rendering) and ``errors``
(Google-shaped error replies). Import everything from ``tests.fakes.google``; the submodules are not an API.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from .batch import MAX_BATCH_PARTS, BatchMixin
from .calendar import MAX_RESULTS_DEFAULT, MAX_RESULTS_LIMIT, CalendarMixin, SendUpdates
from .errors import ApiError, Headers, Reply
from .oauth import (
    ACCESS_TOKEN_LIFETIME_S,
    CALENDAR_EVENTS_SCOPE,
    CALENDAR_SCOPE,
    DEFAULT_ACCOUNT,
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_SCOPES,
    EMAIL_SCOPE,
    OAuthMixin,
)
from .recurrence import MAX_INSTANCES
from .server import Call, LoggedRequest, Match, ServerMixin

__all__ = [
    "ACCESS_TOKEN_LIFETIME_S",
    "CALENDAR_EVENTS_SCOPE",
    "CALENDAR_SCOPE",
    "DEFAULT_ACCOUNT",
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_SCOPES",
    "EMAIL_SCOPE",
    "MAX_BATCH_PARTS",
    "MAX_INSTANCES",
    "MAX_RESULTS_DEFAULT",
    "MAX_RESULTS_LIMIT",
    "ApiError",
    "Call",
    "GoogleFake",
    "Headers",
    "LoggedRequest",
    "Match",
    "Reply",
    "SendUpdates",
    "google_fake",
]


class GoogleFake(ServerMixin, OAuthMixin, CalendarMixin, BatchMixin):
    """Google Calendar v3 + OAuth 2.0, in process, over real HTTP. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._init_server()
        self._init_calendar()
        self._init_oauth()
        self.register_client(self.client_id, self.client_secret, ())


@pytest.fixture
def google_fake() -> Iterator[GoogleFake]:
    """A fresh Google fake (Calendar + OAuth) on its own port for this test."""
    with GoogleFake() as fake:
        yield fake
