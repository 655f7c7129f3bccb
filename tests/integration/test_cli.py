"""The ``calsync`` command as cron and people run it, in its own process, against a real Directus 12."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from calsync.state.tokens_file import FileTokenStore
from tests.integration.test_local_server import run_calsync as calsync
from tests.parts.directus import ADMIN_TOKEN, CONNECT_KEY, UNREACHABLE, WEBHOOK_SECRET, DirectusServer

pytestmark = pytest.mark.directus


def setup_env(server: DirectusServer) -> dict[str, str]:
    """What the session's Directus was set up with, so running setup again changes nothing."""
    return {
        "DIRECTUS_URL": server.url,
        "DIRECTUS_ADMIN_TOKEN": ADMIN_TOKEN,
        "BOOKING_HOOK_URL": UNREACHABLE,
        "OAUTH_CALLBACK_URL": UNREACHABLE,
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CONNECT_KEY": CONNECT_KEY,
        "ON_GOOGLE_DELETE": "delete",
    }


def user_id(server: DirectusServer, token: str) -> str | None:
    answer = requests.get(f"{server.url}/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return answer.json()["data"]["id"] if answer.ok else None


def test_setup_again_says_so_in_one_line_and_ends_with_the_next_steps(
    directus_bookings: DirectusServer, tmp_path: Path
) -> None:
    result = calsync(tmp_path, "directus", "setup", **setup_env(directus_bookings))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == f"Directus at {directus_bookings.url} is ready: nothing to change (" + lines[0].split("(", 1)[1]
    )
    assert not any("unchanged" in line for line in lines)
    next_steps = result.stdout[result.stdout.index("Next:") :]
    assert "DIRECTUS_TOKEN" in next_steps and "--reissue-token" in next_steps
    assert f"{UNREACHABLE}/start?link=" in next_steps


def test_reissue_token_replaces_a_lost_token_and_prints_it_once(
    directus_bookings: DirectusServer, tmp_path: Path
) -> None:
    old = directus_bookings.sync_token
    result = calsync(tmp_path, "directus", "setup", "--reissue-token", **setup_env(directus_bookings))
    assert result.returncode == 0, result.stderr
    new = result.stdout.split("DIRECTUS_TOKEN=", 1)[1].split()[0]
    directus_bookings.sync_token = new  # the session's other tests use the sync user's token
    assert new != old and user_id(directus_bookings, new) == directus_bookings.sync_user_id
    assert user_id(directus_bookings, old) is None, "the lost token must stop working"
    assert "updated            sync service user  (new token)" in result.stdout
    again = calsync(tmp_path, "directus", "setup", **setup_env(directus_bookings))
    assert new not in again.stdout


def sync_env(server: DirectusServer, token: str) -> dict[str, str]:
    return {
        "DIRECTUS_URL": server.url,
        "DIRECTUS_TOKEN": token,
        "GOOGLE_CLIENT_ID": "client",
        "GOOGLE_CLIENT_SECRET": "client-secret",
    }


def test_sync_warns_when_directus_token_has_admin_rights(
    directus_bookings: DirectusServer, tmp_path: Path
) -> None:
    """Directus 12 keeps admin access on policies (the user's own and its role's): checked for real."""
    as_admin = calsync(tmp_path, "sync", **sync_env(directus_bookings, ADMIN_TOKEN))
    assert as_admin.returncode == 3, as_admin.stderr  # nothing connected yet: exit 3, with a hint
    assert "DIRECTUS_TOKEN has admin rights" in as_admin.stderr
    assert "hint: open the Connect link" in as_admin.stderr and "Traceback" not in as_admin.stderr
    as_sync_user = calsync(tmp_path, "sync", **sync_env(directus_bookings, directus_bookings.sync_token))
    assert as_sync_user.returncode == 3, as_sync_user.stderr
    assert "admin rights" not in as_sync_user.stderr


def test_a_refused_token_is_a_sync_error_for_cron(directus_bookings: DirectusServer, tmp_path: Path) -> None:
    """A cycle Directus refuses ends with exit 4 and one line, and progress is JSON lines when not a
    terminal (cron)."""
    state = tmp_path / ".calsync"
    state.mkdir()
    FileTokenStore(state / "refresh_token").put("1//a-refresh-token-google-never-issued")
    nowhere = "http://127.0.0.1:9/"  # nothing leaves the machine, whichever side the cycle calls first
    env = sync_env(directus_bookings, "not-a-token-directus-knows")
    result = calsync(tmp_path, "sync", GOOGLE_API_ROOT=nowhere, GOOGLE_TOKEN_URI=nowhere, **env)
    assert result.returncode == 4, result.stderr
    assert "calsync: sync error" in result.stderr and "Traceback" not in result.stderr
    progress = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(line["message"] == "sync cycle started" for line in progress)
    assert json.loads(result.stdout)["status"] == "error", result.stdout
    assert "hint: check DIRECTUS_TOKEN" in result.stderr


def test_status_exit_code_says_whether_it_is_connected(tmp_path: Path) -> None:
    result = calsync(tmp_path, "status", TIMEZONE="Atlantis/Capital")
    assert result.returncode == 3 and json.loads(result.stdout)["state"] == "not_connected"
    assert "ignoring TIMEZONE" in result.stderr
