"""``calsync``: run the product locally and operate it.

calsync serve [--host 127.0.0.1] [--port $PORT or 8080]   all three functions in one process
calsync status                                            the connection status as JSON
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from calsync.bootstrap import App, set_app
from calsync.settings import Settings, SettingsError, load_settings
from calsync.state.store import StoreError
from calsync.web.http import MissingSettings


def _local_settings(generate: bool = False) -> tuple[Settings, dict[str, str], list[str]]:
    """Settings from the environment and ``.calsync/local.env`` (the environment wins), for every command;
    only ``serve`` generates the secrets the file lacks. Returns (settings, the file's values, generated)."""
    from calsync.local_settings import ensure_local_settings, local_values, settings_overrides

    values, generated = ensure_local_settings() if generate else (local_values(), [])
    return load_settings(**settings_overrides(values)), values, generated


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import run_simple

    from calsync.local_settings import lookup
    from calsync.web.server import LocalRun, PeriodicSync, banner, create_app

    settings, values, generated = _local_settings(generate=True)
    port = args.port or lookup("PORT", values) or "8080"
    if not str(port).isdigit() or not 0 < int(port) < 65536:
        raise SettingsError("invalid settings: PORT: expected a port number (1-65535)")
    app = App(settings)
    # open the store now: a corrupt or unreachable one fails at start, not per request
    status = app.store.get_status(app.connection)
    set_app(app)
    from calsync import logs

    logs.configure()
    run = LocalRun(
        settings,
        values,
        generated,
        base=f"http://{args.host}:{port}",
        account=status.account if status.state == "connected" else None,
        sync_interval=settings.sync_interval_seconds,
    )
    print(banner(run), file=sys.stderr, flush=True)
    syncing = PeriodicSync(app, settings.sync_interval_seconds).start()
    try:
        run_simple(args.host, int(port), create_app(), threaded=True, use_reloader=False)
    finally:
        syncing.stop(timeout=5)
    return 0


def _status(args: argparse.Namespace) -> int:
    from calsync.sync.connection import status_body

    app = App(_local_settings()[0])
    print(json.dumps(status_body(app.store, app.connection), indent=2))
    return 0


def _sync(args: argparse.Namespace) -> int:
    from calsync.sync.cycle import run_cycle

    app = App(_local_settings()[0])
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    result = run_cycle(app.context())
    print(json.dumps(result.body, indent=2))
    return 0 if result.http_status < 400 else 1


SETUP_OPTIONS = {  # flag: (environment name, help)
    "directus_url": ("DIRECTUS_URL", "Directus API base URL"),
    "admin_token": ("DIRECTUS_ADMIN_TOKEN", "an administrator's static token (used only by this command)"),
    "booking_hook_url": ("BOOKING_HOOK_URL", "booking_hook's URL, which the Flow calls"),
    "oauth_callback_url": ("OAUTH_CALLBACK_URL", "oauth_callback's URL, for the Connect link"),
    "webhook_secret": ("WEBHOOK_SECRET", "the bearer secret the Flow sends"),
    "connect_key": ("CONNECT_KEY", "the key in the Connect link"),
}


def _directus_setup(args: argparse.Namespace) -> int:
    from calsync import logs
    from calsync.directus.setup import DirectusSetup, SetupConfig, SetupError
    from calsync.local_settings import local_values, lookup

    logs.configure(level=logging.ERROR)  # retries are reported by the outcome, not as log lines here
    local = local_values()
    values = {name: getattr(args, name) or lookup(env, local) for name, (env, _) in SETUP_OPTIONS.items()}
    missing = [
        f"--{name.replace('_', '-')} (or {SETUP_OPTIONS[name][0]})"
        for name, value in values.items()
        if not value
    ]
    if missing:
        print("calsync directus setup: missing " + ", ".join(missing), file=sys.stderr)
        return 2
    collection = args.collection or lookup("DIRECTUS_COLLECTION", local) or "bookings"
    on_delete = lookup("ON_GOOGLE_DELETE", local) or "cancel"
    config = SetupConfig(collection=collection, on_google_delete=on_delete, **values)
    try:
        result = DirectusSetup(config, dry_run=args.dry_run, reissue_token=args.reissue_token).run()
    except SetupError as exc:
        print(f"calsync directus setup: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.as_json()))
        return 0
    print("\n".join(result.summary(config.directus_url)))
    if args.dry_run:
        print("dry run: nothing was changed")
        return 0
    steps = []
    if result.sync_token:
        steps.append(
            "set DIRECTUS_TOKEN to the sync service user's token (shown this once), in the environment or "
            f"in .calsync/local.env:\n       DIRECTUS_TOKEN={result.sync_token}"
        )
    elif not lookup("DIRECTUS_TOKEN", local):
        steps.append(
            "set DIRECTUS_TOKEN to the token printed when the sync user was created; lost it? "
            "`calsync directus setup --reissue-token` makes a new one"
        )
    if result.connect_url:
        steps.append(
            "restart the functions (or calsync serve) with it, then connect a Google account: open\n       "
            + result.connect_url
            + "\n     (valid 24 h; Directus shows a fresh one on the calendar_sync settings item)"
        )
    if steps:
        print("Next:\n" + "\n".join(f"  {number}. {step}" for number, step in enumerate(steps, start=1)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calsync", description="Directus bookings <-> Google Calendar sync")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve", help="serve all three functions locally (embedded stores by default)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8080)")
    serve.set_defaults(run=_serve)
    sync = commands.add_parser(
        "sync", help="run one sync cycle (what calendar_import does) and print its summary"
    )
    sync.set_defaults(run=_sync)
    directus = commands.add_parser("directus", help="prepare a Directus for the sync")
    directus_commands = directus.add_subparsers(dest="directus_command", required=True)
    setup = directus_commands.add_parser(
        "setup", help="collection, settings item, least-privilege user and Flow (idempotent)"
    )
    for name, (env, text) in SETUP_OPTIONS.items():
        setup.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{text} (default: ${env})")
    setup.add_argument(
        "--collection", help="the bookings collection (default: $DIRECTUS_COLLECTION or bookings)"
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    setup.add_argument(
        "--json", action="store_true", help="print one JSON object (with sync_token when created)"
    )
    setup.add_argument(
        "--reissue-token",
        action="store_true",
        help="give the existing sync service user a new static token (printed once; the old one stops working)",
    )
    setup.set_defaults(run=_directus_setup)
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
