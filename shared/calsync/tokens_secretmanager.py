"""TokenStore in Secret Manager (``TOKEN_STORE=secretmanager://projects/P/secrets/NAME``), for production.

A new refresh token is a new version; every older version is then disabled and destroyed, so a superseded
token cannot be read back. ``get`` reads ``latest``. Connection "default" uses the secret itself; another
connection uses ``NAME--<connection>``: one secret per Google account keeps IAM per secret possible.
``SECRET_MANAGER_ENDPOINT`` (host:port) points the client at a plain-gRPC stand-in for tests.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core import exceptions as gexc

from calsync import logs
from calsync.store import DEFAULT_CONNECTION, StoreError, TokenStore

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    """CRC-32C (Castagnoli), the checksum Secret Manager verifies; tokens are short, so pure Python will do."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# Both families: gRPC (production transport) and REST surface the same conditions under other names.
_MISSING = (gexc.NotFound,)
_NOT_READABLE = (gexc.FailedPrecondition, gexc.BadRequest)
_EXISTS = (gexc.AlreadyExists, gexc.Conflict)
_TRANSIENT = (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError, gexc.TooManyRequests)


class SecretManagerTokenStore(TokenStore):
    def __init__(
        self,
        secret_name: str,
        client: Any = None,
        endpoint: str | None = None,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.secret_name = secret_name.rstrip("/")
        self.project = self.secret_name.split("/")[1]
        self._client = client
        self.endpoint = endpoint
        self.retries = retries
        self.sleep = sleep

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

                transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(self.endpoint))
                self._client = secretmanager_v1.SecretManagerServiceClient(transport=transport)
            else:
                self._client = secretmanager_v1.SecretManagerServiceClient()
        return self._client

    def _secret(self, connection: str) -> str:
        return self.secret_name if connection == DEFAULT_CONNECTION else f"{self.secret_name}--{connection}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except _TRANSIENT as exc:
                if attempt == self.retries:
                    raise StoreError(f"Secret Manager unavailable ({what}): {type(exc).__name__}") from None
                self.sleep(min(2.0, 0.2 * 2**attempt))
        raise AssertionError("unreachable")

    def get(self, connection: str = DEFAULT_CONNECTION) -> str | None:
        name = f"{self._secret(connection)}/versions/latest"
        try:
            response = self._call("access", lambda: self.client.access_secret_version(request={"name": name}))
        except _MISSING + _NOT_READABLE:
            return None  # no token stored, or the latest was disabled/destroyed (disconnected)
        except gexc.GoogleAPICallError as exc:
            raise StoreError(f"cannot read the refresh token secret: {type(exc).__name__}") from None
        token = bytes(response.payload.data).decode()
        logs.register_secret(token)
        return token

    def put(self, token: str, connection: str = DEFAULT_CONNECTION) -> None:
        secret = self._secret(connection)
        data = token.encode()
        request = {"parent": secret, "payload": {"data": data, "data_crc32c": crc32c(data)}}
        try:
            try:
                added = self._call("add version", lambda: self.client.add_secret_version(request=request))
            except _MISSING:
                self._create(secret)  # terraform creates the default one in production
                added = self._call("add version", lambda: self.client.add_secret_version(request=request))
            self._retire(secret, keep=added.name)
        except gexc.GoogleAPICallError as exc:
            raise StoreError(f"cannot store the refresh token: {type(exc).__name__}") from None

    def delete(self, connection: str = DEFAULT_CONNECTION) -> None:
        try:
            self._retire(self._secret(connection), keep=None)
        except _MISSING:
            return
        except gexc.GoogleAPICallError as exc:
            raise StoreError(f"cannot destroy the refresh token: {type(exc).__name__}") from None

    def _create(self, secret: str) -> None:
        parent, _, secret_id = secret.rpartition("/secrets/")
        request = {"parent": parent, "secret_id": secret_id, "secret": {"replication": {"automatic": {}}}}
        with contextlib.suppress(*_EXISTS):  # created meanwhile by another instance
            self._call("create secret", lambda: self.client.create_secret(request=request))

    def _retire(self, secret: str, keep: str | None) -> None:
        """Disable, then destroy, every version but ``keep``."""
        request = {"parent": secret, "filter": "state:(ENABLED OR DISABLED)"}
        versions = list(
            self._call("list versions", lambda: self.client.list_secret_versions(request=request))
        )
        for version in versions:
            if version.name == keep:
                continue
            request = {"name": version.name}
            with contextlib.suppress(*_NOT_READABLE):  # already disabled
                self._call("disable", lambda r=request: self.client.disable_secret_version(request=r))  # type: ignore[misc]
            self._call("destroy", lambda r=request: self.client.destroy_secret_version(request=r))  # type: ignore[misc]
        if versions:
            log.info(
                "older refresh token versions destroyed",
                extra=logs.fields(count=len(versions) - (keep is not None)),
            )
