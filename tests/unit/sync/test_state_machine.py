"""The whole sync as a state machine (hypothesis): people change both sides at random, the Flow's deliveries
are lost, repeated and reordered, Google and Directus fail and lose answers, the process crashes between any
two steps; once the faults stop and time passes, at most two cycles must leave both sides holding the same
bookings, one event each, nothing lost, and a further cycle must write nothing anywhere (no echoes).

``make test`` runs ``CALSYNC_STATEFUL_EXAMPLES`` examples (default 400); a long mode runs as many as asked,
e.g. ``CALSYNC_STATEFUL_EXAMPLES=20000 .venv/bin/pytest tests/unit/sync/test_state_machine.py``.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from calsync.google.errors import GoogleQuotaExceeded
from tests.unit.sync.world import START, World

EXAMPLES = int(os.environ.get("CALSYNC_STATEFUL_EXAMPLES", "400"))
TITLES = st.sampled_from(["Cut", "Colour", "Call", "Lunch", "Review"])
HOURS = st.integers(min_value=0, max_value=72)


def _times(event: dict[str, Any]) -> tuple[str, str]:
    from calsync.sync.booking import event_to_booking

    values = event_to_booking(event, default_timezone="UTC")
    return values["start_datetime"], values["end_datetime"]


def _instant(text: str | None) -> str | None:
    from calsync.directus.memory import _utc

    return _utc(text) if text else None


class Sync(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # the guards have their own tests; here any share of the bookings may change in one go
        self.world = World(max_cancel_share=1.0, max_delete_share=1.0)

    @initialize()
    def first_cycle(self) -> None:
        self.world.cycle()

    # -- people in Directus ---------------------------------------------------------------------------
    @rule(title=TITLES, hour=HOURS)
    def create_booking(self, title: str, hour: int) -> None:
        self.world.book(title, hour=hour)

    @precondition(lambda self: self.world.directus.rows())
    @rule(data=st.data(), title=TITLES, hour=HOURS)
    def edit_booking(self, data: st.DataObject, title: str, hour: int) -> None:
        key = data.draw(st.sampled_from(sorted(self.world.directus.rows())))
        start = START + timedelta(hours=hour)
        self.world.directus.person_update(
            key,
            title=title,
            start_datetime=start.isoformat(),
            end_datetime=(start + timedelta(hours=1)).isoformat(),
        )

    @precondition(lambda self: self.world.directus.rows())
    @rule(data=st.data(), status=st.sampled_from(["cancelled", "confirmed"]))
    def bulk_edit(self, data: st.DataObject, status: str) -> None:
        keys = data.draw(st.sets(st.sampled_from(sorted(self.world.directus.rows())), min_size=1, max_size=4))
        self.world.directus.person_update_many(sorted(keys), status=status)

    @precondition(lambda self: self.world.directus.rows())
    @rule(data=st.data())
    def delete_booking(self, data: st.DataObject) -> None:
        self.world.directus.person_delete(data.draw(st.sampled_from(sorted(self.world.directus.rows()))))

    # -- the owner in Google --------------------------------------------------------------------------
    @rule(title=TITLES, hour=HOURS)
    def google_create(self, title: str, hour: int) -> None:
        self.world.google.create_event(title, START + timedelta(hours=hour))

    @precondition(lambda self: self.world.live_events())
    @rule(data=st.data(), title=TITLES, hour=HOURS)
    def google_edit(self, data: st.DataObject, title: str, hour: int) -> None:
        event = data.draw(st.sampled_from(self.world.live_events()))
        start = START + timedelta(hours=hour)
        self.world.google.edit_event(event["id"], summary=title, start=start, end=start + timedelta(hours=1))

    @precondition(lambda self: self.world.live_events())
    @rule(data=st.data())
    def google_cancel(self, data: st.DataObject) -> None:
        self.world.google.cancel_event(data.draw(st.sampled_from(self.world.live_events()))["id"])

    # -- the Flow, the hook and the scheduler ---------------------------------------------------------
    @precondition(lambda self: self.world.flow)
    @rule()
    def deliver(self) -> None:
        delivery = self.world.flow.pop(0)
        self.world.run(lambda: self.world.deliver(delivery.action, *delivery.keys))

    @precondition(lambda self: self.world.flow)
    @rule()
    def lose_delivery(self) -> None:
        self.world.flow.pop(0)

    @precondition(lambda self: self.world.flow)
    @rule()
    def duplicate_delivery(self) -> None:
        self.world.flow.insert(0, self.world.flow[0])

    @precondition(lambda self: len(self.world.flow) >= 2)
    @rule()
    def reorder_deliveries(self) -> None:
        self.world.flow[0], self.world.flow[1] = self.world.flow[1], self.world.flow[0]

    @rule()
    def cycle(self) -> None:
        self.world.run(self.world.cycle)

    # -- faults ---------------------------------------------------------------------------------------
    @rule(count=st.integers(1, 3))
    def google_fails(self, count: int) -> None:
        self.world.google.fail_next(count)

    @rule()
    def google_over_quota(self) -> None:
        self.world.google.fail_next(1, GoogleQuotaExceeded(403, "quotaExceeded", "Google: 403 quotaExceeded"))

    @rule(count=st.integers(1, 2))
    def google_loses_answers(self, count: int) -> None:
        self.world.google.lose_next(count)

    @rule(count=st.integers(1, 3))
    def directus_fails(self, count: int) -> None:
        self.world.directus.fail_next(count)

    @rule(after=st.integers(0, 40))
    def crash_soon(self, after: int) -> None:
        """The process dies at the ``after``-th state-store call from now (between any two steps)."""
        self.world.store.crash_after(after)

    # -- what must always hold ------------------------------------------------------------------------
    @invariant()
    def one_event_per_booking(self) -> None:
        keys = [
            e.get("extendedProperties", {}).get("private", {}).get("calsync_key")
            for e in self.world.google.events()
        ]
        stamped = [k for k in keys if k]
        assert len(stamped) == len(set(stamped)), "two events carry the same booking"
        linked = [
            r["google_event_id"] for r in self.world.directus.rows().values() if r.get("google_event_id")
        ]
        assert len(linked) == len(set(linked)), "two bookings are linked to the same event"

    def teardown(self) -> None:
        world = self.world
        world.stop_faults()
        world.clock.advance(2 * 3600)  # time passes: every backoff and lease has run out
        for _ in range(2):
            world.cycle()
        self._converged()
        google_before = world.google.requests
        rows_before = world.directus.rows()
        events_before = world.google.events()
        assert world.cycle().status == "ok"
        assert world.google.requests - google_before == 1, "a quiet cycle wrote to Google"
        assert world.google.events() == events_before
        assert world.directus.rows() == rows_before, "a quiet cycle wrote to Directus"

    def _converged(self) -> None:
        world = self.world
        rows = world.directus.rows()
        live = {e["id"]: e for e in world.live_events()}
        wanted = {key: row for key, row in rows.items() if row.get("status") != "cancelled"}
        linked: dict[str, str] = {}
        for key, row in wanted.items():
            event_id = row.get("google_event_id")
            assert event_id in live, f"booking {key} ({row['title']}) has no live event"
            linked[event_id] = key
            event = live[event_id]
            assert event["summary"] == row["title"], (
                f"booking {key}: {row['title']!r} vs {event['summary']!r}"
            )
            start, end = _times(event)
            assert (_instant(start), _instant(end)) == (
                _instant(row["start_datetime"]),
                _instant(row["end_datetime"]),
            )
        orphans = set(live) - set(linked)
        assert not orphans, f"live events without a live booking: {[live[i]['summary'] for i in orphans]}"
        assert world.store.count_outbox("default") == 0


Sync.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_sync_converges = Sync.TestCase
