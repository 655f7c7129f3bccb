"""The benchmark suite (bench/run.py) on tiny sizes, so it cannot rot. Timings are not asserted: only that
every scenario runs and writes well-formed results whose request counts make sense."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import run as bench
from tests.parts.availability import part_unavailable
from tests.parts.directus import install_dir

pytestmark = [pytest.mark.directus, pytest.mark.google]

SCENARIOS = [
    "hook_create",
    "import_incremental_10_of_100",
    "import_incremental_10_of_10000",
    "import_full_10000",
    "push_1000",
    "push_1000_one_request_per_booking",
    "push_1000_one_delivery_per_booking",
    "cold_start_booking_hook",
    "cold_start_calendar_import",
    "cold_start_oauth_callback",
]


def test_bench_runs_on_tiny_sizes_and_writes_well_formed_results(tmp_path: Path) -> None:
    if not (install_dir() / ".installed").exists():
        part_unavailable("Directus 12", f"not installed at {install_dir()}: run `make directus`")
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
    by_name = {row["scenario"]: row for row in rows}
    small = bench.SMALL

    hook = by_name["hook_create"]
    assert hook["google_requests"] == hook["floor_requests"] == small.hook  # one insert per delivery
    assert 0 < hook["p50_ms"] <= hook["p95_ms"]
    assert hook["directus_requests"] <= 2 * small.hook  # the booking read and the status write-back
    # our overhead is what is left of a delivery once Directus's answers are taken out
    assert 0 < hook["own_p50_ms"] < hook["p50_ms"] and 0 < hook["directus_p50_ms"] < hook["p50_ms"]

    for name in ("import_incremental_10_of_100", "import_incremental_10_of_10000"):
        assert by_name[name]["google_requests"] == by_name[name]["floor_requests"] == 1  # one list page
    full = by_name["import_full_10000"]
    assert full["floor_requests"] == 1 + math.ceil(small.full / 50)
    assert full["google_requests"] == full["floor_requests"]

    batched, single = by_name["push_1000"], by_name["push_1000_one_request_per_booking"]
    assert batched["google_requests"] == batched["floor_requests"] == 1 + math.ceil(small.push / 50)
    assert batched["google_batch_parts"] == small.push  # every insert rode in a batch
    assert single["google_requests"] == 1 + small.push and single["google_batch_parts"] == 0
    assert "speedup_vs_one_request_per_booking" in batched
    # the statuses were written on the push's write-back thread, whose Directus time is measured apart
    assert batched["directus_write_back_s"] > 0 and "speedup_bound_by_directus_write_back" in batched
    per_delivery = by_name["push_1000_one_delivery_per_booking"]
    assert (
        per_delivery["google_requests"] == small.push and per_delivery["directus_requests"] <= 2 * small.push
    )

    for function in ("booking_hook", "calendar_import", "oauth_callback"):
        cold = by_name[f"cold_start_{function}"]
        assert cold["google_requests"] == cold["directus_requests"] == 0
        assert cold["p50_ms"] > 0 and cold["first_request_imports_ms"] >= 0
