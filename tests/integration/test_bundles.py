"""The deployment bundles are self-contained: each installs from its own requirements.txt into a fresh
virtualenv and serves its function with functions-framework started from inside the bundle folder, exactly as
Cloud Functions' Python runtime does (requirements.txt installed with pip, main.py beside the core package).

Functions with identical requirements share one virtualenv (booking_hook and calendar_import); oauth_callback,
whose requirements add the OAuth extra, gets its own. uv and its cache keep this to seconds.
``CALSYNC_BUNDLE_PYTHON`` picks the interpreter for the virtualenvs (e.g. a python3.12 to match the runtime).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.parts.availability import part_unavailable

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("booking_hook", "calendar_import", "oauth_callback")
WEBHOOK_SECRET = "bundle-test-webhook-secret"
CONNECT_KEY = "bundle-test-connect-key"


def find_uv() -> str | None:
    for candidate in (os.environ.get("UV"), str(ROOT / ".cache/tools/bin/uv"), shutil.which("uv")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def build_bundles(out: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "scripts/bundle.py"), "--out", str(out)], check=True,
                   capture_output=True, text=True)  # fmt: skip


def tree_digest(folder: Path) -> str:
    """Names, modes, mtimes and contents of every entry below ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}|{stat.st_mode:o}|{int(stat.st_mtime)}\n".encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


# --- fast checks on the bundle layout -------------------------------------------------------------


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for function in FUNCTIONS:
        if not (ROOT / "functions" / function / "requirements.txt").is_file():
            pytest.fail(f"functions/{function}/requirements.txt missing: run `make requirements`")
    out = tmp_path_factory.mktemp("bundles")
    build_bundles(out)
    return out


@pytest.mark.parametrize("function", FUNCTIONS)
def test_bundle_holds_main_requirements_and_the_core_package_only(bundles: Path, function: str) -> None:
    bundle = bundles / function
    files = sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file())
    core = sorted(
        "calsync/" + str(p.relative_to(ROOT / "shared/calsync"))
        for p in (ROOT / "shared/calsync").rglob("*.py")
        if "__pycache__" not in p.parts
    )
    assert files == sorted(["main.py", "requirements.txt", *core])
    assert (bundle / "main.py").read_bytes() == (ROOT / "functions" / function / "main.py").read_bytes()
    assert not any(p.is_symlink() for p in bundle.rglob("*"))


def test_bundles_are_deterministic(bundles: Path, tmp_path: Path) -> None:
    build_bundles(tmp_path)
    for function in FUNCTIONS:
        assert tree_digest(tmp_path / function) == tree_digest(bundles / function), function


# --- each bundle installed into a fresh virtualenv and served -------------------------------------


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str, object]:  # fmt: skip
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, content_type, raw = (
                response.status,
                response.headers.get("Content-Type", ""),
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        status, content_type, raw = exc.code, exc.headers.get("Content-Type", ""), exc.read()
    return status, content_type, json.loads(raw) if "json" in content_type else raw.decode(errors="replace")


@pytest.fixture(scope="module")
def venvs(bundles: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """function -> the python of a fresh virtualenv holding exactly that bundle's requirements."""
    uv = find_uv()
    if uv is None:
        part_unavailable("uv", "set UV, run `make tools`, or put uv on PATH")
    python = os.environ.get("CALSYNC_BUNDLE_PYTHON", sys.executable)
    root = tmp_path_factory.mktemp("venvs")
    by_requirements: dict[str, Path] = {}
    result: dict[str, Path] = {}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PROJECT_ENVIRONMENT")
    }
    for function in FUNCTIONS:
        requirements = bundles / function / "requirements.txt"
        pins = "\n".join(line for line in requirements.read_text().splitlines() if not line.startswith("#"))
        key = hashlib.sha256(pins.encode()).hexdigest()[:12]
        if key not in by_requirements:
            venv = root / key
            started = time.monotonic()
            subprocess.run([uv, "venv", "--quiet", "--no-python-downloads", "--python", python, str(venv)],
                           check=True, env=env)  # fmt: skip
            subprocess.run([uv, "pip", "install", "--quiet", "--no-python-downloads", "--python",
                            str(venv / "bin/python"), "-r", str(requirements)], check=True, env=env)  # fmt: skip
            print(f"venv for {function}: {time.monotonic() - started:.1f}s")
            by_requirements[key] = venv / "bin/python"
        result[function] = by_requirements[key]
    return result


@pytest.fixture(scope="module")
def served(bundles: Path, venvs: dict[str, Path],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:  # fmt: skip
    """All three bundles served at once, each from inside its own folder, with embedded state in a tmp dir."""
    state = tmp_path_factory.mktemp("state")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(state),
        "LANG": "C.UTF-8",
        "STORE": f"sqlite:///{state}/state.sqlite3",
        "TOKEN_STORE": f"file:///{state}/refresh_token",
        "WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CONNECT_KEY": CONNECT_KEY,
        "DIRECTUS_URL": "http://127.0.0.1:9",
        "DIRECTUS_TOKEN": "bundle-test-directus-token",
        "GOOGLE_CLIENT_ID": "bundle-test.apps.googleusercontent.com",
        "GOOGLE_CLIENT_SECRET": "bundle-test-client-secret",
        "GOOGLE_REDIRECT_URI": "http://127.0.0.1:9/callback",
        "GOOGLE_API_ROOT": "http://127.0.0.1:9/",
        "GOOGLE_TOKEN_URI": "http://127.0.0.1:9/token",
        "TIMEZONE": "UTC",
    }
    servers: dict[str, Served] = {}
    try:
        for function in FUNCTIONS:
            port = free_port()
            log = state / f"{function}.log"
            executable = venvs[function].parent / "functions-framework"
            with log.open("wb") as sink:
                process = subprocess.Popen(
                    [str(executable), "--target", function, "--host", "127.0.0.1", "--port", str(port)],
                    cwd=bundles / function, env=env, stdout=sink, stderr=subprocess.STDOUT,
                )  # fmt: skip
            servers[function] = Served(f"http://127.0.0.1:{port}", process, log)
        deadline = time.monotonic() + 60
        for function, server in servers.items():
            while True:
                if server.process.poll() is not None:
                    pytest.fail(f"{function} exited {server.process.returncode}:\n{server.log.read_text()}")
                try:
                    with socket.create_connection(
                        ("127.0.0.1", int(server.base.rsplit(":", 1)[1])), timeout=1
                    ):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"{function} did not listen within 60 s:\n{server.log.read_text()}")
                    time.sleep(0.1)
        yield servers
    finally:
        for server in servers.values():
            server.process.terminate()
        for server in servers.values():
            try:
                server.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.mark.slow
def test_venvs_hold_only_what_each_function_needs(venvs: dict[str, Path]) -> None:
    probe = "import importlib.util as u, sys; sys.exit(0 if u.find_spec('google_auth_oauthlib') else 3)"
    assert subprocess.run([str(venvs["oauth_callback"]), "-c", probe], check=False).returncode == 0
    assert subprocess.run([str(venvs["booking_hook"]), "-c", probe], check=False).returncode == 3
    # The bundle, not some installed copy, must provide the core package.
    assert subprocess.run([str(venvs["booking_hook"]), "-c", "import calsync"], check=False,
                          capture_output=True, cwd="/").returncode != 0  # fmt: skip


@pytest.mark.slow
def test_booking_hook_bundle_refuses_unauthenticated_posts(served: dict[str, Served]) -> None:
    base = served["booking_hook"].base
    status, content_type, body = call("POST", base + "/", b"{}", {"Content-Type": "application/json"})
    assert (status, content_type) == (401, "application/json"), body
    assert isinstance(body, dict) and "WEBHOOK_SECRET" in body["error"]
    status, _, body = call("POST", base + "/", b"{}", {"Authorization": "Bearer wrong"})
    assert status == 401, body


@pytest.mark.slow
def test_oauth_callback_bundle_status_needs_the_key(served: dict[str, Served]) -> None:
    base = served["oauth_callback"].base
    status, content_type, body = call("GET", base + "/status")
    assert status in (401, 403) and content_type == "application/json", body
    status, _, body = call("GET", base + "/status?key=wrong")
    assert status in (401, 403), body
    status, _, body = call("GET", f"{base}/status?key={CONNECT_KEY}")
    # No Directus answers here, so the connections cannot be read: a JSON 503 that names it (a 500 would
    # mean the bundle lacks a module)
    assert status == 503, body
    assert isinstance(body, dict) and "Directus did not answer the connections read" in body["error"]


@pytest.mark.slow
def test_calendar_import_bundle_answers_json(served: dict[str, Served]) -> None:
    server = served["calendar_import"]
    status, content_type, body = call("POST", server.base + "/", b"")
    assert content_type == "application/json", body
    # No Directus answers here: a JSON 503 naming it, which the scheduler retries. A 500 here usually means
    # the bundle lacks a module.
    assert status == 503, f"{body}\n{server.log.read_text()[-3000:]}"
    assert isinstance(body, dict) and body["status"] == "error" and "Directus" in body["error"]
