"""Settings: one typed, validated object built from the environment (names are a documented contract).

Only ``bootstrap`` reads the environment (through :func:`load_settings`). Secrets are ``SecretStr`` so they never
appear in a repr, a log line or a validation error.
"""

from __future__ import annotations

import logging
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GOOGLE_API_ROOT = "https://www.googleapis.com/"
GOOGLE_AUTH_URI = "https://accounts.google.com/o/oauth2/auth"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL, not a secret
GOOGLE_REVOKE_URI = "https://oauth2.googleapis.com/revoke"
DEFAULT_STATE_DIR = ".calsync"
ANY_ACCOUNT = "any"

log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it (never its value). ``problems``: each bad
    variable's name and what is wrong with it, so a caller can tell the settings it uses from the rest."""

    def __init__(self, message: str, problems: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or {}


class Settings(BaseSettings):
    """Every setting the product reads. Empty strings count as unset."""

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    # Directus
    directus_url: AnyHttpUrl | None = None
    directus_token: SecretStr | None = None
    directus_collection: str = Field(default="bookings", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    directus_public_url: AnyHttpUrl | None = None

    # Google OAuth client and calendar
    google_client_id: str | None = None
    google_client_secret: SecretStr | None = None
    google_redirect_uri: AnyHttpUrl | None = None
    google_calendar_id: str = "primary"
    # comma-separated emails or @domain, or "any"; unset also allows anyone (local runs), with a warning
    allowed_google_accounts: str | None = None

    # Shared secrets
    webhook_secret: SecretStr | None = None
    connect_key: SecretStr | None = None

    # Behaviour
    timezone: str = "UTC"
    import_window_days: int = Field(default=30, ge=1, le=3650)
    on_google_delete: Literal["cancel", "delete"] = "cancel"
    max_cancel_share: float = Field(default=0.2, gt=0, le=1)
    max_delete_share: float = Field(default=0.2, gt=0, le=1)
    send_updates: Literal["none", "all", "externalOnly"] = "none"
    # What is imported: Google's event types (comma-separated; Google's names, unknown ones accepted as
    # new types appear), and invitations from other organizers by the owner's answer
    import_event_types: str = Field(default="default", pattern=r"^\s*[A-Za-z]+(\s*,\s*[A-Za-z]+)*\s*$")
    import_invitations: Literal["accepted", "all", "none"] = "accepted"
    # What the sync adds to the events it creates: "link" (a line with the booking's number and link),
    # or "none"; the link always goes in the event's source
    description_footer: Literal["link", "none"] = "link"

    # Staff calendars: the booking field whose value picks the connection (calsync.sync.connections)
    route_field: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # One calendar_import tick: how many connections' cycles run at once, and the seconds it may take
    # (inside the function's 540 s timeout); connections that do not fit run first at the next tick
    sync_concurrency: int = Field(default=4, ge=1, le=64)
    sync_budget_seconds: float = Field(default=420, gt=0, le=3600)

    # Push notifications (Google events.watch) and the Pub/Sub fan-out of sync requests
    # The public HTTPS address Google sends notifications to (booking_hook's /notifications); unset: no push
    notification_url: AnyHttpUrl | None = None
    # projects/PROJECT/topics/NAME: sync requests are published there; unset: they run in-process
    pubsub_topic: str | None = Field(
        default=None, pattern=r"^projects/[a-z][a-z0-9-]+/topics/[A-Za-z][A-Za-z0-9._~+%-]{2,}$"
    )

    # State
    store: str = Field(default=f"sqlite:///{DEFAULT_STATE_DIR}/state.sqlite3")
    token_store: str = Field(default=f"file:///{DEFAULT_STATE_DIR}/refresh_token")

    # Emulation and tests only
    google_api_root: AnyHttpUrl = AnyHttpUrl(GOOGLE_API_ROOT)
    google_auth_uri: AnyHttpUrl = AnyHttpUrl(GOOGLE_AUTH_URI)
    google_token_uri: AnyHttpUrl = AnyHttpUrl(GOOGLE_TOKEN_URI)
    google_revoke_uri: AnyHttpUrl = AnyHttpUrl(GOOGLE_REVOKE_URI)
    secret_manager_endpoint: str | None = None
    google_cloud_project: str | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("allowed_google_accounts")
    @classmethod
    def _account_rules(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == ANY_ACCOUNT:
            return value and ANY_ACCOUNT
        rules = [rule.strip() for rule in value.split(",") if rule.strip()]
        wrong = [r for r in rules if r.lower() == ANY_ACCOUNT or "@" not in r or any(c.isspace() for c in r)]
        if wrong or not rules:
            raise ValueError(
                f"expected comma-separated emails or @domain names, or {ANY_ACCOUNT!r} alone"
                + (f"; not {wrong[0]!r}" if wrong else "")
            )
        return value

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if value.startswith("sqlite:///") and len(value) > len("sqlite:///"):
            return value
        if value == "firestore" or (value.startswith("firestore://") and len(value) > len("firestore://")):
            return value
        raise ValueError("must be sqlite:///PATH, firestore or firestore://DATABASE")

    @field_validator("token_store")
    @classmethod
    def _token_store_url(cls, value: str) -> str:
        if value.startswith("file:///") and len(value) > len("file:///"):
            return value
        prefix = "secretmanager://projects/"
        parts = value[len(prefix) :].split("/") if value.startswith(prefix) else []
        if len(parts) == 3 and parts[1] == "secrets" and all(parts):
            return value
        raise ValueError("must be file:///PATH or secretmanager://projects/PROJECT/secrets/NAME")

    @property
    def event_types(self) -> tuple[str, ...]:
        return tuple(sorted({t.strip() for t in self.import_event_types.split(",") if t.strip()}))

    @property
    def directus_link_base(self) -> str | None:
        """Where people are sent back to: the public Directus URL, else the API URL."""
        url = self.directus_public_url or self.directus_url
        return str(url).rstrip("/") if url else None

    def missing(self, *names: str) -> list[str]:
        """The environment names of the given settings that are not set."""
        return [name.upper() for name in names if getattr(self, name) in (None, "")]

    # Local run: `calsync serve` runs the import cycle this often (what Cloud Scheduler does in production);
    # 0 runs none but those POSTed to /calendar_import/.
    sync_interval_seconds: float = Field(default=60, ge=0)
    # Health: how often Cloud Scheduler runs calendar_import (terraform's schedule); three ticks without a
    # cycle make the Directus settings item show the sync as overdue.
    sync_tick_minutes: int = Field(default=5, ge=1, le=1440)


def load_settings(**overrides: object) -> Settings:
    """Read and validate the environment; raise SettingsError naming each bad variable."""
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems: dict[str, str] = {}
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper() or "SETTINGS"
            # a validator's own ValueError comes as "Value error, <its text>": its text says it all
            problems[name] = error["msg"].removeprefix("Value error, ")
        message = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise SettingsError("invalid settings: " + message, problems) from None
    if settings.allowed_google_accounts is None:
        log.warning(
            "ALLOWED_GOOGLE_ACCOUNTS is not set: any Google account may be connected. Set it to the emails "
            "or @domain allowed, or to %r to allow any account explicitly",
            ANY_ACCOUNT,
        )
    return settings
