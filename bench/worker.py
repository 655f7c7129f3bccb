"""The product side of a benchmark: one fresh Python process per scenario, driven over a pipe.

The product runs here as it runs in a Cloud Function instance: the functions' own ``main.py`` loaded by
functions-framework (``create_app``) and called through its Flask test client, so every measured call goes
through the function's entry point (auth, routing, JSON) without a network hop of our own in front of it.
Google (the fake) and Directus are the parent's; this process holds only what the product holds, so its
memory is the product's memory.

Protocol: one JSON command per line on stdin, one JSON answer per line on the original stdout (everything
else the process prints goes to stderr). Commands:

- ``{"op": "connect", "refresh_token": ...}``: what a completed consent leaves (token stored, connected);
- ``{"op": "warm"}``: what a warm instance already has: the Calendar client with a fresh access token (one
  Calendar request, untimed), the Directus client, its field list and the sync user id (each read once per
  process);
- ``{"op": "cycle"}``: one sync cycle through calendar_import's entry point;
- ``{"op": "deliver", "keys": [...]}``: one create delivery per key to booking_hook, one at a time;
- ``{"op": "quit"}``.

The product is used through its public API only (``calsync.bootstrap.App``: ``calendar()``, ``context()``,
``directus``), the way the functions' entry points use it; nothing of it is patched.

Any command may carry ``"profile": PATH``: the command then runs under cProfile and its stats are written
to PATH (``python -m pstats PATH``); its timings are then not representative.

Every answer carries ``wall_s``, ``directus_requests`` (``DirectusClient.requests`` during the command, counted
from ``warm`` on, which builds the client) and ``peak_rss_mb``: the process's resident peak (VmHWM) during
the command, reset before it through ``/proc/self/clear_refs`` (Linux >= 4.0), so an untimed setup step does
not count; where that reset is not possible it is ``ru_maxrss`` (peak since the process started) and
``rss_peak_since_start`` says so. ``cycle`` and ``deliver`` also give the time spent waiting for Directus's
answers on the calling thread (the push's write-back thread has a session of its own, not counted).
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import requests

    from calsync.directus.client import DirectusClient

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "bench-webhook-secret"  # noqa: S105 - a local test secret
CONNECT_KEY = "bench-connect-key"
CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar.events"


def _status_kb(name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


def peak_rss_mb(reset_ok: bool) -> float:
    if reset_ok:
        hwm = _status_kb("VmHWM")
        if hwm is not None:
            return round(hwm / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


class Worker:
    def __init__(self, settings: dict[str, Any]) -> None:
        from functions_framework import create_app

        from calsync.bootstrap import App, set_app
        from calsync.settings import load_settings

        self.app = App(load_settings(**settings))
        self.client: DirectusClient | None = None  # built by warm(); counted from then on
        self.directus_wait_s = 0.0
        set_app(self.app)  # the functions' entry points use this App (as get_app() would build it)
        functions = ROOT / "functions"
        hook = create_app("booking_hook", str(functions / "booking_hook/main.py"))  # type: ignore[no-untyped-call]
        importer = create_app("calendar_import", str(functions / "calendar_import/main.py"))  # type: ignore[no-untyped-call]
        self.hook = hook.test_client()
        self.importer = importer.test_client()

    def connect(self, refresh_token: str) -> dict[str, Any]:
        from calsync.sync.connection import mark_connected

        self.app.tokens.put(refresh_token, self.app.connection)
        mark_connected(self.app.store, self.app.connection, "owner@example.com", [CALENDAR_SCOPE])
        self.app.forget_calendar()
        return {}

    def warm(self) -> dict[str, Any]:
        calendar = self.app.calendar()
        assert calendar is not None, "not connected"
        # google-auth fetches the access token on the first request (and the client builds its events
        # resource): a warm instance has both. The bench clears the fake's log before the timed step.
        calendar.list_events(time_min=datetime.now(UTC), max_results=1)
        context = self.app.context()
        assert context.booking_fields and context.sync_user_id
        self.client = self.app.directus
        # Time spent waiting for Directus's answers on this thread, so a delivery's own overhead can be told
        # apart from it: requests' response hook, with the time from sending to the answer's arrival.
        self.client.session.hooks["response"].append(self._answered)
        return {}

    def _answered(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.directus_wait_s += response.elapsed.total_seconds()

    def cycle(self) -> dict[str, Any]:
        self.directus_wait_s = 0.0
        response = self.importer.post("/")
        body = response.get_json()
        if response.status_code != 200 or body.get("status") != "ok":
            raise RuntimeError(f"cycle failed: {response.status_code} {body}")
        return {"body": body, "directus_wait_s": self.directus_wait_s}

    def deliver(self, keys: list[Any]) -> dict[str, Any]:
        latencies: list[float] = []
        own: list[float] = []  # the same, less the time spent waiting for Directus's answers
        waits: list[float] = []  # that time
        headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        for key in keys:
            trigger = {"event": "bookings.items.create", "collection": "bookings", "key": key, "payload": {}}
            self.directus_wait_s = 0.0
            started = time.perf_counter()
            response = self.hook.post("/", json={"trigger": trigger, "user": "a-person"}, headers=headers)
            latencies.append((time.perf_counter() - started) * 1000)
            waits.append(self.directus_wait_s * 1000)
            own.append(latencies[-1] - waits[-1])
            body = response.get_json()
            if response.status_code != 200 or body.get("synced") != [str(key)]:
                raise RuntimeError(f"delivery of {key} failed: {response.status_code} {body}")
        return {"latencies_ms": latencies, "own_latencies_ms": own, "directus_latencies_ms": waits}

    def directus_requests(self) -> int:
        return self.client.requests if self.client is not None else 0

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.pop("op")
        profile_to: str | None = command.pop("profile", None)
        handlers: dict[str, Callable[..., dict[str, Any]]] = {
            "connect": self.connect,
            "warm": self.warm,
            "cycle": self.cycle,
            "deliver": self.deliver,
        }
        handler = handlers[op]
        profiler = cProfile.Profile() if profile_to else None
        reset_ok = reset_peak_rss()
        directus_before = self.directus_requests()
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = handler(**command)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - started
        if profiler is not None and profile_to:
            profiler.dump_stats(profile_to)
        return {
            **result,
            "wall_s": wall,
            "directus_requests": self.directus_requests() - directus_before,
            "peak_rss_mb": peak_rss_mb(reset_ok),
            "rss_peak_since_start": not reset_ok,
        }


def main() -> None:
    answers: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the answers
    sys.stdout = sys.stderr
    worker = Worker(json.loads(sys.stdin.readline()))
    answers.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        if command.get("op") == "quit":
            break
        try:
            answer = worker.run(command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
