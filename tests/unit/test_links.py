"""Signed Connect links: what Directus shows instead of the connect key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import SecretStr

from calsync.settings import load_settings
from calsync.web import links

KEY = "connect-key-for-link-tests"
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["link"][0]


def test_a_link_names_its_connection_and_holds_for_24_hours() -> None:
    url = links.connect_url("https://fn.example/oauth_callback/", KEY, "default", NOW)
    assert url.startswith("https://fn.example/oauth_callback/start?link=") and KEY not in url
    connection, expiry = links.check_connect_link(KEY, token_of(url), NOW + timedelta(hours=23))
    assert connection == "default" and expiry == NOW + links.LINK_TTL
    with pytest.raises(links.LinkExpired):
        links.check_connect_link(KEY, token_of(url), NOW + links.LINK_TTL)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature changed
        lambda t: links._b64(b"\xff" * 8 + b"default") + "." + t.split(".")[1],  # expiry pushed out
        lambda t: t.split(".")[0],  # no signature
        lambda t: "",
        lambda t: "%%%.###",
        lambda t: "é." + t,
        lambda t: "A" * 10_000,
    ],
)
def test_a_changed_or_malformed_link_is_refused(tamper: object) -> None:
    token = links.connect_link_token(KEY, "default", NOW)
    with pytest.raises(links.LinkInvalid):
        links.check_connect_link(KEY, tamper(token), NOW)  # type: ignore[operator]


def test_a_link_signed_with_another_key_or_as_an_oauth_state_is_refused() -> None:
    from calsync.web.oauth import new_state

    with pytest.raises(links.LinkInvalid):
        links.check_connect_link(KEY, links.connect_link_token("another-key", "default", NOW), NOW)
    assert links.derive_key(KEY, "calsync-connect-link") != links.derive_key(KEY, "calsync-oauth-state")
    with pytest.raises(links.LinkInvalid):
        links.check_connect_link(KEY, new_state(SecretStr(KEY), "binding"), NOW)


def test_signed_connect_url_starts_beside_the_redirect_uri() -> None:
    from calsync.web.links import signed_connect_url

    settings = load_settings(
        connect_key=KEY, google_redirect_uri="https://fn.example/oauth_callback/callback"
    )
    url = signed_connect_url(settings, "default", NOW)
    assert url.startswith("https://fn.example/oauth_callback/start?link=")
    assert links.check_connect_link(KEY, token_of(url), NOW)[0] == "default"
