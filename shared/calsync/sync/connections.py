"""Connections: which Google calendar serves which bookings.

A connection is one Google calendar the sync writes to: a staff member's own account (its primary calendar),
or one secondary calendar of a business account that several connections share (``account_from`` names the
connection that holds the consent). Admins keep them in Directus, in the ``calendar_sync_connections``
collection ``calsync directus setup`` creates, one item per connection, its key the connection id.

Routing: with ``ROUTE_FIELD`` set, a booking goes to the connection whose ``staff`` equals the booking's
value of that field; a booking without a value goes to the connection whose ``staff`` is empty (the default
one), and a booking nobody serves stays unsynced with a ``sync_error`` that says why. Without
``ROUTE_FIELD`` every booking goes to the default connection. Installations from before connections existed
have no collection: they get one implicit ``default`` connection with the ``GOOGLE_CALENDAR_ID`` setting,
which keeps its token, mappings and cursors (every record was keyed by connection from the start).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from typing import Any

from calsync.state.store import DEFAULT_CONNECTION
from calsync.sync.ports import route_text

CONNECTIONS_COLLECTION = "calendar_sync_connections"
CONNECTION_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


class ConnectionInvalid(ValueError):
    """A connection item that cannot be used (its id, its calendar, its account); the message says why."""


@dataclasses.dataclass(frozen=True)
class ConnectionSpec:
    """One connection as the admin defined it."""

    id: str
    name: str = ""
    staff: str | None = None  # the routing value it serves; None: bookings without one (the default)
    calendar_id: str = "primary"
    account_from: str | None = None  # the connection whose Google consent this one uses

    @property
    def token_owner(self) -> str:
        """Whose refresh token this connection's calendar is read and written with."""
        return self.account_from or self.id

    @property
    def label(self) -> str:
        return self.name or self.id


def spec_from_item(item: Mapping[str, Any]) -> ConnectionSpec:
    """The connection a Directus item defines. Raises ConnectionInvalid naming the problem."""
    key = route_text(item.get("id"))
    if key is None or not CONNECTION_ID.match(key):
        raise ConnectionInvalid(
            f"connection id {key!r} is not usable: lowercase letters, digits, '-' and '_', at most 40"
        )
    account_from = route_text(item.get("account_from"))
    if account_from == key:
        account_from = None
    if account_from is not None and not CONNECTION_ID.match(account_from):
        raise ConnectionInvalid(f"connection {key}: account_from {account_from!r} is not a connection id")
    return ConnectionSpec(
        id=key,
        name=route_text(item.get("name")) or "",
        staff=route_text(item.get("staff")),
        calendar_id=route_text(item.get("calendar_id")) or "primary",
        account_from=account_from,
    )


@dataclasses.dataclass(frozen=True)
class Roster:
    """Every connection, and how bookings are routed to them."""

    specs: tuple[ConnectionSpec, ...]
    route_field: str | None = None
    problems: tuple[str, ...] = ()  # items that could not be used, and why
    implicit_default: bool = False  # no connections collection: the one ``default`` of an older installation

    @classmethod
    def implicit(cls, calendar_id: str, route_field: str | None = None) -> Roster:
        """The one ``default`` connection of an installation without the connections collection."""
        return cls(
            (ConnectionSpec(DEFAULT_CONNECTION, calendar_id=calendar_id),), route_field, implicit_default=True
        )

    @classmethod
    def from_items(cls, items: Iterable[Mapping[str, Any]], route_field: str | None = None) -> Roster:
        specs: list[ConnectionSpec] = []
        problems: list[str] = []
        seen_staff: dict[str | None, str] = {}
        for item in items:
            try:
                spec = spec_from_item(item)
            except ConnectionInvalid as exc:
                problems.append(str(exc))
                continue
            other = seen_staff.get(spec.staff)
            if other is not None:
                who = f"staff {spec.staff!r}" if spec.staff else "bookings without a staff value"
                problems.append(f"connection {spec.id}: {who} is already served by {other}; ignored")
                continue
            seen_staff[spec.staff] = spec.id
            specs.append(spec)
        ids = {s.id for s in specs}
        for spec in specs:
            if spec.account_from is not None and spec.account_from not in ids:
                problems.append(f"connection {spec.id}: account_from {spec.account_from!r} does not exist")
        return cls(tuple(sorted(specs, key=lambda s: s.id)), route_field, tuple(problems))

    def only(self, connection: str) -> Roster:
        """This roster narrowed to one connection (publishing one connection's status)."""
        return dataclasses.replace(self, specs=tuple(s for s in self.specs if s.id == connection))

    def get(self, connection: str) -> ConnectionSpec | None:
        return next((s for s in self.specs if s.id == connection), None)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.specs]

    @property
    def default(self) -> ConnectionSpec | None:
        """The connection serving bookings without a routing value."""
        return next((s for s in self.specs if s.staff is None), None)

    def route_value(self, item: Mapping[str, Any]) -> str | None:
        return route_text(item.get(self.route_field)) if self.route_field else None

    def route(self, item: Mapping[str, Any]) -> ConnectionSpec | None:
        """The connection this booking belongs to; None when no connection serves it."""
        value = self.route_value(item)
        if value is None:
            return self.default
        return next((s for s in self.specs if s.staff == value), None)

    def unrouted_reason(self, item: Mapping[str, Any]) -> str:
        """Why ``route`` found no connection for this booking (the booking's ``sync_error``)."""
        value = self.route_value(item)
        if value is None:
            return (
                f"no Google calendar serves bookings without a {self.route_field}: give the booking one, "
                "or add a connection with an empty staff value"
            )
        return (
            f"no Google calendar serves {self.route_field} {value!r}: add a connection for it in "
            f"{CONNECTIONS_COLLECTION}"
        )

    def sharing(self, connection: str) -> list[ConnectionSpec]:
        """The connections that use this connection's Google consent (itself included)."""
        return [s for s in self.specs if s.token_owner == connection]
