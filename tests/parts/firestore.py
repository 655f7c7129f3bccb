"""The real Firestore emulator as a test part (pytest plugin: list it in ``pytest_plugins``).

One emulator per test session, started with the emulator's own launcher (faster than ``gcloud emulators``:
~3 s instead of ~5 s), on a free port of 127.0.0.1. Tests share it and reset it: ``firestore_store`` wipes
every document first. Fakes of Firestore are not an option (the PyPI and npm ones lose
concurrent transaction updates and ignore preconditions).

Fixtures:
- ``firestore_emulator`` (session): ``.host`` ("127.0.0.1:PORT"), ``.project``, ``.reset()``,
  ``.client()`` (a ``google.cloud.firestore.Client`` on the emulator) and ``.env()`` (the variables a
  subprocess or the wiring needs: FIRESTORE_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT).
- ``firestore_store`` (function): a ``FirestoreSyncStore`` on a freshly reset emulator.

FIRESTORE_EMULATOR_HOST is never left in this process's environment: ``client()`` sets it only while the
client object is constructed (the client reads it once, in ``__init__``), so unrelated tests that build
clients or read settings do not silently talk to the emulator.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.parts.availability import part_unavailable
from tests.parts.processes import free_port, sdk_file, start_until_ready, stop_group

if TYPE_CHECKING:
    from google.cloud import firestore

    from calsync.state.firestore import FirestoreSyncStore

PROJECT = "calsync-test"
START_TIMEOUT = 90.0  # ~3 s on an idle machine; a 2-core CI box running other parts can be much slower
_LAUNCHER = Path("platform", "cloud-firestore-emulator", "cloud_firestore_emulator")
_ENV_LOCK = threading.Lock()


def find_launcher() -> Path | None:
    """The emulator's own launcher."""
    return sdk_file(_LAUNCHER)


def _http(method: str, url: str, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return int(response.status), response.read().decode("utf-8", "replace")


@dataclasses.dataclass
class FirestoreEmulator:
    host: str
    project: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in: float = 0.0  # seconds from launch to the first "Ok"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        return {"FIRESTORE_EMULATOR_HOST": self.host, "GOOGLE_CLOUD_PROJECT": self.project}

    def reset(self) -> None:
        """Delete every document of the project's default database (the emulator's own endpoint)."""
        url = f"{self.base_url}/emulator/v1/projects/{self.project}/databases/(default)/documents"
        status, body = _http("DELETE", url, timeout=30)
        assert status == 200, f"emulator reset answered {status}: {body[:200]}"

    def client(self) -> firestore.Client:
        """A new client on the emulator (each caller its own, like separate function instances)."""
        from google.cloud import firestore

        # The client reads FIRESTORE_EMULATOR_HOST only in __init__ and keeps it; the lock keeps two
        # threads from restoring each other's environment halfway.
        with _ENV_LOCK:
            saved = {name: os.environ.get(name) for name in ("FIRESTORE_EMULATOR_HOST",)}
            os.environ["FIRESTORE_EMULATOR_HOST"] = self.host
            try:
                return firestore.Client(project=self.project)
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value

    def stop(self) -> None:
        """Stop the bash wrapper and its java child: they share the process group we gave them."""
        stop_group(self.process)


def start_emulator(launcher: Path, log_dir: Path) -> FirestoreEmulator:
    """Start one emulator on a free port and wait for `GET /` to answer Ok; raise RuntimeError if not."""
    port = free_port()
    host = f"127.0.0.1:{port}"
    log_path = log_dir / f"firestore-emulator-{port}.log"

    def ready() -> bool:
        status, body = _http("GET", f"http://{host}/", timeout=2)
        return status == 200 and body.strip() == "Ok"

    command = [str(launcher), "start", "--host=127.0.0.1", f"--port={port}"]
    process, started_in = start_until_ready(command, log_path, ready, START_TIMEOUT)
    return FirestoreEmulator(host, PROJECT, process, log_path, started_in)


class _Launch:
    """Started at most once per session, on first use; a failure is remembered, not retried per test."""

    def __init__(self) -> None:
        self.emulator: FirestoreEmulator | None = None
        self.error: str | None = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def get(self) -> FirestoreEmulator:
        if self.emulator is None and self.error is None:
            launcher = find_launcher()
            if launcher is None:
                self.error = (
                    "no cloud_firestore_emulator launcher (Debian google-cloud-cli-firestore-emulator)"
                )
            elif shutil.which(os.environ.get("JAVA", "java")) is None:
                self.error = "no java on PATH (the emulator is a Java program)"
            else:
                self.tmp = tempfile.TemporaryDirectory(prefix="calsync-firestore-")
                try:
                    self.emulator = start_emulator(launcher, Path(self.tmp.name))
                except (OSError, RuntimeError) as exc:
                    self.error = str(exc)
        if self.emulator is None:
            part_unavailable("Firestore emulator", self.error or "unknown")
        return self.emulator

    def close(self) -> None:
        if self.emulator is not None:
            self.emulator.stop()
        if self.tmp is not None:
            self.tmp.cleanup()


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[FirestoreEmulator]:
    launch = _Launch()
    try:
        emulator = launch.get()
        print(f"\nFirestore emulator on {emulator.host}, ready in {emulator.started_in:.1f} s")
        yield emulator
    finally:
        launch.close()


@pytest.fixture
def firestore_store(firestore_emulator: FirestoreEmulator) -> Iterator[FirestoreSyncStore]:
    from calsync.state.firestore import FirestoreSyncStore

    firestore_emulator.reset()
    client = firestore_emulator.client()
    store = FirestoreSyncStore(client)
    yield store
    store.close()
