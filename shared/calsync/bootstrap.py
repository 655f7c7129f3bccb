"""The composition root: the one place that reads settings, chooses adapters and hands them to the sync.

``App`` builds each client once per process, lazily, on first use: never at import time of a main.py, never
per request. Cloud SDK modules are imported only by the adapter that needs them, so the embedded
(SQLite/file) setup never pays for them. ``App.context(connection)`` gives that connection's
:class:`~calsync.sync.ports.SyncContext`: what push, pull and the cycle receive, and all they see.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calsync import logs
from calsync.settings import Settings, load_settings
from calsync.state.store import DEFAULT_CONNECTION, SyncStore, TokenStore, utcnow
from calsync.sync.connections import ConnectionSpec, Roster
from calsync.sync.ports import SyncConfig, SyncContext
from calsync.web.http import MissingSettings

if TYPE_CHECKING:
    from calsync.directus.client import DirectusClient
    from calsync.fanout import SyncRequests
    from calsync.google.calendar import GoogleCalendar
    from calsync.sync.cycle import CycleResult
    from calsync.sync.fleet import Fleet
    from calsync.sync.tick import TickResult

log = logging.getLogger(__name__)

CALENDAR_SCOPES = ("https://www.googleapis.com/auth/calendar.events",)
RERUNS = 5  # how many more cycles one sync request runs for requests that came while it ran
ROSTER_TTL = 30.0  # seconds a process reuses the connections it read from Directus (a tick always re-reads)


class UnknownConnection(LookupError):
    """No connection with this id exists (in Directus's connections collection)."""


def url_path(url: str, scheme: str) -> Path:
    """``sqlite:///rel/path`` -> ``rel/path``; ``sqlite:////abs/path`` -> ``/abs/path``."""
    return Path(url[len(scheme) + len(":///") :])


def build_store(settings: Settings) -> SyncStore:
    if settings.store.startswith("sqlite:///"):
        from calsync.state.sqlite import SqliteSyncStore

        return SqliteSyncStore(url_path(settings.store, "sqlite"))
    from google.cloud import firestore

    from calsync.state.firestore import FirestoreSyncStore

    database = settings.store[len("firestore://") :] if settings.store.startswith("firestore://") else None
    client = firestore.Client(project=settings.google_cloud_project, database=database or "(default)")
    return FirestoreSyncStore(client)


def build_token_store(settings: Settings) -> TokenStore:
    if settings.token_store.startswith("file:///"):
        from calsync.state.tokens_file import FileTokenStore

        return FileTokenStore(url_path(settings.token_store, "file"))
    from calsync.state.tokens_secretmanager import SecretManagerTokenStore

    secret = settings.token_store[len("secretmanager://") :]
    return SecretManagerTokenStore(secret, endpoint=settings.secret_manager_endpoint)


class App:
    """Settings plus the adapters built from them, shared by every request of this process."""

    def __init__(
        self,
        settings: Settings,
        connection: str = DEFAULT_CONNECTION,
        sleep: Callable[[float], None] = time.sleep,
        store: SyncStore | None = None,
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.sleep = sleep  # backoff between retries (tests make it instant)
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {} if store is None else {"store": store}
        for secret in (
            settings.webhook_secret,
            settings.connect_key,
            settings.google_client_secret,
            settings.directus_token,
        ):
            logs.register_secret(secret.get_secret_value() if secret else None)

    def _once(self, name: str, build: Any) -> Any:
        with self._lock:
            if name not in self._built:
                self._built[name] = build()
            return self._built[name]

    def require(self, *names: str) -> None:
        """503 naming every listed setting that is missing."""
        missing = self.settings.missing(*names)
        if missing:
            raise MissingSettings(missing)

    @property
    def store(self) -> SyncStore:
        store: SyncStore = self._once("store", lambda: build_store(self.settings))
        return store

    @property
    def tokens(self) -> TokenStore:
        tokens: TokenStore = self._once("tokens", lambda: build_token_store(self.settings))
        return tokens

    @property
    def directus(self) -> DirectusClient:
        self.require("directus_url", "directus_token")

        def build() -> DirectusClient:
            from calsync.directus.client import DirectusClient

            assert self.settings.directus_url is not None and self.settings.directus_token is not None
            return DirectusClient(
                str(self.settings.directus_url).rstrip("/"),
                self.settings.directus_token.get_secret_value(),
                self.settings.directus_collection,
                sleep=self.sleep,
            )

        client: DirectusClient = self._once("directus", build)
        return client

    def roster(self, fresh: bool = False) -> Roster:
        """Every connection and the routing of bookings to them, read from Directus at most every
        ``ROSTER_TTL`` seconds (``fresh``: now). Without Directus settings, or without the connections
        collection (an installation from before it), the one implicit ``default`` connection."""
        route_field = self.settings.route_field
        if self.settings.missing("directus_url", "directus_token"):
            return Roster.implicit(self.settings.google_calendar_id, route_field)
        with self._lock:
            cached = self._built.get("roster")
            if cached is not None and not fresh and time.monotonic() - cached[0] < ROSTER_TTL:
                roster: Roster = cached[1]
                return roster
        items = self.directus.list_connections()
        if items is None:
            roster = Roster.implicit(self.settings.google_calendar_id, route_field)
        else:
            roster = Roster.from_items(items, route_field)
            for problem in roster.problems:
                log.warning("connection ignored", extra=logs.fields(reason=problem))
        with self._lock:
            self._built["roster"] = (time.monotonic(), roster)
        return roster

    def spec(self, connection: str | None = None) -> ConnectionSpec:
        """The connection's definition. Raises UnknownConnection."""
        name = connection or self.connection
        spec = self.roster().get(name)
        if spec is None:
            spec = self.roster(fresh=True).get(name)  # added since the last read?
        if spec is None:
            raise UnknownConnection(f"no connection {name!r}")
        return spec

    def config(self, spec: ConnectionSpec | None = None) -> SyncConfig:
        """The settings a connection's sync reads."""
        settings = self.settings
        return SyncConfig(
            collection=settings.directus_collection,
            calendar_id=spec.calendar_id if spec is not None else settings.google_calendar_id,
            timezone=settings.timezone,
            link_base=settings.directus_link_base,
            send_updates=settings.send_updates,
            import_window_days=settings.import_window_days,
            max_cancel_share=settings.max_cancel_share,
            max_delete_share=settings.max_delete_share,
            on_google_delete=settings.on_google_delete,
            event_types=settings.event_types,
            import_invitations=settings.import_invitations,
            description_footer=settings.description_footer == "link",
            route_field=settings.route_field,
            route_value=spec.staff if spec is not None else None,
            notification_url=str(settings.notification_url) if settings.notification_url else None,
        )

    def context(self, connection: str | None = None) -> SyncContext:
        """The collaborators of one connection's sync, built once per definition of the connection.
        Raises UnknownConnection."""
        self.require("directus_url", "directus_token")
        spec = self.spec(connection)

        def build() -> SyncContext:
            return SyncContext(
                connection=spec.id,
                config=self.config(spec),
                store=self.store,
                directus=self.directus,
                calendar=lambda: self.calendar(spec.id),
                publish_status=lambda: self.publish_status(spec.id),
                booking_fields=self.booking_fields,
                sync_user_id=self.sync_user_id,
            )

        context: SyncContext = self._once(f"context/{spec!r}", build)
        return context

    def calendar(self, connection: str | None = None) -> GoogleCalendar | None:
        """The connection's Calendar client, with the refresh token of the connection holding its consent
        (itself, or ``account_from``); None when no account is connected there.

        Rebuilt only when the refresh token or the calendar changes, so access tokens are reused."""
        self.require("google_client_id", "google_client_secret")
        spec = self.spec(connection)
        if spec.account_from is not None and self.store.get_status(spec.id).state == "disconnected":
            return None  # stopped on its own; the account it uses stays connected for the others
        refresh_token = self.tokens.get(spec.token_owner)
        if refresh_token is None:
            return None
        logs.register_secret(refresh_token)
        with self._lock:
            cached = self._built.get(f"calendar/{spec.id}")
            if cached is not None and cached[0] == (refresh_token, spec.calendar_id):
                calendar: GoogleCalendar = cached[1]
                return calendar
            from calsync.google.calendar import GoogleCalendar, build_calendar_service, build_credentials

            assert (
                self.settings.google_client_id is not None and self.settings.google_client_secret is not None
            )
            credentials = build_credentials(
                refresh_token,
                str(self.settings.google_token_uri),
                self.settings.google_client_id,
                self.settings.google_client_secret.get_secret_value(),
                CALENDAR_SCOPES,
            )
            service = build_calendar_service(credentials, str(self.settings.google_api_root))
            calendar = GoogleCalendar(service, spec.calendar_id, sleep=self.sleep)
            self._built[f"calendar/{spec.id}"] = ((refresh_token, spec.calendar_id), calendar)
            return calendar

    def forget_calendar(self, connection: str | None = None) -> None:
        """Drop the connection's cached client (after a disconnect or a new consent)."""
        with self._lock:
            self._built.pop(f"calendar/{connection or self.connection}", None)

    def publish_status(self, connection: str | None = None) -> None:
        """Show one connection's status in Directus (after a consent, a disconnect, a delivery that queued)."""
        self.publish_statuses([connection or self.connection])

    def publish_statuses(self, connections: Sequence[str]) -> None:
        """Show these connections' statuses in Directus, when Directus is configured: on their items of the
        connections collection, in one request whatever their number, each with a fresh signed Connect link
        (none for a connection that uses another's account: that one is connected instead), and the
        default connection's on the settings singleton too. Best effort. A publish Directus refuses is
        recorded in each connection's status by :func:`calsync.directus.status.publish_all` and shown by
        the next one that goes through."""
        if self.settings.missing("directus_url", "directus_token"):
            return
        from datetime import timedelta

        from calsync.directus.status import PublishRefused, publish_all
        from calsync.web.links import signed_connect_url

        try:
            roster = self.roster()
            wanted = set(connections)
            roster = dataclasses.replace(roster, specs=tuple(s for s in roster.specs if s.id in wanted))
            signing = not self.settings.missing("connect_key", "google_redirect_uri")
            links = {
                spec.id: signed_connect_url(self.settings, spec.id, utcnow())
                if signing and spec.account_from is None
                else None
                for spec in roster.specs
            }
            tick = timedelta(minutes=self.settings.sync_tick_minutes)
            publish_all(self.directus, self.store, roster, links, tick)
        except PublishRefused as exc:
            log.warning("Directus refused the connection status", extra=logs.fields(error=str(exc)))
        except Exception:
            log.warning("could not show the connection status in Directus", exc_info=True)

    def booking_fields(self) -> frozenset[str]:
        """The bookings' fields, read once for every connection. The routing field is one of them whatever
        Directus lets the sync user see of its schema (setup creates it; imports must set it)."""
        fields: frozenset[str] = self._once("booking_fields", self.directus.booking_fields)
        route = self.settings.route_field
        return fields | {route} if route else fields

    def sync_user_id(self) -> str | None:
        """The Directus user behind the sync's token (deliveries it caused are echoes), read once."""
        user: str | None = self._once("sync_user", self.directus.current_user_id)
        return user

    def fleet(self, fresh: bool = True) -> Fleet:
        """Every connection (``fresh``: read from Directus now; else as read at most ``ROSTER_TTL`` ago),
        with what a tick or a delivery needs to reach them."""
        from calsync.sync.fleet import Fleet

        self.require("directus_url", "directus_token")
        settings = self.settings
        return Fleet(
            roster=self.roster(fresh=fresh),
            context=lambda spec: self.context(spec.id),
            store=self.store,
            directus=self.directus,
            collection=settings.directus_collection,
            booking_fields=self.booking_fields,
            publish=self.publish_statuses,
            concurrency=settings.sync_concurrency,
            budget_seconds=settings.sync_budget_seconds,
            dispatch=(lambda ids: self.sync_requests.request(ids, "tick")) if settings.pubsub_topic else None,
        )

    def run_tick(self) -> TickResult:
        """One tick: every connection's cycle (``calsync.sync.tick``)."""
        from calsync.directus.errors import DirectusError
        from calsync.sync.tick import TickResult, run_tick

        try:
            fleet = self.fleet()
        except DirectusError as exc:
            log.warning("could not read the connections from Directus", extra=logs.fields(error=str(exc)))
            return TickResult("error", 503, {"status": "error", "error": str(exc), "connections": {}})
        return run_tick(fleet)

    @property
    def sync_requests(self) -> SyncRequests:
        """Where "sync this connection soon" goes: Pub/Sub (``PUBSUB_TOPIC``), else this process's pool."""
        from calsync.fanout import build_sync_requests

        requests: SyncRequests = self._once(
            "sync_requests", lambda: build_sync_requests(self.settings, run=self.run_connection)
        )
        return requests

    def request_sync(self, connection: str, reason: str) -> None:
        """Ask for a cycle of this connection soon (a push notification, a new consent), without waiting."""
        self.sync_requests.request([connection], reason)

    def run_connection(self, connection: str) -> CycleResult:
        """One connection's cycle, as a sync request asks for it (``calsync.fanout``). Raises
        UnknownConnection.

        Bursts collapse: the request is recorded first (``sync_requested_at``), then the cycle is tried; a
        request that finds a cycle running (409) is answered at once, and that cycle, finding a request
        made after it started, pulls once more (as often as requests keep coming while it runs, up to
        ``RERUNS`` times; then it asks anew). A connection's first cycle scans Directus for everything
        routed to it; later ones push what the tick found for it (its outbox), and scan nothing."""
        from calsync.sync.cycle import CycleWork, run_cycle

        ctx = self.context(connection)
        config = ctx.config
        ctx.store.update_status(connection, {"sync_requested_at": ctx.clock()})
        for _ in range(RERUNS + 1):
            started = ctx.clock()
            first = ctx.store.cursor(connection, config.calendar_id).directus_checkpoint is None
            unrouted = config.route_field is None and config.route_value is None  # serves every booking
            result = run_cycle(ctx, work=None if first or unrouted else CycleWork())
            asked = ctx.store.get_status(connection).sync_requested_at
            if result.status == "busy" or asked is None or asked < started:
                return result
            log.info("asked again while the cycle ran: once more", extra=logs.fields(connection=connection))
        # Still asked after as many runs as one request may take: a new request, so nothing waits for a tick.
        self.request_sync(connection, "asked again while the cycle ran")
        return result

    def close(self) -> None:
        with self._lock:
            requests = self._built.pop("sync_requests", None)
            if requests is not None and hasattr(requests, "close"):
                requests.close(wait=False)
            store = self._built.pop("store", None)
            if store is not None:
                store.close()
            self._built.clear()


_app: App | None = None
_app_lock = threading.Lock()


def get_app() -> App:
    """The process-wide App, built from the environment on first use."""
    global _app  # noqa: PLW0603 - one App per process is the point
    with _app_lock:
        if _app is None:
            settings = load_settings()
            logs.configure(settings.google_cloud_project)
            _app = App(settings)
        return _app


def set_app(app: App | None) -> None:
    """Install an App built elsewhere (the CLI with its local settings; tests)."""
    global _app  # noqa: PLW0603
    with _app_lock:
        if _app is not None and _app is not app:
            _app.close()
        _app = app
