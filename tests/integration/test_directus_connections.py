"""The connections collection against a real Directus (12, and 11: ``ALSO_ON_DIRECTUS_11``): what
``calsync directus setup`` creates and leaves alone, the routing field, and the sync user reading the
connections and publishing every connection's status in one request."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from calsync.directus.client import DirectusAuthError, DirectusClient
from calsync.directus.setup import (
    CONNECTION_FIELDS,
    CONNECTION_READS,
    CONNECTION_WRITES,
    POLICY_NAME,
    DirectusSetup,
)
from calsync.directus.status import publish_all
from calsync.state.memory import MemorySyncStore
from calsync.sync.connections import CONNECTIONS_COLLECTION, Roster
from tests.parts.directus import ADMIN_TOKEN, CONNECT_KEY, UNREACHABLE, WEBHOOK_SECRET, DirectusServer

pytestmark = pytest.mark.directus

ITEMS = f"/items/{CONNECTIONS_COLLECTION}"


def sync_client(server: DirectusServer) -> DirectusClient:
    return DirectusClient(server.url, server.sync_token, "bookings", sleep=lambda _: None)


def items(directus: DirectusServer) -> dict[str, dict[str, Any]]:
    rows = directus.admin("GET", ITEMS, params={"limit": "-1"}).json()["data"]
    return {row["id"]: row for row in rows}


def granted(directus: DirectusServer, collection: str) -> dict[str, list[str]]:
    query = {"policy": {"name": {"_eq": POLICY_NAME}}, "collection": {"_eq": collection}}
    params = {"filter": json.dumps(query), "fields": "action,fields", "limit": "-1"}
    rows = directus.admin("GET", "/permissions", params=params).json()["data"]
    return {row["action"]: sorted(row["fields"] or []) for row in rows}


@pytest.fixture
def connections(directus: DirectusServer) -> Iterator[DirectusServer]:
    """The session's server with only the ``default`` connection, as setup made it, afterwards too."""
    directus.setup()
    yield directus
    for key in set(items(directus)) - {"default"}:
        directus.admin("DELETE", f"{ITEMS}/{key}").raise_for_status()
    directus.admin("PATCH", f"{ITEMS}/default", json={"name": "Default", "calendar_id": "primary",
                                                       "staff": None}).raise_for_status()  # fmt: skip


def test_setup_creates_the_collection_its_fields_the_permissions_and_the_default_connection(
    connections: DirectusServer,
) -> None:
    directus = connections
    fields = {
        f["field"]: f for f in directus.admin("GET", f"/fields/{CONNECTIONS_COLLECTION}").json()["data"]
    }
    for field in CONNECTION_FIELDS:
        meta = fields[field["field"]]["meta"]
        assert meta["interface"] and len(meta["note"] or "") > 30, field["field"]
    assert fields["id"]["type"] == "string" and fields["id"]["schema"]["is_primary_key"]
    assert fields["calendar_id"]["schema"]["default_value"] == "primary"
    assert fields["connect_button"]["meta"]["options"]["links"][0]["url"] == "{{connect_url}}"
    assert all(fields[name]["meta"]["readonly"] for name in CONNECTION_WRITES)
    # the migration: the connection every record is already keyed by, with the installation's calendar
    default = items(directus)["default"]
    assert (default["name"], default["calendar_id"], default["staff"]) == ("Default", "primary", None)
    # it shows what the settings singleton shows (not connected on a fresh Directus; other tests of this
    # Directus may have connected it since)
    singleton = directus.admin("GET", "/items/calendar_sync").json()["data"]
    assert default["connection_state"] == singleton["connection_state"] and "?link=" in default["connect_url"]
    # Directus itself refuses an id the sync could not use (a regex validation on the primary key)
    bad = directus.admin("POST", ITEMS, json={"id": "Front Desk", "name": "x"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["extensions"]["code"] == "FAILED_VALIDATION"
    # the staff value is unique: two connections for one person is a mistake Directus stops
    directus.admin("POST", ITEMS, json=[{"id": "alice", "staff": "u-1"}]).raise_for_status()
    assert directus.admin("POST", ITEMS, json={"id": "alice-2", "staff": "u-1"}).status_code == 400
    permissions = granted(directus, CONNECTIONS_COLLECTION)
    assert set(permissions) == {"read", "update"}
    if directus.version == "12":  # unlicensed: whole collections (see test_directus.py)
        assert permissions == {"read": ["*"], "update": ["*"]}
    else:
        assert permissions == {"read": sorted(CONNECTION_READS), "update": sorted(CONNECTION_WRITES)}


def test_running_setup_again_changes_nothing_an_admin_set(connections: DirectusServer) -> None:
    directus = connections
    config = directus.setup()
    directus.admin("PATCH", f"{ITEMS}/default", json={"name": "Front desk", "calendar_id": "desk@group"})
    directus.admin(
        "POST", ITEMS, json={"id": "alice", "name": "Alice", "staff": "u-alice"}
    ).raise_for_status()
    note = {"meta": {"note": "Our own words", "interface": "input-multiline"}}
    directus.admin("PATCH", f"/fields/{CONNECTIONS_COLLECTION}/name", json=note).raise_for_status()
    before = items(directus)
    result = DirectusSetup(config).run()
    assert result.as_json()["changed"] is False, result.changed
    assert items(directus) == before
    meta = directus.admin("GET", f"/fields/{CONNECTIONS_COLLECTION}/name").json()["data"]["meta"]
    assert (meta["note"], meta["interface"]) == ("Our own words", "input-multiline")
    # calsync's own fields are kept current, as on the settings item
    old = {"meta": {"note": None, "display": None}}
    directus.admin("PATCH", f"/fields/{CONNECTIONS_COLLECTION}/last_cycle_at", json=old).raise_for_status()
    again = DirectusSetup(config).run()
    assert [s["what"] for s in again.changed] == [f"field {CONNECTIONS_COLLECTION}.last_cycle_at"]
    directus.admin("PATCH", f"/fields/{CONNECTIONS_COLLECTION}/name", json={"meta": {
        "note": CONNECTION_FIELDS[1]["meta"]["note"], "interface": "input"}}).raise_for_status()  # fmt: skip


def _route_field(directus: DirectusServer, name: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    field = directus.admin("GET", f"/fields/bookings/{name}").json()["data"]
    relation = directus.admin("GET", f"/relations/bookings/{name}")
    return field, relation.json()["data"] if relation.status_code == 200 else None


def test_the_routing_field_is_created_as_a_string_or_a_relation_and_then_left_alone(
    connections: DirectusServer,
) -> None:
    directus = connections
    config = directus.setup()
    team = {"collection": "team", "schema": {}, "meta": {}, "fields": [
        {"field": "id", "type": "integer", "meta": {}, "schema": {"is_primary_key": True, "has_auto_increment": True}},
        {"field": "name", "type": "string", "meta": {}, "schema": {}}]}  # fmt: skip
    directus.admin("POST", "/collections", json=team).raise_for_status()
    try:
        DirectusSetup(dataclasses.replace(config, route_field="staff_code")).run()
        field, relation = _route_field(directus, "staff_code")
        assert field["type"] == "string" and relation is None and field["meta"]["note"]
        DirectusSetup(dataclasses.replace(config, route_field="owner", route_to="directus_users")).run()
        field, relation = _route_field(directus, "owner")
        assert field["meta"]["interface"] == "select-dropdown-m2o" and field["meta"]["special"] == ["m2o"]
        assert relation is not None and relation["related_collection"] == "directus_users"
        routed = dataclasses.replace(config, route_field="member", route_to="team")
        DirectusSetup(routed).run()
        field, relation = _route_field(directus, "member")
        assert field["type"] == "integer" and relation and relation["related_collection"] == "team"
        # an existing field is left as it is, whatever --route-to says now
        again = DirectusSetup(dataclasses.replace(routed, route_to="directus_users")).run()
        step = next(s for s in again.steps if s["what"] == "routing field bookings.member")
        assert step["action"] == "unchanged"
        assert _route_field(directus, "member")[1]["related_collection"] == "team"  # type: ignore[index]
        # the sync user may read it (to route and count) and set it on the bookings it imports
        sync = sync_client(directus)
        user = directus.admin("POST", "/items/team", json={"name": "Alice"}).json()["data"]["id"]
        row = sync.create_items([{"title": "t", "start_datetime": "2031-01-01T10:00:00Z", "member": user}])[0]
        assert sync.get_items([str(row["id"])], ["member"])[str(row["id"])]["member"] == user
        if directus.version == "11":  # field-level rules: reading yes, changing an existing booking's no
            assert "member" in granted(directus, "bookings")["read"]
            with pytest.raises(DirectusAuthError):
                sync.update_items([{"id": row["id"], "member": None}])
        directus.admin("DELETE", f"/items/bookings/{row['id']}").raise_for_status()
    finally:
        for name in ("staff_code", "owner", "member"):
            directus.admin("DELETE", f"/fields/bookings/{name}")
        directus.admin("DELETE", "/collections/team")
        directus.setup()


def test_a_new_collection_relates_staff_to_what_the_routing_field_points_at(
    connections: DirectusServer,
) -> None:
    """Also: without the collection (an installation from before connections) ``list_connections`` says so."""
    directus = connections
    config = directus.setup()
    directus.admin("DELETE", f"/collections/{CONNECTIONS_COLLECTION}").raise_for_status()
    try:
        assert sync_client(directus).list_connections() is None
        routed = dataclasses.replace(config, route_field="owner", route_to="directus_users",
                                     calendar_id="desk@group.calendar.google.com")  # fmt: skip
        DirectusSetup(routed).run()
        staff = directus.admin("GET", f"/relations/{CONNECTIONS_COLLECTION}/staff").json()["data"]
        assert staff["related_collection"] == "directus_users"
        assert items(directus)["default"]["calendar_id"] == "desk@group.calendar.google.com"
        me = directus.admin("GET", "/users/me").json()["data"]["id"]
        directus.admin("POST", ITEMS, json={"id": "admin", "staff": me}).raise_for_status()
        listed = {row["id"]: row for row in sync_client(directus).list_connections() or []}
        assert listed["admin"]["staff"] == me  # the key, not the user: what the bookings' field holds
    finally:
        directus.admin("DELETE", "/fields/bookings/owner")
        directus.admin("DELETE", f"/collections/{CONNECTIONS_COLLECTION}")
        directus.setup()


def test_the_sync_user_reads_every_connection_and_writes_their_status_in_one_request(
    connections: DirectusServer,
) -> None:
    directus = connections
    directus.admin("POST", ITEMS, json=[{"id": "alice", "name": "Alice", "staff": "u-alice"},
                                        {"id": "bob", "staff": "u-bob", "account_from": "alice",
                                         "calendar_id": "b@group.calendar.google.com"}]).raise_for_status()  # fmt: skip
    sync = sync_client(directus)
    before = sync.requests
    listed = sync.list_connections()
    assert sync.requests == before + 1 and listed is not None
    roster = Roster.from_items(listed)
    assert roster.ids == ["alice", "bob", "default"] and roster.problems == ()
    bob = roster.get("bob")
    assert bob is not None and (bob.token_owner, bob.calendar_id) == ("alice", "b@group.calendar.google.com")
    before = sync.requests
    sync.update_connections(
        [{"id": c, "last_error": f"e-{c}", "pending_changes": n} for n, c in enumerate(roster.ids)]
    )
    assert sync.requests == before + 1
    assert {k: (v["last_error"], v["pending_changes"]) for k, v in items(directus).items()} == {
        "alice": ("e-alice", 0), "bob": ("e-bob", 1), "default": ("e-default", 2)}  # fmt: skip
    # a connection an admin deleted meanwhile is skipped, the others written
    directus.admin("DELETE", f"{ITEMS}/bob").raise_for_status()
    sync.update_connections([{"id": c, "last_error": None} for c in roster.ids])
    assert [v["last_error"] for v in items(directus).values()] == [None, None]
    # the admin's fields are not the sync's to change (field-level rules: Directus 11, or a licensed 12)
    if directus.version == "11":
        for field, value in (("staff", "u-mallory"), ("calendar_id", "evil@group.calendar.google.com")):
            with pytest.raises(DirectusAuthError) as refused:
                sync.update_connections([{"id": "alice", field: value}])
            assert refused.value.status == 403
        assert items(directus)["alice"]["staff"] == "u-alice"


def test_publish_all_counts_and_writes_every_connection_in_three_requests(
    connections: DirectusServer,
) -> None:
    directus = connections
    config = directus.setup()
    try:
        DirectusSetup(dataclasses.replace(config, route_field="staff_code")).run()
        directus.admin(
            "POST", ITEMS, json=[{"id": "alice", "staff": "u-alice"}, {"id": "bob", "staff": "u-bob"}]
        )
        bookings = [("u-alice", "error"), ("u-alice", "error"), ("u-bob", "queued"), (None, "error"),
                    ("u-nobody", "error"), ("u-alice", "synced")]  # fmt: skip
        created = directus.admin("POST", "/items/bookings", json=[
            {"title": "t", "start_datetime": "2031-01-01T10:00:00Z", "staff_code": staff, "sync_status": status}
            for staff, status in bookings]).json()["data"]  # fmt: skip
        sync, store = sync_client(directus), MemorySyncStore()
        store.update_status("alice", {"state": "connected", "account": "alice@example.com"})
        roster = Roster.from_items(sync.list_connections() or [], route_field="staff_code")
        before = sync.requests
        urls = {c: f"https://oauth.example/start?link={c}" for c in roster.ids}
        publish_all(sync, store, roster, urls)
        assert sync.requests == before + 3  # one aggregate, one write of every item, the singleton
        shown = items(directus)
        counts = {c: (shown[c]["bookings_in_error"], shown[c]["bookings_queued"]) for c in shown}
        assert counts == {"alice": (2, 0), "bob": (0, 1), "default": (1, 0)}
        assert (
            shown["alice"]["google_account"] == "alice@example.com"
            and shown["bob"]["connect_url"] == urls["bob"]
        )
        settings = directus.admin("GET", "/items/calendar_sync").json()["data"]
        assert (settings["bookings_in_error"], settings["connect_url"]) == (1, urls["default"])
        directus.admin("DELETE", "/items/bookings", json=[row["id"] for row in created]).raise_for_status()
    finally:
        directus.admin("DELETE", "/fields/bookings/staff_code")
        directus.setup()


def test_the_setup_command_takes_the_routing_options(connections: DirectusServer) -> None:
    directus = connections
    command = [sys.executable, "-m", "calsync.cli", "directus", "setup", "--directus-url", directus.url,
               "--admin-token", ADMIN_TOKEN, "--booking-hook-url", UNREACHABLE, "--oauth-callback-url",
               UNREACHABLE, "--webhook-secret", WEBHOOK_SECRET, "--connect-key", CONNECT_KEY, "--json",
               "--dry-run", "--route-field", "owner", "--route-to", "directus_users"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stderr
    steps = {step["what"]: step for step in json.loads(done.stdout)["steps"]}
    assert steps["routing field bookings.owner"]["action"] == "would be created"
    assert steps["routing field bookings.owner"]["detail"] == "many-to-one to directus_users"
    wrong = subprocess.run([*command[:-2], "--route-to", "no_such_collection"], capture_output=True,
                           text=True, check=False, env=env)  # fmt: skip
    assert wrong.returncode == 1 and "no_such_collection" in wrong.stderr
