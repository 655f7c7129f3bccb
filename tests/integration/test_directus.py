"""The Directus client and `calsync directus setup` against a real Directus 12."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from calsync.directus.client import (
    DirectusAuthError,
    DirectusClient,
    DirectusNotFound,
    DirectusUnavailable,
    DirectusValidationError,
)
from calsync.directus.setup import (
    BOOKING_FIELDS,
    DELIVERY_FLOW_NAME,
    FLOW_NAME,
    POLICY_NAME,
    DirectusSetup,
    SetupConfig,
    SetupError,
)
from calsync.sync.booking import FIELDS
from calsync.web.links import check_connect_link
from tests.parts.directus import ADMIN_TOKEN, DirectusServer, node_bin

pytestmark = pytest.mark.directus


def sync_client(server: DirectusServer) -> DirectusClient:
    return DirectusClient(server.url, server.sync_token, "bookings", sleep=lambda _: None)


def test_bulk_create_read_update_delete_as_the_least_privilege_user(
    directus_bookings: DirectusServer,
) -> None:
    # deleting bookings is granted only with ON_GOOGLE_DELETE=delete
    DirectusSetup(dataclasses.replace(directus_bookings.setup(), on_google_delete="delete")).run()
    client = sync_client(directus_bookings)
    rows = client.create_items(
        [
            {"title": "a", "start_datetime": "2026-07-01T10:00:00+02:00"},
            {"title": "b", "start_datetime": "2026-07-02T10:00:00Z"},
            {"title": "c", "start_datetime": "2026-07-03T10:00:00Z"},
        ]
    )
    assert [r["title"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["start_datetime"] == "2026-07-01T08:00:00.000Z"  # an offset is honoured, UTC comes back
    keys = [str(r["id"]) for r in rows]
    before = client.requests
    found = client.get_items([*keys, "999999"])
    assert client.requests == before + 1  # many keys, one request
    assert set(found) == set(keys)
    updated = client.update_items(
        [{"id": rows[0]["id"], "title": "a2"}, {"id": rows[1]["id"], "location": "Rome"}]
    )
    assert {r["title"] for r in updated} == {"a2", "b"} and all(r["date_updated"] for r in updated)
    client.update_items([{"id": key, "status": "cancelled"} for key in keys[1:]])
    assert [found["status"] for found in client.get_items(keys).values()].count("cancelled") == 2
    client.delete_items(keys[:2])
    assert set(client.get_items(keys)) == {keys[2]}
    assert client.current_user_id() == directus_bookings.sync_user_id
    directus_bookings.setup()  # back to the session's configuration (no delete)


def test_changed_since_finds_created_and_updated_items_in_key_order(
    directus_bookings: DirectusServer,
) -> None:
    client = sync_client(directus_bookings)
    first = client.create_items(
        [{"title": f"t{n}", "start_datetime": "2026-07-01T10:00:00Z"} for n in range(5)]
    )
    everything = [row["id"] for page in client.items_changed_since(None, page_size=2) for row in page]
    assert everything == [r["id"] for r in first]
    # The Date header has whole seconds: changes in the checkpoint's own second are (safely) included.
    time.sleep(1.1)
    checkpoint = client.server_time().strftime("%Y-%m-%dT%H:%M:%S.000Z")
    time.sleep(1.1)
    client.update_items([{"id": first[3]["id"], "title": "changed"}])
    new = client.create_items([{"title": "new", "start_datetime": "2026-07-01T10:00:00Z"}])
    later = [row["id"] for page in client.items_changed_since(checkpoint, page_size=1) for row in page]
    assert later == [first[3]["id"], new[0]["id"]]


def test_fields_fall_back_when_the_schema_is_not_readable(directus_bookings: DirectusServer) -> None:
    client = sync_client(directus_bookings)
    with pytest.raises((DirectusAuthError, DirectusNotFound)):
        client.request("GET", "/fields/bookings", "fields read")  # least privilege: no schema access
    assert client.booking_fields() == FIELDS.names()  # an empty collection: the fields setup creates
    admin = DirectusClient(directus_bookings.url, ADMIN_TOKEN, "bookings")
    assert {f["field"] for f in BOOKING_FIELDS} <= admin.booking_fields()  # the schema
    client.create_items([{"title": "x", "start_datetime": "2026-07-01T10:00:00Z"}])
    sample = client.booking_fields()  # an item
    assert {"google_event_id", "sync_status", "date_updated"} <= sample


def test_errors_are_mapped_and_never_show_the_token(
    directus_bookings: DirectusServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = DirectusClient(
        directus_bookings.url, "not-the-token-0123456789", "bookings", sleep=lambda _: None
    )
    with pytest.raises(DirectusAuthError) as caught:
        wrong.get_items(["1"])
    assert "not-the-token-0123456789" not in str(caught.value)
    client = sync_client(directus_bookings)
    with pytest.raises(DirectusAuthError):  # Directus says 403 alike for a missing or a forbidden collection
        DirectusClient(directus_bookings.url, directus_bookings.sync_token, "invoices").get_items(["1"])
    existing = client.create_items([{"title": "x", "start_datetime": "2026-07-01T10:00:00Z"}])[0]["id"]
    admin = DirectusClient(directus_bookings.url, ADMIN_TOKEN, "bookings")
    with pytest.raises(DirectusValidationError, match="RECORD_NOT_UNIQUE"):
        admin.create_items([{"id": existing, "title": "duplicate key"}])
    assert directus_bookings.sync_token not in caplog.text


class _Flaky(BaseHTTPRequestHandler):
    failures = 2

    def do_GET(self) -> None:
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        body = json.dumps({"data": [{"id": 1, "title": "ok"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_retries_503_then_gives_up_as_unavailable() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sleeps: list[float] = []
    try:
        client = DirectusClient(
            f"http://127.0.0.1:{server.server_port}",
            "t0ken-abcdef",
            "bookings",
            retries=3,
            sleep=sleeps.append,
        )
        assert client.get_items(["1"]) == {"1": {"id": 1, "title": "ok"}}
        assert len(sleeps) == 2 and client.requests == 3
        _Flaky.failures = 10
        with pytest.raises(DirectusUnavailable):
            client.get_items(["1"])
    finally:
        server.shutdown()


def test_unreachable_directus_is_unavailable() -> None:
    with pytest.raises(DirectusUnavailable, match="cannot connect"):
        DirectusClient(
            "http://127.0.0.1:9", "tok-abcdef", "bookings", retries=1, sleep=lambda _: None
        ).get_items(["1"])


# -- calsync directus setup ---------------------------------------------------------------------------


def test_setup_is_idempotent_and_the_flow_follows_the_urls(directus: DirectusServer) -> None:
    config = SetupConfig(
        directus.url,
        ADMIN_TOKEN,
        "bookings",
        "http://127.0.0.1:9/hook-a",
        "http://127.0.0.1:9/oauth",
        "secret-a-123456",
        "key-a-123456",
    )
    DirectusSetup(config).run()
    again = DirectusSetup(config).run()
    assert again.as_json()["changed"] is False and again.sync_token is None
    moved_config = SetupConfig(**{**config.__dict__, "booking_hook_url": "http://127.0.0.1:9/hook-b"})
    moved = DirectusSetup(moved_config).run()
    assert [s["what"] for s in moved.steps if s["action"] == "updated"] == ["Flow to booking_hook"]
    flows = directus.admin(
        "GET",
        "/flows",
        params={"fields": "name,accountability,operation.type,operation.options,operation.resolve.type,"
                          "operation.resolve.options",
                "filter": json.dumps({"name": {"_contains": "calsync"}})},
    ).json()["data"]  # fmt: skip
    gate = next(f for f in flows if f["name"] == FLOW_NAME)
    assert len(flows) == 2 and gate["accountability"] is None  # the gate logs nothing
    condition = gate["operation"]
    assert condition["type"] == "condition"  # the sync user's own writes stop here
    assert {"$accountability": {"user": {"_neq": directus.sync_user_id}}} in condition["options"]["filter"][
        "_or"
    ]
    assert condition["resolve"]["type"] == "trigger"  # the rest go to the delivery Flow, which logs its runs
    delivery = next(f for f in flows if f["name"] == DELIVERY_FLOW_NAME)
    assert delivery["accountability"] == "all" and delivery["operation"]["type"] == "request"
    options = delivery["operation"]["options"]
    assert options["url"] == "http://127.0.0.1:9/hook-b"
    assert {"header": "Authorization", "value": "Bearer secret-a-123456"} in options["headers"]
    assert options["body"] == '{"trigger": {{$trigger}}, "user": "{{$accountability.user}}"}'
    settings = directus.admin("GET", "/items/calendar_sync").json()["data"]
    link = settings["connect_url"]
    assert link.startswith("http://127.0.0.1:9/oauth/start?link=") and "key-a-123456" not in link
    token = parse_qs(urlsplit(link).query)["link"][0]
    assert check_connect_link("key-a-123456", token, datetime.now(UTC))[0] == "default"
    # a settings item that still shows the key itself (an earlier version) gets a signed link instead
    directus.admin(
        "PATCH", "/items/calendar_sync", json={"connect_url": "http://127.0.0.1:9/oauth/start?key=k"}
    )
    migrated = DirectusSetup(moved_config).run()
    assert [s["what"] for s in migrated.steps if s["action"] == "updated"] == ["Connect Google Calendar link"]
    assert "?link=" in directus.admin("GET", "/items/calendar_sync").json()["data"]["connect_url"]
    directus.setup()  # back to the session's configuration


@pytest.mark.parametrize("version", ["trigger -> request", "trigger -> condition -> request"])
def test_setup_migrates_an_earlier_versions_one_flow_to_the_gate_and_the_delivery_flow(
    directus: DirectusServer, version: str
) -> None:
    """Earlier versions had one Flow: trigger -> request, then trigger -> condition -> request (each run
    logged). Setup turns it into the gate (condition -> hand-off, no logs) and the delivery Flow."""
    config = directus.setup()
    fields = {"fields": "id,operation.id,operation.type,operation.resolve.id,operation.resolve.type",
              "filter": json.dumps({"name": {"_eq": FLOW_NAME}})}  # fmt: skip
    flow = directus.admin("GET", "/flows", params=fields).json()["data"][0]
    request = directus.admin("POST", "/operations", json={
        "flow": flow["id"], "key": "old_request", "name": "old", "type": "request", "position_x": 55,
        "position_y": 1, "options": {"method": "POST", "url": "http://127.0.0.1:9/old"}}).json()["data"]  # fmt: skip
    condition, handoff = flow["operation"]["id"], flow["operation"]["resolve"]["id"]
    if version == "trigger -> request":
        directus.admin("PATCH", f"/flows/{flow['id']}", json={"operation": request["id"]}).raise_for_status()
        directus.admin("DELETE", f"/operations/{condition}").raise_for_status()
    else:
        directus.admin(
            "PATCH", f"/operations/{condition}", json={"resolve": request["id"]}
        ).raise_for_status()
    directus.admin("PATCH", f"/flows/{flow['id']}", json={"accountability": "all"}).raise_for_status()
    directus.admin("DELETE", f"/operations/{handoff}").raise_for_status()
    result = DirectusSetup(config).run()
    assert [s["what"] for s in result.steps if s["action"] == "updated"] == ["Flow to booking_hook"]
    flow = directus.admin(
        "GET", "/flows", params={**fields, "fields": fields["fields"] + ",accountability"}
    ).json()["data"][0]
    assert flow["operation"]["type"] == "condition" and flow["operation"]["resolve"]["type"] == "trigger"
    assert flow["accountability"] is None
    assert directus.admin("GET", f"/operations/{request['id']}").status_code == 403  # the old request is gone
    assert DirectusSetup(config).run().as_json()["changed"] is False


_EVALUATE = """
import { validatePayload } from "@directus/utils";
const [filter, cases] = JSON.parse(process.argv[2]);
// as Directus's condition operation evaluates it (operations/condition: requireAll)
console.log(JSON.stringify(cases.map((data) => validatePayload(filter, data, { requireAll: true }).length === 0)));
"""


def test_the_flow_condition_drops_only_the_sync_users_own_writes(directus: DirectusServer) -> None:
    """The condition, evaluated by Directus's own code against every shape $accountability takes: an
    extension's write without accountability (null), a full-access automation (no user), a person, the
    sync user (dropped)."""
    config = directus.setup()
    setup = DirectusSetup(config)
    setup.result.sync_user_id = directus.sync_user_id
    cases = [{"$accountability": None}, {"$accountability": {"user": None, "admin": True}},
             {"$accountability": {"user": "a-person"}}, {"$accountability": {"user": directus.sync_user_id}}]  # fmt: skip
    script = directus.home / f"calsync-condition-{os.getpid()}.mjs"  # beside node_modules: this version's
    script.write_text(_EVALUATE)
    try:
        result = subprocess.run(
            [str(node_bin() / "node"), str(script), json.dumps([setup._condition_options()["filter"], cases])],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        script.unlink()
    assert json.loads(result.stdout) == [True, True, True, False]


def create_collection(directus: DirectusServer, name: str, text_field: str) -> None:
    """A collection someone made by hand: an id and one string field."""
    primary = {
        "field": "id",
        "type": "integer",
        "meta": {},
        "schema": {"is_primary_key": True, "has_auto_increment": True},
    }
    field = {"field": text_field, "type": "string", "meta": {}, "schema": {}}
    body = {"collection": name, "schema": {}, "meta": {}, "fields": [primary, field]}
    directus.admin("POST", "/collections", json=body).raise_for_status()


def test_setup_adds_only_missing_fields_and_refuses_a_conflicting_one(directus: DirectusServer) -> None:
    create_collection(directus, "appointments", "title")
    config = SetupConfig(
        directus.url,
        ADMIN_TOKEN,
        "appointments",
        "http://127.0.0.1:9/h",
        "http://127.0.0.1:9/o",
        "s-123456",
        "k-123456",
    )
    plan = DirectusSetup(config, dry_run=True).run()
    assert ("field appointments.end_datetime", "would be created") in [
        (s["what"], s["action"]) for s in plan.steps
    ]
    assert "end_datetime" not in {
        f["field"] for f in directus.admin("GET", "/fields/appointments").json()["data"]
    }
    DirectusSetup(config).run()
    fields = {f["field"]: f["type"] for f in directus.admin("GET", "/fields/appointments").json()["data"]}
    assert fields["end_datetime"] == "timestamp" and fields["title"] == "string"
    create_collection(directus, "clashing", "start_datetime")
    with pytest.raises(SetupError, match=r"clashing.start_datetime exists as type 'string'"):
        DirectusSetup(SetupConfig(**{**config.__dict__, "collection": "clashing"})).run()
    directus.setup()


def test_setup_command_errors_are_clear_and_exit_non_zero(directus: DirectusServer, tmp_path: Path) -> None:
    base = [
        sys.executable,
        "-m",
        "calsync.cli",
        "directus",
        "setup",
        "--booking-hook-url",
        "http://127.0.0.1:9/h",
        "--oauth-callback-url",
        "http://127.0.0.1:9/o",
        "--webhook-secret",
        "s-123456",
        "--connect-key",
        "k-123456",
    ]
    wrong = subprocess.run(
        [*base, "--directus-url", directus.url, "--admin-token", "wrong-token"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (
        wrong.returncode == 1
        and "refused the admin token" in wrong.stderr
        and "Traceback" not in wrong.stderr
    )
    down = subprocess.run(
        [*base, "--directus-url", "http://127.0.0.1:9", "--admin-token", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 1 and "cannot reach Directus" in down.stderr and "Traceback" not in down.stderr
    ok = subprocess.run(
        [*base, "--directus-url", directus.url, "--admin-token", ADMIN_TOKEN, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert isinstance(json.loads(ok.stdout)["steps"], list)
    directus.setup()


def test_the_sync_user_is_least_privilege(directus_bookings: DirectusServer) -> None:
    directus = directus_bookings
    directus.setup(on_google_delete="cancel")  # the default
    try:
        _check_least_privilege(directus)
    finally:
        directus.setup()


def _check_least_privilege(directus: DirectusServer) -> None:
    client = DirectusClient(directus.url, directus.sync_token, "directus_users", sleep=lambda _: None)
    with pytest.raises((DirectusAuthError, DirectusNotFound)):
        client.get_items(["x"])
    sync = DirectusClient(directus.url, directus.sync_token, "bookings", sleep=lambda _: None)
    settings = sync.update_singleton("calendar_sync", {"google_account": "a@example.com", "connect_url": "u"})
    assert settings["google_account"] == "a@example.com" and settings["connect_url"] == "u"
    key = str(sync.create_items([{"title": "t", "start_datetime": "2026-07-01T10:00:00Z"}])[0]["id"])
    assert sync.update_items([{"id": int(key), "title": "t2", "sync_status": "synced"}])[0]["title"] == "t2"
    with pytest.raises(DirectusAuthError):  # ON_GOOGLE_DELETE=cancel (the default): no delete
        sync.delete_items([key])
    assert key in sync.get_items([key])
    # Field-level rules (what the sync reads and writes, nothing more) need a licence on Directus 12; this
    # one has none, so setup grants whole collections here: tests/unit/test_directus_permissions.py checks
    # the field lists setup asks for.


def _permissions(directus: DirectusServer) -> dict[tuple[str, str], list[str]]:
    query = {"policy": {"name": {"_eq": POLICY_NAME}}}
    rows = directus.admin("GET", "/permissions", params={"filter": json.dumps(query), "limit": "-1",
                                                         "fields": "collection,action,fields"}).json()["data"]  # fmt: skip
    return {(r["collection"], r["action"]): sorted(r["fields"] or []) for r in rows}


def test_setup_narrows_an_earlier_versions_permissions_idempotently(directus: DirectusServer) -> None:
    """An earlier version granted every field and delete; setup narrows them to what the sync touches."""
    config = directus.setup(on_google_delete="cancel")  # the default
    policy = directus.admin("GET", "/policies", params={"filter": json.dumps({"name": {"_eq": POLICY_NAME}})}
                            ).json()["data"][0]["id"]  # fmt: skip
    query = {"policy": {"_eq": policy}}
    old = directus.admin("GET", "/permissions", params={"filter": json.dumps(query), "fields": "id"}).json()[
        "data"
    ]
    directus.admin("DELETE", "/permissions", json=[r["id"] for r in old]).raise_for_status()
    wide = [{"collection": c, "action": a, "fields": ["*"], "permissions": {}, "validation": {}, "policy": policy}
            for c, actions in (("bookings", "create read update delete"), ("calendar_sync", "read update"))
            for a in actions.split()]  # fmt: skip
    directus.admin("POST", "/permissions", json=wide).raise_for_status()
    result = DirectusSetup(config).run()
    step = next(s for s in result.steps if s["what"] == "permissions")
    assert step["action"] == "updated" and "removed delete bookings" in step["detail"], step
    granted = _permissions(directus)
    assert set(granted) == {("bookings", a) for a in ("create", "read", "update")} | {
        (c, a) for c in ("calendar_sync", "calendar_sync_connections") for a in ("read", "update")}  # fmt: skip
    if directus.version == "12":  # an unlicensed Directus 12 refuses field lists: whole collections
        assert "licence" in step["detail"]
    else:  # Directus 11 takes field-level rules: exactly what the sync touches
        wanted = DirectusSetup(config)._wanted_permissions()
        assert granted == {key: sorted(fields) for key, fields in wanted.items()}
    assert DirectusSetup(config).run().as_json()["changed"] is False
    # ON_GOOGLE_DELETE=delete grants delete, and going back to cancel takes it away again
    deleting = DirectusSetup(dataclasses.replace(config, on_google_delete="delete")).run()
    assert next(s for s in deleting.steps if s["what"] == "permissions")["detail"].startswith(
        "created delete bookings"
    )
    assert ("bookings", "delete") in _permissions(directus)
    directus.setup(on_google_delete="cancel")
    assert ("bookings", "delete") not in _permissions(directus)
    directus.setup()  # the suite's


def test_flow_logs_do_not_need_caplog(caplog: pytest.LogCaptureFixture) -> None:
    # The client logs retries through the calsync logger only, at WARNING.
    caplog.set_level(logging.WARNING)
    with pytest.raises(DirectusUnavailable):
        DirectusClient(
            "http://127.0.0.1:9", "tok-abcdef-123", "bookings", retries=1, sleep=lambda _: None
        ).get_items(["1"])
    assert any(r.name == "calsync.directus.client" for r in caplog.records)
    assert "tok-abcdef-123" not in caplog.text
