"""``calsync``: run the product locally and operate it, by hand or from cron.

Every command reads its settings from the environment and ``.calsync/local.env`` (the environment wins).
Exit codes (README "Exit codes"): 0 ok; 1 ``directus setup`` could not finish, or an unexpected error;
2 configuration (a missing or invalid setting, a bad command line, an unusable state store); 3 no Google
account connected, or it needs a new consent; 4 the sync failed (Google or Directus); 5 another cycle is
running. Known errors print one line and a hint; ``--debug`` adds the traceback.

``connections`` manages the staff calendars (items of Directus's connections collection): ``list``, ``add``
(prints the new connection's Connect link), ``remove`` (disconnects it first).
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
from calsync.web.http import HttpError, MissingSettings

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
    "partial": SYNC_FAILED,
    "dispatched": OK,  # PUBSUB_TOPIC: one sync request per connection published  # some connections synced, some failed: each one's status says which
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


# What `calsync status` reads: the state store (and the project Firestore lives in), and the connections.
STATUS_USES = frozenset(
    {"STORE", "GOOGLE_CLOUD_PROJECT", "DIRECTUS_URL", "DIRECTUS_TOKEN", "ROUTE_FIELD", "GOOGLE_CALENDAR_ID"}
)


def _status(args: argparse.Namespace) -> int:
    from calsync.sync.connection import overview

    _configure_logging(args.debug)
    app = App(_local_settings(uses=STATUS_USES)[0])
    body = overview(app.store, app.roster(fresh=True), app.connection)
    print(json.dumps(body, indent=2))
    return _worst([_status_exit(each) for each in body["connections"] or [body]])


def _status_exit(body: dict[str, Any]) -> int:
    if body["state"] != "connected":
        return NOT_CONNECTED
    return CYCLE_EXIT.get((body["last_cycle"] or {}).get("status", "ok"), OK)


def _worst(codes: Sequence[int]) -> int:
    """One exit code for several connections: a missing consent first, then a failed cycle, then busy."""
    return next((code for code in (NOT_CONNECTED, SYNC_FAILED, BUSY) if code in codes), OK)


# -- connections ----------------------------------------------------------------------------------------


def _connections_app(args: argparse.Namespace) -> App:
    """The App for the connections commands; with an admin token (``--admin-token`` or
    DIRECTUS_ADMIN_TOKEN), Directus is read and written with it (the sync user may not create or delete
    connection items)."""
    from pydantic import SecretStr

    from calsync.local_settings import lookup

    _configure_logging(args.debug)
    settings, local, _ = _local_settings()
    admin = getattr(args, "admin_token", None) or lookup("DIRECTUS_ADMIN_TOKEN", local)
    if admin:
        settings = settings.model_copy(update={"directus_token": SecretStr(admin)})
    app = App(settings)
    app.require("directus_url", "directus_token")
    return app


def _refuse(message: str, hint: str) -> int:
    print(f"calsync connections: {message}\n  hint: {hint}", file=sys.stderr)
    return CONFIGURATION


def _connections_list(args: argparse.Namespace) -> int:
    from calsync.sync.connection import status_body

    _configure_logging(args.debug)
    app = App(_local_settings(uses=STATUS_USES)[0])
    roster = app.roster(fresh=True)
    rows = [status_body(app.store, spec.id, spec) for spec in roster.specs]
    for problem in roster.problems:
        log.warning("connection ignored", extra=logs.fields(reason=problem))
    if args.json:
        print(json.dumps(rows, indent=2))
        return OK
    table = [("ID", "NAME", "STAFF", "CALENDAR", "ACCOUNT", "STATE", "LAST CYCLE")]
    for row in rows:
        last = row["last_cycle"] or {}
        cycle = f"{last.get('status', '?')} {row['last_cycle_at']}" if row["last_cycle_at"] else "never"
        via = f" (via {row['account_from']})" if row["account_from"] else ""
        table.append(
            (
                row["connection"],
                row["name"] or "",
                row["staff"] if row["staff"] is not None else "(no value)",
                row["calendar_id"],
                (row["account"] or "-") + via,
                row["state"],
                cycle,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return OK


def _connections_add(args: argparse.Namespace) -> int:
    from calsync.directus.connections import create_connection
    from calsync.sync.connections import ConnectionInvalid, Roster, spec_from_item

    app = _connections_app(args)
    item = {
        "id": args.id,
        "name": args.name,
        "staff": args.staff,
        "calendar_id": args.calendar,
        "account_from": args.account_from,
    }
    try:
        spec = spec_from_item(item)
    except ConnectionInvalid as exc:
        return _refuse(str(exc), "for example: calsync connections add alice --staff alice")
    items = app.directus.list_connections()
    if items is None:
        return _refuse(
            "Directus has no connections collection (or DIRECTUS_TOKEN may not read it)",
            "run `calsync directus setup` first: it creates it",
        )
    roster = Roster.from_items(items, app.settings.route_field)
    if roster.get(spec.id) is not None:
        return _refuse(f"connection {spec.id} exists", "pick another id, or remove that one first")
    taken = next((s for s in roster.specs if s.staff == spec.staff), None)
    if taken is not None:
        who = f"bookings with staff {spec.staff!r}" if spec.staff else "bookings without a staff value"
        return _refuse(f"{who} are served by {taken.id} already", "give --staff the staff member's value")
    if spec.account_from is not None:
        owner = roster.get(spec.account_from)
        if owner is None or owner.account_from is not None:
            return _refuse(
                f"--account-from {spec.account_from}: no connection of that id holds its own Google account",
                "name a connection that is connected itself (calsync connections list)",
            )
        if spec.calendar_id == owner.calendar_id:
            return _refuse(
                f"{spec.id} would write to the same calendar as {owner.id} ({owner.calendar_id})",
                "give --calendar the id of the secondary calendar (Google Calendar settings, "
                "Integrate calendar, Calendar ID)",
            )
    create_connection(app.directus, spec)
    staff = f"bookings with staff {spec.staff!r}" if spec.staff else "bookings without a staff value"
    print(f"added connection {spec.id} ({spec.label}): {staff} go to calendar {spec.calendar_id}")
    if spec.account_from is not None:
        print(f"it uses the Google account connected on {spec.account_from}: there is nothing to connect")
        return OK
    if app.settings.missing("connect_key", "google_redirect_uri"):
        print(
            "set CONNECT_KEY and GOOGLE_REDIRECT_URI to print its Connect link "
            "(Directus shows it on the connection's item)",
            file=sys.stderr,
        )
        return OK
    from calsync.state.store import utcnow
    from calsync.web.links import signed_connect_url

    print(
        f"send {spec.label} this Connect link (valid 24 h; Directus shows a fresh one on the item); they open "
        "it and consent with their own Google account:"
    )
    print(signed_connect_url(app.settings, spec.id, utcnow()))
    return OK


def _connections_remove(args: argparse.Namespace) -> int:
    from calsync.directus.connections import delete_connection
    from calsync.sync.connections import CONNECTION_ID
    from calsync.web import oauth

    if not CONNECTION_ID.match(args.id):
        return _refuse(f"{args.id!r} is not a connection id", "see calsync connections list")
    app = _connections_app(args)
    roster = app.roster(fresh=True)
    users = [s.id for s in roster.specs if s.account_from == args.id]
    if users:
        return _refuse(
            f"{', '.join(users)} use the Google account of {args.id} (account_from)",
            "remove those first, or point their account_from at another connection",
        )
    spec = roster.get(args.id)
    if spec is None and app.tokens.get(args.id) is None:
        return _refuse(f"no connection {args.id}", "see calsync connections list")
    borrowed = spec is not None and spec.account_from is not None
    if not args.yes:
        what = "stops its sync" if borrowed else "revokes its Google token"
        return _refuse(
            f"removing {args.id} {what}, forgets its mappings and deletes its item",
            f"run `calsync connections remove {args.id} --yes` to do it",
        )
    result = oauth.disconnect(app, args.id)
    result["removed"] = delete_connection(app.directus, args.id)
    print(json.dumps(result, indent=2))
    if not result["revoked"] and not borrowed:
        print(
            f"calsync: the token was forgotten here but not revoked at Google ({result['detail']})\n"
            "  hint: remove the app at https://myaccount.google.com/permissions of that account",
            file=sys.stderr,
        )
    return OK


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
        help="print every connection's status as JSON",
        description="Print every connection's status as JSON (what GET /status answers: the default "
        "connection's fields on top, each connection under connections). Exits 0 when every connection is "
        "connected and its last cycle went well, 3 when one is not connected or needs a reconnect, 4 when "
        "one's last cycle failed.",
    )
    status.set_defaults(run=_status)
    _connections_parser(commands, debug)
    return parser


def _connections_parser(commands: Any, debug: argparse.ArgumentParser) -> None:
    connections = commands.add_parser(
        "connections",
        parents=[debug],
        help="list, add and remove the staff calendars (connections)",
        description="The connections in Directus's calendar_sync_connections collection: one per Google "
        "calendar, each serving the bookings whose ROUTE_FIELD equals its staff value.",
    )
    verbs = connections.add_subparsers(dest="connections_command", required=True, metavar="COMMAND")
    listing = verbs.add_parser(
        "list",
        parents=[debug],
        help="every connection: id, name, staff, calendar, account, state, last cycle",
        description="Every connection with its account, state and last cycle (from Directus and the state "
        "store).",
    )
    listing.add_argument("--json", action="store_true", help="print a JSON list instead (default: off)")
    listing.set_defaults(run=_connections_list)
    admin = (
        "an administrator's static token for the write (default: $DIRECTUS_ADMIN_TOKEN, else DIRECTUS_TOKEN)"
    )
    add = verbs.add_parser(
        "add",
        parents=[debug],
        help="add a connection and print its Connect link",
        description="Create a connection item in Directus and print its signed Connect link (valid 24 h), "
        "for the staff member to consent with their own Google account. With --account-from it uses "
        "another connection's Google account (a secondary calendar of one business account): nothing to "
        "connect.",
    )
    add.add_argument("id", help="the connection id: lowercase letters, digits, - and _ (no default)")
    add.add_argument("--name", help="a name people recognise (default: the id)")
    add.add_argument(
        "--staff",
        help="the ROUTE_FIELD value whose bookings it serves (default: none, i.e. bookings without a value)",
    )
    add.add_argument("--calendar", default="primary", help="the Google calendar id (default: primary)")
    add.add_argument(
        "--account-from",
        help="the connection whose Google account it uses, for a secondary calendar (default: its own)",
    )
    add.add_argument("--admin-token", help=admin)
    add.set_defaults(run=_connections_add)
    remove = verbs.add_parser(
        "remove",
        parents=[debug],
        help="disconnect a connection, then delete it",
        description="Disconnect the connection (revoking its Google token, unless it uses another "
        "connection's account) and forget its mappings, then delete its item. Refused while other "
        "connections use its account.",
    )
    remove.add_argument("id", help="the connection id (no default)")
    remove.add_argument("--yes", action="store_true", help="do it; without it nothing changes (default: off)")
    remove.add_argument("--admin-token", help=admin)
    remove.set_defaults(run=_connections_remove)


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
    if isinstance(exc, HttpError):  # what a route would answer, e.g. Directus not answering the roster read
        return (SYNC_FAILED if exc.status >= 500 else CONFIGURATION), exc.message, None
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
