"""Signed, expiring Connect links: what Directus shows instead of the connect key itself.

A link is ``<oauth_callback>/start?link=TOKEN`` where ``TOKEN`` is ``base64url(expiry || connection)``, a
dot, and ``base64url(HMAC-SHA256(link key, expiry || connection))``; the link key is derived from
CONNECT_KEY under its own label, so a link can never stand in for an OAuth state or the other way round.
Anyone who can read the Directus settings item can start a consent for 24 hours, but cannot read the
status, disconnect, or learn the key. Only the standard library: ``calsync directus setup`` signs links too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from calsync.settings import Settings

LINK_TTL = timedelta(hours=24)
MAX_LINK_LENGTH = 512
_EXPIRY = struct.Struct(">Q")  # seconds since the epoch, 8 bytes big-endian


class LinkInvalid(ValueError):
    """Not a link this key signed (malformed, forged, or signed with another CONNECT_KEY)."""


class LinkExpired(ValueError):
    """A genuine link whose validity has passed."""


def derive_key(connect_key: str, label: str) -> bytes:
    """A key for one purpose, derived from CONNECT_KEY (one label per purpose)."""
    return hashlib.sha256(label.encode() + b"\0" + connect_key.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(connect_key: str, payload: bytes) -> bytes:
    return hmac.new(derive_key(connect_key, "calsync-connect-link"), payload, hashlib.sha256).digest()


def connect_link_token(connect_key: str, connection: str, now: datetime) -> str:
    payload = _EXPIRY.pack(int((now + LINK_TTL).timestamp())) + connection.encode()
    return f"{_b64(payload)}.{_b64(_mac(connect_key, payload))}"


def check_connect_link(connect_key: str, token: str, now: datetime) -> tuple[str, datetime]:
    """(connection, expiry) of a link this key signed; LinkInvalid or LinkExpired otherwise."""
    if len(token) > MAX_LINK_LENGTH or not token.isascii():
        raise LinkInvalid("malformed connect link")
    encoded, _, signature = token.partition(".")
    try:
        payload, given = _unb64(encoded), _unb64(signature)
    except (binascii.Error, ValueError):
        raise LinkInvalid("malformed connect link") from None
    if len(payload) < _EXPIRY.size or not hmac.compare_digest(given, _mac(connect_key, payload)):
        raise LinkInvalid("this connect link was not signed with this CONNECT_KEY")
    expiry = datetime.fromtimestamp(_EXPIRY.unpack(payload[: _EXPIRY.size])[0], UTC)
    if now >= expiry:
        raise LinkExpired("this connect link has expired")
    return payload[_EXPIRY.size :].decode("utf-8", "replace"), expiry


def connect_url(oauth_callback_url: str, connect_key: str, connection: str, now: datetime) -> str:
    """``<oauth_callback_url>/start?link=...``, valid for LINK_TTL from ``now``."""
    token = connect_link_token(connect_key, connection, now)
    return f"{oauth_callback_url.rstrip('/')}/start?{urlencode({'link': token})}"


def oauth_callback_base(settings: Settings) -> str:
    """oauth_callback's own URL: GOOGLE_REDIRECT_URI less its last segment (``/callback``)."""
    assert settings.google_redirect_uri is not None
    return str(settings.google_redirect_uri).rstrip("/").rsplit("/", 1)[0]


def signed_connect_url(settings: Settings, connection: str, now: datetime) -> str:
    """The Connect link to show in Directus: ``.../start?link=TOKEN``, valid links.LINK_TTL from ``now``.

    Needs CONNECT_KEY and GOOGLE_REDIRECT_URI. The link lets its holder start a consent; it is not the key."""
    assert settings.connect_key is not None
    return connect_url(
        oauth_callback_base(settings), settings.connect_key.get_secret_value(), connection, now
    )
