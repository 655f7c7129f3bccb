"""``calsync directus setup``: make a Directus ready for the sync, idempotently.

With an admin token it ensures: the bookings collection and the fields the product needs (adding only what
is missing, refusing a field that exists with another type); the ``calendar_sync`` settings singleton with
the Connect link and the status fields the functions keep current; the ``calendar_sync_connections``
collection (one item per Google calendar, its own Connect link and status; a new one starts with the
``default`` connection the installation had) and, with ROUTE_FIELD, the booking field that routes bookings to
them; a least-privilege policy and a service user with a static token (printed once, when the user is
created); and the Flow that POSTs every booking create/update/delete to booking_hook. Re-running changes
nothing an admin set; ``dry_run`` only reports the plan.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusAuthError, DirectusError, DirectusNotFound
from calsync.directus.status import SETTINGS_COLLECTION
from calsync.state.store import DEFAULT_CONNECTION
from calsync.sync.booking import FIELDS
from calsync.sync.connections import CONNECTION_ID, CONNECTIONS_COLLECTION
from calsync.web import links

POLICY_NAME = "calsync sync service"
USER_FIRST_NAME = "calsync"
USER_LAST_NAME = "sync service"
FLOW_NAME = "calsync: bookings to Google Calendar"  # the gate: event trigger, drops the sync's own writes
DASHBOARD_NAME = "calsync"
DELIVERY_FLOW_NAME = "calsync: deliver to booking_hook"  # run by the gate; its runs are logged
FLOW_BODY = '{"trigger": {{$trigger}}, "user": "{{$accountability.user}}"}'


def _field(name: str, kind: str, special: list[str] | None = None, **meta: Any) -> dict[str, Any]:
    # Every field gets a "meta" object: over SQLite, timestamp fields without one fail validation.
    field_meta: dict[str, Any] = dict(meta)
    if special:
        field_meta["special"] = special
    schema: dict[str, Any] = {}
    if "default" in field_meta:
        schema["default_value"] = field_meta.pop("default")
    return {"field": name, "type": kind, "meta": field_meta, "schema": schema}


def _primary_key() -> dict[str, Any]:
    return {
        "field": "id",
        "type": "integer",
        "meta": {"hidden": True, "readonly": True},
        "schema": {"is_primary_key": True, "has_auto_increment": True},
    }


# sync_status values: (value, label, colour of its label)
SYNC_STATUSES = (("synced", "Synced", "#2ECDA7"), ("queued", "Queued", "#FFA439"), ("error", "Error", "#E35169"),
                 ("read_only", "Read-only", "#A2B5CD"), ("excluded", "Excluded", "#A2B5CD"))  # fmt: skip

BOOKING_FIELDS: list[dict[str, Any]] = [
    _primary_key(),
    _field(FIELDS.title, "string", interface="input"),
    _field(FIELDS.start, "timestamp", interface="datetime", required=True),
    _field(FIELDS.end, "timestamp", interface="datetime"),
    _field(FIELDS.all_day, "boolean", ["cast-boolean"], interface="boolean", default=False),
    _field(FIELDS.description, "text", interface="input-multiline"),
    _field(FIELDS.location, "string", interface="input"),
    # The event's own zone (IANA name): imported from Google, and what a push writes the times in
    _field(FIELDS.timezone, "string", interface="input", note="Time zone (IANA name); empty: TIMEZONE"),
    _field(
        FIELDS.status,
        "string",
        interface="select-dropdown",
        default="confirmed",
        options={
            "choices": [
                {"text": "Confirmed", "value": "confirmed"},
                {"text": "Pending", "value": "pending"},
                {"text": "Cancelled", "value": "cancelled"},
            ]
        },
    ),
    _field(
        FIELDS.google_event_id,
        "string",
        readonly=True,
        interface="input",
        note="Set by the Google Calendar sync: the event this booking is linked to. Do not edit.",
    ),
    _field(
        FIELDS.sync_status,
        "string",
        readonly=True,
        interface="select-dropdown",
        options={"choices": [{"text": t, "value": v} for v, t, _ in SYNC_STATUSES]},
        display="labels",
        display_options={
            "choices": [
                {"text": t, "value": v, "foreground": "#FFFFFF", "background": c} for v, t, c in SYNC_STATUSES
            ]
        },
        note="Set by the sync. synced: in Google Calendar. queued: waits for the next cycle (see the "
        "calendar_sync item). error: Google refused it, the reason is in Sync error; edit the booking to "
        "try again. read_only: linked to an event calsync may not change. excluded: no longer imported.",
    ),
    _field(
        FIELDS.sync_error,
        "text",
        readonly=True,
        interface="input-multiline",
        note="Why the last sync of this booking failed or was limited; empty when all is well.",
    ),
    _field(FIELDS.date_created, "timestamp", ["date-created"], readonly=True, hidden=True),
    _field(FIELDS.date_updated, "timestamp", ["date-updated"], readonly=True, hidden=True),
    # Who changed a booking last: the sync's own write-backs must not count as edits in conflicts.
    _field(FIELDS.user_updated, "uuid", ["user-updated"], readonly=True, hidden=True),
]

CYCLE_RESULTS = (("ok", "OK", "#2ECDA7"), ("error", "Error", "#E35169"),
                 ("needs_reconnect", "Needs reconnect", "#E35169"),
                 ("mass_cancel_refused", "Mass cancel refused", "#FFA439"),
                 ("mass_delete_refused", "Mass delete refused", "#FFA439"))  # fmt: skip
CONNECTION_STATES = (("connected", "Connected", "#2ECDA7"), ("needs_reconnect", "Needs reconnect", "#E35169"),
                     ("not_connected", "Not connected", "#A2B5CD"), ("disconnected", "Disconnected", "#A2B5CD"))  # fmt: skip


def _labels(values: tuple[tuple[str, str, str], ...]) -> dict[str, Any]:
    """A coloured label per known value (display "labels")."""
    return {
        "display": "labels",
        "display_options": {
            "choices": [
                {"text": t, "value": v, "foreground": "#FFFFFF", "background": c} for v, t, c in values
            ]
        },
    }


def _when(name: str, note: str) -> dict[str, Any]:
    """A timestamp shown as a date and time with how long ago (display "datetime", relative)."""
    return _field(name, "timestamp", readonly=True, interface="datetime", display="datetime",
                  display_options={"relative": True, "suffix": True}, note=note)  # fmt: skip


def _count(name: str, note: str) -> dict[str, Any]:
    return _field(name, "integer", readonly=True, interface="input", width="half", display="formatted-value",
                  display_options={"format": True}, note=note)  # fmt: skip


def _connect_button() -> dict[str, Any]:
    """A button that opens the signed Connect link: an alias field (no column) with the "presentation-links"
    interface, its URL a template of the item's own ``connect_url``."""
    link = {"label": "Connect Google Calendar", "icon": "link", "type": "primary", "actionType": "url",
            "url": "{{connect_url}}"}  # fmt: skip
    meta = {"interface": "presentation-links", "special": ["alias", "no-data"], "options": {"links": [link]},
            "note": "Opens Google's consent for the calendar bookings go to (the link is valid 24 hours and "
            "renewed by every sync cycle)."}  # fmt: skip
    return {"field": "connect_button", "type": "alias", "meta": meta, "schema": None}


def _connect_url() -> dict[str, Any]:
    return _field(
        "connect_url",
        "string",
        readonly=True,
        interface="input",
        display="formatted-value",
        display_options={"font": "monospace"},
        note="The signed link behind the Connect button (valid 24 hours, renewed every cycle). Open it to "
        "connect a Google account, or to reconnect when Connection state says needs_reconnect.",
    )


# The status of one connection, as the functions publish it (status.py): on the settings item for the
# default connection, and on each item of the connections collection.
CONNECTION_STATUS_FIELDS: list[dict[str, Any]] = [
    _field(
        "google_account",
        "string",
        readonly=True,
        interface="input",
        note="The Google account whose calendar the bookings go to. Empty until someone connects.",
    ),
    _field(
        "connection_state",
        "string",
        readonly=True,
        interface="input",
        **_labels(CONNECTION_STATES),
        note="connected: the sync runs. needs_reconnect: Google refused the stored access (revoked or "
        "expired): open the Connect button with the same account; changes wait until then. not_connected "
        "or disconnected: connect an account.",
    ),
    _when("last_connected_at", "When the Google account last completed the consent (the Connect link)."),
    _when("last_cycle_at", "When the last sync cycle finished."),
    _field(
        "last_cycle_result",
        "string",
        readonly=True,
        interface="input",
        **_labels(CYCLE_RESULTS),
        note="How the last cycle ended. ok: everything was applied. error: it stopped (Google or Directus "
        "failed; see Last error), the next cycle resumes. needs_reconnect: reconnect the account. "
        "mass_cancel_refused / mass_delete_refused: a safety guard stopped a large change; see Last error.",
    ),
    _when(
        "next_cycle_expected_by",
        "The next cycle must have finished by then (three scheduler ticks after the "
        "last one). Shown as '... ago' once it is past: no cycle is running, so check the Cloud Scheduler "
        "job and the calendar_import function's logs.",
    ),
    _field(
        "last_error",
        "text",
        readonly=True,
        interface="input-multiline",
        note="What went wrong last (empty when the last cycle was fine). It names the part that failed.",
    ),
    _field(
        "last_publish_error",
        "text",
        readonly=True,
        interface="input-multiline",
        note="When Directus refused an earlier status update (so what this item showed was stale): when and "
        "why. Empty when every update went through. A 403 usually means setup must be run again.",
    ),
    _count(
        "pending_changes",
        "Booking changes waiting to be sent to Google; each cycle retries them. A number "
        "that keeps growing means Google is unreachable or the account needs a reconnect.",
    ),
    _count(
        "dead_letters",
        "Changes given up on for good (Google refused them); see /status for the list. "
        "Editing the booking tries again.",
    ),
    _count(
        "bookings_in_error",
        "Bookings with sync status error: filter the bookings by it, read Sync error, fix and save them.",
    ),
    _count("bookings_queued", "Bookings with sync status queued: they go to Google at the next cycle."),
    _count("bookings_read_only", "Bookings linked to events calsync may not change (another organizer's)."),
    _count(
        "bookings_excluded",
        "Bookings no longer imported under the current import settings (kept, not synced).",
    ),
]
SETTINGS_FIELDS: list[dict[str, Any]] = [
    _primary_key(),
    _connect_button(),
    _connect_url(),
    *CONNECTION_STATUS_FIELDS,
]


def _connection_key() -> dict[str, Any]:
    """The connection id, typed in by the admin: its refresh token, mappings and cursors are keyed by it, so
    it is a string chosen once, not a number Directus assigns. Directus checks its shape itself (a regex
    validation, which Directus 11 and 12 apply to the primary key too: ``400 FAILED_VALIDATION``)."""
    meta = {
        "interface": "input",
        "readonly": False,
        "hidden": False,
        "required": True,
        "options": {"placeholder": "e.g. alice, or front-desk", "trim": True},
        "validation": {"_and": [{"id": {"_regex": CONNECTION_ID.pattern}}]},
        "validation_message": "Lowercase letters, digits, '-' and '_', at most 40, starting with a letter or digit",
        "note": "The connection's id, chosen once: its Google access, links and sync state are kept under it, "
        "so changing it later means connecting again. Lowercase letters, digits, '-' and '_', at most 40.",
    }
    return {"field": "id", "type": "string", "meta": meta, "schema": {"is_primary_key": True, "length": 40}}


STAFF_NOTE = (
    "The routing value this connection serves: bookings whose routing field (ROUTE_FIELD) holds it go to this "
    "calendar (for a relation, the related item). Empty: the bookings without a value. One connection per value."
)


def _staff(related: str | None, key_type: str) -> dict[str, Any]:
    """``staff``: a plain string, or a many-to-one to what the bookings' routing field points at (so the admin
    picks the person rather than typing an id). Unique: two connections serving one value is a mistake the
    sync would have to ignore one of."""
    if related is None:
        field = _field("staff", "string", interface="input", note=STAFF_NOTE)
    else:
        field = _relation("staff", related, key_type, STAFF_NOTE)
    field["schema"]["is_unique"] = True
    return field


def _relation(name: str, related: str, key_type: str, note: str) -> dict[str, Any]:
    """A many-to-one field (its column holds the related item's key; ``_ensure_relation`` adds the relation)."""
    template = {"template": USER_TEMPLATE} if related == "directus_users" else {}
    return _field(name, key_type, ["m2o"], interface="select-dropdown-m2o", options=template,
                  display="related-values", display_options=template, note=note)  # fmt: skip


USER_TEMPLATE = "{{first_name}} {{last_name}} ({{email}})"


def connection_fields(staff_to: str | None = None, key_type: str = "string") -> list[dict[str, Any]]:
    """The connections collection's fields: what the admin defines, then what the sync publishes.
    ``staff_to``: the collection ``staff`` relates to (the routing field's), None for a plain string."""
    return [
        _connection_key(),
        _field("name", "string", interface="input", note="A name people recognise: the staff member's."),
        _staff(staff_to, key_type),
        _field(
            "calendar_id",
            "string",
            interface="input",
            default="primary",
            note="The Google calendar this connection writes to: primary, or a secondary calendar's id such "
            "as abc@group.calendar.google.com (in Google Calendar: the calendar's settings, Integrate).",
        ),
        _field(
            "account_from",
            "string",
            interface="input",
            note="Optional: the id of the connection whose Google consent this one uses. For one business "
            "account whose secondary calendars are the staff calendars: connect one connection, and name it "
            "here on the others (each with its own calendar id). Empty: this connection is connected itself.",
        ),
        _connect_button(),
        _connect_url(),
        *CONNECTION_STATUS_FIELDS,
        _field(
            "channel_state",
            "string",
            readonly=True,
            interface="input",
            note="Push notifications from Google for this calendar, as the sync last set them up. Empty: not "
            "in use; the scheduled sync runs either way.",
        ),
    ]


CONNECTION_FIELDS = connection_fields()
# What the admin defines: calsync creates these fields once and then leaves them (and the items) alone.
CONNECTION_SPEC_FIELDS = ("id", "name", "staff", "calendar_id", "account_from")

# calsync's own fields (the settings item's, the connections' status): setup keeps their interfaces and notes
# current. In the bookings collection only the fields the sync owns; the others may have been customised by
# an admin.
MANAGED_META = ("interface", "options", "display", "display_options", "note", "readonly", "special", "width")
SYNC_OWNED = ("google_event_id", "sync_status", "sync_error")


# What the sync user may touch (field-level permissions): it reads what push, pull and the repair scan read,
# and writes only what it sets. A field an admin adds later stays invisible to it.
SYNC_WRITES = ("title", "start_datetime", "end_datetime", "all_day", "description", "location", "status",
               "timezone", "google_event_id", "sync_status", "sync_error")  # fmt: skip
SYNC_READS = ("id", *SYNC_WRITES, "date_created", "date_updated", "user_updated")
OPTIONAL_FIELDS = ("timezone",)  # granted only where the collection has it
STATUS_FIELDS = tuple(f["field"] for f in CONNECTION_STATUS_FIELDS)
# connect_url: the functions refresh the signed link (it expires) when they publish the status.
SETTINGS_WRITES = (*STATUS_FIELDS, "connect_url")
SETTINGS_READS = ("id", *SETTINGS_WRITES)
# The sync reads every connection's definition and status, and writes only the status.
CONNECTION_WRITES = (*SETTINGS_WRITES, "channel_state")
CONNECTION_READS = (*CONNECTION_SPEC_FIELDS, *CONNECTION_WRITES)


# Types an existing field may have instead of the one calsync creates: a dateTime works (its naive values are
# read in TIMEZONE), and over SQLite Directus reports a uuid field as a string.
COMPATIBLE = {"timestamp": ("dateTime",), "uuid": ("string",)}
# Fields whose existing type is fine whatever it is: staff values are compared with the bookings' routing
# field as text (a string, or a relation to wherever that field points, setup made it one or the other).
ANY_TYPE = {(CONNECTIONS_COLLECTION, "staff")}
ROUTE_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")  # as the ROUTE_FIELD setting


class SetupError(Exception):
    """Setup cannot go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class SetupConfig:
    directus_url: str
    admin_token: str
    collection: str
    booking_hook_url: str
    oauth_callback_url: str
    webhook_secret: str
    connect_key: str
    # ON_GOOGLE_DELETE: only "delete" lets the sync user delete bookings (a flag, like the others, reads
    # its environment name)
    on_google_delete: str = dataclasses.field(
        default_factory=lambda: os.environ.get("ON_GOOGLE_DELETE") or "cancel"
    )
    # GOOGLE_CALENDAR_ID: the calendar of the ``default`` connection setup creates for an installation that
    # had none (the one it synced with until then)
    calendar_id: str = dataclasses.field(
        default_factory=lambda: os.environ.get("GOOGLE_CALENDAR_ID") or "primary"
    )
    # ROUTE_FIELD: the booking field that routes bookings to connections; route_to: the collection it
    # relates to when setup creates it (directus_users, or one of yours), None for a plain string
    route_field: str | None = dataclasses.field(default_factory=lambda: os.environ.get("ROUTE_FIELD") or None)
    route_to: str | None = None

    def connect_url(self, now: datetime) -> str:
        """A signed Connect link valid for links.LINK_TTL: the settings item never shows the key itself."""
        return links.connect_url(self.oauth_callback_url, self.connect_key, DEFAULT_CONNECTION, now)

    def connect_url_is_fresh(self, url: str, now: datetime) -> bool:
        """``url`` is this configuration's signed link with at least half its validity left."""
        parts = urlsplit(url)
        start = f"{self.oauth_callback_url.rstrip('/')}/start"
        token = parse_qs(parts.query).get("link", [""])[0]
        if f"{parts.scheme}://{parts.netloc}{parts.path}" != start or not token:
            return False
        try:
            connection, expiry = links.check_connect_link(self.connect_key, token, now)
        except ValueError:  # LinkInvalid, LinkExpired
            return False
        return connection == DEFAULT_CONNECTION and expiry - now >= links.LINK_TTL / 2


@dataclasses.dataclass
class SetupResult:
    steps: list[dict[str, str]] = dataclasses.field(default_factory=list)
    sync_token: str | None = None
    sync_user_id: str | None = None

    connect_url: str | None = None  # the signed link the settings item shows, when setup wrote one

    @property
    def changed(self) -> list[dict[str, str]]:
        return [step for step in self.steps if step["action"] != "unchanged"]

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"steps": self.steps, "changed": bool(self.changed)}
        if self.sync_token:
            body["sync_token"] = self.sync_token
        return body

    def summary(self, directus_url: str) -> list[str]:
        """What changed, one line each, and the rest counted; one line when nothing changed."""
        unchanged = len(self.steps) - len(self.changed)
        if not self.changed:
            return [f"Directus at {directus_url} is ready: nothing to change ({unchanged} items checked)"]
        lines = [
            f"  {step['action']:<18} {step['what']}" + (f"  ({step['detail']})" if step["detail"] else "")
            for step in self.changed
        ]
        return [*lines, f"  {unchanged} more unchanged"] if unchanged else lines


class DirectusSetup:
    def __init__(
        self,
        config: SetupConfig,
        dry_run: bool = False,
        client: DirectusClient | None = None,
        reissue_token: bool = False,
    ) -> None:
        if config.on_google_delete not in ("cancel", "delete"):
            raise SetupError("ON_GOOGLE_DELETE must be cancel or delete")
        if config.route_field is not None and (
            not ROUTE_FIELD_NAME.match(config.route_field) or config.route_field in FIELDS.names()
        ):
            raise SetupError(
                f"ROUTE_FIELD {config.route_field!r}: a field name (letters, digits, _) that is not one of "
                "the fields calsync syncs"
            )
        if config.route_to is not None and config.route_field is None:
            raise SetupError("--route-to needs the routing field's name: --route-field or ROUTE_FIELD")
        self.config = config
        self.reissue_token = reissue_token  # a new static token for an existing sync user (a lost one)
        self.booking_fields: set[str] = {f["field"] for f in BOOKING_FIELDS}
        self._settings_status: dict[str, Any] = {}  # the settings item's status, for the default connection
        self.dry_run = dry_run
        self.api = client or DirectusClient(
            config.directus_url, config.admin_token, config.collection, retries=1
        )
        self.result = SetupResult()

    # -- plumbing -------------------------------------------------------------------------------------
    def _step(self, what: str, action: str, detail: str = "") -> None:
        if self.dry_run and action in ("created", "updated"):
            action = f"would be {action}"
        self.result.steps.append({"what": what, "action": action, "detail": detail})

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        return self.api.request("GET", path, f"read {path}", params=params)

    def _write(self, method: str, path: str, body: Any) -> Any:
        if self.dry_run:
            return None
        return self.api.request(method, path, f"write {path}", body=body)

    # -- the whole setup ------------------------------------------------------------------------------
    def run(self) -> SetupResult:
        try:
            self._check_admin()
            self._ensure_collection(self.config.collection, BOOKING_FIELDS, singleton=False)
            self._ensure_route_field()
            self._ensure_collection(SETTINGS_COLLECTION, SETTINGS_FIELDS, singleton=True)
            self._ensure_settings_item()
            self._ensure_connections()
            policy = self._ensure_policy()
            self._ensure_permissions(policy)
            self._ensure_user(policy)
            self._ensure_flow()
            self._ensure_dashboard()
        except DirectusAuthError as exc:
            raise SetupError(
                f"Directus refused the admin token ({exc}); pass an admin user's static token"
            ) from None
        except DirectusError as exc:
            raise SetupError(str(exc)) from None
        return self.result

    def _check_admin(self) -> None:
        try:
            self._get("/users/me", {"fields": "id"})
        except DirectusError as exc:
            if exc.status is None or exc.status >= 500:
                raise SetupError(f"cannot reach Directus at {self.config.directus_url}: {exc}") from None
            raise
        try:
            self._get("/policies", {"limit": "1"})
        except DirectusAuthError:
            raise SetupError(
                "the token works but has no admin access; use an administrator's token"
            ) from None

    # -- collections and fields -----------------------------------------------------------------------
    def _ensure_collection(
        self, name: str, fields: list[dict[str, Any]], singleton: bool, **meta: Any
    ) -> set[str]:
        """The collection with at least these fields; returns the fields it created (all of them for a new
        collection). ``meta``: the collection's own, when it is created."""
        try:
            existing = {f["field"]: f for f in self._get(f"/fields/{name}") or []}
        except (DirectusNotFound, DirectusAuthError):
            existing = {}
        if name == self.config.collection and existing:
            self.booking_fields |= set(existing)
        if not existing:
            body = {
                "collection": name,
                "schema": {},
                "meta": {"singleton": singleton, "icon": "event", **meta},
                "fields": copy.deepcopy(fields),
            }
            self._write("POST", "/collections", body)
            self._step(f"collection {name}", "created", f"{len(fields)} fields")
            return {f["field"] for f in fields}
        if "id" not in existing:
            raise SetupError(f"collection {name} has no 'id' primary key field; calsync needs one")
        created = set()
        for field in fields:
            have = existing.get(field["field"])
            if have is None:
                self._write("POST", f"/fields/{name}", copy.deepcopy(field))
                self._step(f"field {name}.{field['field']}", "created", field["type"])
                created.add(field["field"])
            elif (
                have.get("type") != field["type"]
                and have.get("type") not in COMPATIBLE.get(field["type"], ())
                and (name, field["field"]) not in ANY_TYPE
            ):
                raise SetupError(
                    f"field {name}.{field['field']} exists as type {have.get('type')!r}; calsync needs {field['type']!r}. "
                    "Rename or convert that field, then run setup again"
                )
            elif self._meta_outdated(name, field, have):
                meta = {key: field["meta"][key] for key in MANAGED_META if key in field["meta"]}
                self._write("PATCH", f"/fields/{name}/{field['field']}", {"meta": meta})
                self._step(f"field {name}.{field['field']}", "updated", "interface, display and note")
            else:
                self._step(f"field {name}.{field['field']}", "unchanged")
        return created

    def _meta_outdated(self, collection: str, field: dict[str, Any], have: dict[str, Any]) -> bool:
        """An existing field of calsync's whose interface, display or note differ from this version's (a
        Directus set up by an earlier version): the migration puts them right, once. The connections'
        definition fields are the admin's once created (an admin may well have customised them)."""
        owned = {
            SETTINGS_COLLECTION: True,
            CONNECTIONS_COLLECTION: field["field"] not in CONNECTION_SPEC_FIELDS,
        }.get(collection, field["field"] in SYNC_OWNED)
        if not owned:
            return False
        current = have.get("meta") or {}
        return any(current.get(key) != field["meta"][key] for key in MANAGED_META if key in field["meta"])

    def _ensure_settings_item(self) -> None:
        try:
            current = self._get(f"/items/{SETTINGS_COLLECTION}") or {}
        except DirectusError:
            current = {}
        now = datetime.now(UTC)
        self._settings_status = {k: current[k] for k in STATUS_FIELDS if current.get(k) is not None}
        self._settings_status.setdefault("connection_state", "not_connected")  # as the item shows it
        if self.config.connect_url_is_fresh(str(current.get("connect_url") or ""), now):
            self.result.connect_url = str(current["connect_url"])
            self._step("Connect Google Calendar link", "unchanged")
            return
        link = self.config.connect_url(now)
        self._write(
            "PATCH",
            f"/items/{SETTINGS_COLLECTION}",
            {"connect_url": link, "connection_state": current.get("connection_state") or "not_connected"},
        )
        self.result.connect_url = None if self.dry_run else link
        self._step("Connect Google Calendar link", "updated" if current.get("connect_url") else "created")

    # -- routing and connections ----------------------------------------------------------------------
    def _ensure_route_field(self) -> None:
        """The booking field that routes bookings to connections (ROUTE_FIELD), when it is missing: a
        many-to-one relation to ``route_to`` (so people pick a user or an item), else a plain string. A field
        that exists is left as it is, whatever its type: its values are what the connections' ``staff``
        holds."""
        name, related = self.config.route_field, self.config.route_to
        if name is None:
            return
        what = f"routing field {self.config.collection}.{name}"
        if name in self.booking_fields:
            self._step(what, "unchanged", "exists: left as it is")
            return
        note = (
            "Whose calendar this booking goes to: the connection (calendar_sync_connections) whose Staff is "
            "this value. Empty: the default connection's calendar. Changing it moves the event."
        )
        if related is None:
            self._write("POST", f"/fields/{self.config.collection}",
                        _field(name, "string", interface="input", note=note))  # fmt: skip
            self._step(what, "created", "string")
        else:
            self._write("POST", f"/fields/{self.config.collection}",
                        _relation(name, related, self._key_type(related), note))  # fmt: skip
            self._ensure_relation(self.config.collection, name, related)
            self._step(what, "created", f"many-to-one to {related}")
        self.booking_fields.add(name)

    def _key_type(self, collection: str) -> str:
        """The type of the collection's primary key: a many-to-one field must have that type."""
        try:
            fields = self._get(f"/fields/{collection}") or []
        except (DirectusNotFound, DirectusAuthError):
            fields = []
        for field in fields:
            if (field.get("schema") or {}).get("is_primary_key"):
                return str(field["type"])
        raise SetupError(f"--route-to {collection}: Directus has no such collection; create it first")

    def _ensure_relation(self, collection: str, field: str, related: str) -> None:
        """The relation behind a many-to-one field setup has just created; a related item's deletion
        empties the field (the booking then goes to the default connection) rather than being refused."""
        body = {"collection": collection, "field": field, "related_collection": related,
                "schema": {"on_delete": "SET NULL"}}  # fmt: skip
        self._write("POST", "/relations", body)

    def _ensure_connections(self) -> None:
        """The connections collection, with ``staff`` relating to what the routing field does when setup
        knows it. A new collection gets the ``default`` connection: an installation from before connections
        keeps its Google consent, mappings and cursors (all kept under that id) and its calendar."""
        related = self.config.route_to
        fields = connection_fields(related, self._key_type(related) if related else "string")
        meta = {"icon": "calendar_month", "display_template": "{{name}} ({{id}})",
                "note": "One Google calendar per item; bookings go to the one whose Staff matches their "
                "routing field. Add one per staff member, then open its Connect button."}  # fmt: skip
        created = self._ensure_collection(CONNECTIONS_COLLECTION, fields, singleton=False, **meta)
        if related and "staff" in created:
            self._ensure_relation(CONNECTIONS_COLLECTION, "staff", related)
        if "id" in created:  # a new collection, never an admin's existing items
            self._ensure_default_connection()

    def _ensure_default_connection(self) -> None:
        """The ``default`` item, showing what the settings item showed until now (the next publish keeps
        both current)."""
        item = {**self._settings_status, "id": DEFAULT_CONNECTION, "name": "Default",
                "calendar_id": self.config.calendar_id, "staff": None}  # fmt: skip
        if self.result.connect_url:
            item["connect_url"] = self.result.connect_url
        self._write("POST", f"/items/{CONNECTIONS_COLLECTION}", item)
        self._step(f"connection {DEFAULT_CONNECTION!r}", "created", f"calendar {self.config.calendar_id}")

    # -- policy, permissions, user --------------------------------------------------------------------
    def _ensure_policy(self) -> str | None:
        found = (
            self._get("/policies", {"filter": json.dumps({"name": {"_eq": POLICY_NAME}}), "fields": "id"})
            or []
        )
        if found:
            self._step(f"policy {POLICY_NAME!r}", "unchanged")
            return str(found[0]["id"])
        created = self._write(
            "POST",
            "/policies",
            {
                "name": POLICY_NAME,
                "icon": "sync",
                "admin_access": False,
                "app_access": False,
                "description": "Least privilege for the Google Calendar sync",
            },
        )
        self._step(f"policy {POLICY_NAME!r}", "created")
        return str(created["id"]) if created else None

    def _wanted_permissions(self, field_level: bool = True) -> dict[tuple[str, str], list[str]]:
        """(collection, action) -> the fields allowed; no entry, no permission. ``field_level`` False: every
        field (a Directus without the licence for field-level rules)."""
        have = self.booking_fields
        reads = [f for f in SYNC_READS if f in have or f not in OPTIONAL_FIELDS]
        writes = [f for f in SYNC_WRITES if f in have or f not in OPTIONAL_FIELDS]
        # The routing field: read to route (and count) the bookings, set on the bookings the sync imports
        # from a staff member's calendar; never changed on existing ones (that is a person's reassignment).
        route = [self.config.route_field] if self.config.route_field in have else []
        collection = self.config.collection
        wanted = {
            (collection, "read"): reads + route,
            (collection, "create"): writes + route,
            (collection, "update"): writes,
            (SETTINGS_COLLECTION, "read"): list(SETTINGS_READS),
            (SETTINGS_COLLECTION, "update"): list(SETTINGS_WRITES),
            (CONNECTIONS_COLLECTION, "read"): list(CONNECTION_READS),
            (CONNECTIONS_COLLECTION, "update"): list(CONNECTION_WRITES),
        }
        if not field_level:
            wanted = {which: ["*"] for which in wanted}
        if self.config.on_google_delete == "delete":  # otherwise a Google deletion only cancels
            wanted[(collection, "delete")] = ["*"]
        return wanted

    def _read_permissions(self, policy: str | None) -> list[dict[str, Any]]:
        if policy is None:
            return []
        query = {
            "policy": {"_eq": policy},
            "collection": {"_in": [self.config.collection, SETTINGS_COLLECTION, CONNECTIONS_COLLECTION]},
        }
        params = {"filter": json.dumps(query), "fields": "id,collection,action,fields", "limit": "-1"}
        return list(self._get("/permissions", params) or [])

    def _ensure_permissions(self, policy: str | None) -> None:
        """Make the policy's permissions on the two collections exactly the wanted ones: create what is
        missing, narrow what an earlier version granted wider (``fields: ["*"]``), drop what is not needed.

        Directus 12 without a licence refuses field lists (``RESOURCE_RESTRICTED
        custom_permission_rules_enabled``): there the sync user gets whole collections, still without
        delete unless ON_GOOGLE_DELETE=delete, and the step says so."""
        rows = self._read_permissions(policy)
        changes: list[str] = []  # what was done, including before a refusal
        note = ""
        try:
            self._apply_permissions(policy, rows, self._wanted_permissions(), changes)
        except DirectusError as exc:
            if exc.code != "RESOURCE_RESTRICTED":
                raise
            rows = self._read_permissions(policy)  # the writes before the refused one went through
            self._apply_permissions(policy, rows, self._wanted_permissions(field_level=False), changes)
            note = "field-level permissions need a Directus licence here: whole collections granted"
        detail = "; ".join(filter(None, [", ".join(changes), note]))
        if changes:
            self._step("permissions", "updated" if rows else "created", detail)
        else:
            self._step("permissions", "unchanged", detail)

    def _apply_permissions(
        self,
        policy: str | None,
        rows: list[dict[str, Any]],
        wanted: dict[tuple[str, str], list[str]],
        changes: list[str],
    ) -> None:
        seen: set[tuple[str, str]] = set()
        for row in rows:
            which = (row["collection"], row["action"])
            fields = wanted.get(which)
            if fields is None or which in seen:  # not needed (or a duplicate): least privilege drops it
                self._write("DELETE", f"/permissions/{row['id']}", None)
                changes.append(f"removed {which[1]} {which[0]}")
            elif sorted(row.get("fields") or []) != sorted(fields):
                self._write("PATCH", f"/permissions/{row['id']}", {"fields": fields})
                changes.append(
                    f"narrowed {which[1]} {which[0]}" if fields != ["*"] else f"widened {which[1]} {which[0]}"
                )
            seen.add(which)
        missing = [
            {"collection": c, "action": a, "fields": f, "permissions": {}, "validation": {}, "policy": policy or ""}
            for (c, a), f in wanted.items()
            if (c, a) not in seen
        ]  # fmt: skip
        if missing:
            # Directus 12 refuses filtered ("custom") rules, and none is needed: field lists are enough.
            self._write("POST", "/permissions", missing)
            changes += [f"created {p['action']} {p['collection']}" for p in missing]

    def _ensure_user(self, policy: str | None) -> None:
        query = {"first_name": {"_eq": USER_FIRST_NAME}, "last_name": {"_eq": USER_LAST_NAME}}
        found = self._get("/users", {"filter": json.dumps(query), "fields": "id,policies.policy"}) or []
        if found:
            user = found[0]
            self.result.sync_user_id = str(user["id"])
            attached = {str(p.get("policy")) for p in user.get("policies") or [] if isinstance(p, dict)}
            changes: dict[str, Any] = {}
            if policy is not None and policy not in attached:
                changes["policies"] = {"create": [{"policy": policy}]}
            if self.reissue_token:
                changes["token"] = secrets.token_urlsafe(32)  # replaces the old one: it stops working
            if changes:
                self._write("PATCH", f"/users/{user['id']}", changes)
                if "token" in changes and not self.dry_run:
                    self.result.sync_token = changes["token"]
                done = [
                    "policy attached" if "policies" in changes else "",
                    "new token" if "token" in changes else "",
                ]
                self._step("sync service user", "updated", ", ".join(filter(None, done)))
            else:
                self._step("sync service user", "unchanged", "its token was shown when it was created")
            return
        token = secrets.token_urlsafe(32)
        created = self._write(
            "POST",
            "/users",
            {
                "first_name": USER_FIRST_NAME,
                "last_name": USER_LAST_NAME,
                "token": token,
                "policies": [{"policy": policy}],
            },
        )
        if created:
            self.result.sync_user_id = str(created["id"])
            self.result.sync_token = token
        self._step("sync service user", "created", "use its token as DIRECTUS_TOKEN")

    # -- the Flow -------------------------------------------------------------------------------------
    def _operation_options(self) -> dict[str, Any]:
        return {
            "method": "POST",
            "url": self.config.booking_hook_url,
            "headers": [
                {"header": "Authorization", "value": f"Bearer {self.config.webhook_secret}"},
                {"header": "Content-Type", "value": "application/json"},
            ],
            "body": FLOW_BODY,
        }

    def _flow_options(self) -> dict[str, Any]:
        return {
            "type": "action",
            "scope": ["items.create", "items.update", "items.delete"],
            "collections": [self.config.collection],
        }

    def _condition_options(self) -> dict[str, Any]:
        """Pass every change except the sync user's own: its writes (statuses, imported bookings) would
        only come back as deliveries booking_hook skips, one function call per booking written. A change
        without a user (another Flow with full access, an extension) passes."""
        return {
            "filter": {
                "_or": [
                    {"$accountability": {"_null": True}},
                    {"$accountability": {"user": {"_neq": self.result.sync_user_id}}},
                ]
            }
        }

    def _create_request(self, flow_id: str) -> str | None:
        operation = self._write("POST", "/operations", {
            "flow": flow_id, "name": "POST to booking_hook", "key": "post_booking_hook", "type": "request",
            "position_x": 19, "position_y": 1, "options": self._operation_options()})  # fmt: skip
        return str(operation["id"]) if operation else None

    def _create_handoff(self, flow_id: str, delivery_id: str | None) -> str | None:
        """The gate's last step: run the delivery Flow with this trigger (and its accountability)."""
        operation = self._write("POST", "/operations", {
            "flow": flow_id, "name": "Deliver", "key": "deliver", "type": "trigger", "position_x": 37,
            "position_y": 1, "options": {"flow": delivery_id, "payload": "{{$trigger}}"}})  # fmt: skip
        return str(operation["id"]) if operation else None

    def _create_condition(self, flow_id: str, next_id: str | None) -> None:
        operation = self._write("POST", "/operations", {
            "flow": flow_id, "name": "Not written by the sync", "key": "not_from_the_sync", "type": "condition",
            "position_x": 19, "position_y": 1, "options": self._condition_options(),
            "resolve": next_id})  # fmt: skip
        if operation:
            # The operation must exist before the flow can point at it (a nested create fails).
            self._write("PATCH", f"/flows/{flow_id}", {"operation": operation["id"]})

    def _find_flow(self, name: str, fields: str) -> dict[str, Any] | None:
        found = self._get("/flows", {"filter": json.dumps({"name": {"_eq": name}}), "fields": fields}) or []
        return dict(found[0]) if found else None

    def _ensure_flow(self) -> None:
        """Two Flows, so that the sync's own writes leave no trace while real deliveries do.

        Directus logs a run of every Flow whose ``accountability`` is not null (an activity row, and with
        ``all`` a revision holding every step), whatever its condition decided; an event trigger has no
        filter of its own. So the gate (the event trigger, then the condition that drops the sync user's
        writes, then a hand-off to the delivery Flow) logs nothing (``accountability: null``), and the
        delivery Flow (an "operation" trigger, then the request to booking_hook) logs every run with all
        its steps: a delivery that failed is in its logs, the sync's hundreds of write-backs are not. The
        hand-off passes the trigger and the accountability along, so the request sends what it always did.
        A gate made by an earlier version (trigger -> [condition ->] request) has its request replaced by
        the hand-off."""
        delivery_id, changed = self._ensure_delivery_flow()
        flow = self._find_flow(FLOW_NAME, "id,status,options,accountability,operation.id,operation.type,"
                               "operation.options,operation.resolve.id,operation.resolve.type,"
                               "operation.resolve.options")  # fmt: skip
        if flow is None:
            created = self._write("POST", "/flows", {
                "name": FLOW_NAME, "icon": "sync", "status": "active", "trigger": "event",
                "accountability": None, "options": self._flow_options()})  # fmt: skip
            if created:
                self._create_condition(created["id"], self._create_handoff(created["id"], delivery_id))
            self._step("Flow to booking_hook", "created", self.config.booking_hook_url)
            return
        if (flow.get("options"), flow.get("status"), flow.get("accountability")) != (
            self._flow_options(), "active", None):  # fmt: skip
            self._write("PATCH", f"/flows/{flow['id']}", {"options": self._flow_options(), "status": "active",
                                                          "accountability": None})  # fmt: skip
            changed.append("trigger")
        first = flow.get("operation") or {}
        if first.get("type") != "condition":  # an early version's Flow (trigger -> request), or none at all
            self._create_condition(flow["id"], self._create_handoff(flow["id"], delivery_id))
            changed.append("condition")
            if first.get("id"):
                self._write("DELETE", f"/operations/{first['id']}", None)
            self._step("Flow to booking_hook", "updated", ", ".join(changed))
            return
        if first.get("options") != self._condition_options():
            self._write("PATCH", f"/operations/{first['id']}", {"options": self._condition_options()})
            changed.append("condition (sync user)")
        after = first.get("resolve") or {}
        handoff = {"flow": delivery_id, "payload": "{{$trigger}}"}
        if after.get("type") != "trigger":  # the request of a one-Flow version, or deleted by hand
            self._write(
                "PATCH",
                f"/operations/{first['id']}",
                {"resolve": self._create_handoff(flow["id"], delivery_id)},
            )
            if after.get("id"):
                self._write("DELETE", f"/operations/{after['id']}", None)
            changed.append("hand-off to the delivery Flow")
        elif after.get("options") != handoff:
            self._write("PATCH", f"/operations/{after['id']}", {"options": handoff})
            changed.append("hand-off to the delivery Flow")
        self._step("Flow to booking_hook", "updated" if changed else "unchanged", ", ".join(changed))

    def _ensure_delivery_flow(self) -> tuple[str | None, list[str]]:
        """The Flow that POSTs to booking_hook, run by the gate; its runs are logged (``accountability:
        all``). Returns its id and what changed."""
        flow = self._find_flow(DELIVERY_FLOW_NAME, "id,status,accountability,operation.id,operation.options")
        if flow is None:
            created = self._write("POST", "/flows", {
                "name": DELIVERY_FLOW_NAME, "icon": "send", "status": "active", "trigger": "operation",
                "accountability": "all", "options": {}})  # fmt: skip
            if not created:
                return None, ["delivery Flow"]
            self._write(
                "PATCH", f"/flows/{created['id']}", {"operation": self._create_request(created["id"])}
            )
            return str(created["id"]), ["delivery Flow"]
        changed = []
        if (flow.get("status"), flow.get("accountability")) != ("active", "all"):
            self._write("PATCH", f"/flows/{flow['id']}", {"status": "active", "accountability": "all"})
            changed.append("delivery Flow")
        request: dict[str, Any] = flow.get("operation") or {}
        if not request:  # deleted by hand
            self._write("PATCH", f"/flows/{flow['id']}", {"operation": self._create_request(flow["id"])})
            changed.append("request")
        elif request.get("options") != self._operation_options():
            self._write("PATCH", f"/operations/{request['id']}", {"options": self._operation_options()})
            changed.append("request (URL or secret)")
        return str(flow["id"]), changed

    # -- the Insights dashboard -----------------------------------------------------------------------
    def _panels(self) -> list[dict[str, Any]]:
        """The dashboard's panels. Directus 12's data panels skip singleton collections, so the last cycles
        come from the settings item's revisions (one per status publish), not from the item itself."""
        bookings = self.config.collection
        return [
            {"name": "Bookings by sync status", "type": "pie-chart", "icon": "pie_chart", "position_x": 1,
             "position_y": 1, "width": 16, "height": 14,
             "options": {"collection": bookings, "column": "sync_status", "function": "count",
                         "legend": "right", "showLabels": True}},
            {"name": "Bookings in error", "type": "list", "icon": "error", "position_x": 17, "position_y": 1,
             "width": 24, "height": 14, "note": "Open one, read Sync error, fix it and save: the sync tries again.",
             "options": {"collection": bookings, "limit": 20, "sortField": "date_updated",
                         "sortDirection": "desc", "displayTemplate": "{{title}} · {{sync_error}}",
                         "linkToItem": True, "filter": {"sync_status": {"_eq": "error"}}}},
            {"name": "Last cycles", "type": "list", "icon": "history", "position_x": 1, "position_y": 15,
             "width": 40, "height": 14, "note": "Every status calsync published on the calendar_sync item.",
             "options": {"collection": "directus_revisions", "limit": 10, "sortField": "id",
                         "sortDirection": "desc", "displayTemplate": "{{activity.timestamp}} {{delta}}",
                         "filter": {"collection": {"_eq": SETTINGS_COLLECTION}}}},
        ]  # fmt: skip

    def _ensure_dashboard(self) -> None:
        """The Insights dashboard "calsync"; panels are found by name, created or corrected, never doubled."""
        query = {"filter": json.dumps({"name": {"_eq": DASHBOARD_NAME}}), "fields": "id"}
        found = self._get("/dashboards", query) or []
        if found:
            dashboard = str(found[0]["id"])
        else:
            created = self._write("POST", "/dashboards", {
                "name": DASHBOARD_NAME, "icon": "sync", "note": "Health of the Google Calendar sync"})  # fmt: skip
            dashboard = str(created["id"]) if created else ""
        have = {}
        if found:
            params = {"filter": json.dumps({"dashboard": {"_eq": dashboard}}), "fields": "id,name,type,options",
                      "limit": "-1"}  # fmt: skip
            have = {p["name"]: p for p in self._get("/panels", params) or []}
        changes = []
        for panel in self._panels():
            current = have.get(panel["name"])
            if current is None:
                self._write("POST", "/panels", {**panel, "dashboard": dashboard, "show_header": True})
                changes.append(f"created {panel['name']}")
            elif (current.get("type"), current.get("options")) != (panel["type"], panel["options"]):
                self._write(
                    "PATCH", f"/panels/{current['id']}", {"type": panel["type"], "options": panel["options"]}
                )
                changes.append(f"updated {panel['name']}")
        action = "created" if not found else "updated" if changes else "unchanged"
        self._step(f"Insights dashboard {DASHBOARD_NAME!r}", action, ", ".join(changes))
