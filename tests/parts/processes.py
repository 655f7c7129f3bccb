"""Helpers for the servers the tests start: a free port, finding a Cloud SDK emulator, and stopping a whole
process group."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/google-cloud-sdk")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sdk_file(relative: Path) -> Path | None:
    """A file of the installed Cloud SDK (an emulator's launcher); the usual SDK roots first because
    `gcloud info` takes ~1 s."""
    for root in _SDK_ROOTS:
        candidate = Path(root) / relative
        if candidate.is_file():
            return candidate
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return None
    try:
        out = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    candidate = Path(out) / relative
    return candidate if out and candidate.is_file() else None


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def start_until_ready(
    command: list[str], log_path: Path, ready: Callable[[], bool], timeout: float
) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``command`` in a process group of its own (output to ``log_path``, working directory its
    folder) and poll ``ready()`` (exceptions count as not yet); the process and the seconds it took to be
    ready. Raises RuntimeError with the log's tail if it exits or is not ready within ``timeout``."""
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so stop_group() reaches wrappers' children too
            cwd=log_path.parent,
        )
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited with {process.returncode}: {log_tail(log_path)}")
        try:
            if ready():
                return process, time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.05)
    stop_group(process)
    raise RuntimeError(f"{command[0]} not ready after {timeout:.0f} s: {log_tail(log_path)}")


def stop_group(process: subprocess.Popen[Any], timeout: float = 10) -> None:
    """SIGTERM the process group (started with ``start_new_session=True``), then SIGKILL whatever lingers:
    wrappers (the Firestore emulator's bash, node's workers) may leave children behind."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
