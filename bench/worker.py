"""The product side of a benchmark: one fresh Python process per scenario, driven over a pipe.

The product runs here as it runs in a Cloud Function instance: the functions' own ``main.py`` loaded by
functions-framework (``create_app``) and called through its Flask test client, so every measured call goes
through the function's entry point (auth, routing, JSON) without a network hop of our own in front of it.
Google (the fake) and Directus are the parent's; this process holds only what the product holds, so its
memory is the product's memory.

Protocol: one JSON command per line on stdin, one JSON answer per line on the original stdout (everything
else the process prints goes to stderr). Commands:

- ``{"op": "connect", "refresh_token": ...}``: what a completed consent leaves (token stored, connected);
  ``"connections": [{"connection", "account", "refresh_token"}, ...]`` does it for each of several;
- ``{"op": "warm"}``: what a warm instance already has: the Calendar client with a fresh access token (one
  Calendar request, untimed), the Directus client, its field list and the sync user id (each read once per
  process); ``"connections": [...]``: every one of these connections' clients and contexts;
- ``{"op": "cycle"}``: one tick through calendar_import's entry point (``"expect"``: the status it must
  answer, ``ok`` unless told);
- ``{"op": "deliver", "keys": [...]}``: one create delivery per key to booking_hook, one at a time;
- ``{"op": "serve", "hook_port": P, "import_port": Q, "concurrency": N}``: booking_hook and calendar_import
  over real HTTP on those ports, calendar_import at most N requests at once (bench/serving.py);
- ``{"op": "quiet", "after": K, "quiet_s": S}``: wait until calendar_import has served more than K requests
  and none for S seconds, nothing inside; its deliveries from the K-th on;
- ``{"op": "fan_out", "connections": N}``: one tick (it must publish), then wait until N deliveries ran a
  cycle; the deliveries, and the most that ran at once;
- ``{"op": "counts"}``: nothing but what every answer carries;
- ``{"op": "quit"}``.

The product is used through its public API only (``calsync.bootstrap.App``: ``calendar()``, ``context()``,
``directus``), the way the functions' entry points use it; nothing of it is patched.

Any command may carry ``"profile": PATH``: the command then runs under cProfile and its stats are written
to PATH (``python -m pstats PATH``); its timings are then not representative.

Every answer carries ``wall_s``, ``directus_requests`` (``DirectusClient.requests`` during the command, counted
from ``warm`` on, which builds the client; ``directus_total``: since then) and ``peak_rss_mb``: the process's resident peak (VmHWM) during
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

from bench.serving import Delivery, Gate, Served

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
        self.functions = {"booking_hook": hook, "calendar_import": importer}
        self.hook = hook.test_client()
        self.importer = importer.test_client()
        self.served: list[Served] = []
        self.gate: Gate | None = None

    def connect(
        self,
        refresh_token: str | None = None,
        connections: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        from calsync.sync.connection import mark_connected

        default = {"connection": self.app.connection, "account": "owner@example.com"}
        wanted = connections or [{**default, "refresh_token": str(refresh_token)}]
        for one in wanted:
            self.app.tokens.put(one["refresh_token"], one["connection"])
            mark_connected(self.app.store, one["connection"], one["account"], [CALENDAR_SCOPE])
            self.app.forget_calendar(one["connection"])
        return {}

    def warm(self, connections: list[str] | None = None) -> dict[str, Any]:
        for connection in connections or [self.app.connection]:
            calendar = self.app.calendar(connection)
            assert calendar is not None, f"{connection} not connected"
            # google-auth fetches the access token on the first request (and the client builds its events
            # resource): a warm instance has both. The bench clears the fake's log before the timed step.
            calendar.list_events(time_min=datetime.now(UTC), max_results=1)
            context = self.app.context(connection)
            assert context.booking_fields and context.sync_user_id
        self.client = self.app.directus
        # Time spent waiting for Directus's answers on this thread, so a delivery's own overhead can be told
        # apart from it: requests' response hook, with the time from sending to the answer's arrival.
        self.client.session.hooks["response"].append(self._answered)
        return {}

    def _answered(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.directus_wait_s += response.elapsed.total_seconds()

    def cycle(self, expect: str = "ok") -> dict[str, Any]:
        self.directus_wait_s = 0.0
        response = self.importer.post("/")
        body = response.get_json()
        if response.status_code != 200 or body.get("status") != expect:
            raise RuntimeError(f"cycle failed: {response.status_code} {body}")
        return {"body": body, "directus_wait_s": self.directus_wait_s}

    def serve(self, hook_port: int, import_port: int, concurrency: int) -> dict[str, Any]:
        # Only what comes over HTTP passes the gate: the bench's own tick (``cycle``) uses the test client.
        self.gate = Gate(self.functions["calendar_import"], concurrency)
        self.served = [Served(self.functions["booking_hook"], hook_port), Served(self.gate, import_port)]
        return {"urls": [served.url for served in self.served]}

    def _gate(self) -> Gate:
        assert self.gate is not None, "serve first"
        return self.gate

    def quiet(self, after: int, quiet_s: float = 0.1, timeout: float = 60.0) -> dict[str, Any]:
        gate = self._gate()
        deadline = time.monotonic() + timeout
        if not gate.wait(lambda served: len(served) > after, timeout):
            raise RuntimeError(f"calendar_import served nothing after request {after} within {timeout} s")
        while time.monotonic() < deadline:
            count = len(gate.deliveries)
            time.sleep(quiet_s)
            if gate.inside() == 0 and len(gate.deliveries) == count:
                return {"deliveries": [d.as_json() for d in gate.deliveries[after:]]}
        raise RuntimeError(f"calendar_import still busy after {timeout} s")

    def fan_out(self, connections: int, timeout: float = 600.0) -> dict[str, Any]:
        """One tick through the entry point (it publishes a request per connection), then every delivery
        until ``connections`` of them ran their connection's cycle."""
        gate = self._gate()
        gate.reset()
        began = time.monotonic()
        tick = self.cycle(expect="dispatched")
        tick_s = time.monotonic() - began

        def ran(served: list[Delivery]) -> bool:
            return (
                len({d.connection for d in served if d.http_status == 200 and d.status == "ok"})
                >= connections
            )

        if not gate.wait(ran, timeout):
            raise RuntimeError(
                f"{len(gate.deliveries)} deliveries within {timeout} s, not {connections} cycles"
            )
        return {"tick": tick["body"], "tick_s": tick_s, "began": began, "peak": gate.peak,
                "deliveries": [d.as_json() for d in gate.deliveries]}  # fmt: skip

    def stop_serving(self) -> None:
        for served in self.served:
            served.stop()
        self.served = []

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
            "serve": self.serve,
            "quiet": self.quiet,
            "fan_out": self.fan_out,
            "counts": dict,
        }
        handler = handlers[op]
        profiler = cProfile.Profile() if profile_to else None
        # ``quiet`` gives the peak since the command before it: the edit it waits for ran in between
        reset_ok = op == "quiet" or reset_peak_rss()
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
            "directus_total": self.directus_requests(),
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
            worker.stop_serving()
            break
        try:
            answer = worker.run(command)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
