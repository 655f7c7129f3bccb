"""The targets, as ratios to each dependency's floor, and the met/not-met decision.

Google's floor is a number of requests (bench/floors.py); Directus's is its own time for the same work,
measured apart (``push_1000``'s ``directus_own_s``) or set beside ours (``hook_create``'s Directus share).
``judge`` adds the ratios every row can give (``google_vs_floor``; ``wall_vs_100`` for the larger
incremental import; ``wall_vs_1_connection`` for a tick of several connections), then each row's ``target`` (its text) and ``met`` (``null``: no target, as for cold
starts, which are reported).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
Rows = dict[str, Row]  # by scenario name

PUSH_RATIO_TO_DIRECTUS = 1.15
HOOK_OWN_P50_MS = 10.0
HOOK_OWN_P95_MS = 25.0
INCREMENTAL_VS_FLOOR = 1.1
INCREMENTAL_SIZE_RATIO = 1.2
FULL_VS_FLOOR = 1.1
FULL_PEAK_RSS_MB = 250
EDIT_P95_MS = 3000.0


@dataclasses.dataclass(frozen=True)
class Target:
    text: str
    met: Callable[[Row], bool]


def at_floor(row: Row) -> bool:
    return bool(row["google_requests"] == row["floor_requests"])


def within_floor(row: Row, factor: float) -> bool:
    return bool(row["google_requests"] <= factor * row["floor_requests"])


def incremental_10000_met(row: Row) -> bool:
    """Size independence: as fast on 10,000 events as on 100, when that row was run."""
    ratio = row.get("wall_vs_100")
    return within_floor(row, INCREMENTAL_VS_FLOOR) and (ratio is None or ratio <= INCREMENTAL_SIZE_RATIO)


TARGETS: dict[str, Target] = {
    "hook_create": Target(
        f"own_p50_ms < {HOOK_OWN_P50_MS:g}, own_p95_ms < {HOOK_OWN_P95_MS:g} (our overhead: each delivery "
        "less Directus's answers, given beside it as directus_p50_ms/directus_p95_ms)",
        lambda row: row["own_p50_ms"] < HOOK_OWN_P50_MS and row["own_p95_ms"] < HOOK_OWN_P95_MS,
    ),
    "import_incremental_10_of_100": Target(
        f"google_requests <= {INCREMENTAL_VS_FLOOR:g} x floor",
        lambda row: within_floor(row, INCREMENTAL_VS_FLOOR),
    ),
    "import_incremental_10_of_10000": Target(
        f"google_requests <= {INCREMENTAL_VS_FLOOR:g} x floor; wall_less_fake_s <= "
        f"{INCREMENTAL_SIZE_RATIO:g} x import_incremental_10_of_100's (wall_vs_100)",
        incremental_10000_met,
    ),
    "import_full_10000": Target(
        f"google_requests <= {FULL_VS_FLOOR:g} x floor; peak RSS < {FULL_PEAK_RSS_MB} MB",
        lambda row: within_floor(row, FULL_VS_FLOOR) and row["peak_rss_mb"] < FULL_PEAK_RSS_MB,
    ),
    "push_1000": Target(
        f"google_requests == floor; ratio_to_directus <= {PUSH_RATIO_TO_DIRECTUS:g} (wall_s over Directus's "
        "own time for the same write-backs, directus_own_s); google_event_id written back on every booking",
        lambda row: (
            at_floor(row)
            and row["ratio_to_directus"] <= PUSH_RATIO_TO_DIRECTUS
            and row["written_back"] == row["sizes"]["bookings"]
        ),
    ),
}


TARGETS["google_edit_to_directus"] = Target(
    f"p95_ms < {EDIT_P95_MS:g} (from the edit in Google until the booking in Directus shows it)",
    lambda row: row["p95_ms"] < EDIT_P95_MS,
)
TARGETS["tick_fanout_200_connections"] = Target(
    "google_requests == floor (one events.list per connection); wall time reported against the concurrency",
    at_floor,
)

TICK_QUIET = Target("google_requests == floor (one events.list per connection)", at_floor)
TICK_QUIET_FLEET = Target(
    "google_requests == floor (one events.list per connection); directus_requests == one routed "
    "connection's tick's (reference_directus_requests)",
    lambda row: at_floor(row) and row["directus_requests"] == row["reference_directus_requests"],
)


def target_for(scenario: str) -> Target | None:
    if scenario == "tick_quiet_1_connection":
        return TICK_QUIET
    if scenario.startswith("tick_quiet_"):
        return TICK_QUIET_FLEET
    return TARGETS.get(scenario)


def add_ratios(rows: Rows) -> None:
    for row in rows.values():
        if row.get("floor_requests"):
            row["google_vs_floor"] = round(row["google_requests"] / row["floor_requests"], 2)
    small = rows.get("import_incremental_10_of_100")
    large = rows.get("import_incremental_10_of_10000")
    if small is not None and large is not None:
        # Compared less the fake's own computing time (harness.Env.timed): Google's answer time is the latency.
        large["wall_vs_100"] = round(large["wall_less_fake_s"] / small["wall_less_fake_s"], 2)
        large["wall_vs_100_raw"] = round(large["wall_s"] / small["wall_s"], 2)
    one = rows.get("tick_quiet_1_connection")
    for name, row in rows.items():
        if one is not None and name.startswith("tick_quiet_") and row is not one:
            row["wall_vs_1_connection"] = round(row["wall_s"] / one["wall_s"], 2)


def judge(rows: list[Row]) -> None:
    """Add the ratios, each row's target and whether it is met, in place."""
    by_name = {row["scenario"]: row for row in rows}
    add_ratios(by_name)
    for row in rows:
        target = target_for(row["scenario"])
        row["target"] = target.text if target else None
        row["met"] = target.met(row) if target else None
