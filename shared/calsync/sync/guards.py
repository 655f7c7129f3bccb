"""The mass-change guards, both directions: one cycle or delivery may cancel (Google -> Directus,
``MAX_CANCEL_SHARE``) or delete (Directus -> Google, ``MAX_DELETE_SHARE``) at most a share of the synced
bookings, and never fewer than ``GUARD_FLOOR``, so a small calendar is not frozen by one cleanup."""

from __future__ import annotations

GUARD_FLOOR = 10


def guard_limit(share: float, synced: int) -> int:
    """How many cancellations or deletions one cycle or delivery may make among ``synced`` bookings."""
    return max(GUARD_FLOOR, int(share * synced))
