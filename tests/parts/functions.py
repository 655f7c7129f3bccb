"""The three functions served as in production: ``functions-framework`` in a process of its own, each."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from tests.parts.processes import free_port, stop_group

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("oauth_callback", "booking_hook", "calendar_import")


class ServedFunction:
    """``functions-framework --source functions/<name>/main.py --target <name>`` on a free port."""

    def __init__(self, name: str, env: dict[str, str], port: int | None = None) -> None:
        self.name = name
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115

    def start(self, timeout: float = 30) -> ServedFunction:
        framework = Path(sys.executable).with_name("functions-framework")
        command = [str(framework), "--source", str(ROOT / "functions" / self.name / "main.py"),
                   "--target", self.name, "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        self.process = subprocess.Popen(
            command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.output()}")
            try:
                requests.get(self.url + "/__ready", timeout=1)
                return self
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ServedFunction:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def base_env(**settings: str) -> dict[str, str]:
    """A clean environment for a served function: PATH and HOME, plus the given settings."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONPATH"] = str(ROOT / "shared")
    env.update(settings)
    return env
