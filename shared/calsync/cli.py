"""``calsync``: run the product locally and operate it, by hand or from cron.

Every command reads its settings from the environment and ``.calsync/local.env`` (the environment wins).
Exit codes (README "Exit codes"): 0 ok; 1 ``directus setup`` could not finish, or an unexpected error;
2 configuration (a missing or invalid setting, a bad command line, an unusable state store); 3 no Google
account connected, or it needs a new consent; 4 the sync failed (Google or Directus); 5 another cycle is
running. Known errors print one line and a hint; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib.metadata
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from calsync import logs
from calsync.bootstrap import App, set_app
from calsync.directus.errors import DirectusAuthError, DirectusError
from calsync.google.errors import GoogleAccessRevoked, GoogleError
from calsync.settings import Settings, SettingsError, load_settings
from calsync.state.store import StoreError, StoreUnavailable
from calsync.web.http import MissingSettings

OK, FAILED, CONFIGURATION, NOT_CONNECTED, SYNC_FAILED, BUSY = 0, 1, 2, 3, 4, 5
# What a cycle's status means for cron.
CYCLE_EXIT = {
    "ok": OK,
    "not_connected": NOT_CONNECTED,
    "needs_reconnect": NOT_CONNECTED,
    "error": SYNC_FAILED,
    "mass_cancel_refused": SYNC_FAILED,
    "mass_delete_refused": SYNC_FAILED,
    "busy": BUSY,
    "partial": SYNC_FAILED,  # some connections synced, some failed: each one's status says which
    "no_connections": NOT_CONNECTED,
}
SETTINGS_HINT = "set it in the environment or in .calsync/local.env (the environment wins)"
log = logging.getLogger("calsync.cli")


class HumanFormatter(logging.Formatter):
    """One readable line per record for a terminal: time, severity when not INFO, message, fields."""

    def __init__(self, tracebacks: bool = False) -> None:
        super().__init__()
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC).astimezone().strftime("%H:%M:%S")
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        fields = getattr(record, "calsync_fields", None) or {}
        shown = " ".join(f"{key}={logs.scrub(str(value))}" for key, value in fields.items())
        line = f"{when} {level}{logs.scrub(record.getMessage())}" + (f"  {shown}" if shown else "")
        if record.exc_info and record.exc_info[0] is not None:
            line += f"  ({record.exc_info[0].__name__}: {logs.scrub(str(record.exc_info[1]))})"
            if self.tracebacks:
                line += "\n" + logs.scrub(self.formatException(record.exc_info))
        return line


def _configure_logging(debug: bool, quiet_settings_warning: bool = True) -> None:
    """Progress and warnings on stderr (stdout carries the command's answer): human lines on a terminal,
    JSON lines (calsync.logs) for cron and log collectors."""
    logs.configure(level=logging.DEBUG if debug else logging.INFO)
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for handler in root.handlers:
        if getattr(handler, "calsync", False) and isinstance(handler, logging.StreamHandler):
            handler.stream = sys.stderr  # not setStream(): it flushes the old stream, which may be closed
            if sys.stderr.isatty():
                handler.setFormatter(HumanFormatter(tracebacks=debug))
    # Who may connect matters to the server that takes consents, not to a cron job's every run.
    logging.getLogger("calsync.settings").setLevel(logging.ERROR if quiet_settings_warning else logging.INFO)


def _local_settings(
    generate: bool = False, uses: frozenset[str] | None = None
) -> tuple[Settings, dict[str, str], list[str]]:
    """Settings from the environment and ``.calsync/local.env`` (the environment wins), for every command;
    only ``serve`` generates the secrets the file lacks. Returns (settings, the file's values, generated).

    ``uses``: the only settings the command reads. A bad value of another one is reported as a warning and
    its default is used, so a bad TIMEZONE does not stop ``calsync status``."""
    from calsync.local_settings import ensure_local_settings, local_values, settings_overrides

    values, generated = ensure_local_settings() if generate else (local_values(), [])
    overrides: dict[str, Any] = settings_overrides(values)
    try:
        return load_settings(**overrides), values, generated
    except SettingsError as exc:
        unused = {name: why for name, why in exc.problems.items() if name.lower() in Settings.model_fields}
        if uses is None or not exc.problems or set(exc.problems) & uses or len(unused) != len(exc.problems):
            raise
    for name, why in unused.items():
        log.warning(f"ignoring {name}, which this command does not use: {why}")
        overrides[name.lower()] = Settings.model_fields[name.lower()].default
    return load_settings(**overrides), values, generated


def _warn_if_admin_token(app: App) -> None:
    """The sync should run as the least-privilege user setup made: an admin token can change anything, and
    its writes are not the sync user's, so the Flow sends each of them back as a delivery."""
    if app.settings.missing("directus_url", "directus_token"):
        return
    fields = "policies.policy.admin_access,role.policies.policy.admin_access"  # Directus 12: on policies
    try:
        me = app.directus.request("GET", "/users/me", "read /users/me", params={"fields": fields}) or {}
    except DirectusError as exc:
        log.debug("could not check DIRECTUS_TOKEN's rights", extra=logs.fields(error=str(exc)))
        return
    attached = [*(me.get("policies") or []), *((me.get("role") or {}).get("policies") or [])]
    if any(isinstance(a, dict) and isinstance(a.get("policy"), dict) and a["policy"].get("admin_access")
           for a in attached):  # fmt: skip
        log.warning(
            "DIRECTUS_TOKEN has admin rights in Directus: use the sync service user's token instead "
            "(`calsync directus setup` prints it when it creates the user; --reissue-token makes a new one)"
        )


def _serve(args: argparse.Namespace) -> int:
    from werkzeug.serving import make_server

    from calsync.local_settings import lookup
    from calsync.web.server import LocalRun, PeriodicSync, banner, create_app

    _configure_logging(args.debug, quiet_settings_warning=False)
    settings, values, generated = _local_settings(generate=True)
    port = args.port or lookup("PORT", values) or "8080"
    if not str(port).isdigit() or not 0 < int(port) < 65536:
        raise SettingsError("invalid settings: PORT: expected a port number (1-65535)")
    app = App(settings)
    # open the store now: a corrupt or unreachable one fails at start, not per request
    status = app.store.get_status(app.connection)
    set_app(app)
    _warn_if_admin_token(app)
    run = LocalRun(
        settings,
        values,
        generated,
        base=f"http://{args.host}:{port}",
        account=status.account if status.state == "connected" else None,
        sync_interval=settings.sync_interval_seconds,
    )
    try:
        server = make_server(args.host, int(port), create_app(), threaded=True)
    except SystemExit:  # werkzeug has said why (a port in use) and exits 1: for us that is configuration
        print("  hint: pass another --port (or set PORT)", file=sys.stderr)
        return CONFIGURATION
    print(banner(run), file=sys.stderr, flush=True)
    syncing = PeriodicSync(app, settings.sync_interval_seconds).start()
    try:
        server.serve_forever()
    finally:
        syncing.stop(timeout=5)
    return OK


# What `calsync status` reads: the state store (and the project Firestore lives in).
STATUS_USES = frozenset({"STORE", "GOOGLE_CLOUD_PROJECT"})


def _status(args: argparse.Namespace) -> int:
    from calsync.sync.connection import status_body

    _configure_logging(args.debug)
    app = App(_local_settings(uses=STATUS_USES)[0])
    body = status_body(app.store, app.connection)
    print(json.dumps(body, indent=2))
    if body["state"] != "connected":
        return NOT_CONNECTED
    return CYCLE_EXIT.get((body["last_cycle"] or {}).get("status", "ok"), OK)


def _sync(args: argparse.Namespace) -> int:
    _configure_logging(args.debug)
    app = App(_local_settings()[0])
    app.require("directus_url", "directus_token", "google_client_id", "google_client_secret")
    _warn_if_admin_token(app)
    log.info("sync cycle started")
    result = app.run_tick()
    print(json.dumps(result.body, indent=2))
    code = CYCLE_EXIT.get(result.status, SYNC_FAILED if result.http_status >= 400 else OK)
    if code == NOT_CONNECTED:
        print(
            f"calsync: {result.status.replace('_', ' ')}\n  hint: open the Connect link "
            "(calendar_sync.connect_url in Directus, or the one calsync serve prints)",
            file=sys.stderr,
        )
    elif code == BUSY:
        print(
            "calsync: another sync cycle is running; nothing was done\n  hint: try again later",
            file=sys.stderr,
        )
    elif code == SYNC_FAILED:
        error = str(result.body.get("error", ""))
        print(f"calsync: sync {result.status}: {error}", file=sys.stderr)
        print(f"  hint: {_cycle_hint(result.status, error)}", file=sys.stderr)
    return code


def _cycle_hint(status: str, error: str) -> str:
    if status != "error":
        return f"nothing was changed; see README, Operating it, for {status}"
    if error.startswith("Directus") and (" 401 " in error or " 403 " in error):
        return "check DIRECTUS_TOKEN (the sync service user's) and DIRECTUS_COLLECTION"
    return "nothing is lost: the next cycle resumes where this one stopped"


SETUP_OPTIONS = {  # flag: (environment name, help)
    "directus_url": ("DIRECTUS_URL", "Directus API base URL"),
    "admin_token": ("DIRECTUS_ADMIN_TOKEN", "an administrator's static token (used only by this command)"),
    "booking_hook_url": ("BOOKING_HOOK_URL", "booking_hook's URL, which the Flow calls"),
    "oauth_callback_url": ("OAUTH_CALLBACK_URL", "oauth_callback's URL, for the Connect link"),
    "webhook_secret": ("WEBHOOK_SECRET", "the bearer secret the Flow sends"),
    "connect_key": ("CONNECT_KEY", "the key in the Connect link"),
}


def _directus_setup(args: argparse.Namespace) -> int:
    from calsync.directus.setup import DirectusSetup, SetupConfig, SetupError
    from calsync.local_settings import local_values, lookup

    _configure_logging(args.debug)
    if not args.debug:  # retries are reported by the outcome, not as log lines here
        logging.getLogger().setLevel(logging.ERROR)
    local = local_values()
    values = {name: getattr(args, name) or lookup(env, local) for name, (env, _) in SETUP_OPTIONS.items()}
    missing = [
        f"--{name.replace('_', '-')} (or {SETUP_OPTIONS[name][0]})"
        for name, value in values.items()
        if not value
    ]
    if missing:
        print("calsync directus setup: missing " + ", ".join(missing), file=sys.stderr)
        print(
            "  hint: pass the flags, or set the variables in the environment or in .calsync/local.env",
            file=sys.stderr,
        )
        return CONFIGURATION
    collection = args.collection or lookup("DIRECTUS_COLLECTION", local) or "bookings"
    on_delete = lookup("ON_GOOGLE_DELETE", local) or "cancel"
    if on_delete not in ("cancel", "delete"):
        raise SettingsError("invalid settings: ON_GOOGLE_DELETE: expected cancel or delete")
    config = SetupConfig(
        collection=collection,
        on_google_delete=on_delete,
        calendar_id=lookup("GOOGLE_CALENDAR_ID", local) or "primary",
        route_field=args.route_field or lookup("ROUTE_FIELD", local) or None,
        route_to=args.route_to,
        **values,
    )
    try:
        result = DirectusSetup(config, dry_run=args.dry_run, reissue_token=args.reissue_token).run()
    except SetupError as exc:
        print(f"calsync directus setup: {exc}", file=sys.stderr)
        return FAILED
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
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # given after the command or before it, either counts
        help="log at DEBUG and show tracebacks (default: off)",
    )
    parser = argparse.ArgumentParser(
        prog="calsync",
        description="Directus bookings <-> Google Calendar sync. Settings come from the environment and "
        ".calsync/local.env (the environment wins).",
        epilog="exit codes: 0 ok, 1 setup could not finish or an unexpected error, 2 configuration (settings, "
        "usage, state store), 3 not connected or needs a reconnect, 4 the sync failed (Google or Directus), "
        "5 another cycle is running",
    )
    parser.add_argument(
        "--debug", action="store_true", help="log at DEBUG and show tracebacks (default: off)"
    )
    parser.add_argument(
        "--version", action="version", version=f"calsync {importlib.metadata.version('calsync')}"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        parents=[debug],
        help="serve all three functions locally and sync every SYNC_INTERVAL_SECONDS",
        description="Serve oauth_callback, booking_hook and calendar_import under their path prefixes "
        "(embedded stores by default), and run the import cycle every SYNC_INTERVAL_SECONDS (default 60; 0: "
        "only when POSTed). Generates WEBHOOK_SECRET and CONNECT_KEY into .calsync/local.env when missing.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: $PORT or 8080)")
    serve.set_defaults(run=_serve)
    sync = commands.add_parser(
        "sync",
        parents=[debug],
        help="run one sync cycle (what calendar_import does) and print its summary",
        description="Run one sync cycle and print its JSON summary on stdout; progress goes to stderr "
        "(readable lines on a terminal, JSON lines otherwise). For cron: see the exit codes.",
    )
    sync.set_defaults(run=_sync)
    directus = commands.add_parser(
        "directus", parents=[debug], help="prepare a Directus for the sync", description="Directus commands."
    )
    directus_commands = directus.add_subparsers(dest="directus_command", required=True, metavar="COMMAND")
    setup = directus_commands.add_parser(
        "setup",
        parents=[debug],
        help="collection, settings item, least-privilege user and Flow (idempotent)",
        description="Make a Directus ready for the sync, idempotently: the bookings collection, the "
        "calendar_sync settings item, a least-privilege policy and user (its token printed once) and the Flow "
        "that calls booking_hook. Each flag defaults to its environment name, then .calsync/local.env.",
    )
    for name, (env, text) in SETUP_OPTIONS.items():
        setup.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"{text} (default: ${env})")
    setup.add_argument(
        "--collection", help="the bookings collection (default: $DIRECTUS_COLLECTION or bookings)"
    )
    setup.add_argument(
        "--route-field",
        metavar="NAME",
        help="the booking field that routes bookings to connections, created when missing (default: "
        "$ROUTE_FIELD; none: every booking goes to the default connection)",
    )
    setup.add_argument(
        "--route-to",
        metavar="directus_users|COLLECTION",
        help="create the routing field as a relation to directus_users or to this collection (default: a "
        "plain string field)",
    )
    setup.add_argument("--dry-run", action="store_true", help="print the plan, change nothing (default: off)")
    setup.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (with sync_token when created) (default: off)",
    )
    setup.add_argument(
        "--reissue-token",
        action="store_true",
        help="give the existing sync service user a new static token (printed once; the old one stops "
        "working) (default: off)",
    )
    setup.set_defaults(run=_directus_setup)
    status = commands.add_parser(
        "status",
        parents=[debug],
        help="print the connection status as JSON",
        description="Print the connection status as JSON (what GET /status answers). Exits 0 when connected "
        "and the last cycle went well, 3 when not connected or a reconnect is needed, 4 when the last cycle "
        "failed.",
    )
    status.set_defaults(run=_status)
    return parser


def describe(exc: BaseException, settings_hint: str = SETTINGS_HINT) -> tuple[int, str, str | None]:
    """(exit code, one line, a hint) for an error the command knows; exit 1 for any other."""
    if isinstance(exc, MissingSettings):
        return (
            CONFIGURATION,
            f"missing settings: {', '.join(exc.extra['missing'])}",
            settings_hint.replace("set it", "set them"),
        )
    if isinstance(exc, SettingsError):
        return CONFIGURATION, str(exc), settings_hint
    if isinstance(exc, StoreUnavailable):  # a store outage during a cycle: the next one retries
        return (
            SYNC_FAILED,
            f"state store unavailable: {exc}",
            "the next cycle tries again; check the store's health",
        )
    if isinstance(exc, StoreError):
        return (
            CONFIGURATION,
            f"state store: {exc}",
            "check STORE and TOKEN_STORE (the message names the file)",
        )
    if isinstance(exc, GoogleAccessRevoked):
        return NOT_CONNECTED, f"Google refused the stored token: {exc}", "open the Connect link again"
    if isinstance(exc, GoogleError):
        return SYNC_FAILED, f"Google: {exc}", "try again later; nothing is lost"
    if isinstance(exc, DirectusAuthError):
        return CONFIGURATION, f"Directus refused the token: {exc}", "check DIRECTUS_TOKEN (and DIRECTUS_URL)"
    if isinstance(exc, DirectusError):
        return SYNC_FAILED, f"Directus: {exc}", "is Directus up at DIRECTUS_URL? try again later"
    if isinstance(exc, OSError):
        hint = "another process listens on that port: pass --port" if exc.errno == errno.EADDRINUSE else None
        return CONFIGURATION, logs.scrub(str(exc)), hint
    return FAILED, f"unexpected error: {type(exc).__name__}: {logs.scrub(str(exc))}", None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad command line exits 2, with argparse's usage line
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        code, message, hint = describe(exc)
        print(f"calsync: {message}", file=sys.stderr)
        if hint:
            print(f"  hint: {hint}", file=sys.stderr)
        if args.debug:
            traceback.print_exc(file=sys.stderr)
        elif code == FAILED:
            print("  run it again with --debug to see the traceback", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
