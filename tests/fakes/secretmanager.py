"""An in-memory Secret Manager served over gRPC, the production transport, for the real client library.

No Secret Manager emulator exists, and the client library ships no servicer classes, so the handlers are
registered generically and the library's own proto-plus request/response types do the (de)serialisation:
what crosses the wire is what Google's service would carry, and the real ``SecretManagerServiceClient``
runs unchanged except for its channel::

    transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(fake.endpoint))
    client = secretmanager_v1.SecretManagerServiceClient(transport=transport)

Behaviour follows the API where the product relies on it: ``latest`` is the
newest version whatever its state; accessing a disabled or destroyed version is FAILED_PRECONDITION
"... is in DISABLED state."; unknown secrets/versions are NOT_FOUND; a payload whose ``data_crc32c`` does
not match is INVALID_ARGUMENT; destroying drops the payload; versions are listed newest first, filtered by
``state:X [OR state:Y ...]`` (the documented filter form) and paged by ``page_size``/``page_token``.

Test controls: :meth:`SecretManagerFake.fail_next` (the next N matching calls answer a gRPC status),
:attr:`SecretManagerFake.calls` (every call with its resource and outcome), :meth:`SecretManagerFake.versions`
(state read directly, payloads included). Fixtures: ``secretmanager_fake`` (fresh state per test, on one
server per session) and ``_secretmanager_server`` (the session server itself, for fixtures of wider scope).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, NamedTuple

import grpc
import pytest
from google.cloud.secretmanager_v1 import types
from google.protobuf import empty_pb2

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
State: Any = types.SecretVersion.State  # a proto-plus enum; untyped for mypy

_PROJECT = re.compile(r"^projects/[^/]+$")
_SECRET_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_FILTER_TERM = re.compile(r"^state\s*:\s*([A-Z_]+)$")
MAX_PAYLOAD = 64 * 1024  # the API's limit on one version's data


def crc32c(data: bytes) -> int:
    """CRC-32C computed bit by bit: deliberately not the product's table-driven code, so the fake checks it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class _Version:
    number: int
    state: Any  # a State member
    payload: bytes | None
    created: datetime
    checksum_given: bool
    destroyed: datetime | None = None


@dataclasses.dataclass
class _Secret:
    message: types.Secret
    versions: list[_Version] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Fault:
    code: grpc.StatusCode
    remaining: int
    method: str | None
    message: str | None


class Call(NamedTuple):
    """One RPC as the fake saw it: method ("AccessSecretVersion"), resource name, outcome ("OK", "UNAVAILABLE")."""

    method: str
    resource: str
    outcome: str


class VersionView(NamedTuple):
    number: int
    state: str  # "ENABLED", "DISABLED" or "DESTROYED"
    payload: bytes | None  # None once destroyed


class SecretManagerFake:
    """Secrets and versions in memory; thread-safe; faults and a call log for tests."""

    def __init__(self, project: str = "calsync-test") -> None:
        self.project = project
        self.page_size = 0  # versions per ListSecretVersions page when the request gives none; 0: all
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._secrets: dict[str, _Secret] = {}
        self._faults: list[_Fault] = []
        self._server: grpc.Server | None = None
        self.port = 0

    # -- server ---------------------------------------------------------------------------------------
    def start(self) -> SecretManagerFake:
        handlers: dict[str, tuple[Callable[[Any], Any], Any, Callable[[Any], bytes]]] = {
            "CreateSecret": (self._create_secret, types.CreateSecretRequest, types.Secret.serialize),
            "GetSecret": (self._get_secret, types.GetSecretRequest, types.Secret.serialize),
            "DeleteSecret": (
                self._delete_secret,
                types.DeleteSecretRequest,
                empty_pb2.Empty.SerializeToString,
            ),
            "AddSecretVersion": (
                self._add_version,
                types.AddSecretVersionRequest,
                types.SecretVersion.serialize,
            ),
            "GetSecretVersion": (
                self._get_version,
                types.GetSecretVersionRequest,
                types.SecretVersion.serialize,
            ),
            "AccessSecretVersion": (
                self._access,
                types.AccessSecretVersionRequest,
                types.AccessSecretVersionResponse.serialize,
            ),
            "ListSecretVersions": (
                self._list_versions,
                types.ListSecretVersionsRequest,
                types.ListSecretVersionsResponse.serialize,
            ),
            "DisableSecretVersion": (
                self._state_change(State.DISABLED),
                types.DisableSecretVersionRequest,
                types.SecretVersion.serialize,
            ),
            "EnableSecretVersion": (
                self._state_change(State.ENABLED),
                types.EnableSecretVersionRequest,
                types.SecretVersion.serialize,
            ),
            "DestroySecretVersion": (
                self._state_change(State.DESTROYED),
                types.DestroySecretVersionRequest,
                types.SecretVersion.serialize,
            ),
        }
        rpc = {
            name: grpc.unary_unary_rpc_method_handler(
                self._handler(name, fn),
                request_deserializer=request_type.deserialize,
                response_serializer=serialize,
            )
            for name, (fn, request_type, serialize) in handlers.items()
        }
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, rpc),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> SecretManagerFake:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        """host:port, the value of SECRET_MANAGER_ENDPOINT."""
        return f"127.0.0.1:{self.port}"

    def _handler(self, method: str, fn: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            resource = getattr(request, "name", "") or getattr(request, "parent", "")
            # One lock around the whole call: the service is linearisable, which is what the product relies
            # on (e.g. two concurrent puts get distinct version numbers).
            with self._lock:
                fault = self._take_fault(method)
                try:
                    if fault is not None:
                        raise _Abort(fault.code, fault.message or f"injected {fault.code.name} (test fault)")
                    response = fn(request)
                except _Abort as exc:
                    self.calls.append(Call(method, resource, exc.code.name))
                    abort: tuple[grpc.StatusCode, str] | None = (exc.code, exc.message)
                else:
                    self.calls.append(Call(method, resource, "OK"))
                    abort = None
            if abort is not None:
                context.abort(*abort)  # raises; outside the lock so the server thread never holds it
            return response

        return handle

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in (None, method):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # -- test controls --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every secret, fault and call; the server keeps running."""
        with self._lock:
            self._secrets.clear()
            self._faults.clear()
            self.calls.clear()
            self.page_size = 0

    def fail_next(
        self,
        n: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        method: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``n`` calls (of ``method`` only, if given, e.g. "DestroySecretVersion") with
        ``code`` and ``message`` (default "injected CODE (test fault)")."""
        with self._lock:
            self._faults.append(_Fault(code, n, method, message))

    def pending_faults(self) -> int:
        """How many injected failures have not fired yet."""
        with self._lock:
            return sum(f.remaining for f in self._faults)

    def secret_name(self, secret: str) -> str:
        """A full ``projects/P/secrets/S`` name from a bare secret id (full names pass through)."""
        return secret if secret.startswith("projects/") else f"projects/{self.project}/secrets/{secret}"

    def create_secret(self, secret_id: str) -> str:
        """Create an empty secret (as terraform does in production); returns its full name. Idempotent."""
        name = self.secret_name(secret_id)
        with self._lock:
            if name not in self._secrets:
                self._secrets[name] = _Secret(self._secret_message(name, types.Replication(automatic={})))
        return name

    def secrets(self) -> list[str]:
        with self._lock:
            return sorted(self._secrets)

    def versions(self, secret: str) -> list[VersionView]:
        """Every version of the secret (id or full name), oldest first; [] if the secret does not exist."""
        with self._lock:
            found = self._secrets.get(self.secret_name(secret))
            return [VersionView(v.number, v.state.name, v.payload) for v in (found.versions if found else [])]

    # -- the API --------------------------------------------------------------------------------------
    @staticmethod
    def _secret_message(name: str, replication: types.Replication) -> types.Secret:
        return types.Secret(name=name, replication=replication, create_time=datetime.now(UTC))

    def _secret(self, name: str) -> _Secret:
        found = self._secrets.get(name)
        if found is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found.")
        return found

    def _version(self, name: str) -> tuple[str, _Version]:
        secret, sep, number = name.partition("/versions/")
        if not sep or not number:
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"Invalid resource field value in the request: {name}"
            )
        versions = self._secret(secret).versions
        if number == "latest":
            if not versions:
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret}] not found or has no versions.")
            return secret, versions[-1]
        for version in versions:
            if str(version.number) == number:
                return secret, version
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")

    @staticmethod
    def _version_message(secret: str, version: _Version) -> types.SecretVersion:
        message = types.SecretVersion(
            name=f"{secret}/versions/{version.number}",
            state=version.state,
            create_time=version.created,
            client_specified_payload_checksum=version.checksum_given,
        )
        if version.destroyed is not None:
            message.destroy_time = version.destroyed
        return message

    def _create_secret(self, request: types.CreateSecretRequest) -> types.Secret:
        if not _PROJECT.match(request.parent):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid parent: {request.parent!r}")
        if not _SECRET_ID.match(request.secret_id):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid secret id: {request.secret_id!r}")
        if "replication" not in request.secret:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Secret.replication is required.")
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self._secrets:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        self._secrets[name] = _Secret(self._secret_message(name, request.secret.replication))
        return self._secrets[name].message

    def _get_secret(self, request: types.GetSecretRequest) -> types.Secret:
        return self._secret(request.name).message

    def _delete_secret(self, request: types.DeleteSecretRequest) -> empty_pb2.Empty:
        self._secret(request.name)
        del self._secrets[request.name]
        return empty_pb2.Empty()

    def _add_version(self, request: types.AddSecretVersionRequest) -> types.SecretVersion:
        versions = self._secret(request.parent).versions
        data = bytes(request.payload.data)
        if len(data) > MAX_PAYLOAD:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Secret payload data exceeds the limit of 64 KiB.")
        checksum_given = "data_crc32c" in request.payload
        if checksum_given and request.payload.data_crc32c != crc32c(data):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Checksum mismatch: data_crc32c does not match the data."
            )
        # Numbers keep growing even past destroyed versions, as in the real service.
        version = _Version(len(versions) + 1, State.ENABLED, data, datetime.now(UTC), checksum_given)
        versions.append(version)
        return self._version_message(request.parent, version)

    def _get_version(self, request: types.GetSecretVersionRequest) -> types.SecretVersion:
        return self._version_message(*self._version(request.name))

    def _access(self, request: types.AccessSecretVersionRequest) -> types.AccessSecretVersionResponse:
        secret, version = self._version(request.name)
        name = f"{secret}/versions/{version.number}"  # ``latest`` answers with the resolved name
        if version.state != State.ENABLED or version.payload is None:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Secret Version [{name}] is in {version.state.name} state.",
            )
        return types.AccessSecretVersionResponse(
            name=name, payload=types.SecretPayload(data=version.payload, data_crc32c=crc32c(version.payload))
        )

    def _list_versions(self, request: types.ListSecretVersionsRequest) -> types.ListSecretVersionsResponse:
        versions = self._secret(request.parent).versions
        wanted = self._parse_filter(request.filter)
        rows = [v for v in reversed(versions) if wanted is None or v.state in wanted]  # newest first
        try:
            start = int(request.page_token or "0")
        except ValueError:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Invalid page token.") from None
        size = request.page_size or self.page_size or len(rows) or 1
        page = rows[start : start + size]
        more = start + size < len(rows)
        return types.ListSecretVersionsResponse(
            versions=[self._version_message(request.parent, v) for v in page],
            next_page_token=str(start + size) if more else "",
            total_size=len(rows),
        )

    @staticmethod
    def _parse_filter(text: str) -> set[Any] | None:
        """``state:ENABLED``, ``state:ENABLED OR state:DISABLED``; anything else is refused, so a caller
        cannot pass tests with a filter the fake would silently ignore."""
        if not text.strip():
            return None
        wanted = set()
        for term in text.split(" OR "):
            match = _FILTER_TERM.match(term.strip())
            if not match or match.group(1) not in State.__members__:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"Unsupported filter (fake): {text!r}")
            wanted.add(State[match.group(1)])
        return wanted

    def _state_change(self, target: Any) -> Callable[[Any], types.SecretVersion]:
        def change(request: Any) -> types.SecretVersion:
            secret, version = self._version(request.name)
            if version.state == State.DESTROYED:
                # A destroyed version can be neither revived nor destroyed again.
                raise _Abort(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Secret Version [{secret}/versions/{version.number}] is in DESTROYED state.",
                )
            version.state = target
            if target == State.DESTROYED:
                version.payload = None
                version.destroyed = datetime.now(UTC)
            return self._version_message(secret, version)

        return change


@pytest.fixture(scope="session")
def _secretmanager_server() -> Iterator[SecretManagerFake]:
    """One gRPC server per session (starting one costs little, but sessions have many tests)."""
    with SecretManagerFake() as fake:
        yield fake


@pytest.fixture
def secretmanager_fake(_secretmanager_server: SecretManagerFake) -> Iterator[SecretManagerFake]:
    """The fake with no secrets, faults or calls; gives ``endpoint``, ``project`` and ``create_secret``."""
    _secretmanager_server.reset()
    yield _secretmanager_server
    _secretmanager_server.reset()  # a failed test must not leave faults for the next module's tests
