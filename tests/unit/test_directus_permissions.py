"""The permissions `calsync directus setup` asks for: field lists for a Directus that allows them (a licensed
Directus 12), whole collections where it refuses them; delete only with ON_GOOGLE_DELETE=delete.
(tests/integration/test_directus.py runs setup against a real, unlicensed Directus 12.)"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from calsync.directus.client import DirectusAuthError
from calsync.directus.setup import (
    CONNECTION_READS,
    CONNECTION_WRITES,
    SETTINGS_READS,
    SETTINGS_WRITES,
    DirectusSetup,
    SetupConfig,
    SetupError,
)

CONFIG = SetupConfig("http://d", "admin", "bookings", "http://h", "http://o", "s-123456", "k-123456",
                     route_field=None)  # fmt: skip
CONNECTIONS = [("calendar_sync_connections", "read"), ("calendar_sync_connections", "update")]


class FakePermissions:
    """Directus's /permissions for one policy, as far as setup uses it."""

    def __init__(self, rows: list[dict[str, Any]], field_level: bool = True) -> None:
        self.rows = {n: {"id": n, **row} for n, row in enumerate(rows, start=1)}
        self.field_level = field_level
        self.writes: list[tuple[str, str]] = []

    def _allowed(self, fields: list[str]) -> None:
        if not self.field_level and fields != ["*"]:
            raise DirectusAuthError("custom_permission_rules_enabled is a restricted resource.", 403,
                                    "RESOURCE_RESTRICTED")  # fmt: skip

    def request(self, method: str, path: str, what: str, *, params: Any = None, body: Any = None) -> Any:
        if method == "GET":
            return list(self.rows.values())
        self.writes.append((method, path))
        if method == "POST":
            for row in body:
                self._allowed(row["fields"])
            for row in body:
                self.rows[max(self.rows, default=0) + 1] = {"id": max(self.rows, default=0) + 1, **row}
        elif method == "PATCH":
            self._allowed(body["fields"])
            self.rows[int(path.rsplit("/", 1)[1])]["fields"] = body["fields"]
        elif method == "DELETE":
            del self.rows[int(path.rsplit("/", 1)[1])]
        return None

    def granted(self) -> dict[tuple[str, str], list[str]]:
        return {(r["collection"], r["action"]): sorted(r["fields"]) for r in self.rows.values()}


def run(
    api: FakePermissions, config: SetupConfig = CONFIG, timezone: bool = True, extra: tuple[str, ...] = ()
) -> dict[str, str]:
    """Setup's permissions step; ``timezone=False``: a collection made before setup created that field;
    ``extra``: other fields the bookings collection has."""
    setup = DirectusSetup(config, client=api)  # type: ignore[arg-type]
    if timezone:
        setup.booking_fields.add("timezone")
    else:
        setup.booking_fields.discard("timezone")
    setup.booking_fields |= set(extra)
    setup._ensure_permissions("policy-1")
    return next(s for s in setup.result.steps if s["what"] == "permissions")


WIDE = [{"collection": c, "action": a, "fields": ["*"]}
        for c, actions in (("bookings", "create read update delete"), ("calendar_sync", "read update"))
        for a in actions.split()]  # fmt: skip
WRITES = ["all_day", "description", "end_datetime", "google_event_id", "location", "start_datetime", "status",
          "sync_error", "sync_status", "timezone", "title"]  # fmt: skip


def test_an_earlier_versions_wide_policy_is_narrowed_to_what_the_sync_touches() -> None:
    api = FakePermissions(WIDE)
    step = run(api)
    assert step["action"] == "updated" and "removed delete bookings" in step["detail"]
    granted = api.granted()
    assert granted[("bookings", "update")] == WRITES == granted[("bookings", "create")]
    assert granted[("bookings", "read")] == sorted(
        [*WRITES, "id", "date_created", "date_updated", "user_updated"]
    )
    assert ("bookings", "delete") not in granted
    assert granted[("calendar_sync", "update")] == sorted(SETTINGS_WRITES)
    assert granted[("calendar_sync", "read")] == sorted(SETTINGS_READS)
    assert "connect_url" in SETTINGS_WRITES  # the functions refresh the signed link
    # connections: the sync reads their definitions and writes only their status
    assert granted[("calendar_sync_connections", "update")] == sorted(CONNECTION_WRITES)
    assert granted[("calendar_sync_connections", "read")] == sorted(CONNECTION_READS)
    assert not {"staff", "calendar_id", "account_from", "name", "id"} & set(CONNECTION_WRITES)
    api.writes.clear()
    assert run(api)["action"] == "unchanged" and api.writes == []  # idempotent


def test_timezone_is_granted_where_the_collection_has_it_and_delete_only_when_asked() -> None:
    api = FakePermissions([])
    assert (
        run(api, dataclasses.replace(CONFIG, on_google_delete="delete"), timezone=True)["action"] == "created"
    )
    granted = api.granted()
    assert "timezone" in granted[("bookings", "update")] and "timezone" in granted[("bookings", "read")]
    assert granted[("bookings", "delete")] == ["*"]
    run(api, timezone=False)
    assert ("bookings", "delete") not in api.granted() and "timezone" not in api.granted()[
        ("bookings", "read")
    ]


def test_duplicates_are_dropped() -> None:
    api = FakePermissions([*WIDE, {"collection": "bookings", "action": "read", "fields": ["*"]}])
    run(api)
    assert sorted(api.granted()) == sorted(
        {(r["collection"], r["action"]) for r in WIDE} - {("bookings", "delete")} | set(CONNECTIONS)
    )
    assert len(api.rows) == 7


def test_a_directus_without_field_level_rules_gets_whole_collections_and_says_so() -> None:
    api = FakePermissions(WIDE, field_level=False)
    step = run(api)
    assert "removed delete bookings" in step["detail"] and "licence" in step["detail"]
    assert all(fields == ["*"] for fields in api.granted().values())
    assert ("bookings", "delete") not in api.granted()
    fresh = FakePermissions([], field_level=False)
    assert run(fresh)["action"] == "created" and len(fresh.rows) == 7


def test_the_routing_field_is_read_and_set_on_imports_but_never_updated() -> None:
    api = FakePermissions([])
    run(api, dataclasses.replace(CONFIG, route_field="staff"), extra=("staff",))
    granted = api.granted()
    assert "staff" in granted[("bookings", "read")] and "staff" in granted[("bookings", "create")]
    assert "staff" not in granted[("bookings", "update")]  # reassigning is a person's decision
    run(api, dataclasses.replace(CONFIG, route_field="staff"))  # not (yet) in the collection: not granted
    assert "staff" not in api.granted()[("bookings", "read")]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"route_field": "title"}, "ROUTE_FIELD 'title'"),  # one of calsync's own fields
        ({"route_field": "staff member"}, "ROUTE_FIELD"),
        ({"route_to": "directus_users"}, "--route-to needs"),
    ],
)
def test_the_routing_options_are_checked(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SetupError, match=message):
        DirectusSetup(dataclasses.replace(CONFIG, **changes), client=FakePermissions([]))  # type: ignore[arg-type]


def test_route_field_and_calendar_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROUTE_FIELD", "staff")
    monkeypatch.setenv("GOOGLE_CALENDAR_ID", "team@group.calendar.google.com")
    config = SetupConfig("http://d", "admin", "bookings", "http://h", "http://o", "s-123456", "k-123456")
    assert (config.route_field, config.calendar_id) == ("staff", "team@group.calendar.google.com")
    monkeypatch.delenv("ROUTE_FIELD")
    monkeypatch.delenv("GOOGLE_CALENDAR_ID")
    config = SetupConfig("http://d", "admin", "bookings", "http://h", "http://o", "s-123456", "k-123456")
    assert (config.route_field, config.calendar_id) == (None, "primary")


def test_on_google_delete_must_be_known() -> None:
    with pytest.raises(SetupError, match="ON_GOOGLE_DELETE"):
        DirectusSetup(dataclasses.replace(CONFIG, on_google_delete="remove"), client=FakePermissions([]))  # type: ignore[arg-type]


def test_on_google_delete_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ON_GOOGLE_DELETE", "delete")
    config = SetupConfig("http://d", "admin", "bookings", "http://h", "http://o", "s-123456", "k-123456")
    assert config.on_google_delete == "delete"
