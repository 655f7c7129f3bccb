"""What a push did to each booking: the one record push, the write-back, the hook and the cycle share."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from calsync.state.store import OutboxAction


@dataclasses.dataclass
class PushOutcome:
    synced: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # echoes and no-ops
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # retry later (outbox)
    failed_action: dict[str, OutboxAction] = dataclasses.field(default_factory=dict)
    dead: dict[str, str] = dataclasses.field(default_factory=dict)  # Google refused for good
    read_only: dict[str, str] = dataclasses.field(default_factory=dict)  # not the owner's event to write
    excluded: dict[str, str] = dataclasses.field(default_factory=dict)  # no longer imported
    notes: dict[str, str] = dataclasses.field(default_factory=dict)  # synced, with something to say
    left: list[str] = dataclasses.field(
        default_factory=list
    )  # deleted bookings whose events stay (read-only)
    guard: str | None = None  # why deletions were held back (the mass-delete guard)
    # bookings now served by another connection whose event here was removed (or, read-only, forgotten)
    moved: list[str] = dataclasses.field(default_factory=list)

    def merge(self, other: PushOutcome) -> None:
        for name in ("synced", "deleted", "skipped", "left", "moved"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("invalid", "failed", "failed_action", "dead", "read_only", "excluded", "notes"):
            getattr(self, name).update(getattr(other, name))
        self.guard = self.guard or other.guard

    def fail(self, keys: Iterable[str], reason: str, action: OutboxAction) -> None:
        for key in keys:
            self.failed[key] = reason
            self.failed_action[key] = action

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "synced": self.synced,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "queued": self.failed,
            "rejected": self.dead,
            "read_only": self.read_only,
        }
        if self.left:
            body["left_in_google"] = self.left
        if self.guard:
            body["mass_delete_refused"] = self.guard
        if self.moved:
            body["moved_away"] = self.moved
        return body
