"""The local server: all three functions in one process under their path prefixes, and what it tells the
admin at start.

Each function is mounted as its own WSGI app, so a handler sees the same path (``/start``) as it does when
served alone by functions-framework.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from calsync import logs
from calsync.bootstrap import App
from calsync.local_settings import LOCAL_FILE, origin
from calsync.settings import Settings
from calsync.sync.cycle import CycleResult
from calsync.sync.tick import TickResult
from calsync.web import entrypoints

log = logging.getLogger(__name__)

FUNCTIONS: dict[str, Callable[[flask.Request], flask.Response]] = {
    "oauth_callback": entrypoints.oauth_callback,
    "booking_hook": entrypoints.booking_hook,
    "calendar_import": entrypoints.calendar_import,
}
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

# What a local run needs before the Google and Directus sides can work, and where each comes from.
NEEDED_FOR_SYNC = {
    "GOOGLE_CLIENT_ID": "the OAuth client (type Web application) of your Google Cloud project",
    "GOOGLE_CLIENT_SECRET": "that client's secret",
    "GOOGLE_REDIRECT_URI": "{base}/oauth_callback/callback (register it on that client)",
    "DIRECTUS_URL": "your Directus's URL, e.g. http://127.0.0.1:8055",
    "DIRECTUS_TOKEN": "the sync user's token, printed once by `calsync directus setup` (below)",
}


def function_app(name: str, handler: Callable[[flask.Request], flask.Response]) -> flask.Flask:
    app = flask.Flask(f"calsync.{name}")

    def serve(path: str = "") -> flask.Response:
        return handler(flask.request)

    app.add_url_rule("/", name, serve, methods=METHODS, strict_slashes=False)
    app.add_url_rule("/<path:path>", name + "_path", serve, methods=METHODS)
    return app


def create_app() -> DispatcherMiddleware:
    index = flask.Flask("calsync")

    @index.route("/", defaults={"path": ""})
    @index.route("/<path:path>")
    def unknown(path: str) -> flask.Response:
        body = {"error": f"no function at /{path}", "functions": [f"/{name}/" for name in FUNCTIONS]}
        return flask.Response(flask.json.dumps(body), status=404, mimetype="application/json")

    mounts = {f"/{name}": function_app(name, handler) for name, handler in FUNCTIONS.items()}
    return DispatcherMiddleware(index, mounts)  # type: ignore[arg-type]


def calsync_command() -> str:
    """How to call this same ``calsync`` from here: ``.venv/bin/calsync`` in a checkout."""
    script = Path(sys.executable).parent / "calsync"
    if not script.exists():
        return "calsync"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """What ``calsync serve`` knows at start, to tell the admin what works and what to do next."""

    settings: Settings
    local: dict[str, str]  # the local file's values
    generated: list[str]  # names generated into the local file just now
    base: str  # http://HOST:PORT
    account: str | None = None  # the connected Google account, if any
    sync_interval: float = 0.0

    def secret(self, name: str) -> str:
        value = getattr(self.settings, name.lower())
        return value.get_secret_value() if value is not None else ""

    @property
    def connect_link(self) -> str:
        # The console is the admin's own terminal: the key itself is fine here (Directus shows a signed link).
        return f"{self.base}/oauth_callback/start?key={self.secret('CONNECT_KEY')}"

    @property
    def missing(self) -> list[str]:
        return self.settings.missing(*(name.lower() for name in NEEDED_FOR_SYNC))

    def setup_command(self) -> str:
        url = self.settings.directus_url
        words = [
            calsync_command(), "directus", "setup",
            "--directus-url", str(url).rstrip("/") if url else "DIRECTUS_URL",
            "--admin-token", "ADMIN_TOKEN",
            "--booking-hook-url", f"{self.base}/booking_hook/",
            "--oauth-callback-url", f"{self.base}/oauth_callback",
            "--webhook-secret", self.secret("WEBHOOK_SECRET"),
            "--connect-key", self.secret("CONNECT_KEY"),
        ]  # fmt: skip
        return " ".join(shlex.quote(word) for word in words)


def banner(run: LocalRun) -> str:
    """The start-up text: one "ready" line when everything is set, else the URLs, the settings still
    missing with where to set them, and the next steps with their exact commands."""
    interval = f"every {run.sync_interval:g} s" if run.sync_interval else "only on POST /calendar_import/"
    if not run.missing and run.account:
        return f"calsync ready at {run.base}/: syncing {run.account} {interval}"
    settings = run.settings
    lines = [
        f"calsync local server at {run.base}/",
        f"  oauth_callback   {run.base}/oauth_callback/",
        f"  booking_hook     {run.base}/booking_hook/",
        f"  calendar_import  {run.base}/calendar_import/   (cycles {interval})",
        f"  state            {settings.store}  tokens {settings.token_store}",
        f"  local settings   {LOCAL_FILE}" + (f" (generated {', '.join(run.generated)})" if run.generated else ""),
    ]  # fmt: skip
    for name in ("WEBHOOK_SECRET", "CONNECT_KEY"):
        lines.append(f"  {name:<16} {run.secret(name)}  (from {origin(name, run.local)})")
    if run.missing:
        lines.append(f"still to configure for a working sync, in the environment or in {LOCAL_FILE}:")
        width = max(len(name) for name in run.missing)
        lines += [f"  {name:<{width}}  {NEEDED_FOR_SYNC[name].format(base=run.base)}" for name in run.missing]
    lines.append("Next:")
    steps = []
    if {"GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_REDIRECT_URI"} & set(run.missing):
        steps.append(
            f"create a Google OAuth client (Web application) with the redirect URI "
            f"{run.base}/oauth_callback/callback; put GOOGLE_CLIENT_ID, GOOGLE_CLIENT_SECRET and "
            f"GOOGLE_REDIRECT_URI={run.base}/oauth_callback/callback into {LOCAL_FILE}"
        )
    if {"DIRECTUS_URL", "DIRECTUS_TOKEN"} & set(run.missing):
        steps.append(
            f"prepare Directus (with an administrator's static token):\n       {run.setup_command()}"
        )
        steps.append(f"put the token it prints into {LOCAL_FILE} as DIRECTUS_TOKEN=...")
    if run.missing:
        steps.append("restart calsync serve (settings are read at start)")
    if not run.account:
        steps.append(f"connect a Google account: open {run.connect_link}")
    lines += [f"  {number}. {step}" for number, step in enumerate(steps, start=1)]
    return "\n".join(lines)


class PeriodicSync:
    """The import cycle every ``interval`` seconds on a background thread: what Cloud Scheduler does for the
    deployed functions, so a local run syncs by itself. It waits quietly (saying once why) while Google or
    Directus is not configured or no account is connected, and a failed cycle is logged, never raised: the
    server goes on and the next tick tries again."""

    NEEDS = ("directus_url", "directus_token", "google_client_id", "google_client_secret")

    def __init__(
        self, app: App, interval: float, cycle: Callable[[App], CycleResult | TickResult] = App.run_tick
    ) -> None:
        self.app = app
        self.interval = interval
        self.cycle = cycle
        self.cycles = 0  # cycles that ran to a result
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="calsync-periodic-sync", daemon=True)
        self._said: str | None = None  # the last situation logged, so each is logged once

    def start(self) -> PeriodicSync:
        if self.interval > 0:
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self.tick()
            self._stopped.wait(self.interval)

    def _once(self, situation: str, message: str, **fields: object) -> None:
        if situation != self._said:
            self._said = situation
            log.info(message, extra=logs.fields(**fields))

    def tick(self) -> CycleResult | TickResult | None:
        """One cycle, or None when it cannot run yet or failed (logged)."""
        missing = self.app.settings.missing(*self.NEEDS)
        if missing:
            self._once("missing", "the local sync waits for settings: " + ", ".join(missing), missing=missing)
            return None
        try:
            result = self.cycle(self.app)
        except Exception:
            self._said = None
            log.exception("local sync cycle failed; the next one runs in %g s", self.interval)
            return None
        self.cycles += 1
        if result.status in ("not_connected", "needs_reconnect"):
            self._once(
                result.status,
                f"the local sync waits: {result.status.replace('_', ' ')}",
                status=result.status,
            )
        else:
            self._said = None
        return result
