"""Settings are validated once, name the bad variable, and never show a secret."""

from __future__ import annotations

import logging

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
        "ALLOWED_GOOGLE_ACCOUNTS",
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
        ("ALLOWED_GOOGLE_ACCOUNTS", "example.com"),  # a domain needs its @: it would never match
        ("ALLOWED_GOOGLE_ACCOUNTS", "any,@example.com"),
        ("ALLOWED_GOOGLE_ACCOUNTS", ","),
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


def test_allowed_accounts_take_any_explicitly_and_warn_when_unset(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from calsync.web.oauth import account_allowed

    caplog.set_level(logging.WARNING)
    unset = load_settings()
    assert unset.allowed_google_accounts is None and account_allowed(unset, "anyone@example.org")
    assert "ALLOWED_GOOGLE_ACCOUNTS is not set" in caplog.text
    caplog.clear()
    monkeypatch.setenv("ALLOWED_GOOGLE_ACCOUNTS", "Any")
    explicit = load_settings()
    assert explicit.allowed_google_accounts == "any" and account_allowed(explicit, "anyone@example.org")
    assert "ALLOWED_GOOGLE_ACCOUNTS" not in caplog.text
    monkeypatch.setenv("ALLOWED_GOOGLE_ACCOUNTS", "boss@example.org, @company.example,")
    rules = load_settings()
    assert account_allowed(rules, "Boss@example.org") and account_allowed(rules, "x@company.example")
    assert not account_allowed(rules, "x@example.org")


def test_a_validators_message_comes_without_pydantics_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMEZONE", "Mars/Olympus")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert str(raised.value) == "invalid settings: TIMEZONE: unknown time zone 'Mars/Olympus'"
    assert raised.value.problems == {"TIMEZONE": "unknown time zone 'Mars/Olympus'"}
