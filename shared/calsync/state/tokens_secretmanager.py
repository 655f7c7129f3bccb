"""TokenStore in Secret Manager (``TOKEN_STORE=secretmanager://projects/P/secrets/NAME``), for production.

A new refresh token is a new secret version; every older version is then disabled and destroyed, because a
new refresh token supersedes the old one and a superseded credential should not stay readable. ``get`` reads
``latest``. ``SECRET_MANAGER_ENDPOINT`` (host:port) points the client at a plain-gRPC stand-in (tests).

Error handling follows both transports: over gRPC (the default here) the API's conditions surface as
``NotFound``/``AlreadyExists``/``FailedPrecondition``, over REST as ``NotFound``/``Conflict``/``BadRequest``.
Transient failures are retried a bounded number of times by this module alone (the library's own retry,
which sleeps up to a minute on ``access``, is switched off); any other failure is a :class:`StoreError`
whose message names the secret and the error, never a token.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from calsync import logs
from calsync.retry import Backoff, Retry, retrying
from calsync.state.store import DEFAULT_CONNECTION, StoreError, TokenStore

log = logging.getLogger(__name__)

T = TypeVar("T")

_SECRET_NAME = re.compile(r"^projects/[^/]+/secrets/[A-Za-z0-9_-]{1,255}$")
_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_VERSION_NUMBER = re.compile(r"/versions/(\d+)$")

# UNAVAILABLE and DEADLINE_EXCEEDED (REST: 503 and 504), and quota (RESOURCE_EXHAUSTED / 429), which
# Google's own default policy for ``access`` retries as well. Everything else is not going to get better.
_TRANSIENT: tuple[type[Exception], ...] = (
    gexc.ServiceUnavailable,
    gexc.DeadlineExceeded,
    gexc.GatewayTimeout,
    gexc.TooManyRequests,
)


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum Secret Manager verifies on ``add``; tokens are short, so pure
    Python will do (google-crc32c is not a dependency)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _is_state_error(exc: Exception) -> bool:
    """The version is disabled or destroyed: gRPC FAILED_PRECONDITION, or over REST a 400 (which the REST
    transport cannot refine further). gRPC INVALID_ARGUMENT/OUT_OF_RANGE are also ``BadRequest``s but mean a
    malformed request, which must not pass for "no token"."""
    if isinstance(exc, gexc.FailedPrecondition):
        return True
    return type(exc) is gexc.BadRequest


def _version_number(name: str) -> int:
    match = _VERSION_NUMBER.search(name)
    if match is None:
        raise StoreError(f"Secret Manager answered an unexpected version name {name!r}")
    return int(match.group(1))


class SecretManagerTokenStore(TokenStore):
    """Refresh tokens as versions of ``projects/P/secrets/NAME``.

    Connection "default" uses that secret itself, so today's single-account deployment is exactly the secret
    terraform creates and grants. Any other connection uses its own secret ``NAME-<connection>`` rather than
    sharing one: a put must destroy the older versions of *that* connection's token only, which a shared
    secret (one version holding every token) cannot do without a read-modify-write race between connections;
    separate secrets also give each Google account its own IAM policy and audit trail. Such secrets are
    created on first put, which needs ``secretmanager.secrets.create`` on the project (terraform grants only
    per-secret roles today).
    """

    def __init__(
        self,
        secret_name: str,
        client: Any = None,
        endpoint: str | None = None,
        *,
        attempts: int = 4,
        timeout: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        secret_name = secret_name.rstrip("/")
        if not _SECRET_NAME.match(secret_name):
            raise ValueError("the secret name must be projects/PROJECT/secrets/NAME")
        self.secret_name = secret_name
        self.endpoint = endpoint
        self.attempts = max(1, attempts)
        self.timeout = timeout  # per call; a hung call surfaces as DEADLINE_EXCEEDED and is retried
        self.sleep = sleep
        self._client = client

    @property
    def client(self) -> Any:
        """Built on first use, so importing this module (cold start) stays cheap."""
        if self._client is None:
            from google.cloud import secretmanager_v1

            if self.endpoint:
                import grpc
                from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
                    SecretManagerServiceGrpcTransport,
                )

                # A stand-in speaks plain gRPC without credentials; production never sets an endpoint.
                transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(self.endpoint))
                self._client = secretmanager_v1.SecretManagerServiceClient(transport=transport)
            else:
                self._client = secretmanager_v1.SecretManagerServiceClient()
        return self._client

    def secret_for(self, connection: str) -> str:
        """The full name of the secret that holds this connection's token."""
        if connection == DEFAULT_CONNECTION:
            return self.secret_name
        name = f"{self.secret_name}-{connection}"
        if not _SECRET_ID.match(name.rpartition("/")[2]):
            raise StoreError(f"connection id {connection!r} cannot be part of a Secret Manager secret id")
        return name

    # -- the port -------------------------------------------------------------------------------------
    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        name = f"{self.secret_for(connection)}/versions/latest"
        try:
            response = self._retrying(
                "read", lambda: self.client.access_secret_version(request={"name": name}, **self._opts())
            )
        except gexc.NotFound:
            return None  # no such secret, or no version yet: nothing stored
        except gexc.BadRequest as exc:
            if _is_state_error(exc):
                return None  # the latest version was disabled or destroyed: deleted
            raise self._failure("read", name, exc) from None
        except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as exc:
            raise self._failure("read", name, exc) from None
        data = bytes(response.payload.data)
        # As Google advises: a payload damaged on the way must not pass for a token.
        if "data_crc32c" in response.payload and response.payload.data_crc32c != crc32c(data):
            raise StoreError(f"Secret Manager: {name} arrived with a bad checksum (damaged in transit)")
        try:
            token = data.decode("utf-8")
        except UnicodeDecodeError:
            raise StoreError(f"Secret Manager: {name} does not hold UTF-8 text") from None
        logs.register_secret(token)
        return token

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        logs.register_secret(token)  # before any call, so no log line or error text can carry it
        secret = self.secret_for(connection)
        data = token.encode("utf-8")
        # The checksum lets the service refuse a payload damaged on the way (its own check is optional).
        request = {"parent": secret, "payload": {"data": data, "data_crc32c": crc32c(data)}}

        def add() -> Any:
            return self.client.add_secret_version(request=request, **self._opts())

        try:
            try:
                added = self._retrying("store a version in", add)
            except gexc.NotFound:
                # In production terraform creates the secret (and grants on it); this covers a laptop pointed
                # at a project, tests, and the secrets of further connections.
                self._create(secret)
                added = self._retrying("store a version in", add)
        except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as exc:
            raise self._failure("store a version in", secret, exc, token) from None
        number = _version_number(added.name)
        try:
            self._retire(secret, below=number)
        except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as exc:
            # The new token is stored and is what ``latest`` (every reader) gets: the put succeeded. Older
            # versions stay until the next put or delete retires them; say so loudly, but do not fail a
            # consent whose token is safely stored.
            log.warning(
                "stored the new refresh token but could not retire older versions",
                extra=logs.fields(secret=secret, error=self._describe(exc, token)),
            )

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        secret = self.secret_for(connection)
        try:
            self._retire(secret, below=None)
        except gexc.NotFound:
            return  # no secret, nothing to forget
        except (gexc.GoogleAPICallError, auth_exc.GoogleAuthError) as exc:
            raise self._failure("destroy the versions of", secret, exc) from None

    # -- internals ------------------------------------------------------------------------------------
    def _opts(self) -> dict[str, Any]:
        # retry=None: this module's bounded retry is the only one (the library's default for ``access``
        # sleeps for real, up to 60 s, which neither a request handler nor a test can afford).
        return {"retry": None, "timeout": self.timeout}

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, repeated on transient errors up to ``attempts`` times in all; the last error is raised."""

        def attempt() -> T:
            try:
                return call()
            except _TRANSIENT as exc:
                raise Retry(exc) from None

        def on_retry(error: Exception, delay: float) -> None:
            log.info(
                "Secret Manager is briefly unavailable; retrying",
                extra=logs.fields(operation=what, error=type(error).__name__, delay=delay),
            )

        policy = Backoff(base_s=0.25, cap_s=2.0, retries=self.attempts - 1)
        return retrying(attempt, policy, sleep=self.sleep, on_retry=on_retry)

    def _create(self, secret: str) -> None:
        parent, _, secret_id = secret.rpartition("/secrets/")
        request = {"parent": parent, "secret_id": secret_id, "secret": {"replication": {"automatic": {}}}}
        try:
            self._retrying("create", lambda: self.client.create_secret(request=request, **self._opts()))
        except (gexc.AlreadyExists, gexc.Conflict):
            return  # created meanwhile by another instance: just as good
        log.info("created the refresh token secret", extra=logs.fields(secret=secret))

    def _retire(self, secret: str, below: int | None) -> None:
        """Disable, then destroy, every live version numbered below ``below`` (None: every version).

        Only *older* versions: two concurrent puts then leave the newer token, never neither. Disabling
        first makes a token unreadable at once even if the destroy then fails, or is only scheduled (a
        secret with delayed destruction keeps the version, disabled, until then).
        """
        request = {"parent": secret, "filter": "state:ENABLED OR state:DISABLED"}
        # The whole listing is materialised (and retried as one) before anything changes: paging while
        # destroying would shift the filtered pages under the iterator.
        versions = self._retrying(
            "list the versions of",
            lambda: list(self.client.list_secret_versions(request=request, **self._opts())),
        )
        retired = 0
        for version in versions:
            if below is not None and _version_number(version.name) >= below:
                continue
            steps = ["destroy_secret_version"]
            if version.state.name != "DISABLED":
                steps.insert(0, "disable_secret_version")
            for method in steps:
                call = functools.partial(getattr(self.client, method), request={"name": version.name})
                try:
                    self._retrying("retire", functools.partial(call, **self._opts()))
                except gexc.BadRequest as exc:
                    # Disabled or destroyed meanwhile (a concurrent put or delete): the goal is reached.
                    if not _is_state_error(exc):
                        raise
            retired += 1
        if retired:
            log.info(
                "older refresh token versions destroyed", extra=logs.fields(secret=secret, count=retired)
            )

    def _describe(self, exc: BaseException, token: str | None = None) -> str:
        """``NotFound: <the service's message>``, scrubbed: no token, even one a message might echo."""
        message = str(getattr(exc, "message", "") or "")
        if token:
            message = message.replace(token, logs.REDACTED)
        return logs.scrub(f"{type(exc).__name__}: {message}".rstrip(": "))

    def _failure(self, what: str, resource: str, exc: BaseException, token: str | None = None) -> StoreError:
        return StoreError(f"Secret Manager: cannot {what} {resource}: {self._describe(exc, token)}")
