"""The one place that reads settings and chooses adapters.

Clients (store, token store, Calendar service, Directus session) are built lazily, once per process, on
first use: never at import time of a main.py, never per request. Cloud SDK modules are imported only by
the adapter that needs them, so the embedded (SQLite/file) setup never pays for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calsync import logs
from calsync.settings import Settings, load_settings
from calsync.state.store import DEFAULT_CONNECTION, SyncStore, TokenStore
from calsync.web.http import MissingSettings

if TYPE_CHECKING:
    from calsync.directus.client import DirectusClient
    from calsync.google.calendar import GoogleCalendar

log = logging.getLogger(__name__)

CALENDAR_SCOPES = ("https://www.googleapis.com/auth/calendar.events",)


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

    def directus_fields(self) -> frozenset[str]:
        """The bookings collection's field names (write-backs touch only fields that exist)."""
        fields: frozenset[str] = self._once("directus_fields", self._read_directus_fields)
        return fields

    def _read_directus_fields(self) -> frozenset[str]:
        from calsync.directus.client import DirectusAuthError, DirectusNotFound

        try:
            return frozenset(self.directus.fields())
        except (DirectusAuthError, DirectusNotFound):
            # The least-privilege sync user may not read the schema; an item shows the fields just as well.
            sample = self.directus.sample_item()
            if sample is not None:
                return frozenset(sample)
            from calsync.directus.setup import BOOKING_FIELDS

            return frozenset(f["field"] for f in BOOKING_FIELDS)  # an empty collection: setup's fields

    def sync_user_id(self) -> str | None:
        """The Directus user behind DIRECTUS_TOKEN: deliveries it caused are our own echoes."""
        user: str | None = self._once("sync_user", self.directus.current_user_id)
        return user

    def calendar(self) -> GoogleCalendar | None:
        """The Calendar client for the stored refresh token; None when no account is connected.

        Rebuilt only when the refresh token changes (a new consent), so access tokens are reused."""
        self.require("google_client_id", "google_client_secret")
        refresh_token = self.tokens.get(self.connection)
        if refresh_token is None:
            return None
        logs.register_secret(refresh_token)
        with self._lock:
            cached = self._built.get("calendar")
            if cached is not None and cached[0] == refresh_token:
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
            calendar = GoogleCalendar(service, self.settings.google_calendar_id, sleep=self.sleep)
            self._built["calendar"] = (refresh_token, calendar)
            return calendar

    def forget_calendar(self) -> None:
        """Drop the cached client (after a disconnect or a new consent)."""
        with self._lock:
            self._built.pop("calendar", None)

    def publish_status(self) -> None:
        """Show the connection status in Directus too, when Directus is configured (best effort)."""
        if self.settings.missing("directus_url", "directus_token"):
            return
        from calsync.directus.status import publish

        try:
            publish(self)
        except Exception:
            log.warning("could not show the connection status in Directus", exc_info=True)

    def close(self) -> None:
        with self._lock:
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
