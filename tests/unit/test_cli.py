"""The ``calsync`` command in-process: one settings source for every command, what ``serve`` prints."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from calsync import cli, logs
from calsync.bootstrap import App
from calsync.settings import load_settings
from calsync.sync.connections import Roster
from calsync.web.server import LocalRun, banner

SETTING_NAMES = (
    "DIRECTUS_URL", "DIRECTUS_TOKEN", "DIRECTUS_ADMIN_TOKEN", "DIRECTUS_COLLECTION", "GOOGLE_CLIENT_ID",
    "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI", "WEBHOOK_SECRET", "CONNECT_KEY", "BOOKING_HOOK_URL",
    "OAUTH_CALLBACK_URL", "STORE", "TOKEN_STORE", "TIMEZONE", "PORT", "ON_GOOGLE_DELETE",
    "SYNC_INTERVAL_SECONDS", "ALLOWED_GOOGLE_ACCOUNTS", "GOOGLE_CLOUD_PROJECT",
)  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path  # main() configures the process's logging: tests/conftest.py gives the others theirs back


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


# -- for cron and for people: exit codes, errors, help, version, progress ------------------------------------
CONFIGURED = {
    "DIRECTUS_URL": "http://127.0.0.1:9",
    "DIRECTUS_TOKEN": "sync-user-token",
    "GOOGLE_CLIENT_ID": "client",
    "GOOGLE_CLIENT_SECRET": "client-secret",
}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CONFIGURED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "_warn_if_admin_token", lambda app: None)  # no Directus here
    monkeypatch.setattr(App, "roster", lambda app, fresh=False: Roster.implicit("primary"))


def cycle_ending(monkeypatch: pytest.MonkeyPatch, status: str, http_status: int = 200) -> None:
    from calsync.sync import cycle

    def run(app: object) -> cycle.CycleResult:
        logging.getLogger("calsync.sync.pull").info("pulled a page", extra=logs.fields(events=250))
        return cycle.CycleResult(status, http_status, {"status": status, "error": "why"})

    monkeypatch.setattr(App, "run_tick", run)


@pytest.mark.parametrize(
    ("status", "code"),
    [("ok", 0), ("not_connected", 3), ("needs_reconnect", 3), ("error", 4), ("mass_cancel_refused", 4),
     ("mass_delete_refused", 4), ("busy", 5), ("partial", 4), ("no_connections", 3)],
)  # fmt: skip
@pytest.mark.usefixtures("configured")
def test_sync_exits_with_the_documented_code_for_each_outcome(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: str, code: int
) -> None:
    cycle_ending(monkeypatch, status)
    assert cli.main(["sync"]) == code
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == status
    assert "Traceback" not in err
    if code:
        assert "hint:" in err


def test_the_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Exit codes") :]
    for code in (cli.OK, cli.FAILED, cli.CONFIGURATION, cli.NOT_CONNECTED, cli.SYNC_FAILED, cli.BUSY):
        assert f"| `{code}` |" in section
    for status in cli.CYCLE_EXIT:
        assert f"`{status}`" in section


@pytest.mark.usefixtures("configured")
def test_progress_is_json_lines_for_cron_and_readable_lines_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cycle_ending(monkeypatch, "ok")
    assert cli.main(["sync"]) == 0
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert {"message": "pulled a page", "events": 250}.items() <= next(
        line for line in lines if line["message"] == "pulled a page"
    ).items()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["sync"]) == 0
    shown = [line for line in terminal.getvalue().splitlines() if "pulled a page" in line]
    assert len(shown) == 1 and shown[0].endswith("pulled a page  events=250") and "{" not in shown[0]


@pytest.mark.usefixtures("configured")
def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from calsync.sync import cycle

    def broken(app: object) -> cycle.CycleResult:
        raise RuntimeError("boom")

    monkeypatch.setattr(App, "run_tick", broken)
    assert cli.main(["sync"]) == 1
    err = capsys.readouterr().err
    assert "calsync: unexpected error: RuntimeError: boom" in err and "--debug" in err
    assert "Traceback" not in err
    assert cli.main(["sync", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert cli.main(["--debug", "sync"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_an_invalid_setting_is_one_line_naming_it_without_pydantics_prefix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIMEZONE", "Atlantis/Capital")
    assert cli.main(["sync"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "calsync: invalid settings: TIMEZONE: unknown time zone 'Atlantis/Capital'"
    assert "hint: set it in the environment or in .calsync/local.env" in err
    assert "Value error" not in err and "Traceback" not in err


def test_status_runs_despite_a_bad_setting_it_does_not_use(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIMEZONE", "Atlantis/Capital")
    monkeypatch.setenv("MAX_CANCEL_SHARE", "7")
    assert cli.main(["status"]) == 3  # nothing connected here
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "not_connected"
    assert "ignoring TIMEZONE" in err and "ignoring MAX_CANCEL_SHARE" in err
    monkeypatch.setenv("STORE", "postgres://elsewhere")  # one it does use
    assert cli.main(["status"]) == 2
    assert "STORE" in capsys.readouterr().err


def test_a_bad_command_line_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["sync", "--no-such-flag"])
    assert exited.value.code == cli.CONFIGURATION


def test_version_comes_from_the_package_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.metadata

    with pytest.raises(SystemExit) as exited:
        cli.main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"calsync {importlib.metadata.version('calsync')}"


def all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += all_parsers(sub)
    return found


def test_every_command_and_option_has_help_naming_its_default() -> None:
    for parser in all_parsers(cli.build_parser()):
        assert parser.description, f"{parser.prog} has no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                assert all(choice.help for choice in action._choices_actions), parser.prog
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            assert action.help, f"{parser.prog} {action.option_strings} has no help"
            assert "default" in action.help, f"{parser.prog} {action.option_strings}: say its default"


def test_a_store_outage_is_a_sync_error_and_a_broken_store_a_configuration_error() -> None:
    from calsync.state.store import StoreError, StoreUnavailable

    code, line, hint = cli.describe(StoreUnavailable("Firestore did not answer get_status within 15 s"))
    assert (code, "unavailable" in line, hint is not None) == (
        cli.SYNC_FAILED,
        True,
        True,
    )  # cron: retry later
    assert cli.describe(StoreError("state database x is not usable"))[0] == cli.CONFIGURATION
