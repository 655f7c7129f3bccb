"""One cold start of a function, measured inside a fresh interpreter:

    python bench/coldstart.py FUNCTION        (FUNCTION: booking_hook, calendar_import or oauth_callback)

prints one JSON line: ``import_s``, the import of ``functions/FUNCTION/main.py`` (timed inside the
process, so the interpreter's own start-up is left out); ``first_request_imports_s``, the modules that
function's first request imports lazily, which a cold instance pays on that request; ``rss_mb``, the
process's resident peak. bench/scenarios.py (``cold_start``) runs it a few times per function, with the
function's folder as the working directory, as the Cloud Functions runtime does.

Only the standard library is imported before the clock starts, so nothing of the product is loaded early.
"""

from __future__ import annotations

import json
import os
import resource
import runpy
import sys
import time

FUNCTIONS = ("booking_hook", "calendar_import", "oauth_callback")
# What each function's first request imports beyond main.py (embedded stores): part of a cold start too.
FIRST_REQUEST_IMPORTS = {
    "booking_hook": (
        "calsync.web.hook", "calsync.state.sqlite", "calsync.state.tokens_file", "calsync.directus.client",
        "google.oauth2.credentials", "googleapiclient.discovery", "google_auth_httplib2",
    ),
    "calendar_import": (
        "calsync.sync.cycle", "calsync.state.sqlite", "calsync.state.tokens_file", "calsync.directus.client",
        "google.oauth2.credentials", "googleapiclient.discovery", "google_auth_httplib2",
    ),
    "oauth_callback": (
        "calsync.web.oauth", "calsync.state.sqlite", "calsync.state.tokens_file", "google_auth_oauthlib.flow",
    ),
}  # fmt: skip

# os.path, not pathlib: pathlib is not loaded at start-up, and the functions' imports would find it loaded.
FUNCTIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "functions")


def peak_rss_mb() -> float:
    """VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would show the launching process's
    peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(function: str) -> dict[str, float]:
    folder = os.path.join(FUNCTIONS_DIR, function)
    # The function's folder first on the path, as in its runtime, not this script's (bench/).
    sys.path[0] = folder
    started = time.perf_counter()
    runpy.run_path(os.path.join(folder, "main.py"), run_name="main")
    loaded = time.perf_counter()
    for name in FIRST_REQUEST_IMPORTS[function]:
        __import__(name)
    done = time.perf_counter()
    return {"import_s": loaded - started, "first_request_imports_s": done - loaded, "rss_mb": peak_rss_mb()}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in FUNCTIONS:
        print(f"usage: python bench/coldstart.py {{{','.join(FUNCTIONS)}}}", file=sys.stderr)
        return 2
    print(json.dumps(measure(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
