"""Benchmark suite (issues 8, 14): what a sync costs in requests, time and memory, against the fewest requests
possible. ``python -m bench.run`` (or ``make bench``); the layout is in bench/run.py's docstring."""
