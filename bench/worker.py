"""The product side of a benchmark: one fresh Python process per scenario, driven over a pipe.

The product runs here as it runs in a Cloud Function instance: the functions' own ``main.py`` loaded by
functions-framework (``create_app``) and called through its Flask test client, so every measured call goes
through the function's entry point (auth, routing, JSON) without a network hop of our own in front of it.
Google (the fake) and Directus are the parent's; this process holds only what the product holds, so its
memory is the product's memory.

Protocol: one JSON command per line on stdin, one JSON answer per line on the original stdout (everything
else the process prints goes to stderr). Commands:

- ``{"op": "connect", "refresh_token": ...}``: what a completed consent leaves (token stored, connected);
- ``{"op": "warm"}``: what a warm instance already has: the Calendar client with a fresh access token, the
  Directus field list and the sync user id (each read once per process);
- ``{"op": "cycle"}``: one sync cycle through calendar_import's entry point;
- ``{"op": "deliver", "keys": [...]}``: one create delivery per key to booking_hook, one at a time;
- ``{"op": "batch_threshold", "value": N}``: the pusher's batch threshold (the one-request-per-booking
  baseline sets it above the scenario's size);
- ``{"op": "quit"}``.

Any command may carry ``"profile": PATH``: the command then runs under cProfile and its stats are written
to PATH (``python -m pstats PATH``); its timings are then not representative.

Every answer carries ``wall_s``, ``directus_requests`` (``DirectusClient.requests`` during the command) and
``peak_rss_mb``: the process's resident peak (VmHWM) during the command, reset before it through
``/proc/self/clear_refs`` (Linux >= 4.0), so an untimed setup step does not count; where that reset is not
possible it is ``ru_maxrss`` (peak since the process started) and ``rss_peak_since_start`` says so.
"""

from __future__ import annotations

import cProfile
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

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
        self.directus_wait_s = 0.0
        self.write_back_s = 0.0
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
        import google_auth_httplib2
        import httplib2

        calendar = self.app.calendar()
        assert calendar is not None, "not connected"
        # The token endpoint is not the Calendar API: a warm instance holds a valid access token already.
        calendar.service._http.credentials.refresh(google_auth_httplib2.Request(httplib2.Http()))
        context = self.app.context()
        assert context.booking_fields and context.sync_user_id
        # Time spent waiting for Directus, so a delivery's own overhead can be told apart from it; waits on
        # the push's write-back thread are kept apart (they overlap the caller's work).
        client = self.app.directus
        request = client.request

        def timed_request(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return request(*args, **kwargs)
            finally:
                waited = time.perf_counter() - started
                if threading.current_thread().name.startswith("write-back"):
                    self.write_back_s += waited
                else:
                    self.directus_wait_s += waited

        client.request = timed_request  # type: ignore[method-assign]
        return {}

    def cycle(self) -> dict[str, Any]:
        self.directus_wait_s = self.write_back_s = 0.0
        response = self.importer.post("/")
        body = response.get_json()
        if response.status_code != 200 or body.get("status") != "ok":
            raise RuntimeError(f"cycle failed: {response.status_code} {body}")
        return {"body": body, "directus_wait_s": self.directus_wait_s, "write_back_s": self.write_back_s}

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

    def batch_threshold(self, value: int) -> dict[str, Any]:
        from calsync.sync import push

        push.BATCH_THRESHOLD = value
        return {}

    def run(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.pop("op")
        profile_to: str | None = command.pop("profile", None)
        handler: Callable[..., dict[str, Any]] = getattr(self, op)
        profiler = cProfile.Profile() if profile_to else None
        reset_ok = reset_peak_rss()
        directus_before = self.app.directus.requests if "directus" in self.app._built else 0
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        result = handler(**command)
        if profiler is not None:
            profiler.disable()
        wall = time.perf_counter() - started
        if profiler is not None and profile_to:
            profiler.dump_stats(profile_to)
        directus_after = self.app.directus.requests if "directus" in self.app._built else 0
        return {
            **result,
            "wall_s": wall,
            "directus_requests": directus_after - directus_before,
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
