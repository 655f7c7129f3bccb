"""The benchmark suite (bench/) on tiny sizes, so it cannot rot. Timings are not asserted: only that every
scenario runs and writes well-formed results whose request counts make sense, and that the targets decide
as the issue sets them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import run as bench
from bench.scenarios import SMALL
from bench.targets import judge
from tests.parts.availability import part_unavailable
from tests.parts.directus import install_dir
from tests.parts.processes import sdk_file
from tests.parts.pubsub import _LAUNCHER

SCENARIOS = [
    "hook_create",
    "import_incremental_10_of_100",
    "import_incremental_10_of_10000",
    "import_full_10000",
    "push_1000",
    "tick_quiet_1_connection",
    "tick_quiet_50_connections",
    "google_edit_to_directus",
    "tick_fanout_200_connections",
    "cold_start_booking_hook",
    "cold_start_calendar_import",
    "cold_start_oauth_callback",
]


@pytest.mark.directus
@pytest.mark.google
def test_bench_runs_on_tiny_sizes_and_writes_well_formed_results(tmp_path: Path) -> None:
    if not (install_dir() / ".installed").exists():
        part_unavailable("Directus 12", f"not installed at {install_dir()}: run `make directus`")
    if sdk_file(_LAUNCHER) is None or shutil.which("java") is None:
        part_unavailable("Pub/Sub emulator", "no cloud-pubsub-emulator launcher, or no java on PATH")
    output = tmp_path / "results.json"
    assert bench.main(["--small", "--latency", "0", "--output", str(output)]) == 0
    rows = json.loads(output.read_text())
    assert [row["scenario"] for row in rows] == SCENARIOS
    for row in rows:
        for name in ("google_requests", "directus_requests", "floor_requests"):
            assert isinstance(row[name], int) and row[name] >= 0, (row["scenario"], name)
        for name in ("wall_s", "peak_rss_mb"):
            assert isinstance(row[name], int | float) and row[name] > 0, (row["scenario"], name)
        assert "target" in row and row["met"] in (True, False, None)
        if row["floor_requests"]:
            assert row["google_vs_floor"] == round(row["google_requests"] / row["floor_requests"], 2)
    by_name = {row["scenario"]: row for row in rows}

    hook = by_name["hook_create"]
    assert hook["google_requests"] == hook["floor_requests"] == SMALL.hook  # one insert per delivery
    assert 0 < hook["p50_ms"] <= hook["p95_ms"]
    # the booking read and the status write-back, and the connections, read once per ROSTER_TTL
    assert hook["directus_requests"] <= 2 * SMALL.hook + 1
    # our overhead is what is left of a delivery once Directus's answers are taken out
    assert 0 < hook["own_p50_ms"] < hook["p50_ms"] and 0 < hook["directus_p50_ms"] < hook["p50_ms"]

    for name in ("import_incremental_10_of_100", "import_incremental_10_of_10000"):
        assert by_name[name]["google_requests"] == by_name[name]["floor_requests"] == 1  # one list page
    assert "wall_vs_100" in by_name["import_incremental_10_of_10000"]
    full = by_name["import_full_10000"]
    assert full["floor_requests"] == 1 + math.ceil(SMALL.full / 50)
    assert full["google_requests"] == full["floor_requests"]

    push = by_name["push_1000"]
    batches = math.ceil(SMALL.push / 50)
    assert push["google_requests"] == push["floor_requests"] == 1 + batches
    assert push["google_batch_parts"] == SMALL.push  # every insert rode in a batch
    assert push["written_back"] == SMALL.push  # google_event_id on every booking: the contract
    # Directus's own time for the same write-backs: one update call per batch, measured apart
    assert push["directus_own_s"] > 0 and push["directus_own_requests"] == batches
    assert push["ratio_to_directus"] == pytest.approx(push["wall_s"] / push["directus_own_s"], abs=0.01)

    quiet = by_name["tick_quiet_1_connection"]
    assert quiet["google_requests"] == quiet["floor_requests"] == 1 and quiet["met"] is True
    assert quiet["directus_requests"] > 0 and quiet["sizes"]["connections"] == 1

    fleet = by_name["tick_quiet_50_connections"]  # SMALL.fleet connections, routed
    assert fleet["sizes"]["connections"] == SMALL.fleet
    assert fleet["google_requests"] == fleet["floor_requests"] == SMALL.fleet  # one list each
    assert fleet["reference_google_requests"] == 1
    # the tick's Directus reads are shared: as many as for one routed connection
    assert fleet["directus_requests"] == fleet["reference_directus_requests"] > 0 and fleet["met"] is True
    assert fleet["wall_vs_1_connection"] == round(fleet["wall_s"] / quiet["wall_s"], 2)

    edit = by_name["google_edit_to_directus"]  # notification -> Pub/Sub emulator -> calendar_import
    assert edit["floor_requests"] == SMALL.edits and edit["notifications"] >= SMALL.edits
    assert edit["google_requests"] >= SMALL.edits and sum(edit["google_per_edit"].values()) == SMALL.edits
    assert 0 < edit["p50_ms"] <= edit["p95_ms"] <= edit["max_ms"] and edit["deliveries"] >= SMALL.edits
    assert edit["delivery_statuses"].get("ok", 0) >= SMALL.edits

    fanout = by_name["tick_fanout_200_connections"]  # one tick published, every cycle ran by push
    assert fanout["published"] == SMALL.fanout and fanout["delivery_statuses"]["ok"] == SMALL.fanout
    assert fanout["google_requests"] == fanout["floor_requests"] == SMALL.fanout and fanout["met"] is True
    assert 1 <= fanout["peak_in_flight"] <= fanout["concurrency"] == SMALL.fanout_concurrency
    assert fanout["cycles_serial_s"] > 0 and fanout["parallelism"] > 0

    for function in ("booking_hook", "calendar_import", "oauth_callback"):
        cold = by_name[f"cold_start_{function}"]
        assert cold["google_requests"] == cold["directus_requests"] == 0
        assert cold["p50_ms"] > 0 and cold["first_request_imports_ms"] >= 0 and cold["met"] is None


def push_row(**fields: Any) -> dict[str, Any]:
    row = {"scenario": "push_1000", "sizes": {"bookings": 1000}, "google_requests": 21, "floor_requests": 21,
           "wall_s": 6.0, "directus_own_s": 5.5, "ratio_to_directus": 1.09, "written_back": 1000}  # fmt: skip
    return {**row, **fields}


@pytest.mark.parametrize(
    ("fields", "met"),
    [
        ({}, True),
        ({"ratio_to_directus": 1.2}, False),  # slower than 1.15x Directus's own time
        ({"google_requests": 22}, False),  # above Google's floor
        ({"written_back": 999}, False),  # a booking without its google_event_id
    ],
)
def test_push_target_is_the_google_floor_and_a_ratio_to_directus(fields: dict[str, Any], met: bool) -> None:
    rows = [push_row(**fields)]
    judge(rows)
    assert rows[0]["met"] is met


@pytest.mark.parametrize(
    ("fields", "met"),
    [
        ({}, True),
        ({"google_requests": 51}, False),  # a connection asked Google more than its one list
        ({"directus_requests": 7}, False),  # Directus's cost grew with the connections
    ],
)
def test_a_quiet_fleet_tick_is_judged_on_both_floors(fields: dict[str, Any], met: bool) -> None:
    row = {"scenario": "tick_quiet_50_connections", "google_requests": 50, "floor_requests": 50,
           "directus_requests": 6, "reference_directus_requests": 6, "wall_s": 1.0}  # fmt: skip
    rows = [{**row, **fields}]
    judge(rows)
    assert rows[0]["met"] is met


@pytest.mark.parametrize(("p95_ms", "met"), [(2999.0, True), (3000.0, False)])
def test_an_edit_reaches_directus_within_the_p95_target(p95_ms: float, met: bool) -> None:
    rows = [{"scenario": "google_edit_to_directus", "google_requests": 50, "floor_requests": 50,
             "p95_ms": p95_ms}]  # fmt: skip
    judge(rows)
    assert rows[0]["met"] is met


@pytest.mark.parametrize(
    ("own_p50", "own_p95", "met"), [(9.9, 24.9, True), (10.0, 20.0, False), (5.0, 25.0, False)]
)
def test_hook_create_is_judged_on_our_own_overhead(own_p50: float, own_p95: float, met: bool) -> None:
    rows = [{"scenario": "hook_create", "google_requests": 200, "floor_requests": 200,
             "own_p50_ms": own_p50, "own_p95_ms": own_p95, "p50_ms": 40.0, "p95_ms": 60.0}]  # fmt: skip
    judge(rows)
    assert rows[0]["met"] is met
