"""`calsync serve` on a fresh directory: starts with nothing configured, answers on all three prefixes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from calsync.state.sqlite import SqliteSyncStore
from calsync.state.store import DEFAULT_CONNECTION
from calsync.state.tokens_file import FileTokenStore
from calsync.sync.connection import mark_connected
from tests.fakes.google import GoogleFake
from tests.parts.directus import DirectusServer
from tests.parts.processes import free_port
from tests.parts.product import ACCOUNT

CALSYNC = [sys.executable, "-m", "calsync.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "SYSTEMROOT")
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


def start_serving(directory: Path, **env: str) -> tuple[str, subprocess.Popen[str]]:
    """``calsync serve`` in ``directory`` with only ``env`` set, answering HTTP."""
    port = free_port()
    proc = subprocess.Popen(
        [*CALSYNC, "serve", "--port", str(port)],
        cwd=directory,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(base + "/", timeout=1)
            break
        except requests.ConnectionError:
            if proc.poll() is not None:
                pytest.fail(f"calsync serve exited: {proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.1)
    return base, proc


def run_calsync(cwd: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    """``calsync ARGS`` in ``cwd`` with only ``env`` set, to its end."""
    return subprocess.run(
        [*CALSYNC, *args], cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip


def serve_expecting_exit(
    directory: Path, port: int | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """``calsync serve`` that is expected to stop at start: its exit code and output."""
    return run_calsync(directory, "serve", "--port", str(port or free_port()), timeout=30, **env)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    base, proc = start_serving(tmp_path)
    yield base, proc
    proc.terminate()
    proc.wait(timeout=10)


def test_serves_all_three_functions_with_generated_local_secrets(
    served: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    base, proc = served
    unauthenticated = requests.post(base + "/booking_hook/", json={}, timeout=5)
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["Content-Type"] == "application/json"
    local = dict(
        line.split("=", 1)
        for line in (tmp_path / ".calsync/local.env").read_text().splitlines()
        if "=" in line
    )
    assert (tmp_path / ".calsync/local.env").stat().st_mode & 0o777 == 0o600
    hook = requests.post(
        base + "/booking_hook/",
        json={},
        headers={"Authorization": f"Bearer {local['WEBHOOK_SECRET']}"},
        timeout=5,
    )
    assert hook.status_code == 503 and "DIRECTUS_URL" in hook.json()["missing"]
    status = requests.get(base + "/oauth_callback/status", params={"key": local["CONNECT_KEY"]}, timeout=5)
    assert status.status_code == 200 and status.json()["state"] == "not_connected"
    importer = requests.post(base + "/calendar_import/", timeout=5)
    assert importer.status_code == 503 and "GOOGLE_CLIENT_ID" in importer.json()["missing"]
    assert requests.get(base + "/elsewhere", timeout=5).status_code == 404
    connect = f"{base}/oauth_callback/start?key={local['CONNECT_KEY']}"
    started = requests.get(connect, allow_redirects=False, timeout=5)
    assert started.status_code == 503 and "GOOGLE_CLIENT_ID" in started.json()["missing"]  # the key passed
    proc.terminate()
    banner = proc.communicate(timeout=10)[0]
    assert "/booking_hook/" in banner and local["WEBHOOK_SECRET"] in banner
    assert f"connect a Google account: open {connect}" in banner
    assert "still to configure for a working sync, in the environment or in .calsync/local.env" in banner
    assert f"--booking-hook-url {base}/booking_hook/ --oauth-callback-url {base}/oauth_callback" in banner


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (
            lambda d: (
                (d / ".calsync").mkdir() or (d / ".calsync/local.env").write_text("not a setting line\n")
            ),
            "local.env:1",
        ),
        (
            lambda d: (
                (d / ".calsync").mkdir() or (d / ".calsync/state.sqlite3").write_bytes(b"garbage" * 500)
            ),
            "state.sqlite3",
        ),
    ],
    ids=["corrupt-local-settings", "corrupt-state-database"],
)
def test_bad_local_state_fails_at_start_with_a_clear_message(
    tmp_path: Path, setup: object, expected: str
) -> None:
    setup(tmp_path)  # type: ignore[operator]
    result = serve_expecting_exit(tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_malformed_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    result = serve_expecting_exit(tmp_path, TIMEZONE="Atlantis/Capital", WEBHOOK_SECRET="given-secret-value")
    assert result.returncode == 2
    assert "calsync: invalid settings: TIMEZONE: unknown time zone 'Atlantis/Capital'" in result.stderr
    assert "Value error" not in result.stderr and "Traceback" not in result.stderr
    assert "given-secret-value" not in result.stderr


@pytest.mark.directus
@pytest.mark.google
def test_the_local_server_syncs_by_itself_on_its_interval(
    google_fake: GoogleFake, directus_bookings: DirectusServer, tmp_path: Path
) -> None:
    """No POST to /calendar_import/: an event made in Google shows up in Directus within a few ticks, and a
    tick that fails (Directus refuses the token) is logged while the server goes on answering."""
    state = tmp_path / ".calsync"
    state.mkdir()
    FileTokenStore(state / "refresh_token").put(google_fake.issue_refresh_token(ACCOUNT))
    store = SqliteSyncStore(state / "state.sqlite3")
    mark_connected(store, DEFAULT_CONNECTION, ACCOUNT, ["https://www.googleapis.com/auth/calendar.events"])
    store.close()
    env = {
        "DIRECTUS_URL": directus_bookings.url,
        "DIRECTUS_TOKEN": directus_bookings.sync_token,
        "GOOGLE_CLIENT_ID": google_fake.client_id,
        "GOOGLE_CLIENT_SECRET": google_fake.client_secret,
        "GOOGLE_API_ROOT": google_fake.api_root,
        "GOOGLE_AUTH_URI": google_fake.auth_uri,
        "GOOGLE_TOKEN_URI": google_fake.token_uri,
        "GOOGLE_REVOKE_URI": google_fake.revoke_uri,
        "ALLOWED_GOOGLE_ACCOUNTS": "any",
        "SYNC_INTERVAL_SECONDS": "0.5",
    }
    google_fake.create_event("Made on the phone", datetime.now(UTC) + timedelta(days=1))
    base, proc = start_serving(tmp_path, **env)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            titles = [
                row["title"] for row in directus_bookings.admin("GET", "/items/bookings").json()["data"]
            ]
            if "Made on the phone" in titles:
                break
            time.sleep(0.3)
        else:
            pytest.fail("no cycle imported the event")
        assert requests.get(base + "/elsewhere", timeout=5).status_code == 404
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "sync cycle finished" in output and "Traceback" not in output

    failing = tmp_path / "failing"
    (failing / ".calsync").mkdir(parents=True)
    FileTokenStore(failing / ".calsync/refresh_token").put(google_fake.issue_refresh_token(ACCOUNT))
    base, proc = start_serving(failing, **{**env, "DIRECTUS_TOKEN": "not-a-token-directus-knows"})
    try:
        time.sleep(2)  # a few ticks, each refused by Directus
        assert proc.poll() is None and requests.get(base + "/elsewhere", timeout=5).status_code == 404
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert "Traceback" not in output and "not-a-token-directus-knows" not in output
    assert '"severity": "WARNING"' in output or '"severity": "ERROR"' in output


def test_a_port_in_use_is_a_configuration_error_with_a_hint(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = serve_expecting_exit(tmp_path, taken.getsockname()[1])
    assert result.returncode == 2 and "--port" in result.stderr and "Traceback" not in result.stderr
