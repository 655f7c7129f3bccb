"""The sync-request port: what a request is, where requests go, and when one is already served."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from calsync.state.store import ConnectionStatus


@dataclasses.dataclass(frozen=True)
class SyncRequest:
    """One request for one connection's cycle, as a consumer receives it."""

    connection: str
    reason: str
    requested_at: datetime | None = None
    message_id: str | None = None  # Pub/Sub's id: the same for every redelivery of one message
    delivery_attempt: int | None = None  # Pub/Sub counts it when the subscription has a dead-letter topic


class SyncRequests(Protocol):
    """Where sync requests go."""

    def request(self, connections: Sequence[str], reason: str) -> None:
        """Ask for one cycle of each connection soon; returns at once (publishing is quick) and never
        raises: a request that could not be made is logged, and the next tick syncs the connection."""


def covered(status: ConnectionStatus, requested_at: datetime | None) -> bool:
    """Whether the connection's last cycle already did what a request made at ``requested_at`` asks for:
    it succeeded and started after the request, so it listed every change the request is about.

    This is what makes a burst cost one cycle when its deliveries come one after another (a push
    subscription starts one or two at a time): the first runs, the rest find themselves covered. A cycle's
    start is its end minus its duration, both on its own clock; instances' clocks agree to milliseconds,
    and a change in that window is still repaired by the next request or tick."""
    last = status.last_cycle or {}
    if requested_at is None or status.last_cycle_at is None or last.get("status") != "ok":
        return False
    duration = last.get("duration")
    if not isinstance(duration, int | float) or isinstance(duration, bool):
        return False
    return status.last_cycle_at - timedelta(seconds=duration) >= requested_at
