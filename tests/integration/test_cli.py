"""The ``calsync`` command as cron and people run it, in its own process, against a real Directus 12."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.integration.test_local_server import clean_env
from tests.parts.directus import ADMIN_TOKEN, CONNECT_KEY, UNREACHABLE, WEBHOOK_SECRET, DirectusServer

pytestmark = pytest.mark.directus

CALSYNC = [sys.executable, "-m", "calsync.cli"]


def calsync(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CALSYNC, *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
