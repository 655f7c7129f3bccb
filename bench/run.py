"""Benchmark suite: what a sync costs, against the fewest requests possible, as calendars grow.

    python -m bench.run [--latency 0.03] [--small] [--output bench/results.json] [--only NAME ...]
                        [--profile DIR] [--strict]

(``make bench`` runs it with the defaults.) One real Directus 12 (``make directus``) serves the whole run;
every scenario gets a fresh Google fake with a per-HTTP-request ``latency`` modelling a real round trip (30 ms
by default); the scenarios that go through Pub/Sub share one Pub/Sub emulator (the Cloud SDK's). The
Directus Flow that calls booking_hook is switched off for the whole run: hook_create sends
its deliveries itself, and push_1000's bookings are the ones whose webhooks never came. ``--profile DIR``
runs each timed step under cProfile (timings then inflate); ``--strict`` exits 1 when a target is missed.
``--small`` runs tiny sizes under the same scenario names (the smoke test). Prints the table (Markdown, as
the README's performance table has it) and writes bench/results.json.

Layout: bench/harness.py (processes, the worker protocol, Directus and fake setup, timing), bench/worker.py
(the product's process), bench/floors.py (the fewest Google requests each scenario can take, and why),
bench/serving.py (the functions over real HTTP in the product's process, where Google and Pub/Sub call them),
bench/scenarios.py (one function per scenario), bench/targets.py (the targets as ratios to the floors, and
the decision), bench/coldstart.py (the cold-start program).

bench/results.json is one object per row:

- ``scenario``, ``sizes``; ``latency_s``: the fake's latency during the timed step.
- ``google_requests``: HTTP requests to the Calendar API during the timed step, from the fake's log (a batch
  is one request whatever it holds, ``google_batch_parts`` says how many calls it held). The OAuth token
  endpoint is not the Calendar API and is not counted: the worker has its access token before the timed
  step, as a warm instance has one.
- ``floor_requests``: the fewest Calendar API requests the same work can take (bench/floors.py);
  ``google_vs_floor``: the ratio of the two.
- ``directus_requests``: ``DirectusClient.requests`` during the timed step (retries included).
- ``wall_s``: the timed step (the median over the rounds where there are several). Incremental rows also
  give ``fake_s`` (the fake's own computing time in the step; Google's answer time is modelled by the
  latency alone) and ``wall_less_fake_s``; ``wall_vs_100`` is the 10,000-event row's over the 100-event one's.
- ``peak_rss_mb``: the product process's resident peak during the timed step (VmHWM, reset just before
  the step; bench/worker.py). It is the whole process: interpreter, libraries and the data of the step.
- hook_create: ``p50_ms``/``p95_ms`` per delivery; ``own_p50_ms``/``own_p95_ms``, the same less the time
  spent waiting for Directus's answers, ``directus_p50_ms``/``directus_p95_ms``.
- push_1000: ``directus_own_s`` (and ``directus_own_requests``), Directus's own time to record the same
  status write-backs, sent by nothing but the client (``scenarios.directus_own_write_back``);
  ``ratio_to_directus`` = ``wall_s / directus_own_s``; ``written_back``, the bookings holding their
  ``google_event_id`` and ``synced`` afterwards.
- tick_quiet_*: ``directus_wait_s``, the tick's time waiting for Directus's answers (summed over its
  threads). tick_quiet_50_connections (ROUTE_FIELD=staff): ``concurrency`` (SYNC_CONCURRENCY), and the same
  tick of one routed connection, measured in the same run: ``reference_directus_requests``,
  ``reference_google_requests``, ``reference_wall_s``, ``wall_vs_reference``; ``wall_vs_1_connection``: over
  tick_quiet_1_connection's wall time, when that row ran too.
- google_edit_to_directus: per edit, from the edit in the fake until the booking in Directus shows it
  (Directus read every 20 ms): ``p50_ms``/``p95_ms``/``max_ms``; ``google_per_edit`` (Calendar API requests
  after an edit until calendar_import was quiet: how many edits took how many), ``google_per_edit_max``;
  ``notifications`` the fake sent and their ``notification_statuses``; ``deliveries`` to calendar_import and
  their ``delivery_statuses``. ``wall_s`` is the whole series, waits included.
- tick_fanout_200_connections: ``concurrency`` (how many requests calendar_import serves at once, and
  SYNC_CONCURRENCY), ``peak_in_flight``, ``published``, ``deliveries`` and ``delivery_statuses``,
  ``tick_s`` (the tick itself: shared reads and one publish), ``first_delivery_s`` (tick start to the first
  push), ``cycle_p50_ms``/``cycle_p95_ms`` (one delivery's cycle), ``queued_p95_ms`` (waiting for a slot),
  ``cycles_serial_s`` (their sum), ``parallelism`` (that over ``wall_s``) and ``wall_vs_ideal`` (``wall_s``
  over ``cycles_serial_s / concurrency``).
- cold_start_*: ``p50_ms``/``p95_ms`` of main.py's import over the runs, ``first_request_imports_ms``.
- ``target``/``met``: the row's target and whether it is met (``null``: no target).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script too
    sys.path.insert(0, str(ROOT))

from bench.scenarios import SCENARIOS, SMALL, Bench, Row, Sizes  # noqa: E402
from bench.targets import judge  # noqa: E402

DEFAULT = [name for name, scenario in SCENARIOS.items() if scenario.default]


def run(
    sizes: Sizes, latency: float, only: list[str], output: Path, profile_dir: Path | None = None
) -> list[Row]:
    """Run these scenarios in order, judge them, write ``output``; the rows."""
    rows: list[Row] = []
    work = Path(tempfile.mkdtemp(prefix="calsync-bench-"))
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(work, sizes, latency, profile_dir)
    try:
        for name in only:
            began = time.monotonic()
            rows.extend(SCENARIOS[name].run(bench))
            print(f"  {name}: done in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    judge(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def measured(row: Row) -> str:
    """The row's headline figures, as the README's table gives them."""
    name = row["scenario"]
    if name == "hook_create":
        return (
            f"ours p50 {row['own_p50_ms']} / p95 {row['own_p95_ms']} ms; whole delivery p50 {row['p50_ms']} / "
            f"p95 {row['p95_ms']} ms, of which Directus p50 {row['directus_p50_ms']} / "
            f"p95 {row['directus_p95_ms']} ms"
        )
    if name == "push_1000":
        return (
            f"{row['wall_s']} s against Directus's own {row['directus_own_s']} s for the same write-backs "
            f"({row['ratio_to_directus']}x); {row['written_back']} of {row['sizes']['bookings']} written back"
        )
    if name.startswith("tick_quiet_") and "reference_directus_requests" in row:
        text = (
            f"{row['wall_s']} s at concurrency {row['concurrency']} ({row['wall_vs_reference']}x one routed "
            f"connection's {row['reference_wall_s']} s"
        )
        if "wall_vs_1_connection" in row:
            text += f", {row['wall_vs_1_connection']}x tick_quiet_1_connection's"
        return text + (
            f"); Directus requests {row['directus_requests']}, one routed connection's "
            f"{row['reference_directus_requests']}"
        )
    if name.startswith("tick_quiet_"):
        return f"{row['wall_s']} s, of which waiting for Directus {row['directus_wait_s']} s"
    if name == "google_edit_to_directus":
        return (
            f"edit to Directus p50 {row['p50_ms']} / p95 {row['p95_ms']} / max {row['max_ms']} ms; Google "
            f"requests per edit {row['google_per_edit']} (requests: edits)"
        )
    if name == "tick_fanout_200_connections":
        return (
            f"{row['wall_s']} s with {row['concurrency']} at once (peak {row['peak_in_flight']}); one cycle p50 "
            f"{row['cycle_p50_ms']} ms, {row['cycles_serial_s']} s of cycles in all: "
            f"{row['parallelism']} ran at once on average, {row['wall_vs_ideal']}x the "
            f"{row['concurrency']}-wide ideal"
        )
    if name.startswith("cold_start_"):
        return (
            f"import p50 {row['p50_ms']} ms, first request's imports {row['first_request_imports_ms']} ms, "
            f"{row['peak_rss_mb']} MB"
        )
    text = f"{row['wall_s']} s"
    if "wall_vs_100" in row:
        text += f" ({row['wall_vs_100']}x the 10-of-100 time, less the fake's own)"
    if name == "import_full_10000":
        text += f", {row['peak_rss_mb']} MB peak RSS"
    return text


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "**no**"
    return str(value)


def table(rows: list[Row]) -> str:
    """Markdown: the README's performance table."""
    heads = ("scenario", "target", "Google requests (floor)", "ratio to floor", "Directus requests",
             "measured", "met")  # fmt: skip
    lines = ["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
    for row in rows:
        cells = (
            f"`{row['scenario']}`",
            cell(row["target"]),
            f"{row['google_requests']} ({row['floor_requests']})",
            cell(row.get("google_vs_floor")),
            cell(row["directus_requests"]),
            measured(row),
            cell(row["met"]),
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.03, help="fake Google latency per HTTP request, s")
    parser.add_argument(
        "--small", action="store_true", help="tiny sizes (the smoke test): no timings to trust"
    )
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="cProfile each timed step into DIR")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--only", nargs="+", choices=list(SCENARIOS), default=DEFAULT, metavar="NAME",
                        help=f"scenarios to run, in this order (default: {' '.join(DEFAULT)})")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else Sizes()
    began = time.monotonic()
    rows = run(sizes, args.latency, args.only, args.output, args.profile)
    print(table(rows))
    print(f"\n{len(rows)} rows in {args.output} ({time.monotonic() - began:.0f} s, latency {args.latency} s)")
    missed = [row["scenario"] for row in rows if row.get("met") is False]
    if missed:
        print("targets missed: " + ", ".join(missed))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
