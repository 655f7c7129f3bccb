"""Local secrets and state are readable by their owner only, whatever the umask leaves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from calsync.local_settings import ensure_local_settings
from calsync.state.sqlite import SqliteSyncStore


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_state_database_and_its_wal_files_are_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "state" / "state.sqlite3"
    store = SqliteSyncStore(path)
    store.enqueue("default", "bookings", "1", "upsert")  # a write: -wal and -shm exist now
    try:
        for name in ("state.sqlite3", "state.sqlite3-wal", "state.sqlite3-shm"):
            assert mode(path.parent / name) == 0o600, name
        assert mode(path.parent) == 0o700
    finally:
        store.close()


def test_a_state_database_left_readable_by_an_earlier_version_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    SqliteSyncStore(path).close()
    path.chmod(0o644)
    SqliteSyncStore(path).close()
    assert mode(path) == 0o600


def test_local_settings_never_write_through_a_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("CONNECT_KEY", raising=False)
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours\n")
    settings = tmp_path / ".calsync" / "local.env"
    settings.parent.mkdir()
    settings.with_suffix(".tmp").symlink_to(target)
    values, generated = ensure_local_settings(settings)
    assert generated and target.read_text() == "not yours\n"
    assert mode(settings) == 0o600 and not settings.with_suffix(".tmp").exists()
    assert settings.read_text().count("=") == 2 and values["CONNECT_KEY"] in settings.read_text()
