"""The scenarios: one function per scenario, each giving its rows of bench/results.json.

Every scenario gets a fresh Google fake, an empty bookings collection in the run's one Directus, and a
fresh SQLite store and token file (``Bench.environment``); its timed step runs in a fresh product process
after an untimed setup (bench/harness.py). A scenario measures; whether a target is met is decided in
bench/targets.py, against the floors of bench/floors.py.

The product is driven through its entry points and public API only: no product constant is patched. The
former one-request-per-booking baseline of ``push_1000`` needed the pusher's batch threshold raised; the
target is now a ratio to Directus's own time for the same write-backs (``push_1000``), which needs no
baseline at all.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench.coldstart import FUNCTIONS
from bench.floors import (
    floor_edits,
    floor_fanout,
    floor_full,
    floor_hook,
    floor_incremental,
    floor_push,
    floor_tick_quiet,
)
from bench.harness import (
    CALENDAR_API,
    COLLECTION,
    ROOT,
    ROUTE_FIELD,
    Directus,
    Env,
    PubSub,
    child_env,
    connect_fleet,
    environment,
    fleet,
    fleet_items,
    percentile,
)
from calsync.settings import Settings
from calsync.state.store import DEFAULT_CONNECTION
from calsync.sync.booking import FIELDS
from calsync.sync.ids import event_id_for
from calsync.sync.push import BATCH_LIMIT
from tests.parts.processes import free_port

Row = dict[str, Any]
SYNC_CONCURRENCY_DEFAULT: int = Settings.model_fields["sync_concurrency"].default


@dataclasses.dataclass(frozen=True)
class Sizes:
    hook: int = 200
    incremental: tuple[int, int] = (100, 10_000)
    changes: int = 10
    full: int = 10_000
    push: int = 1000
    quiet: int = 250  # events in the calendar and bookings in Directus, all synced
    rounds: int = 3  # timed incremental cycles per calendar size (the median is reported)
    cold_runs: int = 5
    fleet: int = 50  # connections in tick_quiet_50_connections
    per_connection: int = 3  # events in each connection's calendar and bookings routed to it, all synced
    edits: int = 50  # google_edit_to_directus
    fanout: int = 200  # connections in tick_fanout_200_connections
    fanout_concurrency: int = 8  # requests calendar_import serves at once there (SYNC_CONCURRENCY too)


SMALL = Sizes(hook=20, incremental=(20, 50), changes=3, full=50, push=30, quiet=10, rounds=1, cold_runs=1,
              fleet=3, per_connection=1, edits=3, fanout=4, fanout_concurrency=2)  # fmt: skip


class Bench:
    """What every scenario shares: the sizes, the latency, a work folder, and the run's Directus (started
    on first use, so a run of cold starts alone needs none)."""

    def __init__(self, work: Path, sizes: Sizes, latency: float, profile_dir: Path | None = None) -> None:
        self.work = work
        self.sizes = sizes
        self.latency = latency
        self.profile_dir = profile_dir
        self._directus: Directus | None = None
        self._pubsub: PubSub | None = None

    @property
    def directus(self) -> Directus:
        if self._directus is None:
            self._directus = Directus()
        return self._directus

    @property
    def pubsub(self) -> PubSub:
        """The run's Pub/Sub emulator, started on first use."""
        if self._pubsub is None:
            self._pubsub = PubSub(self.work / "pubsub")
        return self._pubsub

    def environment(
        self,
        name: str,
        latency: float | None = None,
        settings: dict[str, Any] | None = None,
        env_extra: dict[str, str] | None = None,
        connect: bool = True,
    ) -> AbstractContextManager[Env]:
        return environment(self.directus, self.latency if latency is None else latency, self.work / name,
                           self.profile_dir, settings, env_extra, connect)  # fmt: skip

    def close(self) -> None:
        if self._directus is not None:
            self._directus.stop()
            self._directus = None
        if self._pubsub is not None:
            self._pubsub.stop()
            self._pubsub = None


def row(scenario: str, sizes: dict[str, int], **fields: Any) -> Row:
    return {"scenario": scenario, "sizes": sizes, **fields}


def step_row(
    scenario: str,
    sizes: dict[str, int],
    answer: dict[str, Any],
    google: tuple[int, int],
    floor: int,
    latency: float,
    **fields: Any,
) -> Row:
    """The row of one timed worker command: ``google`` is (requests, batch parts) from the fake's log."""
    return row(
        scenario,
        sizes,
        google_requests=google[0],
        google_batch_parts=google[1],
        directus_requests=answer["directus_requests"],
        floor_requests=floor,
        wall_s=round(answer["wall_s"], 3),
        peak_rss_mb=answer["peak_rss_mb"],
        latency_s=latency,
        **fields,
    )


# -- Directus -> Google, one delivery at a time -----------------------------------------------------------


def hook_create(b: Bench) -> list[Row]:
    """``sizes.hook`` bookings created in Directus, each delivered to booking_hook as its create event, one
    at a time, with the fake's latency at 0: the figure is our overhead plus Directus's own answers.

    A delivery waits for a real Directus to answer its read of the booking and its status write-back; that
    time (``directus_p50_ms``/``directus_p95_ms``) is Directus's, not ours, so the delivery less it
    (``own_p50_ms``/``own_p95_ms``) is what the target is about."""
    with b.environment("hook_create", latency=0.0) as env:
        keys = [str(r["id"]) for r in b.directus.create_bookings(b.sizes.hook)]
        env.fresh_worker()
        env.worker.call("warm")
        with env.timed():
            answer = env.worker.call("deliver", keys=keys, **env.profile("hook_create"))
            google = env.google_requests()
    latencies, own, waits = (
        answer["latencies_ms"],
        answer["own_latencies_ms"],
        answer["directus_latencies_ms"],
    )
    return [
        step_row(
            "hook_create",
            {"deliveries": b.sizes.hook},
            answer,
            google,
            floor_hook(b.sizes.hook),
            latency=0.0,
            p50_ms=round(percentile(latencies, 0.50), 2),
            p95_ms=round(percentile(latencies, 0.95), 2),
            own_p50_ms=round(percentile(own, 0.50), 2),
            own_p95_ms=round(percentile(own, 0.95), 2),
            directus_p50_ms=round(percentile(waits, 0.50), 2),
            directus_p95_ms=round(percentile(waits, 0.95), 2),
        )
    ]


# -- Google -> Directus -----------------------------------------------------------------------------------


def import_incremental(b: Bench, name: str, events: int) -> list[Row]:
    """One cycle after ``sizes.changes`` events changed in a calendar of ``events`` already-synced events.

    Synced state: the first cycle imports the calendar; the second absorbs the echo of the first cycle's
    own stamping patches (they changed every event, so the sync token hands them all back once). Then a
    fresh product process, and per round the owner edits ``changes`` other events and one cycle is timed."""
    sizes = b.sizes
    with b.environment(name) as env:
        ids = env.seed(events)
        env.worker.call("cycle")
        env.worker.call("cycle")
        env.fresh_worker()
        env.worker.call("warm")
        rounds: list[dict[str, Any]] = []
        for number in range(sizes.rounds):
            for event_id in ids[number * sizes.changes : (number + 1) * sizes.changes]:
                env.google.edit_event(event_id, summary=f"Moved meeting {number}", location="Room 42")
            with env.timed():
                answer = env.worker.call("cycle", **env.profile(f"{name}_{number}"))
                google = env.google_requests()
            if answer["body"]["updated"] != sizes.changes:
                raise RuntimeError(f"{name}: expected {sizes.changes} updates, got {answer['body']}")
            rounds.append({**answer, "google_requests": google[0], "fake_s": env.fake_s})
    median = sorted(rounds, key=lambda r: r["wall_s"])[len(rounds) // 2]
    less_fake = sorted(r["wall_s"] - r["fake_s"] for r in rounds)[len(rounds) // 2]
    return [
        row(
            name,
            {"events": events, "changes": sizes.changes, "rounds": sizes.rounds},
            google_requests=median["google_requests"],
            directus_requests=median["directus_requests"],
            floor_requests=floor_incremental(sizes.changes),
            wall_s=round(median["wall_s"], 3),
            wall_s_rounds=[round(r["wall_s"], 3) for r in rounds],
            fake_s=round(median["fake_s"], 3),
            wall_less_fake_s=round(less_fake, 3),
            peak_rss_mb=max(r["peak_rss_mb"] for r in rounds),
            latency_s=b.latency,
        )
    ]


def import_full(b: Bench) -> list[Row]:
    """The first cycle of a calendar of ``sizes.full`` events (nothing synced yet)."""
    size = b.sizes.full
    with b.environment("import_full_10000") as env:
        env.seed(size)
        env.worker.call("warm")
        with env.timed():
            answer = env.worker.call("cycle", **env.profile("import_full_10000"))
            google = env.google_requests()
        if answer["body"]["created"] != size:
            raise RuntimeError(f"import_full: expected {size} creates, got {answer['body']}")
        # Not timed: what the next cycle costs, which relists every event the import stamped.
        with env.timed():
            env.worker.call("cycle")
            echo = env.google_requests()
    return [
        step_row(
            "import_full_10000",
            {"events": size},
            answer,
            google,
            floor_full(size),
            b.latency,
            next_cycle_google_requests=echo[0],
        )
    ]


# -- Directus -> Google, repaired by a cycle -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DirectusOwn:
    """Directus's own time for a set of writes, sent by nothing but the client."""

    seconds: float
    requests: int


def status_update(booking: Row) -> Row:
    """What the push's write-back sends for a booking it synced (``calsync.sync.writeback``): its event id,
    ``synced`` and no error, each only where Directus holds another value."""
    wanted = {
        FIELDS.google_event_id: event_id_for(DEFAULT_CONNECTION, COLLECTION, str(booking["id"])),
        FIELDS.sync_status: "synced",
        FIELDS.sync_error: None,
    }
    return {"id": booking["id"], **{k: v for k, v in wanted.items() if booking.get(k) != v}}


def directus_own_write_back(directus: Directus, bookings: int) -> DirectusOwn:
    """Directus's own time to record the statuses a push of ``bookings`` new bookings writes back.

    The same bookings (``bookings`` of them, created as the push's are), the same updates (``status_update``),
    in the same calls: one ``update_items`` per batch of ``BATCH_LIMIT``, in order, one at a time, as the
    sync user with the product's own client; nothing else. Each booking gets its own
    ``google_event_id`` (the contract), so Directus records each one apart (permissions, revision,
    activity): that is the part of a push no sync can make faster, and what ``push_1000`` is compared to.
    The bookings are deleted afterwards. Measured before the push, so if Directus slows down as its
    revision and activity tables grow, that counts against the push, not for it."""
    updates = [status_update(booking) for booking in directus.create_bookings(bookings)]
    client = directus.sync_client()
    started = time.perf_counter()
    for start in range(0, len(updates), BATCH_LIMIT):
        client.update_items(updates[start : start + BATCH_LIMIT])
    seconds = time.perf_counter() - started
    directus.clear_bookings()
    return DirectusOwn(seconds, client.requests)


def push_1000(b: Bench) -> list[Row]:
    """``sizes.push`` bookings created in Directus while no webhook came (the Flow is off), repaired by one
    cycle of an already-synced connection.

    Google's side has a floor (``floor_push``); Directus's side is bound by Directus recording one status per
    booking, which the bench measures apart (``directus_own_write_back``): ``ratio_to_directus`` is the
    push's wall time over that. Afterwards every booking must hold its event id and ``synced``
    (``written_back``)."""
    name = "push_1000"
    size = b.sizes.push
    with b.environment(name) as env:
        env.worker.call("cycle")  # connected and synced: sync token and Directus checkpoint in place
        own = directus_own_write_back(b.directus, size)
        b.directus.create_bookings(size)
        env.fresh_worker()
        env.worker.call("warm")
        with env.timed():
            answer = env.worker.call("cycle", **env.profile(name))
            google = env.google_requests()
        if answer["body"]["pushed"] != size:
            raise RuntimeError(f"{name}: expected {size} pushed, got {answer['body']}")
        written_back = sum(
            1
            for booking in b.directus.bookings([FIELDS.google_event_id, FIELDS.sync_status])
            if booking[FIELDS.google_event_id] and booking[FIELDS.sync_status] == "synced"
        )
    return [
        step_row(
            name,
            {"bookings": size},
            answer,
            google,
            floor_push(size),
            b.latency,
            directus_own_s=round(own.seconds, 3),
            directus_own_requests=own.requests,
            ratio_to_directus=round(answer["wall_s"] / own.seconds, 2),
            written_back=written_back,
        )
    ]


# -- a tick with nothing to do ----------------------------------------------------------------------------


def tick_quiet_name(connections: int) -> str:
    return f"tick_quiet_{connections}_connection" + ("s" if connections != 1 else "")


def tick_quiet(b: Bench, connections: int = 1, name: str | None = None) -> list[Row]:
    """One tick after setup, when nothing changed on either side since the last one.

    One connection (``tick_quiet_1_connection``): the default connection, no routing; ``sizes.quiet``
    events in the calendar and as many bookings in Directus. Several (``tick_quiet_50_connections``):
    ``connections`` connections of their own accounts (bench/harness.py ``fleet``), ``ROUTE_FIELD=staff``,
    ``sizes.per_connection`` events in each calendar and bookings routed to each; the same tick of one such
    connection is measured first (``reference_*``): the tick's Directus reads are shared by every
    connection, so its Directus requests are the ones the fleet's tick must make too.

    Setup: synced both ways, then ticks until one changes nothing (the first imports and pushes, the next
    absorb their echoes). The timed tick must change nothing either; its Google requests are the floor's
    one list call per connection, its Directus requests and wall time are what every tick of a quiet day
    costs. ``name``: the row's (``--small`` keeps the full size's names)."""
    name = name or tick_quiet_name(connections)
    if connections == 1:
        answer, google = quiet_tick_default(b, name)
        sizes = {"connections": 1, "events": b.sizes.quiet, "bookings": b.sizes.quiet}
        return [step_row(name, sizes, answer, google, floor_tick_quiet(1), b.latency,
                         directus_wait_s=round(answer["directus_wait_s"], 3))]  # fmt: skip
    per = b.sizes.per_connection
    reference, reference_google = quiet_tick_fleet(b, f"{name}_reference", 1)
    answer, google = quiet_tick_fleet(b, name, connections)
    sizes = {"connections": connections, "events_per_connection": per, "bookings_per_connection": per}
    return [
        step_row(
            name,
            sizes,
            answer,
            google,
            floor_tick_quiet(connections),
            b.latency,
            directus_wait_s=round(answer["directus_wait_s"], 3),
            concurrency=SYNC_CONCURRENCY_DEFAULT,
            reference_google_requests=reference_google[0],
            reference_directus_requests=reference["directus_requests"],
            reference_wall_s=round(reference["wall_s"], 3),
            wall_vs_reference=round(answer["wall_s"] / reference["wall_s"], 2),
        )
    ]


def quiet_tick_default(b: Bench, name: str) -> tuple[dict[str, Any], tuple[int, int]]:
    size = b.sizes.quiet
    with b.environment(name) as env:
        env.seed(size)
        b.directus.create_bookings(size)
        settle(env, name)
        return timed_quiet_tick(env, name, None)


def quiet_tick_fleet(b: Bench, name: str, count: int) -> tuple[dict[str, Any], tuple[int, int]]:
    connections = fleet(count)
    per = b.sizes.per_connection
    with (
        b.directus.connections(fleet_items(connections)),
        b.environment(name, settings={"route_field": ROUTE_FIELD}, connect=False) as env,
    ):
        connect_fleet(env, connections, per)
        b.directus.create_bookings(per, staff=connections)
        settle(env, name)
        return timed_quiet_tick(env, name, connections)


def timed_quiet_tick(
    env: Env, name: str, connections: list[str] | None
) -> tuple[dict[str, Any], tuple[int, int]]:
    """A fresh process, warm (every connection's access token), and one timed tick that changes nothing."""
    env.fresh_worker()
    env.worker.call("warm", connections=connections)
    with env.timed():
        answer = env.worker.call("cycle", **env.profile(name))
        google = env.google_requests()
    if changed(answer["body"]):
        raise RuntimeError(f"{name}: the quiet tick changed something: {answer['body']}")
    return answer, google


COUNTERS = ("created", "updated", "cancelled", "pushed", "queued")


def changed(body: dict[str, Any]) -> bool:
    """Whether a tick changed anything, in any of its connections."""
    each = body.get("connections")
    if isinstance(each, dict) and each:
        return any(changed(one) for one in each.values())
    return any(body.get(name) for name in COUNTERS)


def settle(env: Env, name: str, most: int = 5) -> None:
    """Ticks until one changes nothing."""
    for _ in range(most):
        if not changed(env.worker.call("cycle")["body"]):
            return
    raise RuntimeError(f"{name}: still changing after {most} ticks")


# -- Google -> Directus through push notifications and Pub/Sub ------------------------------------------


POLL_S = 0.02  # how often the bench reads the booking back from Directus
EDIT_TIMEOUT_S = 30.0
QUIET_S = 0.5  # no delivery for this long after an edit showed: its cycles (and their echoes) are done


def google_edit_to_directus(b: Bench) -> list[Row]:
    """``sizes.edits`` edits in the calendar, one at a time, each timed from the edit until the booking in
    Directus shows it, through everything production has in between: the fake's push notification to
    booking_hook's ``/notifications`` (real HTTP), a sync request published to the Pub/Sub emulator, its
    push subscription's delivery to calendar_import (real HTTP), that connection's cycle, Directus.

    Setup: the default connection, ``PUBSUB_TOPIC`` and ``NOTIFICATION_URL`` set; ``sizes.edits`` events,
    imported by the first cycle, which also opens the push channel; synced. Then a fresh process serving
    both functions, warm, and the edits: after each, the bench waits until calendar_import has been quiet
    for ``QUIET_S`` (every cycle the edit caused is over) before the next, so each edit is its own
    notification burst, and its Google requests are counted apart."""
    name = "google_edit_to_directus"
    edits = b.sizes.edits
    hook_port, import_port = free_port(), free_port()
    pubsub = b.pubsub
    with pubsub.push_to("sync-requests", f"http://127.0.0.1:{import_port}/") as topic:
        settings = {"pubsub_topic": topic, "notification_url": f"http://127.0.0.1:{hook_port}/notifications"}
        with b.environment(name, settings=settings, env_extra={"PUBSUB_EMULATOR_HOST": pubsub.host}) as env:
            env.google.allow_http_push = True  # plain http to 127.0.0.1; Google wants https
            ids = env.seed(edits)
            settle(env, name)
            if len([c for c in env.google.channels() if not c["stopped"]]) != 1:
                raise RuntimeError(f"{name}: the first cycle opened no push channel: {env.google.channels()}")
            keys = {
                row[FIELDS.google_event_id]: str(row["id"])
                for row in b.directus.bookings([FIELDS.google_event_id])
            }
            env.fresh_worker()
            env.worker.call("warm")
            env.worker.call(
                "serve", hook_port=hook_port, import_port=import_port, concurrency=b.sizes.fanout_concurrency
            )
            latencies: list[float] = []
            per_edit: list[int] = []
            deliveries: list[dict[str, Any]] = []
            directus_before = env.worker.call("counts")["directus_total"]
            notifications_before = len(env.google.notifications())
            peak = 0.0
            with env.timed():
                began = time.perf_counter()
                for number, event_id in enumerate(ids):
                    title = f"Moved on the phone {number}"
                    google_before = env.google.count(path_contains=CALENDAR_API)
                    started = time.perf_counter()
                    env.google.edit_event(event_id, summary=title)
                    wait_for_title(b.directus, keys[event_id], title, started)
                    latencies.append((time.perf_counter() - started) * 1000)
                    quiet = env.worker.call("quiet", after=len(deliveries), quiet_s=QUIET_S)
                    deliveries.extend(quiet["deliveries"])
                    peak = max(peak, quiet["peak_rss_mb"])
                    per_edit.append(env.google.count(path_contains=CALENDAR_API) - google_before)
                wall = time.perf_counter() - began
                google = env.google_requests()
            directus_after = env.worker.call("counts")["directus_total"]
            sent = env.google.notifications()[notifications_before:]
    statuses = Counter(str(d["status"]) for d in deliveries)
    return [
        row(
            name,
            {"edits": edits},
            google_requests=google[0],
            google_batch_parts=google[1],
            directus_requests=directus_after - directus_before,
            floor_requests=floor_edits(edits),
            wall_s=round(wall, 3),
            peak_rss_mb=peak,
            latency_s=b.latency,
            p50_ms=round(percentile(latencies, 0.50), 1),
            p95_ms=round(percentile(latencies, 0.95), 1),
            max_ms=round(max(latencies), 1),
            google_per_edit_max=max(per_edit),
            google_per_edit=dict(sorted(Counter(per_edit).items())),
            notifications=len(sent),
            notification_statuses=dict(Counter(n.status for n in sent)),
            deliveries=len(deliveries),
            delivery_statuses=dict(sorted(statuses.items())),
        )
    ]


def wait_for_title(directus: Directus, key: str, title: str, started: float) -> None:
    """Poll the booking in Directus until it has this title."""
    while directus.booking(key, ["title"]).get("title") != title:
        if time.perf_counter() - started > EDIT_TIMEOUT_S:
            raise RuntimeError(f"booking {key} does not show {title!r} after {EDIT_TIMEOUT_S} s")
        time.sleep(POLL_S)


def tick_fanout(b: Bench) -> list[Row]:
    """One tick of ``sizes.fanout`` quiet connections through Pub/Sub: the tick publishes one sync request
    per connection to the emulator, whose push subscription delivers each to calendar_import (real HTTP),
    which runs that connection's cycle; timed until every connection's cycle has run.

    calendar_import serves at most ``sizes.fanout_concurrency`` requests at once (bench/serving.py's
    ``Gate``: the others wait for a slot, as requests wait for a free instance); ``SYNC_CONCURRENCY`` is
    the same. Setup as ``tick_quiet_50_connections``'s (routed, each connection its own account, synced by
    in-process ticks), then a fresh process with ``PUBSUB_TOPIC`` set, warm, serving."""
    name = "tick_fanout_200_connections"
    count, concurrency = b.sizes.fanout, b.sizes.fanout_concurrency
    connections = fleet(count)
    hook_port, import_port = free_port(), free_port()
    pubsub = b.pubsub
    settings = {"route_field": ROUTE_FIELD, "sync_concurrency": concurrency}
    with (
        pubsub.push_to("sync-requests", f"http://127.0.0.1:{import_port}/") as topic,
        b.directus.connections(fleet_items(connections)),
        b.environment(
            name, settings=settings, env_extra={"PUBSUB_EMULATOR_HOST": pubsub.host}, connect=False
        ) as env,  # fmt: skip
    ):
        connect_fleet(env, connections, b.sizes.per_connection)
        b.directus.create_bookings(b.sizes.per_connection, staff=connections)
        settle(env, name)
        env.fresh_worker(pubsub_topic=topic)
        env.worker.call("warm", connections=connections)
        env.worker.call("serve", hook_port=hook_port, import_port=import_port, concurrency=concurrency)
        with env.timed():
            answer = env.worker.call("fan_out", connections=count, **env.profile(name))
            google = env.google_requests()
    deliveries = answer["deliveries"]
    ran = [d for d in deliveries if d["status"] == "ok"]
    durations = [d["ended"] - d["started"] for d in ran]
    serial = sum(durations)
    wall = answer["wall_s"]
    return [
        step_row(
            name,
            {"connections": count},
            answer,
            google,
            floor_fanout(count),
            b.latency,
            concurrency=concurrency,
            peak_in_flight=answer["peak"],
            published=len(answer["tick"]["connections"]),
            deliveries=len(deliveries),
            delivery_statuses=dict(sorted(Counter(str(d["status"]) for d in deliveries).items())),
            tick_s=round(answer["tick_s"], 3),
            first_delivery_s=round(min(d["arrived"] for d in deliveries) - answer["began"], 3),
            cycle_p50_ms=round(percentile(durations, 0.5) * 1000, 1),
            cycle_p95_ms=round(percentile(durations, 0.95) * 1000, 1),
            queued_p95_ms=round(percentile([d["started"] - d["arrived"] for d in ran], 0.95) * 1000, 1),
            cycles_serial_s=round(serial, 3),
            parallelism=round(serial / wall, 2),
            wall_vs_ideal=round(wall / (serial / concurrency), 2),
        )
    ]


# -- cold starts ------------------------------------------------------------------------------------------


def cold_start(b: Bench) -> list[Row]:
    """Import time of each function's main.py in a fresh interpreter (bench/coldstart.py), the median of
    ``cold_runs`` runs, and of the modules the function's first request imports lazily."""
    rows = []
    runs_count = b.sizes.cold_runs
    for function in FUNCTIONS:
        runs = []
        for _ in range(runs_count):
            result = subprocess.run(
                [sys.executable, str(ROOT / "bench" / "coldstart.py"), function],
                cwd=ROOT / "functions" / function,
                env=child_env(),
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
        imports_ms = [r["import_s"] * 1000 for r in runs]
        rows.append(
            row(
                f"cold_start_{function}",
                {"runs": runs_count},
                google_requests=0,
                directus_requests=0,
                floor_requests=0,
                wall_s=round(statistics.median(imports_ms) / 1000, 3),
                p50_ms=round(percentile(imports_ms, 0.5), 1),
                p95_ms=round(percentile(imports_ms, 0.95), 1),
                first_request_imports_ms=round(
                    statistics.median(r["first_request_imports_s"] * 1000 for r in runs), 1
                ),
                peak_rss_mb=round(max(r["rss_mb"] for r in runs), 1),
            )
        )
    return rows


# -- the catalogue ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A scenario as ``--only`` names it; ``default``: in a run without ``--only`` (those that take more
    than a minute at full size may be left out)."""

    run: Callable[[Bench], list[Row]]
    default: bool = True


SCENARIOS: dict[str, Scenario] = {
    "hook_create": Scenario(hook_create),
    "import_incremental_10_of_100": Scenario(
        lambda b: import_incremental(b, "import_incremental_10_of_100", b.sizes.incremental[0])
    ),
    "import_incremental_10_of_10000": Scenario(
        lambda b: import_incremental(b, "import_incremental_10_of_10000", b.sizes.incremental[1])
    ),
    "import_full_10000": Scenario(import_full),
    "push_1000": Scenario(push_1000),
    tick_quiet_name(1): Scenario(lambda b: tick_quiet(b, connections=1)),
    tick_quiet_name(50): Scenario(lambda b: tick_quiet(b, b.sizes.fleet, tick_quiet_name(50))),
    "google_edit_to_directus": Scenario(google_edit_to_directus),
    "tick_fanout_200_connections": Scenario(tick_fanout),
    "cold_start": Scenario(cold_start),
}
