"""Health an admin can trust, in Directus (issue 17, point 5): what the settings item ``calendar_sync`` shows,
and what ``calsync directus setup`` builds around it, against a real Directus 12."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest

from calsync.bootstrap import App, set_app
from calsync.directus.client import DirectusClient
from calsync.directus.setup import DELIVERY_FLOW_NAME, SETTINGS_FIELDS, DirectusSetup
from tests.parts.directus import DirectusServer
from tests.parts.product import ACCOUNT, Product

pytestmark = pytest.mark.directus

SOON = "2031-03-01T10:00:00Z"


def settings_item(directus: DirectusServer) -> dict[str, Any]:
    return dict(directus.admin("GET", "/items/calendar_sync").json()["data"])


def field_meta(directus: DirectusServer, field: str) -> dict[str, Any]:
    return dict(directus.admin("GET", f"/fields/calendar_sync/{field}").json()["data"]["meta"])


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- 1. interfaces, displays and notes, and their migration ------------------------------------------------


def test_setup_gives_every_status_field_an_interface_a_display_and_a_note_and_migrates_old_ones(
    directus: DirectusServer,
) -> None:
    config = directus.setup()
    # an earlier version's fields: no interface, no display, a terse note or none
    for field in ("connect_url", "last_cycle_at", "pending_changes", "last_cycle_result"):
        old = {"interface": None, "display": None, "display_options": None, "options": None, "note": None}
        directus.admin("PATCH", f"/fields/calendar_sync/{field}", json={"meta": old}).raise_for_status()
    result = DirectusSetup(config).run()
    updated = {s["what"] for s in result.steps if s["action"] == "updated"}
    assert {
        f"field calendar_sync.{f}" for f in ("connect_url", "last_cycle_at", "pending_changes")
    } <= updated
    assert DirectusSetup(config).run().as_json()["changed"] is False  # idempotent
    # the Connect link is a real button: an alias field whose link is the item's own connect_url
    button = field_meta(directus, "connect_button")
    assert button["interface"] == "presentation-links"
    assert button["options"]["links"][0]["url"] == "{{connect_url}}"
    assert field_meta(directus, "last_cycle_at")["display"] == "datetime"
    assert field_meta(directus, "next_cycle_expected_by")["display_options"]["relative"] is True
    assert field_meta(directus, "pending_changes")["display"] == "formatted-value"
    assert field_meta(directus, "last_cycle_result")["display"] == "labels"
    for field in SETTINGS_FIELDS:
        if field["field"] != "id":
            assert len(field_meta(directus, field["field"])["note"] or "") > 30, field["field"]
    sync_status = directus.admin("GET", "/fields/bookings/sync_status").json()["data"]["meta"]
    assert sync_status["display"] == "labels" and "read_only" in sync_status["note"]


# -- 2. what failed, including Directus refusing the status itself -----------------------------------------


def test_a_failed_cycle_never_shows_ok_even_when_directus_refuses_the_status(product: Product) -> None:
    product.connect()
    assert product.cycle().status_code == 200
    assert settings_item(product.directus)["last_cycle_result"] == "ok"
    # A Directus whose settings item lacks a field this version publishes (setup not run again), and a
    # Google that fails: the cycle ends "error", the full status write is refused (403).
    product.directus.admin("DELETE", "/fields/calendar_sync/bookings_queued").raise_for_status()
    product.google.fail_next(100, 503, "backendError", path_contains="/events")
    try:
        assert product.cycle().status_code == 503
        item = settings_item(product.directus)
        assert item["last_cycle_result"] == "error"  # the fields every version has still say so
        assert "Directus refused the status update" in item["last_error"]
        assert "Google" in item["last_error"] or "503" in item["last_error"]
        assert "Directus refused the status update" in (product.store.get_status("default").last_error or "")
    finally:
        product.google.clear_faults()
        product.directus.setup()  # puts the field back
    # the next cycle may run in another instance: what was refused is in the store, not in a process
    product.app = App(product.app.settings, sleep=lambda _: None, store=product.app.store)
    set_app(product.app)
    assert product.cycle().status_code == 200
    item = settings_item(product.directus)
    assert item["last_cycle_result"] == "ok" and item["last_error"] is None
    assert "bookings_queued" in item["last_publish_error"]  # what was refused, shown once it works again
    product.app.publish_status()
    assert settings_item(product.directus)["last_publish_error"] is None


# -- 3. bookings counted by sync status --------------------------------------------------------------------


def test_the_item_counts_bookings_by_sync_status_in_one_aggregate_request(product: Product) -> None:
    statuses = ["error", "error", "queued", "read_only", "excluded", "excluded", "excluded", None]
    product.create_bookings(
        *({"title": f"b{n}", "start_datetime": SOON, "sync_status": s} for n, s in enumerate(statuses))
    )
    client = product.app.directus
    product.app.roster()  # the connections, read at most every ROSTER_TTL
    before = client.requests
    product.app.publish_status()
    # the aggregate read, the connections' items' write and the settings item's
    assert client.requests - before == 3
    item = settings_item(product.directus)
    assert (item["bookings_in_error"], item["bookings_queued"]) == (2, 1)
    assert (item["bookings_read_only"], item["bookings_excluded"]) == (1, 3)


# -- 4. pending_changes current right after a delivery queued ----------------------------------------------


def test_a_delivery_that_queues_shows_the_pending_changes_at_once(product: Product) -> None:
    product.connect()
    booking = product.create_bookings({"title": "Google is down", "start_datetime": SOON})[0]
    product.google.fail_next(100, 503, "backendError", path_contains="/events")
    try:
        response = product.deliver_event("create", [booking["id"]])
    finally:
        product.google.clear_faults()
    assert response.status_code == 202
    assert settings_item(product.directus)["pending_changes"] == 1


def test_a_status_directus_refuses_never_fails_the_delivery(product: Product) -> None:
    product.connect()
    booking = product.create_bookings({"title": "Both down", "start_datetime": SOON})[0]
    product.directus.admin("DELETE", "/fields/calendar_sync/bookings_queued").raise_for_status()
    product.google.fail_next(100, 503, "backendError", path_contains="/events")
    try:
        assert product.deliver_event("create", [booking["id"]]).status_code == 202
    finally:
        product.google.clear_faults()
        product.directus.setup()


# -- 5. overdue --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tick", [None, 10])
def test_the_item_says_by_when_the_next_cycle_is_due(product: Product, tick: int | None) -> None:
    if tick is not None:
        product.app.settings = product.app.settings.model_copy(update={"sync_tick_minutes": tick})
    product.connect()
    assert product.cycle().status_code == 200
    item = settings_item(product.directus)
    expected = when(item["last_cycle_at"]) + timedelta(minutes=3 * (tick or 5))
    assert abs(when(item["next_cycle_expected_by"]) - expected) < timedelta(seconds=1)


# -- 6. back from the consent: the settings item, saying so ------------------------------------------------


def test_the_consent_lands_on_the_settings_item_which_says_connected(product: Product) -> None:
    from tests.integration.test_oauth import callback, consent

    response = callback(product, consent(product))
    assert response.status_code == 302
    target = urlsplit(response.headers["Location"])
    assert target.path == "/admin/content/calendar_sync"  # the Data Studio's route of a singleton
    assert target.query == f"calendar_connected={ACCOUNT.replace('@', '%40')}"
    item = settings_item(product.directus)
    assert item["connection_state"] == "connected" and item["google_account"] == ACCOUNT
    assert datetime.now(when(item["last_connected_at"]).tzinfo) - when(item["last_connected_at"]) < timedelta(
        minutes=1
    )


# -- 8. the Flow logs real deliveries, not the sync's own writes -------------------------------------------


def flow_runs(directus: DirectusServer) -> list[dict[str, Any]]:
    query = {"collection": {"_eq": "directus_flows"}, "action": {"_eq": "run"}}
    params = {"filter": json.dumps(query), "fields": "id,item,user", "limit": "-1"}
    return list(directus.admin("GET", "/activity", params=params).json()["data"])


def test_the_sync_users_writes_log_no_flow_runs_while_a_failed_delivery_stays_visible(
    directus_bookings: DirectusServer,
) -> None:
    directus = directus_bookings  # its Flow points at an unreachable booking_hook: every delivery fails
    flows = directus.admin("GET", "/flows", params={"fields": "id,name"}).json()["data"]
    delivery = next(f["id"] for f in flows if f["name"] == DELIVERY_FLOW_NAME)
    before = len(flow_runs(directus))
    sync = DirectusClient(directus.url, directus.sync_token, "bookings", sleep=lambda _: None)
    rows = sync.create_items([{"title": f"s{n}", "start_datetime": SOON} for n in range(10)])
    for row in rows:
        sync.update_items([{"id": row["id"], "sync_status": "synced"}])  # 20 writes of the sync user
    person = directus.admin("POST", "/items/bookings", json={"title": "by a person", "start_datetime": SOON})
    person.raise_for_status()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(flow_runs(directus)) == before:
        time.sleep(0.2)
    time.sleep(1)  # the sync user's runs, had they been logged, were triggered before the person's
    runs = flow_runs(directus)[before:]
    assert len(runs) == 1 and runs[0]["item"] == delivery  # the person's delivery, none of the sync's
    query = {"collection": {"_eq": "directus_flows"}, "item": {"_eq": delivery}}
    revisions = directus.admin("GET", "/revisions", params={"filter": json.dumps(query), "sort": "-id",
                                                            "limit": "1", "fields": "data"}).json()["data"]  # fmt: skip
    steps = revisions[0]["data"]["steps"]
    assert [(s["key"], s["status"]) for s in steps] == [("post_booking_hook", "reject")]  # the failure shows
    assert revisions[0]["data"]["data"]["$trigger"]["key"] == person.json()["data"]["id"]


# -- 7. the Insights dashboard -----------------------------------------------------------------------------


def test_setup_makes_the_calsync_dashboard_once_and_its_panels_read_real_data(product: Product) -> None:
    directus = product.directus
    config = directus.setup()
    assert DirectusSetup(config).run().as_json()["changed"] is False
    dashboards = directus.admin("GET", "/dashboards", params={"filter": json.dumps({"name": {"_eq": "calsync"}}),
                                                              "fields": "id,panels.name,panels.type,panels.options"})  # fmt: skip
    [dashboard] = dashboards.json()["data"]
    panels = {p["name"]: p for p in dashboard["panels"]}
    assert {n: p["type"] for n, p in panels.items()} == {
        "Bookings by sync status": "pie-chart", "Bookings in error": "list", "Last cycles": "list"}  # fmt: skip
    # what the panels query, as the Data Studio asks it (group/aggregate, filter, fields of the template)
    product.create_bookings({"title": "refused", "start_datetime": SOON, "sync_status": "error",
                             "sync_error": "Google refused the event"})  # fmt: skip
    product.app.publish_status()
    pie = panels["Bookings by sync status"]["options"]
    counts = directus.admin("GET", "/items/bookings", params={"groupBy[]": pie["column"],
                                                               "aggregate[count]": pie["column"]}).json()["data"]  # fmt: skip
    assert {"sync_status": "error", "count": {"sync_status": 1}} in counts
    errors = panels["Bookings in error"]["options"]
    rows = directus.admin("GET", "/items/bookings", params={"filter": json.dumps(errors["filter"]),
                                                             "fields": "id,title,sync_error"}).json()["data"]  # fmt: skip
    assert [r["sync_error"] for r in rows] == ["Google refused the event"]
    cycles = panels["Last cycles"]["options"]
    revisions = directus.admin("GET", "/revisions", params={"filter": json.dumps(cycles["filter"]), "sort": "-id",
                                                             "limit": "1", "fields": "id,activity.timestamp,delta"})  # fmt: skip
    assert revisions.json()["data"][0]["delta"]["bookings_in_error"] == 1
