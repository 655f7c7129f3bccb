"""Helpers for the servers the tests start: a free port, and stopping a whole process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
