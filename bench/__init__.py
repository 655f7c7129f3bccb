"""Benchmark suite (issue 8): what a sync costs in requests, time and memory, against the fewest requests
possible. ``python -m bench.run`` (or ``make bench``); see bench/run.py."""
