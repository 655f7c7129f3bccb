"""One Python version everywhere: what the functions deploy on is what the lock, the tools, CI and this test
run use. A mismatch lets code that only works on the laptop's Python (or the lock's fork for it) ship."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import hcl2
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_FILES = ("cloudbuild.yaml", "cloudbuild-deploy.yaml")


def minor(text: str) -> str:
    """'python312' / 'py312' / '3.12' / '==3.12.*' -> '3.12'."""
    match = re.fullmatch(r"(?:python|py)(3)(\d+)|(?:==)?(3)\.(\d+)(?:\.\*)?", text.strip())
    assert match, f"not a single minor version: {text!r}"
    major, number = (match[1], match[2]) if match[1] else (match[3], match[4])
    return f"{major}.{number}"


def runtime() -> str:
    """The functions' runtime, from terraform/functions.tf (the one thing Google actually runs)."""
    with (ROOT / "terraform/functions.tf").open(encoding="utf-8") as handle:
        parsed = hcl2.load(handle)
    runtimes = {
        str(body["build_config"][0]["runtime"]).strip('"')
        for block in parsed["resource"]
        for body in block.get('"google_cloudfunctions2_function"', {}).values()
    }
    assert len(runtimes) == 1, runtimes
    return minor(runtimes.pop())


def test_terraform_runtime_is_a_python_runtime() -> None:
    assert runtime() == "3.12"


def test_pyproject_and_lock_name_the_runtimes_version() -> None:
    expected = runtime()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    requires = pyproject["project"]["requires-python"]
    # Exactly that minor version: the lock then has no forks for other Pythons the runtime never sees.
    assert minor(requires) == expected, requires
    assert minor(pyproject["tool"]["ruff"]["target-version"]) == expected
    assert minor(pyproject["tool"]["mypy"]["python_version"]) == expected
    lock = tomllib.loads((ROOT / "uv.lock").read_text(encoding="utf-8"))
    assert lock["requires-python"] == requires, "uv.lock is stale: run `$UV lock`"


def test_makefile_builds_the_venv_with_that_python() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    version = re.search(r"^PYTHON_VERSION\s*:?=\s*(\S+)\s*$", makefile, flags=re.MULTILINE)
    assert version, "the Makefile names its Python in PYTHON_VERSION"
    assert minor(version[1]) == runtime()
    default = re.search(r"^PYTHON\s*[:?]?=(.*)$", makefile, flags=re.MULTILINE)
    assert default, "the Makefile sets PYTHON"
    assert "python$(PYTHON_VERSION)" in default[1], default[1]
    assert not re.search(r"python3(?![.$])\b", default[1]), "PYTHON must not fall back to a bare python3"
    # uv gets the same interpreter, and `make` stops with a message when it is missing.
    assert re.search(r"^export UV_PYTHON\s*:?=\s*\$\(PYTHON\)\s*$", makefile, flags=re.MULTILINE)
    assert "is required" in makefile and "Install Python $(PYTHON_VERSION)" in makefile


def test_cloud_build_installs_that_python() -> None:
    expected = runtime()
    assert (ROOT / BUILD_FILES[0]).is_file()
    for name in (
        n for n in BUILD_FILES if (ROOT / n).is_file()
    ):  # the deploy file's presence: test_cloudbuild
        build = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
        env = dict(item.split("=", 1) for item in build["options"]["env"])
        assert minor(env["UV_PYTHON"]) == expected, f"{name}: UV_PYTHON={env['UV_PYTHON']}"


def test_this_test_run_uses_that_python() -> None:
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == runtime(), (
        f"tests run on {sys.version.split()[0]}, the functions on {runtime()}: rebuild the venv (`make install`)"
    )
