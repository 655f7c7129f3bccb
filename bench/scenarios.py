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
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from bench.coldstart import FUNCTIONS
from bench.floors import floor_full, floor_hook, floor_incremental, floor_push, floor_tick_quiet
from bench.harness import COLLECTION, ROOT, Directus, Env, child_env, environment, percentile
from calsync.state.store import DEFAULT_CONNECTION
from calsync.sync.booking import FIELDS
from calsync.sync.ids import event_id_for
from calsync.sync.push import BATCH_LIMIT

Row = dict[str, Any]


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


SMALL = Sizes(hook=20, incremental=(20, 50), changes=3, full=50, push=30, quiet=10, rounds=1, cold_runs=1)


class Bench:
    """What every scenario shares: the sizes, the latency, a work folder, and the run's Directus (started
    on first use, so a run of cold starts alone needs none)."""

    def __init__(self, work: Path, sizes: Sizes, latency: float, profile_dir: Path | None = None) -> None:
        self.work = work
        self.sizes = sizes
        self.latency = latency
        self.profile_dir = profile_dir
        self._directus: Directus | None = None

    @property
    def directus(self) -> Directus:
        if self._directus is None:
            self._directus = Directus()
        return self._directus

    def environment(self, name: str, latency: float | None = None) -> AbstractContextManager[Env]:
        return environment(
            self.directus, self.latency if latency is None else latency, self.work / name, self.profile_dir
        )

    def close(self) -> None:
        if self._directus is not None:
            self._directus.stop()
            self._directus = None


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


def tick_quiet(b: Bench, connections: int = 1) -> list[Row]:
    """One cycle after setup, when nothing changed on either side since the last one.

    Setup: ``sizes.quiet`` events in the calendar and as many bookings in Directus, synced both ways, then
    cycles until one changes nothing (the first imports and pushes, the next absorb their echoes). The
    timed cycle must change nothing either; its Google requests are the floor's one list call per
    connection, its Directus requests and wall time are what every tick of a quiet day costs.

    One connection for now: the worker holds one App, whose connection the entry point syncs. More
    connections will need the worker to hold one per connection and sum the timed cycles here; the name,
    the floor and the row already take the count."""
    if connections != 1:
        raise NotImplementedError("bench/worker.py syncs one connection per process")
    name = tick_quiet_name(connections)
    size = b.sizes.quiet
    with b.environment(name) as env:
        env.seed(size)
        b.directus.create_bookings(size)
        settle(env, name)
        env.fresh_worker()
        env.worker.call("warm")
        with env.timed():
            answer = env.worker.call("cycle", **env.profile(name))
            google = env.google_requests()
        if changed(answer["body"]):
            raise RuntimeError(f"{name}: the quiet cycle changed something: {answer['body']}")
    return [
        step_row(
            name,
            {"connections": connections, "events": size, "bookings": size},
            answer,
            google,
            floor_tick_quiet(connections),
            b.latency,
            directus_wait_s=round(answer["directus_wait_s"], 3),
        )
    ]


def changed(body: dict[str, Any]) -> bool:
    return any(body[name] for name in ("created", "updated", "cancelled", "pushed", "queued"))


def settle(env: Env, name: str, most: int = 5) -> None:
    """Cycles until one changes nothing."""
    for _ in range(most):
        if not changed(env.worker.call("cycle")["body"]):
            return
    raise RuntimeError(f"{name}: still changing after {most} cycles")


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
    "cold_start": Scenario(cold_start),
}
