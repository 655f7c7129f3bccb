"""What the scenarios run on: the product's process and its protocol, the run's Directus, a fresh Google fake
per scenario, and the timing of a step.

The bench drives the same fakes the tests hold to Google's and Directus's behaviour: ``GoogleFake``
(tests/fakes/google, a faithful Calendar v3 + OAuth over HTTP, itself tested) and ``DirectusServer``
(tests/parts/directus.py, a real Directus 12 from the cache ``make directus`` fills). Writing a second
fake for the bench would measure the product against something the tests never checked, so those two
classes are imported from ``tests/``, through their public API only (the package's ``GoogleFake``, the
module's ``DirectusServer``); so is the real Pub/Sub emulator's launcher (tests/parts/pubsub.py's
``start_emulator``, for the scenarios that go through Pub/Sub); nothing else of ``tests/`` is used.

Setup (seeding, first cycles) runs with the fake's latency at 0 and is never timed; the timed step runs
in a fresh product process (``Env.fresh_worker``) with the run's latency (``Env.timed``).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.worker import CONNECT_KEY, WEBHOOK_SECRET
from calsync.directus.client import DirectusClient
from calsync.directus.setup import FLOW_NAME
from calsync.sync.connections import CONNECTIONS_COLLECTION
from tests.fakes.google import GoogleFake
from tests.parts.directus import DirectusServer

ROOT = Path(__file__).resolve().parents[1]
REDIRECT_URI = "http://127.0.0.1:9/oauth_callback/callback"
CALENDAR_API = "calendar/v3"  # single calls (/calendar/v3/...) and batches (/batch/calendar/v3)
COLLECTION = "bookings"
ROUTE_FIELD = "staff"  # the booking field that routes bookings to connections, where a scenario routes


def child_env() -> dict[str, str]:
    """The environment a product process starts with: nothing of the bench's own settings leaks in."""
    return {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def tomorrow() -> datetime:
    """The first slot of every seeded calendar: inside the import window, never in the past."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=1)


# -- the product's process --------------------------------------------------------------------------------


class WorkerProcess:
    """bench/worker.py in a fresh interpreter: the product, as one function instance (its protocol is in
    that module's docstring)."""

    def __init__(
        self, settings: dict[str, Any], log_path: Path, env_extra: dict[str, str] | None = None
    ) -> None:
        env = {**child_env(), **(env_extra or {})}
        env["PYTHONPATH"] = str(ROOT)
        self.log_path = log_path
        self.log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.worker"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self._send(settings)

    def _send(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited:\n{self._log_tail()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"worker {message.get('op')}: {answer['error']}\n{self._log_tail()}")
        return answer

    def _log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        return self._send({"op": op, **args})

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


# -- Directus ---------------------------------------------------------------------------------------------


class Directus:
    """The run's one Directus, prepared by calsync's own setup (with the ``staff`` routing field, which only
    the scenarios with ``ROUTE_FIELD`` set use), with its Flow switched off: deliveries are sent by the
    bench itself (hook_create) or, for push_1000, must never come."""

    def __init__(self) -> None:
        server = DirectusServer()
        if not (server.home / ".installed").exists():
            server.stop()
            raise SystemExit(f"Directus is not installed at {server.home}: run `make directus` first")
        self.server = server.start()
        self.server.setup(route_field=ROUTE_FIELD)
        flows = self._admin("GET", "/flows", params={"filter": json.dumps({"name": {"_eq": FLOW_NAME}})})
        for flow in flows or []:
            self._admin("PATCH", f"/flows/{flow['id']}", json={"status": "inactive"})

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def sync_token(self) -> str:
        """The least-privilege sync user's token, the one the product runs with."""
        token: str = self.server.sync_token
        return token

    def _admin(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.server.admin(method, path, **kwargs)
        response.raise_for_status()
        return response.json()["data"] if response.content else None

    def sync_client(self) -> DirectusClient:
        """A client of the bookings as the product sees them: the sync user, the product's own client."""
        return DirectusClient(self.url, self.sync_token, COLLECTION)

    def bookings(self, fields: list[str]) -> list[dict[str, Any]]:
        """Every booking, these fields of it (and its id), as an administrator sees them."""
        params = {"fields": ",".join(["id", *fields]), "limit": "-1"}
        rows: list[dict[str, Any]] = self._admin("GET", f"/items/{COLLECTION}", params=params)
        return rows

    def clear_bookings(self) -> None:
        ids = [row["id"] for row in self.bookings([])]
        for start in range(0, len(ids), 1000):
            self._admin("DELETE", f"/items/{COLLECTION}", json=ids[start : start + 1000])

    def create_bookings(self, count: int, staff: list[str] | None = None) -> list[dict[str, Any]]:
        """Bookings written by people in Directus (admin token), 500 a request; the created rows. ``staff``:
        each booking's routing value, round robin (``count`` bookings for each value)."""
        base = tomorrow()
        rows: list[dict[str, Any]] = []
        values: list[str | None] = list(staff) if staff else [None]
        total = count * len(values)
        for start in range(0, total, 500):
            items = [
                {
                    "title": f"Booking {i}",
                    "start_datetime": iso(base + timedelta(minutes=30 * (i // len(values)))),
                    "end_datetime": iso(base + timedelta(minutes=30 * (i // len(values)) + 25)),
                    "location": f"Room {i % 7}",
                    "description": f"Booked by customer {i}",
                    "status": "confirmed",
                    **({ROUTE_FIELD: values[i % len(values)]} if staff else {}),
                }
                for i in range(start, min(total, start + 500))
            ]
            rows.extend(self._admin("POST", f"/items/{COLLECTION}", json=items))
        return rows

    def booking(self, key: str, fields: list[str]) -> dict[str, Any]:
        """One booking, these fields of it, as an administrator sees it."""
        row: dict[str, Any] = self._admin(
            "GET", f"/items/{COLLECTION}/{key}", params={"fields": ",".join(fields)}
        )
        return row

    @contextmanager
    def connections(self, items: list[dict[str, Any]]) -> Iterator[None]:
        """The connections collection holding exactly these items while the block runs (the ``default``
        connection setup made is taken out), then as setup left it."""
        before = self._admin("GET", f"/items/{CONNECTIONS_COLLECTION}", params={"limit": "-1"}) or []
        self._set_connections([], [row["id"] for row in before])
        try:
            for start in range(0, len(items), 500):
                self._admin("POST", f"/items/{CONNECTIONS_COLLECTION}", json=items[start : start + 500])
            yield
        finally:
            self._set_connections(before, [item["id"] for item in items])

    def _set_connections(self, items: list[dict[str, Any]], remove: list[str]) -> None:
        if remove:
            self._admin("DELETE", f"/items/{CONNECTIONS_COLLECTION}", json=remove)
        if items:
            self._admin("POST", f"/items/{CONNECTIONS_COLLECTION}", json=items)

    def stop(self) -> None:
        self.server.stop()


# -- one scenario's environment ---------------------------------------------------------------------------


class Env:
    """A fresh Google fake, the product's process on its own store and token file, and the timed step."""

    def __init__(self, google: GoogleFake, latency: float, settings: dict[str, Any], folder: Path,
                 profile_dir: Path | None, env_extra: dict[str, str] | None = None) -> None:  # fmt: skip
        self.google = google
        self.latency = latency
        self.settings = settings
        self.env_extra = env_extra or {}
        self.folder = folder
        self.profile_dir = profile_dir
        self.fake_s = 0.0  # the fake's computing time during the last timed step
        self.worker = WorkerProcess(settings, folder / "worker.log", self.env_extra)

    def fresh_worker(self, **settings: Any) -> None:
        """A new product process on the same store and token file: a timed step then starts from what a
        function instance holds, not from what an untimed setup left in memory. ``settings``: the new
        process's settings that differ from the setup's (from now on)."""
        self.worker.close()
        self.settings = {**self.settings, **settings}
        self.worker = WorkerProcess(self.settings, self.folder / "worker-timed.log", self.env_extra)

    def profile(self, name: str) -> dict[str, str]:
        """Arguments that make a worker command run under cProfile (``--profile DIR``)."""
        return {"profile": str(self.profile_dir / f"{name}.prof")} if self.profile_dir else {}

    @contextmanager
    def timed(self) -> Iterator[None]:
        """The fake at the run's latency and an empty request log for the timed step.

        The latency models Google's round trip; the fake's own computing time models nothing (and some of
        it grows with the calendar: its sync-token listing scans every stored event), so it is measured
        apart (``fake_s``) and left out where rows are compared with each other. It is this process's CPU
        time during the step: the fake serves from threads of this process, while the bench's own thread
        only waits for the worker's answer, and the latency is a sleep, which takes none."""
        self.google.latency = self.latency
        self.google.clear_log()
        started = time.process_time()
        try:
            yield
        finally:
            self.fake_s = time.process_time() - started
            self.google.latency = 0.0

    def google_requests(self) -> tuple[int, int]:
        """(Calendar API HTTP requests, calls inside batches) in the fake's log: a batch is one request
        whatever it holds; the token endpoint is not the Calendar API and is not counted."""
        return self.google.count(path_contains=CALENDAR_API), self.google.count_parts()

    def seed(self, count: int) -> list[str]:
        """A calendar of ``count`` events created by its owner, half-hourly from tomorrow on (all inside
        the import window), each with a location and a short description."""
        base = tomorrow()
        return [
            self.google.create_event(
                f"Event {i}",
                base + timedelta(minutes=30 * i),
                base + timedelta(minutes=30 * i + 25),
                location=f"Room {i % 7}",
                description=f"Meeting with client {i}",
            )["id"]
            for i in range(count)
        ]


# -- a fleet of connections ------------------------------------------------------------------------------


def fleet(count: int) -> list[str]:
    """The ids of ``count`` connections, ``c0``...: each serves the bookings whose ``staff`` is its id, and
    writes to the primary calendar of an account of its own (``c0@example.com``...)."""
    return [f"c{i}" for i in range(count)]


def account(connection: str) -> str:
    return f"{connection}@example.com"


def fleet_items(connections: list[str]) -> list[dict[str, Any]]:
    """The connections' items in Directus's connections collection."""
    return [{"id": c, "name": f"Staff {c}", ROUTE_FIELD: c, "calendar_id": "primary"} for c in connections]


def connect_fleet(env: Env, connections: list[str], events: int) -> None:
    """Each connection consented with its own account, whose calendar gets ``events`` events."""
    base = tomorrow()
    consents = []
    for connection in connections:
        owner = account(connection)
        consents.append({"connection": connection, "account": owner,
                         "refresh_token": env.google.issue_refresh_token(account=owner)})  # fmt: skip
        for i in range(events):
            env.google.create_event(f"Event {i} of {connection}", base + timedelta(minutes=30 * i),
                                    base + timedelta(minutes=30 * i + 25), calendar=owner,
                                    location=f"Room {i % 7}", description=f"Meeting with client {i}")  # fmt: skip
    env.worker.call("connect", connections=consents)


# -- the Pub/Sub emulator ---------------------------------------------------------------------------------


class PubSub:
    """The run's one Pub/Sub emulator (the Cloud SDK's, tests/parts/pubsub.py), started on first use; each
    scenario makes a topic and a push subscription of its own."""

    def __init__(self, folder: Path) -> None:
        from tests.parts.processes import sdk_file
        from tests.parts.pubsub import _LAUNCHER, start_emulator

        launcher = sdk_file(_LAUNCHER)
        if launcher is None:
            raise SystemExit("no Pub/Sub emulator: install the Cloud SDK's google-cloud-cli-pubsub-emulator")
        folder.mkdir(parents=True, exist_ok=True)
        self.emulator = start_emulator(launcher, folder)

    @property
    def host(self) -> str:
        return self.emulator.host

    @contextmanager
    def push_to(self, name: str, endpoint: str) -> Iterator[str]:
        """A topic whose push subscription delivers to ``endpoint`` while the block runs; the topic's name.
        The ack deadline is long: a delivery may wait for a free slot of calendar_import."""
        from tests.parts.pubsub import unique

        topic = self.emulator.topic(unique(name))
        subscription = self.emulator.push_subscription(
            unique(name), topic, endpoint, ack_deadline_seconds=600
        )
        try:
            yield topic
        finally:
            self.emulator.delete(subscription)
            self.emulator.delete(topic)

    def stop(self) -> None:
        self.emulator.stop()


def product_settings(directus: Directus, google: GoogleFake, folder: Path) -> dict[str, str]:
    """The product's settings for one scenario: embedded stores in ``folder``, the fake's endpoints."""
    return {
        "directus_url": directus.url,
        "directus_token": directus.sync_token,
        "directus_public_url": "https://crm.example.com",
        "google_client_id": google.client_id,
        "google_client_secret": google.client_secret,
        "google_redirect_uri": REDIRECT_URI,
        "webhook_secret": WEBHOOK_SECRET,
        "connect_key": CONNECT_KEY,
        "store": f"sqlite:///{folder}/state.sqlite3",
        "token_store": f"file:///{folder}/refresh_token",
        "google_api_root": google.api_root,
        "google_auth_uri": google.auth_uri,
        "google_token_uri": google.token_uri,
        "google_revoke_uri": google.revoke_uri,
    }


@contextmanager
def environment(
    directus: Directus,
    latency: float,
    folder: Path,
    profile_dir: Path | None = None,
    settings: dict[str, Any] | None = None,
    env_extra: dict[str, str] | None = None,
    connect: bool = True,
) -> Iterator[Env]:
    """An empty bookings collection, a fresh fake and a product process, for one scenario: ``settings``
    beside the usual ones, ``env_extra`` in its environment; ``connect``: the default connection connected
    (the scenarios with a fleet connect theirs themselves, ``connect_fleet``)."""
    folder.mkdir()
    directus.clear_bookings()
    google = GoogleFake().start()
    try:
        google.register_client(google.client_id, google.client_secret, [REDIRECT_URI])
        all_settings = {**product_settings(directus, google, folder), **(settings or {})}
        env = Env(google, latency, all_settings, folder, profile_dir, env_extra)
        try:
            if connect:
                env.worker.call("connect", refresh_token=google.issue_refresh_token())
            yield env
        finally:
            env.worker.close()
    finally:
        google.stop()
