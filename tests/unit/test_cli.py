"""The ``calsync`` command in-process: one settings source for every command, what ``serve`` prints."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from calsync import cli
from calsync.settings import load_settings
from calsync.web.server import LocalRun, banner

SETTING_NAMES = (
    "DIRECTUS_URL", "DIRECTUS_TOKEN", "DIRECTUS_ADMIN_TOKEN", "DIRECTUS_COLLECTION", "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI", "WEBHOOK_SECRET", "CONNECT_KEY", "BOOKING_HOOK_URL",
    "OAUTH_CALLBACK_URL", "STORE", "TOKEN_STORE", "TIMEZONE", "PORT", "ON_GOOGLE_DELETE",
    "SYNC_INTERVAL_SECONDS", "ALLOWED_GOOGLE_ACCOUNTS", "GOOGLE_CLOUD_PROJECT",
)  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_local(directory: Path, **values: str) -> None:
    (directory / ".calsync").mkdir(exist_ok=True)
    (directory / ".calsync/local.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def test_sync_reads_the_local_file_and_the_environment_wins(
    fresh_directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write_local(fresh_directory, DIRECTUS_URL="http://127.0.0.1:9", DIRECTUS_TOKEN="from-the-file")
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "from-the-environment")
    assert cli.main(["sync"]) == 2
    missing = capsys.readouterr().err
    assert "GOOGLE_CLIENT_SECRET" in missing
    assert (
        "DIRECTUS_URL" not in missing
        and "DIRECTUS_TOKEN" not in missing
        and "GOOGLE_CLIENT_ID" not in missing
    )


def test_status_reads_the_store_named_in_the_local_file(
    fresh_directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_local(fresh_directory, STORE="sqlite:///elsewhere/state.sqlite3")
    (fresh_directory / "elsewhere").mkdir()
    assert cli.main(["status"]) in (0, 3)
    assert json.loads(capsys.readouterr().out)["state"] == "not_connected"
    assert (fresh_directory / "elsewhere/state.sqlite3").exists()
    assert not (fresh_directory / ".calsync/state.sqlite3").exists()


def test_directus_setup_takes_the_secrets_serve_generated(
    fresh_directory: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_local(fresh_directory, WEBHOOK_SECRET="generated-hook-secret", CONNECT_KEY="generated-connect-key")
    assert cli.main(["directus", "setup", "--directus-url", "http://127.0.0.1:9"]) == 2
    missing = capsys.readouterr().err
    assert "--admin-token" in missing and "--booking-hook-url" in missing
    assert "--webhook-secret" not in missing and "--connect-key" not in missing


def local_run(**values: str) -> LocalRun:
    local = {"WEBHOOK_SECRET": "hook-secret-1", "CONNECT_KEY": "connect-key-1", **values}
    settings = load_settings(**{k.lower(): v for k, v in local.items()})
    return LocalRun(settings, local, ["WEBHOOK_SECRET"], "http://127.0.0.1:8123", sync_interval=60)


def test_the_banner_gives_working_links_the_missing_settings_and_the_setup_command() -> None:
    text = banner(local_run())
    assert "http://127.0.0.1:8123/oauth_callback/start?key=connect-key-1" in text
    assert "CONNECT_KEY" not in text.split("start?key=", 1)[1].split()[0]  # the real key, no placeholder
    assert "WEBHOOK_SECRET   hook-secret-1  (from .calsync/local.env)" in text
    redirect = next(line for line in text.splitlines() if line.strip().startswith("GOOGLE_REDIRECT_URI"))
    assert redirect.split()[1] == "http://127.0.0.1:8123/oauth_callback/callback"  # where it comes from
    assert "in the environment or in .calsync/local.env" in text
    next_steps = text[text.index("Next:") :]
    assert (
        "directus setup --directus-url DIRECTUS_URL --admin-token ADMIN_TOKEN "
        "--booking-hook-url http://127.0.0.1:8123/booking_hook/ "
        "--oauth-callback-url http://127.0.0.1:8123/oauth_callback "
        "--webhook-secret hook-secret-1 --connect-key connect-key-1"
    ) in next_steps
    assert "cycles every 60 s" in text


def test_the_banner_says_where_each_secret_comes_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECT_KEY", "connect-key-1")
    assert "CONNECT_KEY      connect-key-1  (from environment)" in banner(local_run())


def test_the_banner_is_one_ready_line_once_everything_is_set() -> None:
    run = local_run(
        DIRECTUS_URL="http://127.0.0.1:8055", DIRECTUS_TOKEN="t" * 20, GOOGLE_CLIENT_ID="client",
        GOOGLE_CLIENT_SECRET="secret", GOOGLE_REDIRECT_URI="http://127.0.0.1:8123/oauth_callback/callback",
    )  # fmt: skip
    text = banner(run)
    assert "Next:" in text and "directus setup" not in text and "start?key=connect-key-1" in text
    connected = banner(LocalRun(run.settings, run.local, [], run.base, "owner@example.com", 60))
    assert connected == "calsync ready at http://127.0.0.1:8123/: syncing owner@example.com every 60 s"


def test_the_setup_command_in_the_banner_is_one_the_parser_takes() -> None:
    from tests.unit.test_deploy_docs import parse

    text = banner(local_run())
    command = text[text.index("Next:") :].split("directus setup", 1)[1].splitlines()[0]
    assert parse("directus setup" + command) is None


def test_a_bad_port_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "eighty")
    assert cli.main(["serve"]) == 2
    assert "PORT" in capsys.readouterr().err
    assert os.environ["PORT"] == "eighty"


def make_recipe(target: str) -> tuple[str, str]:
    """(prerequisites, recipe) of a Makefile target."""
    import re

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text(encoding="utf-8")
    match = re.search(rf"^{re.escape(target)}:([^\n]*)\n((?:\t[^\n]*\n)*)", makefile, flags=re.MULTILINE)
    assert match, f"no target {target}"
    return match.group(1), match.group(2)


def test_make_run_installs_only_what_runs_the_product() -> None:
    prerequisites, recipe = make_recipe("run")
    assert "install" not in prerequisites.split(), "make install brings the dev tools"
    _, install = make_recipe(prerequisites.split("|")[0].strip())
    assert "--no-dev" in install and "--extra oauth" in install and "--all-extras" not in install
    assert "--inexact" in install, "a full .venv made by make install must stay whole"
    assert "$(BIN)/calsync serve" in recipe
    _, full = make_recipe("$(VENV)/.installed")
    assert "--all-extras" in full and "--no-dev" not in full and "--inexact" not in full
