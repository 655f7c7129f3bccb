"""The floors: the fewest Calendar API requests each scenario's work can take, whoever wrote the sync.

A sync is bounded by Google's per-user quota and round trips, so the benchmarks count its requests against
what the API cannot do without. Each floor says why it cannot be lower; bench/targets.py judges the
measured requests as a ratio to it. The Directus side has no such formula (its cost is per item, inside
Directus): where Directus is the bound, the bench measures Directus's own time for the same work instead
(bench/scenarios.py, ``push_1000``).
"""

from __future__ import annotations

import math

GOOGLE_PAGE = 2500  # events.list maxResults maximum
GOOGLE_BATCH = 50  # calls per batch request, as Google advises


def floor_hook(deliveries: int) -> int:
    """Each delivery is one booking created: one events.insert. Deliveries arrive one at a time, so there
    is nothing to batch."""
    return deliveries


def floor_incremental(changes: int) -> int:
    """One events.list with the sync token returns exactly the changed events, up to 2500 a page; the
    changes go to Directus, so nothing has to be written back to Google."""
    return math.ceil(changes / GOOGLE_PAGE)


def floor_full(events: int) -> int:
    """Every event has to be listed (2500 a page), and every new event stamped once with its booking key
    (a patch of extendedProperties.private, 50 a batch): the key exists only once Directus created the
    booking, after the listing, so the stamp cannot ride on the listing."""
    return math.ceil(events / GOOGLE_PAGE) + math.ceil(events / GOOGLE_BATCH)


def floor_push(bookings: int) -> int:
    """One insert per booking, 50 a batch, plus the one events.list every cycle makes to pull Google's
    changes (a cycle cannot skip it: it is how the cycle learns what changed in the calendar)."""
    return math.ceil(bookings / GOOGLE_BATCH) + 1


def floor_tick_quiet(connections: int) -> int:
    """A cycle where nothing changed still has to ask each connected calendar what changed: one events.list
    with the sync token per connection, which answers an empty page. Nothing else reaches Google."""
    return connections


def floor_edits(edits: int) -> int:
    """Each edit, made one at a time, is a notification burst of its own: its notification carries no body,
    so the cycle it causes must ask the calendar what changed, one events.list with the sync token. Nothing
    has to be written back to Google for an edit that goes to Directus."""
    return edits


def floor_fanout(connections: int) -> int:
    """One tick fanned out to every connection, nothing changed anywhere: each connection's cycle, wherever
    it runs, still asks its calendar what changed, one events.list with the sync token each (as
    ``floor_tick_quiet``)."""
    return connections
