"""``calsync``: run the product locally and operate it.

calsync serve [--host 127.0.0.1] [--port $PORT or 8080]   all three functions in one process
calsync status                                            the connection status as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from calsync.http import MissingSettings
from calsync.settings import SettingsError, load_settings
from calsync.store import StoreError
from calsync.wiring import App, set_app

# Settings a local run needs before the Google and Directus sides can work; named at start-up.
NEEDED_FOR_SYNC = (
    "google_client_id",
    "google_client_secret",
    "google_redirect_uri",
    "directus_url",
    "directus_token",
)


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from calsync.local_settings import LOCAL_FILE, ensure_local_settings, settings_overrides
    from calsync.server import create_app

    values, generated = ensure_local_settings()
    settings = load_settings(**settings_overrides(values))
    app = App(settings)
    app.store  # noqa: B018 - open the store now: a corrupt or unreachable one fails at start, not per request
    set_app(app)
    from calsync import logs

    logs.configure()
    base = f"http://{args.host}:{args.port}"
    # The console is the admin's own terminal: showing the generated secrets here is the point.
    lines = [
        "calsync local server",
        f"  oauth_callback   {base}/oauth_callback/   (connect: {base}/oauth_callback/start?key=CONNECT_KEY)",
        f"  booking_hook     {base}/booking_hook/",
        f"  calendar_import  {base}/calendar_import/",
        f"  state            {settings.store}  tokens {settings.token_store}",
        f"  local settings   {LOCAL_FILE}" + (f" (generated {', '.join(generated)})" if generated else ""),
    ]
    for name in ("WEBHOOK_SECRET", "CONNECT_KEY"):
        origin = "environment" if os.environ.get(name) else str(LOCAL_FILE)
        value = os.environ.get(name) or values.get(name, "")
        lines.append(f"  {name:<16} {value}  (from {origin})")
    missing = settings.missing(*NEEDED_FOR_SYNC)
    if missing:
        lines.append("  still to configure for a working sync: " + ", ".join(missing))
    print("\n".join(lines), file=sys.stderr, flush=True)
    run_simple(args.host, args.port, create_app(), threaded=True, use_reloader=False)
    return 0


def _status(args: argparse.Namespace) -> int:
    from calsync.connection import status_body

    app = App(load_settings())
    print(json.dumps(status_body(app.store, app.connection), indent=2))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from calsync.cycle import run_cycle

    app = App(load_settings())
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    result = run_cycle(app)
    print(json.dumps(result.body, indent=2))
    return 0 if result.http_status < 400 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calsync", description="Directus bookings <-> Google Calendar sync")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve all three functions locally (embedded stores by default)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8080))
    serve.set_defaults(run=_serve)
    sync = commands.add_parser(
        "sync", help="run one sync cycle (what calendar_import does) and print its summary"
    )
    sync.set_defaults(run=_sync)
    status = commands.add_parser("status", help="print the connection status as JSON")
    status.set_defaults(run=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except MissingSettings as exc:
        print(f"calsync: {exc.message}", file=sys.stderr)
        return 2
    except (SettingsError, StoreError) as exc:
        print(f"calsync: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
