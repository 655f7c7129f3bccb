"""The whole product end to end, as deployed: a real Directus 12 prepared by ``calsync directus setup`` whose
Flow calls booking_hook; the three functions each served by functions-framework in its own process; the
Google fake; the Firestore emulator; the Secret Manager fake; Directus reached through a fault proxy."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from calsync.sync.booking import PRIVATE_KEY
from tests.fakes.google import GoogleFake
from tests.fakes.secretmanager import SecretManagerFake
from tests.parts.directus import CONNECT_KEY, WEBHOOK_SECRET, DirectusServer
from tests.parts.fault_proxy import FaultProxy
from tests.parts.functions import ServedFunction, base_env
from tests.parts.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.directus, pytest.mark.firestore, pytest.mark.google,
              pytest.mark.secretmanager, pytest.mark.slow]  # fmt: skip

ACCOUNT = "owner@example.com"
SOON = datetime.now(UTC).replace(microsecond=0, second=0, minute=0) + timedelta(days=2)


class World:
    def __init__(self, google: GoogleFake, directus: DirectusServer, proxy: FaultProxy,
                 functions: dict[str, ServedFunction]) -> None:  # fmt: skip
        self.google = google
        self.directus = directus
        self.proxy = proxy
        self.functions = functions

    @property
    def hook(self) -> ServedFunction:
        return self.functions["booking_hook"]

    def url(self, function: str, path: str = "/") -> str:
        return self.functions[function].url + path

    def cycle(self) -> requests.Response:
        """A tick. One that finds a cycle running (409: the first sync a new consent asked for, say) waits
        for it and tries again: the point is a cycle that ran."""
        deadline = time.monotonic() + 60
        while True:
            response = requests.post(self.url("calendar_import"), timeout=120)
            if response.status_code != 409 or time.monotonic() > deadline:
                return response
            time.sleep(0.5)

    def status(self) -> dict[str, Any]:
        return dict(
            requests.get(
                self.url("oauth_callback", "/status"),
                headers={"Authorization": f"Bearer {CONNECT_KEY}"},
                timeout=30,
            ).json()
        )

    def connect(self) -> requests.Response:
        browser = requests.Session()  # one browser from /start to /callback: the state is bound to it
        start = browser.get(self.url("oauth_callback", "/start"), params={"key": CONNECT_KEY}, allow_redirects=False,
                            timeout=30)  # fmt: skip
        assert start.status_code == 302, start.text
        at_google = browser.get(start.headers["Location"], allow_redirects=False, timeout=30)
        back = urlsplit(at_google.headers["Location"])
        return browser.get(self.url("oauth_callback", "/callback"), params=parse_qs(back.query),
                           allow_redirects=False, timeout=60)  # fmt: skip

    # -- Directus, as a person using it --------------------------------------------------------------
    def create(self, *items: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.directus.admin("POST", "/items/bookings", json=list(items))
        response.raise_for_status()
        return list(response.json()["data"])

    def update(self, key: Any, **changes: Any) -> None:
        self.directus.admin("PATCH", f"/items/bookings/{key}", json=changes).raise_for_status()

    def delete(self, *keys: Any) -> None:
        self.directus.admin("DELETE", "/items/bookings", json=list(keys)).raise_for_status()

    def bookings(self) -> dict[str, dict[str, Any]]:
        rows = self.directus.admin("GET", "/items/bookings", params={"limit": "-1"}).json()["data"]
        return {str(row["id"]): row for row in rows}

    def settings_item(self) -> dict[str, Any]:
        return dict(self.directus.admin("GET", "/items/calendar_sync").json()["data"])

    def live_events(self) -> list[dict[str, Any]]:
        return [e for e in self.google.events() if e.get("status") != "cancelled" and "recurrence" not in e]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def deployed(
    directus: DirectusServer,
    firestore_emulator: Any,
    secretmanager: SecretManagerFake,
    google: GoogleFake,
    extra_env: Callable[[dict[str, str]], dict[str, str]] = lambda urls: {},
) -> Iterator[tuple[dict[str, ServedFunction], FaultProxy]]:
    """The three functions, each served in its own process as deployed (Firestore store, Secret Manager
    tokens, Directus behind a fault proxy, Google's fake), with the settings ``extra_env`` adds given the
    functions' URLs. The caller runs ``directus.setup`` with the functions' URLs, and stops ``google``."""
    firestore_emulator.reset()
    secretmanager.reset()
    secret = secretmanager.create_secret("refresh-token")
    proxy = FaultProxy(directus.url).start()
    ports = {name: free_port() for name in ("oauth_callback", "booking_hook", "calendar_import")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    google.register_client(google.client_id, google.client_secret, [urls["oauth_callback"] + "/callback"])
    env = base_env(
        DIRECTUS_URL=proxy.url,
        DIRECTUS_TOKEN=directus.sync_token,
        DIRECTUS_PUBLIC_URL="https://crm.example.com",
        GOOGLE_CLIENT_ID=google.client_id,
        GOOGLE_CLIENT_SECRET=google.client_secret,
        GOOGLE_REDIRECT_URI=urls["oauth_callback"] + "/callback",
        GOOGLE_API_ROOT=google.api_root,
        GOOGLE_AUTH_URI=google.auth_uri,
        GOOGLE_TOKEN_URI=google.token_uri,
        GOOGLE_REVOKE_URI=google.revoke_uri,
        WEBHOOK_SECRET=WEBHOOK_SECRET,
        CONNECT_KEY=CONNECT_KEY,
        TIMEZONE="Europe/Rome",
        STORE="firestore",
        TOKEN_STORE=f"secretmanager://{secret}",
        SECRET_MANAGER_ENDPOINT=secretmanager.endpoint,
        **firestore_emulator.env(),
        **extra_env(urls),
    )
    functions = {name: ServedFunction(name, env, port).start() for name, port in ports.items()}
    try:
        yield functions, proxy
    finally:
        for served in functions.values():
            served.stop()
        proxy.stop()
        directus.setup()  # the Flow points nowhere again for the other tests


@pytest.fixture(scope="module")
def world(
    directus: DirectusServer, firestore_emulator: Any, _secretmanager_server: SecretManagerFake
) -> Iterator[World]:
    google = GoogleFake().start()
    try:
        with deployed(directus, firestore_emulator, _secretmanager_server, google) as (functions, proxy):
            directus.setup(booking_hook_url=functions["booking_hook"].url + "/",
                           oauth_callback_url=functions["oauth_callback"].url)  # fmt: skip
            yield World(google, directus, proxy, functions)
    finally:
        google.stop()


@pytest.fixture(scope="module")
def connected(world: World) -> World:
    response = world.connect()
    assert response.status_code == 302, response.text
    assert "calendar_connected=" in response.headers["Location"]
    return world


def test_connect_shows_the_account_in_directus(connected: World) -> None:
    wait_for(lambda: connected.settings_item().get("google_account") == ACCOUNT, "the account in Directus")
    assert connected.settings_item()["connection_state"] == "connected"
    assert connected.status()["connected"] is True


def test_bookings_saved_in_directus_follow_to_google_through_the_real_flow(connected: World) -> None:
    w = connected
    a, b, c = w.create(
        *[{"title": f"Flow {n}", "start_datetime": (SOON + timedelta(hours=n)).isoformat()} for n in range(3)]
    )
    wait_for(
        lambda: {e["summary"] for e in w.live_events()} >= {"Flow 0", "Flow 1", "Flow 2"}, "three events"
    )
    w.update(a["id"], title="Flow 0 edited")
    wait_for(lambda: "Flow 0 edited" in {e["summary"] for e in w.live_events()}, "the edit")
    w.directus.admin(
        "PATCH", "/items/bookings", json={"keys": [b["id"], c["id"]], "data": {"location": "Bulk"}}
    )
    wait_for(lambda: sum(e.get("location") == "Bulk" for e in w.live_events()) == 2, "the bulk edit")
    w.delete(c["id"])
    wait_for(lambda: "Flow 2" not in {e["summary"] for e in w.live_events()}, "the delete")
    wait_for(lambda: w.bookings()[str(a["id"])]["sync_status"] == "synced", "the write-back")


def test_a_change_made_by_another_flow_with_full_access_still_reaches_google(connected: World) -> None:
    """Directus runs such a change as a system admin with no user ($accountability.user is null): the
    condition that drops the sync user's own writes must let it through."""
    w = connected
    booking = w.create({"title": "Before the automation", "start_datetime": SOON.isoformat()})[0]
    wait_for(lambda: "Before the automation" in {e["summary"] for e in w.live_events()}, "the event")
    flow = w.directus.admin("POST", "/flows", json={
        "name": "automation test", "status": "active", "trigger": "webhook", "accountability": "all",
        "options": {"method": "GET", "async": False}}).json()["data"]  # fmt: skip
    try:
        operation = w.directus.admin("POST", "/operations", json={
            "flow": flow["id"], "key": "touch", "name": "touch", "type": "item-update",
            "position_x": 19, "position_y": 1,
            "options": {"collection": "bookings", "key": [booking["id"]], "permissions": "$full",
                        "emitEvents": True, "payload": {"title": "Renamed by an automation"}}}).json()["data"]  # fmt: skip
        w.directus.admin(
            "PATCH", f"/flows/{flow['id']}", json={"operation": operation["id"]}
        ).raise_for_status()
        w.directus.admin("GET", f"/flows/trigger/{flow['id']}").raise_for_status()
        assert w.bookings()[str(booking["id"])]["title"] == "Renamed by an automation"
        wait_for(lambda: "Renamed by an automation" in {e["summary"] for e in w.live_events()}, "the rename")
    finally:
        w.directus.admin("DELETE", f"/flows/{flow['id']}")


def test_google_changes_come_back_and_no_echo_reaches_google(connected: World) -> None:
    w = connected
    assert w.cycle().status_code == 200
    booking = w.create({"title": "Before Google edit", "start_datetime": SOON.isoformat()})[0]
    wait_for(lambda: "Before Google edit" in {e["summary"] for e in w.live_events()}, "the event")
    event = next(e for e in w.live_events() if e["summary"] == "Before Google edit")
    w.google.edit_event(event["id"], summary="Edited in Google")
    new = w.google.create_event("Created in Google", SOON + timedelta(days=1))
    cancelled = w.google.create_event("Soon cancelled", SOON + timedelta(days=2))
    assert w.cycle().json()["status"] == "ok"
    w.google.cancel_event(cancelled["id"])
    writes_before = (
        w.google.count(method="PATCH") + w.google.count(method="POST") + w.google.count(method="PUT")
    )
    summary = w.cycle().json()
    assert summary["status"] == "ok"
    time.sleep(2)  # the Flow fires on the cycle's writes; give it time to (not) reach Google
    rows = {r["title"]: r for r in w.bookings().values()}
    assert "Edited in Google" in rows, summary
    assert rows["Edited in Google"]["id"] == booking["id"]
    assert "Created in Google" in rows and rows["Soon cancelled"]["status"] == "cancelled"
    writes_after = (
        w.google.count(method="PATCH") + w.google.count(method="POST") + w.google.count(method="PUT")
    )
    assert writes_after == writes_before  # the cycle's own Directus writes caused no Google write
    # ... and no delivery at all: the Flow's condition drops the sync user's own writes at the source
    assert "written by the sync itself" not in w.hook.output()
    assert w.google.event(new["id"])["extendedProperties"]["private"][PRIVATE_KEY] == str(
        rows["Created in Google"]["id"]
    )


def test_bookings_saved_while_the_hook_is_down_are_repaired_by_the_next_cycle(connected: World) -> None:
    w = connected
    w.hook.stop()
    try:
        saved = w.create({"title": "While down", "start_datetime": SOON.isoformat()},
                         {"title": "Deleted while down", "start_datetime": SOON.isoformat()})  # fmt: skip
    finally:
        w.hook.start()
    time.sleep(1)
    assert "While down" not in {e["summary"] for e in w.live_events()}
    assert w.cycle().json()["status"] == "ok"
    assert "While down" in {e["summary"] for e in w.live_events()}
    w.hook.stop()
    try:
        w.delete(saved[0]["id"])
    finally:
        w.hook.start()
    assert w.cycle().json()["status"] == "ok"
    assert "While down" not in {e["summary"] for e in w.live_events()}


def test_a_forged_delete_and_empty_reads_delete_nothing_but_a_real_delete_does(connected: World) -> None:
    w = connected
    rows = w.create(*[{"title": f"Kept {n}", "start_datetime": (SOON + timedelta(hours=n)).isoformat()}
                      for n in range(12)])  # fmt: skip
    titles = {row["title"] for row in rows}
    wait_for(lambda: titles <= {e["summary"] for e in w.live_events()}, "twelve events")
    forged = requests.post(
        w.url("booking_hook"),
        json={
            "event": "bookings.items.delete",
            "keys": [row["id"] for row in rows],
            "collection": "bookings",
        },
        headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"},
        timeout=60,
    )
    assert forged.status_code == 200 and forged.json()["deleted"] == [], forged.text
    assert titles <= {e["summary"] for e in w.live_events()}  # every booking still exists: every event stays
    w.proxy.blank_reads = True  # Directus answers every read with no rows
    try:
        w.cycle()
    finally:
        w.proxy.blank_reads = False
    assert titles <= {e["summary"] for e in w.live_events()}
    assert w.cycle().json()["status"] == "ok"
    assert titles <= {e["summary"] for e in w.live_events()}
    w.delete(rows[0]["id"])  # a real delete, through the real Flow
    wait_for(lambda: "Kept 0" not in {e["summary"] for e in w.live_events()}, "the real delete")
    assert titles - {"Kept 0"} <= {e["summary"] for e in w.live_events()}


def test_a_revoked_token_queues_until_reconnect(connected: World) -> None:
    w = connected
    w.google.revoke_all()
    w.google.expire_access_tokens()
    w.create({"title": "During revocation", "start_datetime": SOON.isoformat()})
    wait_for(lambda: w.status()["needs_reconnect"] is True, "needs_reconnect")
    wait_for(lambda: w.settings_item()["connection_state"] == "needs_reconnect", "the state in Directus")
    wait_for(lambda: w.status()["pending_outbox"] >= 1, "the booking queued in the outbox")
    assert "During revocation" not in {e["summary"] for e in w.live_events()}
    assert w.connect().status_code == 302
    assert w.cycle().json()["status"] == "ok"
    assert w.status()["pending_outbox"] == 0
    assert "During revocation" in {e["summary"] for e in w.live_events()}


def assert_converged(w: World) -> None:
    live_bookings = {key: row for key, row in w.bookings().items() if row.get("status") != "cancelled"}
    events = w.live_events()
    owners = Counter(e.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY) for e in events)
    duplicates = {key: n for key, n in owners.items() if n > 1}
    assert not duplicates, f"bookings with more than one live event: {duplicates}"
    by_key = {e["extendedProperties"]["private"][PRIVATE_KEY]: e for e in events
              if e.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY)}  # fmt: skip
    missing = sorted(set(live_bookings) - set(by_key))
    extra = sorted(set(by_key) - set(live_bookings))
    unowned = [
        e["summary"]
        for e in events
        if not e.get("extendedProperties", {}).get("private", {}).get(PRIVATE_KEY)
    ]
    assert not missing and not extra and not unowned, f"missing={missing} extra={extra} unowned={unowned}"
    for key, row in live_bookings.items():
        event = by_key[key]
        assert (row["title"] or "") == event.get("summary", ""), (key, row["title"], event.get("summary"))
        start = datetime.fromisoformat(row["start_datetime"].replace("Z", "+00:00"))
        assert datetime.fromisoformat(event["start"]["dateTime"]) == start, (key, row, event["start"])


def test_chaos_converges(connected: World) -> None:
    w = connected
    seed = int(os.environ.get("CALSYNC_CHAOS_SEED") or random.SystemRandom().randrange(1_000_000))
    print(f"chaos seed: {seed} (replay with CALSYNC_CHAOS_SEED={seed})")
    rng = random.Random(seed)
    assert w.cycle().json()["status"] == "ok"
    counts: Counter[str] = Counter()
    w.google.set_fault_rate(0.2, seed=seed)
    try:
        for step in range(200):
            op = rng.choices(["d_create", "d_update", "d_bulk", "d_delete", "g_create", "g_edit", "g_cancel",
                              "hook", "directus_blip", "cycle"],
                             weights=[18, 18, 5, 8, 12, 12, 6, 6, 5, 10])[0]  # fmt: skip
            counts[op] += 1
            keys = list(w.bookings())
            when = SOON + timedelta(hours=rng.randrange(0, 24 * 14))
            if op == "d_create":
                w.create({"title": f"d{step}", "start_datetime": when.isoformat()})
            elif op == "d_update" and keys:
                w.update(rng.choice(keys), title=f"d{step}-edit", start_datetime=when.isoformat(),
                         end_datetime=(when + timedelta(hours=1)).isoformat())  # fmt: skip
            elif op == "d_bulk" and len(keys) >= 2:
                w.directus.admin(
                    "PATCH",
                    "/items/bookings",
                    json={"keys": rng.sample(keys, 2), "data": {"location": f"bulk {step}"}},
                )
            elif op == "d_delete" and keys:
                w.delete(rng.choice(keys))
            elif op == "g_create":
                w.google.create_event(f"g{step}", when, when + timedelta(minutes=30))
            elif op in ("g_edit", "g_cancel"):
                live = w.live_events()
                if live:
                    target = rng.choice(live)
                    if op == "g_edit":
                        w.google.edit_event(target["id"], summary=f"g{step}-edit")
                    else:
                        w.google.cancel_event(target["id"])
            elif op == "hook":
                w.hook.stop() if w.hook.process else w.hook.start()
            elif op == "directus_blip":
                w.proxy.fail_rate = 0.5 if w.proxy.fail_rate == 0 else 0.0
            elif op == "cycle":
                w.cycle()  # may fail under faults; that is the point
    finally:
        w.google.clear_faults()
        w.proxy.fail_rate = 0.0
        if not w.hook.process:
            w.hook.start()
    time.sleep(3)  # deliveries the Flow made during the last operations finish
    print(f"operations: {dict(counts)}; Directus 503s injected: {w.proxy.failures}")
    for _ in range(2):
        assert w.cycle().json()["status"] == "ok"
    assert_converged(w)
