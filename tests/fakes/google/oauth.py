"""OAuth 2.0: clients, consent, authorization codes (PKCE), refresh and access tokens, revoke, userinfo."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from .errors import Headers, Reply, _error_reply, _json_reply, _oauth_error
from .server import _first

DEFAULT_ACCOUNT = "owner@example.com"
DEFAULT_CLIENT_ID = "calsync-test.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "fake-client-secret"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"
CALENDAR_EVENTS_SCOPE = "https://www.googleapis.com/auth/calendar.events"
EMAIL_SCOPE = "https://www.googleapis.com/auth/userinfo.email"
DEFAULT_SCOPES = (CALENDAR_EVENTS_SCOPE, "openid", EMAIL_SCOPE)
ACCESS_TOKEN_LIFETIME_S = 3599


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


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


class OAuthMixin:
    """Google's OAuth endpoints and their test API."""

    def _init_oauth(self) -> None:
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = DEFAULT_CLIENT_SECRET
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Refresh] = {}
        self._access: dict[str, _Access] = {}
        self._consented: set[tuple[str, str]] = set()
        self._granted: dict[tuple[str, str], set[str]] = {}
        self._consent = _Consent()

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

    def revoke_all(self, account: str | None = None) -> None:
        """Revoke every token (of ``account`` only, if given)."""
        with self._lock:
            for grant in self._refresh.values():
                if account is None or grant.account == account:
                    grant.revoked = True
            for access in self._access.values():
                if account is None or access.account == account:
                    access.revoked = True

    def expire_access_tokens(self, account: str | None = None) -> None:
        with self._lock:
            for access in self._access.values():
                if account is None or access.account == account:
                    access.expires_at = 0.0

    def refresh_token_valid(self, token: str) -> bool:
        with self._lock:
            grant = self._refresh.get(token)
            return grant is not None and not grant.revoked

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
