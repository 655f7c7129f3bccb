"""The per-function requirements.txt files are generated from uv.lock and agree with it, pin for pin and
hash for hash (pip's hash-checking mode: the deploy installs exactly the files that were locked)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

from tests.parts.availability import part_unavailable

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("booking_hook", "calendar_import", "oauth_callback")
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;]+)\s*(?:;\s*(?P<marker>.+?))?"
    r"(?P<hashes>(?:\s+--hash=sha256:[0-9a-f]{64})*)$"
)
# Cloud Functions' python312 runtime: Linux x86_64, CPython 3.12.
RUNTIME = {
    "python_version": "3.12",
    "python_full_version": "3.12.8",
    "platform_python_implementation": "CPython",
    "implementation_name": "cpython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}


def locked_versions() -> dict[str, set[str]]:
    versions: dict[str, set[str]] = {}
    for name, version in locked_hashes():
        versions.setdefault(name, set()).add(version)
    return versions


def locked_hashes() -> dict[tuple[str, str], set[str]]:
    """(name, version) -> the sha256 of every file (sdist and wheels) uv.lock records for it."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    hashes: dict[tuple[str, str], set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            files = [package.get("sdist", {}), *package.get("wheels", [])]
            hashes[(canonicalize_name(package["name"]), package["version"])] = {
                f["hash"] for f in files if "hash" in f
            }
    return hashes


def requirement_lines(text: str) -> list[str]:
    """Logical requirement lines: backslash continuations joined, comments and blank lines dropped."""
    logical = re.sub(r"\\\n", " ", text)
    return [s for line in logical.splitlines() if (s := line.strip()) and not s.startswith("#")]


def parsed(function: str) -> dict[str, tuple[str, str | None, set[str]]]:
    """name -> (version, marker, hashes) from the function's requirements.txt; every requirement is a pin."""
    path = ROOT / "functions" / function / "requirements.txt"
    if not path.is_file():
        pytest.fail(f"{path.relative_to(ROOT)} is missing: run `make requirements`")
    result: dict[str, tuple[str, str | None, set[str]]] = {}
    for line in requirement_lines(path.read_text(encoding="utf-8")):
        match = PIN.match(line)
        assert match, f"{path.name} of {function}: not an exact pin: {line!r}"
        hashes = {h.removeprefix("--hash=") for h in match["hashes"].split()}
        result[canonicalize_name(match["name"])] = (match["version"], match["marker"], hashes)
    return result


def pins(function: str) -> dict[str, tuple[str, str | None]]:
    """name -> (version, marker) from the function's requirements.txt."""
    return {name: (version, marker) for name, (version, marker, _h) in parsed(function).items()}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_pin_equals_the_lock(function: str) -> None:
    locked = locked_versions()
    for name, (version, _marker) in pins(function).items():
        assert name in locked, f"{function}: {name} is not in uv.lock"
        assert version in locked[name], f"{function}: {name}=={version}, uv.lock has {sorted(locked[name])}"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_every_pin_carries_exactly_the_locks_hashes(function: str) -> None:
    """pip turns hash-checking on for the whole file once one line has a hash: all must have them, and only
    digests of files uv.lock recorded (so a re-uploaded or substituted file fails the deploy's install)."""
    locked = locked_hashes()
    for name, (version, _marker, hashes) in parsed(function).items():
        assert hashes, f"{function}: {name}=={version} has no --hash (run `make requirements`)"
        assert hashes == locked[(name, version)], f"{function}: {name}=={version} hashes differ from uv.lock"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_pins_resolve_for_the_python312_runtime(function: str) -> None:
    """Markers are kept (universal export) and the runtime gets the framework, the clients and pydantic."""
    for_runtime = {
        name
        for name, (_v, marker) in pins(function).items()
        if marker is None or Marker(marker).evaluate(RUNTIME)
    }
    assert {"functions-framework", "google-cloud-firestore", "google-cloud-secret-manager",
            "google-api-python-client", "google-auth", "pydantic", "pydantic-settings"} <= for_runtime  # fmt: skip
    assert "calsync" not in for_runtime, "the project itself travels as source in the bundle"


def test_only_oauth_callback_carries_the_oauth_extra() -> None:
    hook, importer, oauth = (set(pins(f)) for f in FUNCTIONS)
    assert hook == importer
    assert hook < oauth
    assert "google-auth-oauthlib" in oauth - hook
    assert all(not name.startswith("pytest") for name in oauth), "dev group leaked into a bundle"


def test_generated_files_are_current() -> None:
    uv = next(
        (c for c in (os.environ.get("UV"), str(ROOT / ".cache/tools/bin/uv"), shutil.which("uv"))
         if c and Path(c).is_file() and os.access(c, os.X_OK)),
        None,
    )  # fmt: skip
    if uv is None:
        part_unavailable("uv", "set UV, run `make tools`, or put uv on PATH")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_requirements.py"), "--check"],
        cwd=ROOT,
        env={**os.environ, "UV": uv},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
