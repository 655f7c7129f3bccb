"""What a Directus delivery to booking_hook means, from any of the three body shapes it can have.

- a Flow's ``{{$trigger}}``: ``{"event": "bookings.items.create", "key": 5, "payload": {...}, "collection": ...}``
  (update and delete carry ``keys``);
- the wrapper ``calsync directus setup`` configures: ``{"trigger": {{$trigger}}, "user": "{{$accountability.user}}"}``;
- a legacy Directus webhook: ``{"event": "items.create", "accountability": {"user": ...}, "key"/"keys": ...}``.

The payload is never trusted for content (an update carries only the changed fields, and a later delivery
may already be stale): only the action and the keys are taken from it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from calsync.web.http import HttpError

Action = Literal["upsert", "delete"]
_ACTIONS: dict[str, Action] = {"create": "upsert", "update": "upsert", "delete": "delete"}
_NO_USER = ("", "null", "undefined", "none")
MAX_KEYS = 10_000
# More keys than this (a bulk edit in Directus) are queued for the next import cycle instead of being pushed
# while Directus waits: one delivery must not hold a function instance for minutes or outlive its timeout.
INLINE_KEYS = 200
MAX_KEY_LENGTH = 255  # Directus primary keys: integers, uuids, or strings of at most 255 characters
MAX_NAME_LENGTH = 255  # event, collection and user names


@dataclasses.dataclass(frozen=True)
class Delivery:
    action: Action
    collection: str
    keys: tuple[str, ...]
    user: str | None


# Strict: `true` or `1.0` must not become booking "1"; objects and arrays are refused too.
Key = StrictStr | StrictInt


class _Accountability(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: StrictStr | None = Field(default=None, max_length=MAX_NAME_LENGTH)


class _Trigger(BaseModel):
    model_config = ConfigDict(extra="ignore")
    event: StrictStr = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    collection: StrictStr | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    key: Key | None = None
    keys: list[Key] | None = None
    payload: Any = None
    accountability: _Accountability | None = None


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _key(raw: Key) -> str:
    """A booking key as a string: an integer, or printable text (no control characters, no lone
    surrogates) of at most MAX_KEY_LENGTH characters. Blank keys come back empty (skipped)."""
    key = str(raw).strip()
    if len(key) > MAX_KEY_LENGTH:
        raise HttpError(400, f"key too long: {len(key)} characters, limit {MAX_KEY_LENGTH}")
    if not key.isprintable():
        raise HttpError(400, "key has control or unencodable characters: " + ascii(key)[:80])
    return key


def parse_delivery(body: Any, expected_collection: str) -> Delivery:
    """The delivery's action, collection, keys and user; HttpError 4xx naming what is wrong."""
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object")
    user: Any = None
    if "trigger" in body:
        user = body.get("user")
        if user is not None and not (
            isinstance(user, str) and len(user) <= MAX_NAME_LENGTH and user.isprintable()
        ):
            raise HttpError(400, f"user must be a user id string of at most {MAX_NAME_LENGTH} characters")
        body = body["trigger"]
        if not isinstance(body, dict):
            raise HttpError(400, "trigger must be a JSON object")
    try:
        trigger = _Trigger.model_validate(body)
    except ValidationError as exc:
        raise HttpError(400, f"invalid delivery: {_problem(exc)}") from None
    if user is None and trigger.accountability is not None:
        user = trigger.accountability.user
    parts = trigger.event.split(".")
    # "bookings.items.create" (Flow) or "items.create" (legacy webhook)
    if len(parts) not in (2, 3) or parts[-2] != "items" or parts[-1] not in _ACTIONS:
        raise HttpError(
            400, f"unknown event {trigger.event!r}: expected <collection>.items.create|update|delete"
        )
    collection = trigger.collection or (parts[0] if len(parts) == 3 else None)
    if not collection:
        raise HttpError(400, "collection is missing")
    if collection != expected_collection:
        raise HttpError(
            422,
            f"collection {collection!r} is not the configured DIRECTUS_COLLECTION {expected_collection!r}",
        )
    raw_keys: list[Key] = list(trigger.keys or [])
    if trigger.key is not None:
        raw_keys.append(trigger.key)
    if not raw_keys and parts[-1] == "delete" and isinstance(trigger.payload, list):
        raw_keys = [k for k in trigger.payload if isinstance(k, str | int) and not isinstance(k, bool)]
    keys = tuple(key for key in dict.fromkeys(_key(k) for k in raw_keys) if key)
    if not keys:
        raise HttpError(400, "no keys: expected key or keys")
    if len(keys) > MAX_KEYS:
        raise HttpError(413, f"too many keys in one delivery: {len(keys)}, limit {MAX_KEYS}")
    user_id = str(user).strip() if user is not None else ""
    return Delivery(
        action=_ACTIONS[parts[-1]],
        collection=collection,
        keys=keys,
        user=None if user_id.lower() in _NO_USER else user_id,
    )
