"""One contract for both TokenStore adapters, then what only one of them can show.

The file store runs in tmp_path; the Secret Manager store runs the real client library over gRPC against the
in-memory fake (tests/fakes/secretmanager.py), so requests, error codes and paging cross a real wire.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud import secretmanager_v1
from google.cloud.secretmanager_v1 import AccessSecretVersionResponse, SecretPayload
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)

from calsync.bootstrap import build_token_store
from calsync.settings import load_settings
from calsync.state import tokens_secretmanager
from calsync.state.memory import MemoryTokenStore
from calsync.state.store import StoreError, TokenStore
from calsync.state.tokens_file import FileTokenStore
from calsync.state.tokens_secretmanager import SecretManagerTokenStore
from tests.fakes import secretmanager as fake_module
from tests.fakes.secretmanager import SecretManagerFake

# Recognisable, and deliberately not shaped like a Google token, so the log formatter's pattern scrubbing
# cannot be what keeps it out of messages.
TOKEN = "calsync-test-token-Zq8Wv-never-leak"
SECRET_ID = "refresh-token"


def sm_store(
    fake: SecretManagerFake, secret_id: str = SECRET_ID, sleeps: list[float] | None = None
) -> SecretManagerTokenStore:
    return SecretManagerTokenStore(
        fake.create_secret(secret_id),
        endpoint=fake.endpoint,
        sleep=(sleeps.append if sleeps is not None else lambda _: None),
    )


def client_for(fake: SecretManagerFake) -> secretmanager_v1.SecretManagerServiceClient:
    """A plain client of the fake, to change state behind the store's back as another party would."""
    transport = SecretManagerServiceGrpcTransport(channel=grpc.insecure_channel(fake.endpoint))
    return secretmanager_v1.SecretManagerServiceClient(transport=transport)


# -- the contract -------------------------------------------------------------------------------------------
@pytest.fixture(params=["memory", "file", pytest.param("secretmanager", marks=pytest.mark.secretmanager)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], TokenStore]:
    """Builds store objects over one and the same storage (a second object = a second process)."""
    if request.param == "memory":
        memory = MemoryTokenStore()
        return lambda: memory
    if request.param == "file":
        return lambda: FileTokenStore(tmp_path / "state" / "refresh_token")
    fake: SecretManagerFake = request.getfixturevalue("secretmanager_fake")
    fake.create_secret(SECRET_ID)  # as terraform does
    return lambda: sm_store(fake)


@pytest.fixture
def tokens(make_store: Callable[[], TokenStore]) -> TokenStore:
    return make_store()


def test_an_empty_store_has_no_token(tokens: TokenStore) -> None:
    assert tokens.get() is None
    assert tokens.get("staff-2") is None


def test_put_then_get(tokens: TokenStore) -> None:
    tokens.put(TOKEN)
    assert tokens.get() == TOKEN


def test_the_latest_put_wins(tokens: TokenStore) -> None:
    tokens.put(TOKEN + "-1")
    tokens.put(TOKEN + "-2")
    tokens.put(TOKEN + "-3")
    assert tokens.get() == TOKEN + "-3"


def test_delete_forgets_and_deleting_nothing_is_fine(tokens: TokenStore) -> None:
    tokens.delete()  # nothing stored yet
    tokens.put(TOKEN)
    tokens.delete()
    assert tokens.get() is None
    tokens.delete()
    tokens.put(TOKEN + "-again")  # a reconnect after a disconnect
    assert tokens.get() == TOKEN + "-again"


def test_connections_are_independent(tokens: TokenStore) -> None:
    tokens.put(TOKEN + "-default")
    tokens.put(TOKEN + "-staff", "staff-2")
    assert tokens.get() == TOKEN + "-default"
    assert tokens.get("staff-2") == TOKEN + "-staff"
    tokens.put(TOKEN + "-staff-new", "staff-2")
    assert tokens.get() == TOKEN + "-default"
    tokens.delete("staff-2")
    assert tokens.get("staff-2") is None
    assert tokens.get() == TOKEN + "-default"
    tokens.delete()
    assert tokens.get() is None


def test_several_connections_never_touch_each_other(make_store: Callable[[], TokenStore]) -> None:
    """Staff calendars: one connection's put or delete leaves every other connection's token as it was."""
    tokens = make_store()
    staff = {"default": TOKEN + "-d", "alice": TOKEN + "-a", "bob_2": TOKEN + "-b", "team-x": TOKEN + "-t"}
    for connection, token in staff.items():
        tokens.put(token, connection)
    tokens.put(TOKEN + "-a2", "alice")
    staff["alice"] = TOKEN + "-a2"
    tokens.delete("bob_2")
    del staff["bob_2"]
    tokens.delete("nobody")  # never stored: nothing to forget, nothing else touched
    again = make_store()  # another process sees the same
    seen = {c: again.get(c) for c in ("default", "alice", "bob_2", "team-x", "nobody")}
    assert seen == {**staff, "bob_2": None, "nobody": None}
    tokens.delete()
    assert again.get() is None and again.get("alice") == TOKEN + "-a2" and again.get("team-x") == TOKEN + "-t"


def test_another_store_object_sees_the_same_token(make_store: Callable[[], TokenStore]) -> None:
    make_store().put(TOKEN)
    assert make_store().get() == TOKEN
    make_store().delete()
    assert make_store().get() is None


def test_any_text_survives_the_round_trip(tokens: TokenStore) -> None:
    token = 'tøken/with "quotes" \\ and ✓ 1//0g+='
    tokens.put(token)
    assert tokens.get() == token


# -- the file store -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_file_is_0600_in_a_0700_folder_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        FileTokenStore(tmp_path / "state" / "refresh_token").put(TOKEN)
    finally:
        os.umask(old)
    assert (tmp_path / "state" / "refresh_token").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert json.loads((tmp_path / "state" / "refresh_token").read_text()) == {"default": TOKEN}


def test_the_file_is_created_private_never_widened_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No window: the bytes are written only into a file that was born 0600 and exclusively ours."""
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, mode: int = 0o777, **kwargs: object) -> int:
        if "refresh_token" in str(path):
            opened.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)  # the worst case: nothing filtered
    try:
        FileTokenStore(tmp_path / "refresh_token").put(TOKEN)
    finally:
        os.umask(old)
    [(path, flags, mode)] = opened
    assert Path(path).parent == tmp_path and Path(path).name != "refresh_token"  # a temp file, same folder
    assert flags & os.O_CREAT and flags & os.O_EXCL and mode == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refresh_token"]  # the temp file was renamed


def test_an_existing_folder_is_left_alone_and_a_wide_file_is_narrowed(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    path = tmp_path / "refresh_token"
    path.write_text("{}")
    path.chmod(0o644)
    FileTokenStore(path).put(TOKEN)
    assert path.stat().st_mode & 0o777 == 0o600
    assert tmp_path.stat().st_mode & 0o777 == 0o755  # may be someone's working directory


@pytest.mark.parametrize(
    "content",
    [TOKEN, '{"default": ', json.dumps([TOKEN]), json.dumps({"default": 42}), b"\xff\xfe" + TOKEN.encode()],
    ids=["bare token", "truncated", "list", "not a string", "not utf-8"],
)
def test_a_corrupt_file_is_a_store_error_naming_the_file_not_its_content(
    tmp_path: Path, content: str | bytes
) -> None:
    path = tmp_path / "refresh_token"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = path.read_bytes()
    store = FileTokenStore(path)
    for action in (store.get, lambda: store.put(TOKEN + "-new"), store.delete):
        with pytest.raises(StoreError) as caught:
            action()
        message = str(caught.value)
        assert str(path) in message and "corrupt" in message
        assert TOKEN not in message and "42" not in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert path.read_bytes() == before  # never overwritten: it may hold other connections' tokens


def test_each_connection_has_its_own_private_file_beside_the_default_one(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "state" / "refresh_token")
    store.put(TOKEN)
    store.put(TOKEN + "-alice", "alice")
    folder = tmp_path / "state"
    assert sorted(p.name for p in folder.iterdir()) == ["refresh_token", "refresh_token.alice"]
    assert json.loads((folder / "refresh_token").read_text()) == {"default": TOKEN}  # today's file, unchanged
    assert json.loads((folder / "refresh_token.alice").read_text()) == {"alice": TOKEN + "-alice"}
    assert (folder / "refresh_token.alice").stat().st_mode & 0o777 == 0o600
    store.delete("alice")
    # a removed connection leaves nothing behind
    assert sorted(p.name for p in folder.iterdir()) == ["refresh_token"]
    for bad in ("../escape", ".hidden", "a/b", ""):
        with pytest.raises(StoreError, match="connection id"):
            store.put(TOKEN, bad)
    assert sorted(p.name for p in folder.iterdir()) == ["refresh_token"]


def test_the_first_format_with_several_connections_in_one_file_is_still_read(tmp_path: Path) -> None:
    path = tmp_path / "refresh_token"
    path.write_text(json.dumps({"default": TOKEN, "staff-2": TOKEN + "-staff"}))
    path.chmod(0o600)
    store = FileTokenStore(path)
    assert store.get() == TOKEN and store.get("staff-2") == TOKEN + "-staff"
    store.put(TOKEN + "-staff-new", "staff-2")  # moves to its own file, and out of the shared one
    assert json.loads(path.read_text()) == {"default": TOKEN}
    assert store.get("staff-2") == TOKEN + "-staff-new"
    path.write_text(json.dumps({"default": TOKEN, "old": TOKEN + "-old"}))
    store.delete("old")
    assert store.get("old") is None and json.loads(path.read_text()) == {"default": TOKEN}


def test_a_damaged_file_harms_only_its_own_connection(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "refresh_token")
    store.put(TOKEN + "-alice", "alice")
    (tmp_path / "refresh_token").write_text("{damaged")
    assert store.get("alice") == TOKEN + "-alice"
    store.put(TOKEN + "-bob", "bob")
    store.delete("alice")
    assert store.get("bob") == TOKEN + "-bob"
    with pytest.raises(StoreError, match="corrupt"):
        store.get()
    assert (tmp_path / "refresh_token").read_text() == "{damaged"  # left for its owner to look at


def test_an_empty_file_holds_no_token(tmp_path: Path) -> None:
    (tmp_path / "refresh_token").touch()
    assert FileTokenStore(tmp_path / "refresh_token").get() is None


def test_an_unreadable_path_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "refresh_token").mkdir()  # a directory where the file should be
    with pytest.raises(StoreError, match="refresh_token"):
        FileTokenStore(tmp_path / "refresh_token").get()


# -- the Secret Manager store -------------------------------------------------------------------------------


@pytest.mark.secretmanager
def test_a_put_leaves_one_enabled_version_and_destroys_the_older_ones(
    secretmanager_fake: SecretManagerFake,
) -> None:
    store = sm_store(secretmanager_fake)
    for n in (1, 2, 3):
        store.put(f"{TOKEN}-{n}")
    assert secretmanager_fake.versions(SECRET_ID) == [
        (1, "DESTROYED", None),  # the payload is gone, not merely hidden
        (2, "DESTROYED", None),
        (3, "ENABLED", f"{TOKEN}-3".encode()),
    ]
    # Disabled before destroyed, so an old token is unreadable even if a destroy fails.
    retiring = {"DisableSecretVersion", "DestroySecretVersion"}
    retire = [
        (c.method, c.resource.rpartition("/")[2]) for c in secretmanager_fake.calls if c.method in retiring
    ]
    assert retire == [
        ("DisableSecretVersion", "1"), ("DestroySecretVersion", "1"),
        ("DisableSecretVersion", "2"), ("DestroySecretVersion", "2"),
    ]  # fmt: skip


@pytest.mark.secretmanager
def test_delete_destroys_every_version(secretmanager_fake: SecretManagerFake) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN + "-1")
    store.put(TOKEN + "-2")
    store.delete()
    assert secretmanager_fake.versions(SECRET_ID) == [(1, "DESTROYED", None), (2, "DESTROYED", None)]
    assert store.get() is None


@pytest.mark.secretmanager
@pytest.mark.parametrize("how", ["disable_secret_version", "destroy_secret_version"])
def test_a_disabled_or_destroyed_latest_version_reads_as_no_token(
    secretmanager_fake: SecretManagerFake, how: str
) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN)
    client = client_for(secretmanager_fake)
    getattr(client, how)(request={"name": f"{secretmanager_fake.secret_name(SECRET_ID)}/versions/1"})
    assert store.get() is None
    store.put(TOKEN + "-new")  # a reconnect works from there
    assert store.get() == TOKEN + "-new"


@pytest.mark.secretmanager
def test_a_missing_secret_is_created_on_put_with_automatic_replication(
    secretmanager_fake: SecretManagerFake,
) -> None:
    store = SecretManagerTokenStore(
        secretmanager_fake.secret_name("never-made"), endpoint=secretmanager_fake.endpoint
    )
    assert store.get() is None  # NOT_FOUND is "no token", not an error
    store.delete()  # nor is deleting from a secret that does not exist
    store.put(TOKEN)
    assert store.get() == TOKEN
    secret = client_for(secretmanager_fake).get_secret(name=secretmanager_fake.secret_name("never-made"))
    assert "automatic" in secret.replication


@pytest.mark.secretmanager
def test_other_connections_live_in_secrets_of_their_own(secretmanager_fake: SecretManagerFake) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN)
    store.put(TOKEN + "-staff", "staff-2")
    assert secretmanager_fake.secrets() == [
        secretmanager_fake.secret_name(SECRET_ID),
        secretmanager_fake.secret_name(SECRET_ID + "-staff-2"),
    ]
    with pytest.raises(StoreError, match="connection id"):
        store.put(TOKEN, "not/a secret id")


@pytest.mark.secretmanager
def test_a_connections_put_and_delete_touch_only_its_own_secret(
    secretmanager_fake: SecretManagerFake,
) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN)
    store.put(TOKEN + "-bob", "bob")
    secretmanager_fake.calls.clear()
    store.put(TOKEN + "-alice", "alice")
    store.put(TOKEN + "-alice-2", "alice")
    store.delete("alice")
    created = [c for c in secretmanager_fake.calls if c.method == "CreateSecret"]
    assert len(created) == 1  # on the project: the first put of a new connection makes its secret
    touched = {c.resource.split("/versions/")[0] for c in secretmanager_fake.calls if c not in created}
    assert touched == {secretmanager_fake.secret_name(SECRET_ID + "-alice")}, touched
    assert store.get() == TOKEN and store.get("bob") == TOKEN + "-bob" and store.get("alice") is None
    assert store.secret_for("alice") == secretmanager_fake.secret_name(SECRET_ID) + "-alice"


@pytest.mark.secretmanager
@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_a_transient_failure_is_retried(secretmanager_fake: SecretManagerFake, code: grpc.StatusCode) -> None:
    sleeps: list[float] = []
    store = sm_store(secretmanager_fake, sleeps=sleeps)
    secretmanager_fake.fail_next(1, code, method="AddSecretVersion")
    store.put(TOKEN)
    secretmanager_fake.fail_next(1, code, method="AccessSecretVersion")
    assert store.get() == TOKEN
    outcomes = [(c.method, c.outcome) for c in secretmanager_fake.calls if c.method != "ListSecretVersions"]
    assert outcomes == [
        ("AddSecretVersion", code.name), ("AddSecretVersion", "OK"),
        ("AccessSecretVersion", code.name), ("AccessSecretVersion", "OK"),
    ]  # fmt: skip
    assert len(sleeps) == 2 and all(0 < s <= 2 for s in sleeps)  # our backoff, not the library's real sleeps


@pytest.mark.secretmanager
def test_a_persistent_outage_is_a_store_error_after_bounded_attempts(
    secretmanager_fake: SecretManagerFake,
) -> None:
    store = sm_store(secretmanager_fake)
    secretmanager_fake.fail_next(100, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(StoreError, match="ServiceUnavailable"):
        store.get()
    assert len(secretmanager_fake.calls) == store.attempts == 4


@pytest.mark.secretmanager
def test_other_failures_are_store_errors_at_once(secretmanager_fake: SecretManagerFake) -> None:
    store = sm_store(secretmanager_fake)
    secretmanager_fake.fail_next(1, grpc.StatusCode.PERMISSION_DENIED, message="Permission denied on secret")
    with pytest.raises(StoreError, match=r"PermissionDenied: Permission denied on secret"):
        store.get()
    assert len(secretmanager_fake.calls) == 1  # not retried


@pytest.mark.secretmanager
def test_the_token_never_reaches_an_error_or_a_log_line(
    secretmanager_fake: SecretManagerFake, caplog: pytest.LogCaptureFixture
) -> None:
    """Even a service error that echoes the payload (none should, but a proxy might) is scrubbed."""
    caplog.set_level(logging.DEBUG)
    store = sm_store(secretmanager_fake)
    errors: list[StoreError] = []
    echo = f"cannot store {TOKEN}"

    secretmanager_fake.fail_next(100, grpc.StatusCode.UNAVAILABLE, message=echo)  # retried, then given up
    with pytest.raises(StoreError) as caught:
        store.put(TOKEN)
    errors.append(caught.value)
    secretmanager_fake.reset()
    secretmanager_fake.create_secret(SECRET_ID)
    secretmanager_fake.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, method="AddSecretVersion", message=echo)
    with pytest.raises(StoreError) as caught:
        store.put(TOKEN)
    errors.append(caught.value)
    store.put(TOKEN)
    secretmanager_fake.fail_next(
        1, grpc.StatusCode.PERMISSION_DENIED, method="ListSecretVersions", message=echo
    )
    store.put(TOKEN + "-2")  # stored; retiring the old one failed and was logged
    secretmanager_fake.fail_next(
        1, grpc.StatusCode.PERMISSION_DENIED, method="DestroySecretVersion", message=echo
    )
    with pytest.raises(StoreError) as caught:
        store.delete()
    errors.append(caught.value)
    secretmanager_fake.fail_next(1, grpc.StatusCode.INTERNAL, method="AccessSecretVersion", message=echo)
    with pytest.raises(StoreError) as caught:
        store.get()
    errors.append(caught.value)

    for error in errors:
        assert "[redacted]" in str(error)  # the echo was there, and was scrubbed
        assert TOKEN not in str(error) and TOKEN not in repr(error.args)
        assert error.__cause__ is None and error.__suppress_context__
    assert any("could not retire" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert TOKEN not in repr(record.__dict__), record.getMessage()


@pytest.mark.secretmanager
def test_a_payload_that_is_no_token_is_a_store_error(
    secretmanager_fake: SecretManagerFake, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    store = sm_store(secretmanager_fake)
    secret = secretmanager_fake.create_secret(SECRET_ID)
    client.add_secret_version(parent=secret, payload=SecretPayload(data=b"\xff\xfe binary"))
    with pytest.raises(StoreError, match="UTF-8"):
        store.get()


def test_a_payload_damaged_in_transit_is_refused() -> None:
    """The client library does not check the checksum the service sends back; the store does."""

    class DamagingClient:
        def access_secret_version(self, request: object, **_: object) -> AccessSecretVersionResponse:
            data = TOKEN.encode()
            return AccessSecretVersionResponse(
                name="projects/p/secrets/s/versions/1",
                payload=SecretPayload(data=data[:-1] + b"X", data_crc32c=fake_module.crc32c(data)),
            )

    store = SecretManagerTokenStore("projects/p/secrets/s", client=DamagingClient())
    with pytest.raises(StoreError, match="checksum") as caught:
        store.get()
    assert TOKEN[:-1] not in str(caught.value)


@pytest.mark.secretmanager
def test_a_failed_retirement_keeps_the_new_token_and_the_next_put_cleans_up(
    secretmanager_fake: SecretManagerFake,
) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN + "-1")
    secretmanager_fake.fail_next(1, grpc.StatusCode.PERMISSION_DENIED, method="DestroySecretVersion")
    store.put(TOKEN + "-2")
    assert store.get() == TOKEN + "-2"
    assert [v.state for v in secretmanager_fake.versions(SECRET_ID)] == ["DISABLED", "ENABLED"]
    store.put(TOKEN + "-3")
    assert [v.state for v in secretmanager_fake.versions(SECRET_ID)] == ["DESTROYED", "DESTROYED", "ENABLED"]


@pytest.mark.secretmanager
def test_retiring_walks_every_page(
    secretmanager_fake: SecretManagerFake, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN + "-0")
    secret = secretmanager_fake.secret_name(SECRET_ID)
    for n in range(3):  # live older versions, as a hand-run `gcloud secrets versions add` would leave
        client.add_secret_version(request={"parent": secret, "payload": {"data": f"stray-{n}".encode()}})
    secretmanager_fake.page_size = 1  # one version per page: the store must follow next_page_token
    before = len(secretmanager_fake.calls)
    store.put(TOKEN + "-last")
    assert [v.state for v in secretmanager_fake.versions(SECRET_ID)] == ["DESTROYED"] * 4 + ["ENABLED"]
    pages = [c for c in secretmanager_fake.calls[before:] if c.method == "ListSecretVersions"]
    assert len(pages) == 5  # five live versions, one page each


@pytest.mark.secretmanager
def test_a_put_never_retires_a_version_newer_than_its_own(
    secretmanager_fake: SecretManagerFake, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    """Another instance's put landing between this put's add and its cleanup must survive it (if each put
    destroyed "everything but mine", two racing puts would destroy each other's token)."""
    secret = secretmanager_fake.create_secret(SECRET_ID)

    class Interleaved:
        """The real client, with the other instance's add landing just before the first listing."""

        landed = False

        def __getattr__(self, name: str) -> Any:
            return getattr(client, name)

        def list_secret_versions(self, *args: Any, **kwargs: Any) -> Any:
            if not self.landed:
                self.landed = True
                client.add_secret_version(parent=secret, payload=SecretPayload(data=b"newer-token"))
            return client.list_secret_versions(*args, **kwargs)

    sm_store(secretmanager_fake).put(TOKEN + "-old")
    SecretManagerTokenStore(secret, client=Interleaved()).put(TOKEN + "-mine")
    assert secretmanager_fake.versions(SECRET_ID) == [
        (1, "DESTROYED", None),
        (2, "ENABLED", (TOKEN + "-mine").encode()),  # the other instance's own put retires this one
        (3, "ENABLED", b"newer-token"),
    ]
    assert sm_store(secretmanager_fake).get() == "newer-token"


@pytest.mark.secretmanager
def test_concurrent_puts_leave_exactly_one_readable_token(secretmanager_fake: SecretManagerFake) -> None:
    """Real threads racing (a smoke test: whether they interleave badly is up to the scheduler; the
    deterministic case is the test above)."""
    written = [f"{TOKEN}-{who}-{n}" for who in "ab" for n in range(5)]
    errors: list[BaseException] = []

    def writer(who: str) -> None:
        store = sm_store(secretmanager_fake)
        try:
            for n in range(5):
                store.put(f"{TOKEN}-{who}-{n}")
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(who,)) for who in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    versions = secretmanager_fake.versions(SECRET_ID)
    live = [v for v in versions if v.state == "ENABLED"]
    assert len(live) == 1 and live[0] == versions[-1]  # the newest survived
    assert sm_store(secretmanager_fake).get() in written


@pytest.mark.secretmanager
def test_settings_wire_the_store_to_secret_manager_endpoint(secretmanager_fake: SecretManagerFake) -> None:
    settings = load_settings(
        token_store=f"secretmanager://{secretmanager_fake.secret_name(SECRET_ID)}",
        secret_manager_endpoint=secretmanager_fake.endpoint,
    )
    store = build_token_store(settings)
    assert isinstance(store, SecretManagerTokenStore)
    store.put(TOKEN)
    assert store.get() == TOKEN and secretmanager_fake.versions(SECRET_ID)[-1].payload == TOKEN.encode()


# -- the fake itself: where the contract above leans on it behaving like the service ------------------------
def test_both_crc32c_implementations_agree_with_the_standard_check_value() -> None:
    # RFC 3720 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
    assert tokens_secretmanager.crc32c(b"123456789") == fake_module.crc32c(b"123456789") == 0xE3069283
    assert tokens_secretmanager.crc32c(TOKEN.encode()) == fake_module.crc32c(TOKEN.encode())


@pytest.fixture
def client(secretmanager_fake: SecretManagerFake) -> Iterator[secretmanager_v1.SecretManagerServiceClient]:
    client = client_for(secretmanager_fake)
    yield client
    client.transport.close()  # type: ignore[no-untyped-call]


@pytest.mark.secretmanager
def test_fake_latest_is_the_newest_version_whatever_its_state(
    secretmanager_fake: SecretManagerFake, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    secret = secretmanager_fake.create_secret("s")
    with pytest.raises(gexc.NotFound):
        client.access_secret_version(name=f"{secret}/versions/latest", retry=None)
    client.add_secret_version(parent=secret, payload=SecretPayload(data=b"one"))
    client.add_secret_version(parent=secret, payload=SecretPayload(data=b"two"))
    assert client.access_secret_version(name=f"{secret}/versions/latest").name == f"{secret}/versions/2"
    client.disable_secret_version(name=f"{secret}/versions/2")
    with pytest.raises(gexc.FailedPrecondition, match=r"versions/2\] is in DISABLED state\."):
        client.access_secret_version(name=f"{secret}/versions/latest", retry=None)
    assert client.access_secret_version(name=f"{secret}/versions/1").payload.data == b"one"
    client.enable_secret_version(name=f"{secret}/versions/2")
    client.destroy_secret_version(name=f"{secret}/versions/2")
    with pytest.raises(gexc.FailedPrecondition, match="DESTROYED"):
        client.enable_secret_version(name=f"{secret}/versions/2")
    with pytest.raises(gexc.NotFound):
        client.access_secret_version(name=f"{secret}/versions/9", retry=None)
    enabled = client.list_secret_versions(request={"parent": secret, "filter": "state:ENABLED"})
    assert [v.name for v in enabled] == [f"{secret}/versions/1"]
    every = client.list_secret_versions(request={"parent": secret})
    assert [(v.name[-1], v.state.name, bool(v.destroy_time)) for v in every] == [
        ("2", "DESTROYED", True), ("1", "ENABLED", False),
    ]  # fmt: skip
    with pytest.raises(gexc.InvalidArgument):
        list(client.list_secret_versions(request={"parent": secret, "filter": "labels.x:y"}, retry=None))


@pytest.mark.secretmanager
def test_fake_checks_names_checksums_and_duplicates(
    secretmanager_fake: SecretManagerFake, client: secretmanager_v1.SecretManagerServiceClient
) -> None:
    project = f"projects/{secretmanager_fake.project}"
    created = client.create_secret(
        request={"parent": project, "secret_id": "s", "secret": {"replication": {"automatic": {}}}}
    )
    assert created.name == f"{project}/secrets/s" and created.create_time
    with pytest.raises(gexc.AlreadyExists):
        client.create_secret(
            request={"parent": project, "secret_id": "s", "secret": {"replication": {"automatic": {}}}}
        )
    with pytest.raises(gexc.InvalidArgument):
        client.create_secret(request={"parent": project, "secret_id": "no/slash", "secret": {}})
    with pytest.raises(gexc.InvalidArgument, match="Checksum"):
        client.add_secret_version(parent=created.name, payload=SecretPayload(data=b"x", data_crc32c=1))
    version = client.add_secret_version(
        parent=created.name, payload=SecretPayload(data=b"x", data_crc32c=fake_module.crc32c(b"x"))
    )
    assert version.name == f"{project}/secrets/s/versions/1" and version.client_specified_payload_checksum
    with pytest.raises(gexc.NotFound):
        client.add_secret_version(parent=f"{project}/secrets/other", payload=SecretPayload(data=b"x"))
    client.delete_secret(name=created.name)
    with pytest.raises(gexc.NotFound):
        client.get_secret(name=created.name)
