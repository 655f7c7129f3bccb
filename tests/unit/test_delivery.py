"""Every body shape Directus sends to booking_hook, and every bad one."""

from __future__ import annotations

from typing import Any

import pytest

from calsync.web.delivery import Delivery, parse_delivery
from calsync.web.http import HttpError


def parse(body: Any) -> Delivery:
    return parse_delivery(body, "bookings")


def test_flow_trigger_create_update_delete() -> None:
    create = parse(
        {"event": "bookings.items.create", "payload": {"title": "x"}, "key": 5, "collection": "bookings"}
    )
    assert create == Delivery("upsert", "bookings", ("5",), None)
    update = parse(
        {
            "event": "bookings.items.update",
            "payload": {"title": "y"},
            "keys": ["5", 6],
            "collection": "bookings",
        }
    )
    assert update == Delivery("upsert", "bookings", ("5", "6"), None)
    delete = parse(
        {"event": "bookings.items.delete", "payload": ["5"], "keys": ["5"], "collection": "bookings"}
    )
    assert delete == Delivery("delete", "bookings", ("5",), None)


def test_wrapper_carries_the_user() -> None:
    trigger = {"event": "bookings.items.update", "payload": {}, "keys": [7], "collection": "bookings"}
    assert parse({"trigger": trigger, "user": "8c1c-user"}).user == "8c1c-user"
    for empty in ("", "null", "undefined", None):
        assert parse({"trigger": trigger, "user": empty}).user is None


def test_legacy_webhook_body() -> None:
    legacy = {
        "event": "items.update",
        "accountability": {"user": "u-1", "role": "r"},
        "payload": {},
        "keys": ["3"],
        "collection": "bookings",
    }
    assert parse(legacy) == Delivery("upsert", "bookings", ("3",), "u-1")
    legacy_delete = {"event": "items.delete", "payload": ["3", "4"], "collection": "bookings"}
    assert parse(legacy_delete) == Delivery("delete", "bookings", ("3", "4"), None)


def test_keys_up_to_the_limit_and_uuids_are_accepted() -> None:
    uuid = "7f3c8a52-0b5e-4c1e-9d2a-3f6b8e1c2d4a"
    body = {"event": "bookings.items.update", "keys": [uuid, "k" * 255, -3], "collection": "bookings"}
    assert parse(body).keys == (uuid, "k" * 255, "-3")


def test_duplicate_keys_are_collapsed_in_order() -> None:
    assert parse(
        {"event": "bookings.items.update", "keys": [2, "1", "2"], "collection": "bookings"}
    ).keys == ("2", "1")


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ([1, 2], 400, "JSON object"),
        ({}, 400, "event"),
        ({"event": "bookings.items.upsert", "key": 1}, 400, "unknown event"),
        ({"event": "server.start", "key": 1}, 400, "unknown event"),
        ({"event": "bookings.items.create", "collection": "bookings"}, 400, "no keys"),
        ({"event": "bookings.items.create", "key": 1, "collection": "invoices"}, 422, "DIRECTUS_COLLECTION"),
        ({"event": "invoices.items.create", "key": 1}, 422, "invoices"),
        ({"event": "items.create", "key": 1}, 400, "collection is missing"),
        ({"event": "bookings.items.create", "key": {"a": 1}}, 400, "key"),
        ({"trigger": "nope"}, 400, "trigger"),
        ({"event": "bookings.items.update", "keys": [" ", ""], "collection": "bookings"}, 400, "no keys"),
        ({"event": "bookings.items.create", "key": True, "collection": "bookings"}, 400, "key"),
        ({"event": "bookings.items.create", "key": 1.0, "collection": "bookings"}, 400, "key"),
        (
            {"event": "bookings.items.create", "key": "\ud800", "collection": "bookings"},
            400,
            "key has control",
        ),
        (
            {"event": "bookings.items.create", "key": "a\x7fb", "collection": "bookings"},
            400,
            "key has control",
        ),
        ({"event": "bookings.items.create", "key": "k" * 256, "collection": "bookings"}, 400, "key too long"),
        ({"event": "bookings.items.delete", "payload": [True], "collection": "bookings"}, 400, "no keys"),
    ],
)
def test_bad_bodies_name_the_problem(body: Any, status: int, message: str) -> None:
    with pytest.raises(HttpError) as caught:
        parse(body)
    assert caught.value.status == status
    assert message in caught.value.message
