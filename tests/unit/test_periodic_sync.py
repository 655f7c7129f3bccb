"""``calsync serve``'s own schedule: a cycle every SYNC_INTERVAL_SECONDS, quiet while it cannot run, never
fatal."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from calsync.bootstrap import App
from calsync.settings import SettingsError, load_settings
from calsync.state.memory import MemorySyncStore
from calsync.sync.connections import Roster
from calsync.sync.cycle import CycleResult
from calsync.web.server import PeriodicSync

CONFIGURED = {
    "directus_url": "http://127.0.0.1:9",
    "directus_token": "sync-user-token",
    "google_client_id": "client",
    "google_client_secret": "client-secret",
}


@pytest.fixture(autouse=True)
def _no_directus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing answers at DIRECTUS_URL here: the one implicit connection."""
    monkeypatch.setattr(App, "roster", lambda app, fresh=False: Roster.implicit("primary"))


def app(tmp_path: Path, **settings: object) -> App:
    return App(load_settings(token_store=f"file:///{tmp_path}/token", **settings), store=MemorySyncStore())


def test_the_interval_is_a_setting_60_by_default_0_disables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNC_INTERVAL_SECONDS", raising=False)
    assert load_settings().sync_interval_seconds == 60
    monkeypatch.setenv("SYNC_INTERVAL_SECONDS", "0")
    assert load_settings().sync_interval_seconds == 0
    monkeypatch.setenv("SYNC_INTERVAL_SECONDS", "-1")
    with pytest.raises(SettingsError, match="SYNC_INTERVAL_SECONDS"):
        load_settings()


def test_waits_quietly_while_directus_or_google_is_not_configured(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[App] = []
    syncing = PeriodicSync(app(tmp_path), 0.01, cycle=lambda app: ran.append(app) or CycleResult("ok"))
    caplog.set_level(logging.INFO)
    assert [syncing.tick() for _ in range(3)] == [None, None, None]
    assert not ran
    said = [r.getMessage() for r in caplog.records if "waits for settings" in r.getMessage()]
    assert len(said) == 1 and "DIRECTUS_URL" in said[0] and "GOOGLE_CLIENT_ID" in said[0]


def test_a_failing_cycle_is_logged_and_the_next_tick_runs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outcomes = iter([RuntimeError("boom"), CycleResult("ok")])

    def cycle(app: App) -> CycleResult:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    syncing = PeriodicSync(app(tmp_path, **CONFIGURED), 0.01, cycle=cycle)
    assert syncing.tick() is None
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)
    assert syncing.tick() == CycleResult("ok") and syncing.cycles == 1


def test_runs_on_its_thread_with_the_app_until_stopped(tmp_path: Path) -> None:
    the_app = app(tmp_path, **CONFIGURED)
    seen: list[App] = []
    three = threading.Event()

    def cycle(app: App) -> CycleResult:
        seen.append(app)
        if len(seen) == 3:
            three.set()
        return CycleResult("not_connected")

    syncing = PeriodicSync(the_app, 0.01, cycle=cycle).start()
    assert three.wait(5)
    syncing.stop(timeout=5)
    assert all(app is the_app for app in seen)
    count = len(seen)
    assert not syncing._thread.is_alive() and len(seen) == count


def test_an_interval_of_0_runs_nothing(tmp_path: Path) -> None:
    syncing = PeriodicSync(app(tmp_path, **CONFIGURED), 0, cycle=lambda app: pytest.fail("ran")).start()
    assert not syncing._thread.is_alive()
    syncing.stop()
