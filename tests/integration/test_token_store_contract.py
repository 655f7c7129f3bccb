"""One contract for both TokenStore adapters: the 0600 file and Secret Manager (fake, real client over gRPC)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from calsync.store import StoreError, TokenStore
from calsync.tokens_file import FileTokenStore
from calsync.tokens_secretmanager import SecretManagerTokenStore
from tests.fakes.secretmanager import SecretManagerFake

TOKEN = "1//0g-refresh-token-for-tests-ABCDEFGH"


def sm_store(fake: SecretManagerFake, secret_id: str = "refresh-token") -> SecretManagerTokenStore:
    return SecretManagerTokenStore(
        fake.create_secret(secret_id), endpoint=fake.endpoint, sleep=lambda _: None
    )


@pytest.fixture(params=["file", pytest.param("secretmanager", marks=pytest.mark.secretmanager)])
def tokens(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TokenStore]:
    if request.param == "file":
        yield FileTokenStore(tmp_path / "state" / "refresh_token")
    else:
        yield sm_store(request.getfixturevalue("secretmanager_fake"))


def test_empty_then_put_get_replace_delete(tokens: TokenStore) -> None:
    assert tokens.get() is None
    tokens.put(TOKEN)
    assert tokens.get() == TOKEN
    tokens.put(TOKEN + "-2")
    assert tokens.get() == TOKEN + "-2"
    tokens.delete()
    assert tokens.get() is None
    tokens.delete()  # deleting nothing is fine


def test_connections_are_independent(tokens: TokenStore) -> None:
    tokens.put("token-of-default-123")
    tokens.put("token-of-staff-2-456", "staff-2")
    assert tokens.get() == "token-of-default-123" and tokens.get("staff-2") == "token-of-staff-2-456"
    tokens.delete("staff-2")
    assert tokens.get() == "token-of-default-123" and tokens.get("staff-2") is None


def test_file_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "state" / "refresh_token")
    store.put(TOKEN)
    assert (tmp_path / "state" / "refresh_token").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


def test_corrupt_file_is_a_store_error_that_does_not_echo_it(tmp_path: Path) -> None:
    path = tmp_path / "refresh_token"
    path.write_text("1//0g-half-written-token-ZZZ")
    with pytest.raises(StoreError) as caught:
        FileTokenStore(path).get()
    assert "corrupt" in str(caught.value) and "ZZZ" not in str(caught.value)


@pytest.mark.secretmanager
def test_a_new_token_destroys_the_older_versions(secretmanager_fake: SecretManagerFake) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN + "-1")
    store.put(TOKEN + "-2")
    versions = secretmanager_fake.versions("projects/calsync-test/secrets/refresh-token")
    assert [(n, state) for n, state, _ in versions] == [(1, "DESTROYED"), (2, "ENABLED")]
    assert versions[0][2] is None  # the old token's bytes are gone
    store.delete()
    assert [s for _, s, _ in secretmanager_fake.versions("projects/calsync-test/secrets/refresh-token")] == [
        "DESTROYED"
    ] * 2
    assert store.get() is None


@pytest.mark.secretmanager
def test_a_missing_secret_is_created_on_put(secretmanager_fake: SecretManagerFake) -> None:
    store = SecretManagerTokenStore(
        "projects/calsync-test/secrets/new-one", endpoint=secretmanager_fake.endpoint
    )
    assert store.get() is None
    store.put(TOKEN)
    assert store.get() == TOKEN


@pytest.mark.secretmanager
def test_unavailable_is_retried_and_persistent_failure_is_a_store_error(
    secretmanager_fake: SecretManagerFake, caplog: pytest.LogCaptureFixture
) -> None:
    store = sm_store(secretmanager_fake)
    store.put(TOKEN)
    secretmanager_fake.fail_next(1, grpc.StatusCode.UNAVAILABLE)
    assert store.get() == TOKEN
    secretmanager_fake.fail_next(50, grpc.StatusCode.UNAVAILABLE)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StoreError) as caught:
        store.put(TOKEN + "-new")
    assert TOKEN not in str(caught.value) and TOKEN not in caplog.text
    secretmanager_fake.reset()
