"""``calsync connections list|add|remove`` and ``calsync status`` over several connections, in-process.

Directus's connections collection is a dict behind ``DirectusClient.request`` (the routes these commands call,
with Directus's answers: a taken id is ``400 RECORD_NOT_UNIQUE``, a missing item ``403``); Google is the HTTP
fake, so a removal's revocation really happens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from calsync import cli
from calsync.directus.client import DirectusClient
from calsync.directus.errors import DirectusNotFound, DirectusValidationError
from calsync.state.store import utcnow
from calsync.state.tokens_file import FileTokenStore
from calsync.sync.connection import mark_connected
from calsync.sync.connections import CONNECTIONS_COLLECTION
from calsync.web.links import check_connect_link
from tests.fakes.google import GoogleFake
from tests.unit.test_cli import SETTING_NAMES

pytestmark = pytest.mark.google
CONNECT_KEY = "connect-key-for-cli-tests-0004"
ADMIN_TOKEN = "admin-token-for-cli-tests"
ROUTE = f"/items/{CONNECTIONS_COLLECTION}"


class Collection:
    """The connections collection as Directus serves it; who wrote each item, by token."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {"default": {"id": "default", "name": "Salon"}}
        self.writers: list[tuple[str, str]] = []

    def request(self, client: DirectusClient, method: str, path: str, what: str, **kwargs: Any) -> Any:
        token = client._headers["Authorization"].removeprefix("Bearer ")
        if (method, path) == ("GET", ROUTE):
            return [dict(item) for item in self.items.values()]
        if (method, path) == ("POST", ROUTE):
            item = dict(kwargs["body"])
            if item["id"] in self.items:
                raise DirectusValidationError(f"Directus {what}: 400 RECORD_NOT_UNIQUE", 400)
            self.items[item["id"]] = item
            self.writers.append((method, token))
            return item
        if method == "DELETE" and path.startswith(ROUTE + "/"):
            if self.items.pop(path.rsplit("/", 1)[1], None) is None:
                raise DirectusNotFound(f"Directus {what}: 403 FORBIDDEN", 403)
            self.writers.append((method, token))
            return None
        raise AssertionError(f"unexpected Directus call {method} {path}")


@pytest.fixture
def collection(
    google_fake: GoogleFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Collection]:
    for name in (*SETTING_NAMES, "ROUTE_FIELD", "GOOGLE_REVOKE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = {
        "DIRECTUS_URL": "http://127.0.0.1:9",
        "DIRECTUS_TOKEN": "sync-user-token",
        "GOOGLE_CLIENT_ID": google_fake.client_id,
        "GOOGLE_CLIENT_SECRET": google_fake.client_secret,
        "GOOGLE_REDIRECT_URI": "http://127.0.0.1:9/oauth_callback/callback",
        "GOOGLE_REVOKE_URI": google_fake.revoke_uri,
        "CONNECT_KEY": CONNECT_KEY,
        "ROUTE_FIELD": "staff",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    fake = Collection()

    def request(client: DirectusClient, method: str, path: str, what: str, **kwargs: Any) -> Any:
        return fake.request(client, method, path, what, **kwargs)

    monkeypatch.setattr(DirectusClient, "request", request)
    yield fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_add_creates_the_item_and_prints_its_connect_link(
    collection: Collection, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "connections", "add", "alice", "--name", "Alice", "--staff", "alice")
    assert code == cli.OK, err
    assert collection.items["alice"] == {
        "id": "alice",
        "name": "Alice",
        "staff": "alice",
        "calendar_id": "primary",
        "account_from": None,
    }
    link = out.strip().splitlines()[-1]
    assert link.startswith("http://127.0.0.1:9/oauth_callback/start?link=") and CONNECT_KEY not in link
    token = parse_qs(urlsplit(link).query)["link"][0]
    assert check_connect_link(CONNECT_KEY, token, utcnow())[0] == "alice"  # this connection's link
    assert "bookings with staff 'alice'" in out
    assert collection.writers == [("POST", "sync-user-token")]


def test_add_refuses_what_would_not_work_and_changes_nothing(
    collection: Collection, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "connections", "add", "office", "--staff", "office")
    before = dict(collection.items)
    for argv, says in (
        (["alice"], "bookings without a staff value are served by default"),
        (["office", "--staff", "x"], "connection office exists"),
        (["Alice!", "--staff", "x"], "is not usable"),
        (["bob", "--staff", "office"], "served by office"),
        (["front", "--staff", "f", "--account-from", "nobody"], "no connection of that id"),
        (["front", "--staff", "f", "--account-from", "office"], "same calendar as office"),
    ):
        code, _, err = run(capsys, "connections", "add", *argv)
        assert code == cli.CONFIGURATION and says in err, (argv, err)
        assert "hint:" in err
    assert collection.items == before


def test_a_secondary_calendar_uses_the_account_of_another_connection(
    collection: Collection, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "connections", "add", "office", "--staff", "office")
    code, out, _ = run(
        capsys,
        *("connections", "add", "front", "--staff", "front"),
        *("--calendar", "front@group.calendar.google.com", "--account-from", "office"),
    )
    assert code == cli.OK and "nothing to connect" in out and "link=" not in out
    assert collection.items["front"]["account_from"] == "office"


def test_an_admin_token_writes_when_given(
    collection: Collection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIRECTUS_ADMIN_TOKEN", ADMIN_TOKEN)
    assert run(capsys, "connections", "add", "alice", "--staff", "alice")[0] == cli.OK
    assert run(capsys, "connections", "remove", "alice", "--yes", "--admin-token", "flag-token")[0] == cli.OK
    assert collection.writers == [("POST", ADMIN_TOKEN), ("DELETE", "flag-token")]


def connect(google: GoogleFake, connection: str, account: str) -> str:
    token = google.issue_refresh_token(account)
    FileTokenStore(Path(".calsync/refresh_token")).put(token, connection)
    from calsync.state.sqlite import SqliteSyncStore

    store = SqliteSyncStore(Path(".calsync/state.sqlite3"))
    mark_connected(store, connection, account, ["https://www.googleapis.com/auth/calendar.events"])
    store.close()
    return token


def test_list_and_status_show_every_connection(
    collection: Collection, google_fake: GoogleFake, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "connections", "add", "alice", "--name", "Alice", "--staff", "alice")
    connect(google_fake, "alice", "alice@salon.example")
    code, out, _ = run(capsys, "connections", "list")
    assert code == cli.OK
    header, *lines = out.strip().splitlines()
    assert header.split() == ["ID", "NAME", "STAFF", "CALENDAR", "ACCOUNT", "STATE", "LAST", "CYCLE"]
    assert lines[0].split() == [
        "alice",
        "Alice",
        "alice",
        "primary",
        "alice@salon.example",
        "connected",
        "never",
    ]
    assert lines[1].split()[:2] == ["default", "Salon"] and "not_connected" in lines[1]
    code, out, _ = run(capsys, "connections", "list", "--json")
    assert [row["connection"] for row in json.loads(out)] == ["alice", "default"]
    code, out, _ = run(capsys, "status")
    body = json.loads(out)
    assert body["state"] == "not_connected" and body["connection"] == "default"  # the old top-level fields
    assert {c["connection"]: c["state"] for c in body["connections"]} == {
        "alice": "connected",
        "default": "not_connected",
    }
    assert code == cli.NOT_CONNECTED  # one connection still waits for its consent


def test_remove_asks_for_yes_then_revokes_only_that_connections_token_and_deletes_it(
    collection: Collection, google_fake: GoogleFake, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "connections", "add", "alice", "--staff", "alice")
    run(capsys, "connections", "add", "bob", "--staff", "bob")
    alice = connect(google_fake, "alice", "alice@salon.example")
    bob = connect(google_fake, "bob", "bob@salon.example")
    code, _, err = run(capsys, "connections", "remove", "alice")
    assert code == cli.CONFIGURATION and "--yes" in err and "revokes its Google token" in err
    assert "alice" in collection.items and google_fake.refresh_token_valid(alice)
    code, out, err = run(capsys, "connections", "remove", "alice", "--yes")
    assert code == cli.OK, err
    answer = json.loads(out)
    assert answer["revoked"] is True and answer["removed"] is True and answer["connection"] == "alice"
    assert "alice" not in collection.items and not google_fake.refresh_token_valid(alice)
    assert google_fake.refresh_token_valid(bob)
    tokens = FileTokenStore(Path(".calsync/refresh_token"))
    assert tokens.get("alice") is None and tokens.get("bob") == bob
    assert run(capsys, "connections", "remove", "alice", "--yes")[0] == cli.CONFIGURATION  # gone


def test_remove_refuses_a_connection_whose_account_others_use(
    collection: Collection, google_fake: GoogleFake, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "connections", "add", "office", "--staff", "office")
    run(capsys, "connections", "add", "front", "--staff", "front", "--calendar", "f@group", "--account-from",
        "office")  # fmt: skip
    office = connect(google_fake, "office", "office@salon.example")
    code, _, err = run(capsys, "connections", "remove", "office", "--yes")
    assert code == cli.CONFIGURATION and "front use the Google account of office" in err
    assert google_fake.refresh_token_valid(office) and "office" in collection.items
    code, out, _ = run(
        capsys, "connections", "remove", "front", "--yes"
    )  # stops front; office keeps its token
    assert code == cli.OK and json.loads(out)["revoked"] is False
    assert google_fake.refresh_token_valid(office) and "front" not in collection.items
