"""Settings are validated once, name the bad variable, and never show a secret."""

from __future__ import annotations

import pytest

from calsync.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "STORE",
        "TOKEN_STORE",
        "TIMEZONE",
        "DIRECTUS_URL",
        "WEBHOOK_SECRET",
        "GOOGLE_CALENDAR_ID",
        "DIRECTUS_COLLECTION",
        "MAX_CANCEL_SHARE",
        "GOOGLE_API_ROOT",
        "IMPORT_WINDOW_DAYS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_the_documented_ones() -> None:
    s = load_settings()
    assert s.directus_collection == "bookings"
    assert s.google_calendar_id == "primary"
    assert s.timezone == "UTC"
    assert s.store == "sqlite:///.calsync/state.sqlite3"
    assert s.token_store == "file:///.calsync/refresh_token"
    assert str(s.google_api_root) == "https://www.googleapis.com/"
    assert s.import_window_days == 30 and s.on_google_delete == "cancel" and s.max_cancel_share == 0.2


def test_environment_names_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIRECTUS_URL", "https://crm.example.com")
    monkeypatch.setenv("TIMEZONE", "Europe/Rome")
    monkeypatch.setenv("STORE", "firestore://calsync-db")
    monkeypatch.setenv("TOKEN_STORE", "secretmanager://projects/p1/secrets/refresh-token")
    monkeypatch.setenv("GOOGLE_API_ROOT", "http://127.0.0.1:9999/")
    s = load_settings()
    assert str(s.directus_url) == "https://crm.example.com/"
    assert s.timezone == "Europe/Rome"
    assert s.store == "firestore://calsync-db"
    assert str(s.google_api_root) == "http://127.0.0.1:9999/"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIMEZONE", "Mars/Olympus"),
        ("STORE", "postgres://x"),
        ("STORE", "sqlite:///"),
        ("TOKEN_STORE", "secretmanager://projects/p/secret/x"),
        ("DIRECTUS_URL", "not a url"),
        ("DIRECTUS_COLLECTION", "bookings; drop"),
        ("MAX_CANCEL_SHARE", "1.5"),
        ("IMPORT_WINDOW_DAYS", "0"),
    ],
)
def test_malformed_value_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_empty_string_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMEZONE", "")
    monkeypatch.setenv("WEBHOOK_SECRET", "")
    s = load_settings()
    assert s.timezone == "UTC" and s.webhook_secret is None
    assert s.missing("webhook_secret", "timezone") == ["WEBHOOK_SECRET"]


def test_secrets_never_appear_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", "s3cr3t-webhook-value")
    s = load_settings()
    assert "s3cr3t-webhook-value" not in repr(s) and "s3cr3t-webhook-value" not in str(s.model_dump())
    monkeypatch.setenv("TIMEZONE", "Nowhere/Land")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "s3cr3t-webhook-value" not in str(caught.value)
