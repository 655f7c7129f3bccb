"""A faithful fake of Google Calendar API v3 and Google's OAuth 2.0 endpoints (pytest plugin).

Served for real over HTTP on 127.0.0.1 (werkzeug, threaded), so the production client libraries
(google-api-python-client, google-auth, google-auth-oauthlib, requests) talk to it unchanged. Every test gets
a fresh server (``google_fake`` fixture, function scope; starting one takes a few milliseconds).

Endpoints (``api_root`` is ``http://127.0.0.1:PORT/``):

- Calendar v3: ``{api_root}calendar/v3/calendars/{calendarId}`` (GET) and ``.../events`` (list, insert),
  ``.../events/{eventId}`` (get, patch, update, delete), ``.../events/watch`` (POST),
  ``{api_root}calendar/v3/channels/stop`` (POST), ``{api_root}calendar/v3/users/me/calendarList`` (GET),
  batch ``POST {api_root}batch/calendar/v3``.
- OAuth: ``auth_uri`` (GET, auto-consents with a 302 back to the redirect URI), ``token_uri`` (POST,
  authorization_code with PKCE S256 and refresh_token grants), ``revoke_uri`` (POST), and
  ``GET {api_root}oauth2/v3/userinfo``.

What it holds to: client ids ``[a-v0-9]{5,1024}``; an existing id, even of a
cancelled event, is ``409 duplicate``; delete is soft (``status: cancelled``), twice is ``410 deleted``; a
patch with ``status: confirmed`` restores; ``extendedProperties.private`` merges key by key with ``null``
removing a key; ``If-Match`` mismatch is ``412 conditionNotMet``; every write bumps ``etag``, ``updated`` and
``sequence``; list pages with ``nextSyncToken`` on the last page only; incremental sync returns cancelled
events and refuses ``timeMin`` & co with ``400``; ``invalidate_sync_tokens()`` turns old tokens into
``410 fullSyncRequired``; recurring series expand into instances ``{seriesId}_{YYYYMMDDTHHMMSSZ}`` with
``singleEvents=true`` (DAILY, WEEKLY, YEARLY). Errors always have Google's shape
``{"error": {"errors": [{"domain", "reason", "message"}], "code", "message"}}``. Unknown query parameters
(``alt=json`` ...) are ignored.

What real calendars hold (``copies``): every event has an ``eventType`` (``EVENT_TYPES``; fixed once created,
``fromGmail`` cannot be created through the API: 400 invalid); ``events.list`` filters by repeatable
``eventTypes`` (unset: all; unknown values match nothing), and a sync token answers ``400 invalid`` when the
incremental call's ``eventTypes`` differ from its full sync's (Google calls that undefined behaviour: the fake
is stricter, so a client that changes the filter without a full sync is caught; likewise ``singleEvents``).
The owner's events have ``organizer``/``creator`` ``{"email": owner, "self": true}``; an attendee's copy of
another organizer's meeting has ``organizer: {"email": other}`` and the owner in ``attendees`` with ``self``
and a ``responseStatus``. An API write (PATCH/PUT) by the owner to another organizer's event that changes a
shared field answers ``403 forbiddenForNonOrganizer`` ("Shared properties can only be changed by the organizer
of the event.") unless ``guestsCanModify``; private extended properties, the owner's own ``responseStatus``,
``colorId``, ``reminders`` and ``transparency`` belong to the copy and may change. With ``guestsCanModify`` the
write goes through and is recorded in ``foreign_writes()``; so is an attendee's DELETE, which Google allows
(the copy turns cancelled, the owner's answer declined). fromGmail events are organized by Google's "Unknown
Organizer", so the same rule guards them (Google documents no error: a choice). Birthday events answer ``400
invalid`` to any change but private properties, ``colorId`` and ``reminders`` (Google documents restrictions
but no error: a choice). Listings without ``showDeleted`` (incremental syncs included) carry cancelled events in
Google's minimal shape: ``kind``, ``etag``, ``id``, ``status`` (+ ``recurringEventId``, ``originalStartTime``
for occurrences); Google guarantees only ``id`` for deleted events, so the fake sends no ``updated`` either.
``get`` and ``showDeleted=true`` keep the details. ``start``/``end`` keep the ``timeZone`` written (none when
none was given; the ``dateTime`` is rendered in that zone, else the calendar's). ``source`` (``title``, ``url``
http(s) only, else 400) is shown only on copies whose creator is the owner. ``description`` may hold HTML, up
to ``MAX_DESCRIPTION`` = 8192 characters (Google documents no limit: a choice), longer is 400 invalid.
``tests.fakes.google.corpus.seed_corpus(fake)`` seeds one event of each real kind and returns their ids.

Several accounts: each account (a consent, ``issue_refresh_token(account=...)``) has its own tokens and its
own calendars: ``primary`` is the token's account's own (id = its email, made on first use), secondary ones
come from ``add_calendar(account, calendar_id, summary, time_zone)`` (events there are organized by the
calendar: ``organizer`` ``{"email": calendar_id, "displayName": summary, "self": true}``). A token used on a
calendar of another account answers ``404 notFound``, as Google does for calendars the caller cannot see;
``GET {api_root}calendar/v3/users/me/calendarList`` lists the token's account's calendars. The test API's
``calendar=`` takes a calendar id; ``"primary"`` there is ``DEFAULT_ACCOUNT``'s, so one-account tests are
unchanged.

Push (``push``): ``POST .../calendars/{id}/events/watch`` (body ``{id, type: "web_hook", address, token,
params: {ttl}}``, optional ``eventTypes``) answers ``{kind: "api#channel", id, resourceId, resourceUri, token,
expiration}`` (ms since the epoch; ttl default ``DEFAULT_TTL_S`` = 7 days; the fake enforces no maximum). A
channel id over 64 characters or a token over 256 is 400 invalid, a reused id ``400 channelIdNotUnique``, an
address that is not https ``400 push.webhookUrlNotHttps`` unless ``allow_http_push`` is set and the host is
127.0.0.1/localhost. ``POST {api_root}calendar/v3/channels/stop`` (``{id, resourceId}``) answers 204, 404
``notFound`` for a channel it does not know (or already stopped). Messages are POSTed without a body on a
background thread (API calls never wait): ``sync`` on watch, then ``exists`` after every change of the
calendar's events (of the channel's eventTypes), with ``X-Goog-Channel-ID``, ``X-Goog-Channel-Token`` (when
given), ``X-Goog-Channel-Expiration`` (RFC 1123), ``X-Goog-Resource-ID``, ``X-Goog-Resource-URI``,
``X-Goog-Resource-State``, ``X-Goog-Message-Number``. A message answered 500, 502, 503 or 504 is sent again
(same number) with exponential backoff, as Google does (``RETRIES`` times, from ``RETRY_BASE_S``: tenths of a
second here); any other answer ends it. Stopped or expired channels get nothing. Test API:
``channels()``, ``notifications()`` (``Notification(channel_id, state, number, status)``; status -1 dropped,
0 unreachable), ``wait_for_notifications(count, timeout)``, ``drop_notifications(n)``,
``duplicate_notifications(n)``, ``expire_channels(channel_id=None)``.

Test API (``GoogleFake``): ``api_root``/``auth_uri``/``token_uri``/``revoke_uri``/``userinfo_uri``;
``client_id``/``client_secret`` of a pre-registered client; ``register_client``, ``consent(account, deny,
scopes, refresh_token)``; ``issue_refresh_token``, ``issue_access_token``, ``refresh_token_valid``,
``revoke_all(account=None)``, ``expire_access_tokens(account=None)``; ``add_calendar``,
``calendars(account)``; as the calendar shows it ``create_event(summary, start, end, *, calendar,
event_id, time_zone, event_type, organizer, attendees, response_status, guests_can_modify, private_copy,
**fields)``, ``add_invitation(organizer, summary, start, end, *, response_status, guests_can_modify, ...)``,
``set_response(event_id, status)``, ``remove_attendee_self(event_id)``, ``foreign_writes(event_id)``;
``edit_event`` (as Google applies a change: the organizer's, for another organizer's meeting; no write rule),
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
userinfo), ``calendar`` (calendars, events store, list/insert/patch/update/delete, sync tokens), ``copies``
(event types, organizers and attendees, the write rules, the minimal cancelled shape), ``push`` (channels
and webhook delivery), ``batch``
(multipart wire format), ``recurrence`` (RRULE expansion), ``times`` (start/end rendering) and ``errors``
(Google-shaped error replies). Import everything from ``tests.fakes.google``; the submodules are not an API.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from .batch import MAX_BATCH_PARTS, BatchMixin
from .calendar import MAX_RESULTS_DEFAULT, MAX_RESULTS_LIMIT, CalendarMixin, SendUpdates
from .copies import EVENT_TYPES, MAX_DESCRIPTION, RESPONSES, ForeignWrite
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
from .push import (
    DEFAULT_TTL_S,
    MAX_CHANNEL_ID,
    MAX_CHANNEL_TOKEN,
    RETRIED_STATUSES,
    RETRIES,
    RETRY_BASE_S,
    Notification,
    PushMixin,
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
    "DEFAULT_TTL_S",
    "EMAIL_SCOPE",
    "EVENT_TYPES",
    "MAX_BATCH_PARTS",
    "MAX_CHANNEL_ID",
    "MAX_CHANNEL_TOKEN",
    "MAX_DESCRIPTION",
    "MAX_INSTANCES",
    "MAX_RESULTS_DEFAULT",
    "MAX_RESULTS_LIMIT",
    "RESPONSES",
    "RETRIED_STATUSES",
    "RETRIES",
    "RETRY_BASE_S",
    "ApiError",
    "Call",
    "ForeignWrite",
    "GoogleFake",
    "Headers",
    "LoggedRequest",
    "Match",
    "Notification",
    "Reply",
    "SendUpdates",
    "google_fake",
]


class GoogleFake(ServerMixin, OAuthMixin, CalendarMixin, PushMixin, BatchMixin):
    """Google Calendar v3 + OAuth 2.0, in process, over real HTTP. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._init_server()
        self._init_push()
        self._init_calendar()
        self._init_oauth()
        self.register_client(self.client_id, self.client_secret, ())

    def stop(self) -> None:
        super().stop()
        self._stop_push()


@pytest.fixture
def google_fake() -> Iterator[GoogleFake]:
    """A fresh Google fake (Calendar + OAuth) on its own port for this test."""
    with GoogleFake() as fake:
        yield fake
