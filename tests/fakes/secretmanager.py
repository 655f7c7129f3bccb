"""An in-memory Secret Manager served over gRPC, the production transport, for the real client library.

The library ships no servicer classes, so the handlers are registered generically with the library's own
request and response types doing the (de)serialisation: what crosses the wire is what Google's would carry.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.cloud.secretmanager_v1 import types
from google.protobuf import timestamp_pb2

from calsync.tokens_secretmanager import crc32c

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"
State = types.SecretVersion.State


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class _Version:
    number: int
    state: Any
    payload: bytes | None
    created: timestamp_pb2.Timestamp


class SecretManagerFake:
    """Secrets and versions in memory; thread-safe; faults and a call log for tests."""

    def __init__(self, project: str = "calsync-test") -> None:
        self.project = project
        self._lock = threading.Lock()
        self._secrets: dict[str, list[_Version]] = {}
        self._faults: list[tuple[int, grpc.StatusCode]] = []
        self.calls: list[str] = []
        self._server: grpc.Server | None = None
        self.port = 0

    # -- server ---------------------------------------------------------------------------------------
    def start(self) -> SecretManagerFake:
        handlers = {
            "CreateSecret": (self._create_secret, types.CreateSecretRequest, types.Secret),
            "GetSecret": (self._get_secret, types.GetSecretRequest, types.Secret),
            "DeleteSecret": (self._delete_secret, types.DeleteSecretRequest, None),
            "AddSecretVersion": (self._add_version, types.AddSecretVersionRequest, types.SecretVersion),
            "AccessSecretVersion": (
                self._access,
                types.AccessSecretVersionRequest,
                types.AccessSecretVersionResponse,
            ),
            "GetSecretVersion": (self._get_version, types.GetSecretVersionRequest, types.SecretVersion),
            "ListSecretVersions": (
                self._list_versions,
                types.ListSecretVersionsRequest,
                types.ListSecretVersionsResponse,
            ),
            "DisableSecretVersion": (
                self._state_setter(State.DISABLED),
                types.DisableSecretVersionRequest,
                types.SecretVersion,
            ),
            "EnableSecretVersion": (
                self._state_setter(State.ENABLED),
                types.EnableSecretVersionRequest,
                types.SecretVersion,
            ),
            "DestroySecretVersion": (
                self._state_setter(State.DESTROYED),
                types.DestroySecretVersionRequest,
                types.SecretVersion,
            ),
        }
        rpc = {name: self._handler(name, fn, req, resp) for name, (fn, req, resp) in handlers.items()}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, rpc),))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _handler(self, name: str, fn: Callable[[Any], Any], request_type: Any, response_type: Any) -> Any:
        from google.protobuf import empty_pb2

        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls.append(name)
                if self._faults:
                    count, code = self._faults[0]
                    self._faults[0] = (count - 1, code)
                    if count - 1 <= 0:
                        self._faults.pop(0)
                    context.abort(code, f"injected {code.name}")
                try:
                    return fn(request)
                except _Abort as exc:
                    context.abort(exc.code, exc.message)

        serializer = (
            response_type.serialize if response_type is not None else empty_pb2.Empty.SerializeToString
        )
        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=request_type.deserialize, response_serializer=serializer
        )

    # -- test controls --------------------------------------------------------------------------------
    def reset(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._faults.clear()
            self.calls.clear()

    def fail_next(self, n: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        with self._lock:
            self._faults.append((n, code))

    def create_secret(self, secret_id: str) -> str:
        name = f"projects/{self.project}/secrets/{secret_id}"
        with self._lock:
            self._secrets.setdefault(name, [])
        return name

    def versions(self, secret: str) -> list[tuple[int, str, bytes | None]]:
        """(number, state name, payload or None) of every version, oldest first."""
        with self._lock:
            return [(v.number, State(v.state).name, v.payload) for v in self._secrets.get(secret, [])]

    # -- the API --------------------------------------------------------------------------------------
    @staticmethod
    def _now() -> timestamp_pb2.Timestamp:
        stamp = timestamp_pb2.Timestamp()
        stamp.GetCurrentTime()
        return stamp

    def _secret(self, name: str) -> list[_Version]:
        if name not in self._secrets:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{name}] not found or has no versions.")
        return self._secrets[name]

    def _version(self, name: str) -> tuple[str, _Version]:
        secret, _, number = name.partition("/versions/")
        versions = self._secret(secret)
        if not versions:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret [{secret}] not found or has no versions.")
        if number == "latest":
            return secret, versions[-1]
        for version in versions:
            if str(version.number) == number:
                return secret, version
        raise _Abort(grpc.StatusCode.NOT_FOUND, f"Secret Version [{name}] not found.")

    def _as_message(self, secret: str, version: _Version) -> types.SecretVersion:
        return types.SecretVersion(name=f"{secret}/versions/{version.number}", state=version.state,
                                   create_time=version.created)  # fmt: skip

    def _create_secret(self, request: types.CreateSecretRequest) -> types.Secret:
        name = f"{request.parent}/secrets/{request.secret_id}"
        if name in self._secrets:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"Secret [{name}] already exists.")
        self._secrets[name] = []
        return types.Secret(name=name, replication=request.secret.replication, create_time=self._now())

    def _get_secret(self, request: types.GetSecretRequest) -> types.Secret:
        self._secret(request.name)
        return types.Secret(name=request.name)

    def _delete_secret(self, request: types.DeleteSecretRequest) -> None:
        self._secret(request.name)
        del self._secrets[request.name]

    def _add_version(self, request: types.AddSecretVersionRequest) -> types.SecretVersion:
        versions = self._secret(request.parent)
        data = request.payload.data
        if "data_crc32c" in request.payload and request.payload.data_crc32c != crc32c(data):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT, "Checksum mismatch: data_crc32c does not match the data."
            )
        version = _Version(len(versions) + 1, State.ENABLED, bytes(data), self._now())
        versions.append(version)
        return self._as_message(request.parent, version)

    def _access(self, request: types.AccessSecretVersionRequest) -> types.AccessSecretVersionResponse:
        secret, version = self._version(request.name)
        if version.state != State.ENABLED:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"{secret}/versions/{version.number} is in {State(version.state).name} state.")  # fmt: skip
        assert version.payload is not None
        return types.AccessSecretVersionResponse(
            name=f"{secret}/versions/{version.number}",
            payload=types.SecretPayload(data=version.payload, data_crc32c=crc32c(version.payload)),
        )

    def _get_version(self, request: types.GetSecretVersionRequest) -> types.SecretVersion:
        secret, version = self._version(request.name)
        return self._as_message(secret, version)

    def _list_versions(self, request: types.ListSecretVersionsRequest) -> types.ListSecretVersionsResponse:
        versions = self._secret(request.parent)
        wanted = None
        if request.filter:
            text = request.filter.replace("state:", "").strip("() ")
            wanted = {State[part.strip()] for part in text.split("OR")}
        rows = [
            self._as_message(request.parent, v)
            for v in reversed(versions)
            if wanted is None or v.state in wanted
        ]
        return types.ListSecretVersionsResponse(versions=rows, total_size=len(rows))

    def _state_setter(self, state: Any) -> Callable[[Any], types.SecretVersion]:
        def set_state(request: Any) -> types.SecretVersion:
            secret, version = self._version(request.name)
            if version.state == State.DESTROYED and state != State.DESTROYED:
                raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.name} is in DESTROYED state.")
            version.state = state
            if state == State.DESTROYED:
                version.payload = None
            return self._as_message(secret, version)

        return set_state


@pytest.fixture(scope="session")
def _secretmanager_server() -> Iterator[SecretManagerFake]:
    fake = SecretManagerFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def secretmanager_fake(_secretmanager_server: SecretManagerFake) -> SecretManagerFake:
    _secretmanager_server.reset()
    return _secretmanager_server
