"""Directus -> Google: make each booking's one event match the booking as Directus holds it now.

Used by booking_hook for every delivery and by the import cycle to drain the outbox and repair missed
webhooks. It never trusts a delivery: it reads the bookings from Directus, and whatever the delivery said
(create, update or delete), a booking Directus still has gets its event written, and an event is deleted
only for a booking Directus is proven not to have (``_read``: absent from a bulk read *and* refused as "no
such item" on its own route). A cycle or delivery that would delete more than ``max_delete_share`` of the
synced events (at least 10) deletes none: the intents wait in the outbox, and the status says why.

The event id is derived from (connection, collection, key), so retried, duplicated or concurrent deliveries can
only address the same event; a per-booking lease (``leases.BookingLeases``) serialises deliveries of one
booking. ``push`` queues nothing itself: it reports which bookings failed and why, and the caller decides
(``queue_failures`` puts them in the outbox; the cycle's drain records a failed attempt with backoff).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterable, Iterator
from typing import Any

from calsync import logs
from calsync.directus.errors import DirectusError, DirectusUnavailable
from calsync.google.errors import (
    GoogleAccessRevoked,
    GoogleConflict,
    GoogleError,
    GoogleGone,
    GoogleNotFound,
    GoogleQuotaExceeded,
    GoogleRetryableError,
)
from calsync.state.store import DeadLetter, EventMapping, OutboxAction
from calsync.sync.booking import CANCELLED, FIELDS, event_hash
from calsync.sync.connection import mark_needs_reconnect
from calsync.sync.guards import guard_limit
from calsync.sync.ids import event_id_for
from calsync.sync.leases import BookingLeases
from calsync.sync.outcome import PushOutcome
from calsync.sync.ownership import read_only_reason, writable
from calsync.sync.plan import Write, plan_upserts
from calsync.sync.ports import Calendar, EventWrite, SyncContext
from calsync.sync.writeback import WriteBack

log = logging.getLogger(__name__)

BATCH_LIMIT = 50  # Google advises batches of 50 or fewer
BATCH_THRESHOLD = 3  # more writes than this go through Google batch requests


def queue_failures(ctx: SyncContext, outcome: PushOutcome) -> None:
    """Put every booking that failed in the outbox, with its latest intent and why it failed."""
    for key, reason in outcome.failed.items():
        ctx.store.enqueue(
            ctx.connection, ctx.config.collection, key, outcome.failed_action[key], error=reason
        )


class NotConnected(Exception):
    """No usable Google connection: intents must wait in the outbox."""


class Pusher:
    """Pushes bookings of one connection and collection to its calendar."""

    def __init__(self, ctx: SyncContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.connection = ctx.connection
        self.config = ctx.config
        self.collection = ctx.config.collection
        self.leases = BookingLeases(ctx.store, ctx.connection, ctx.config.collection)
        self._shared: WriteBack | None = None  # set inside ``writing_back()``
        self._deleted = 0  # events deleted by this pusher so far, for the mass-delete guard
        self._delete_limit: int | None = None

    # -- entry points ---------------------------------------------------------------------------------
    def push(
        self, action: OutboxAction, keys: Iterable[str], seen: dict[str, dict[str, Any]] | None = None
    ) -> PushOutcome:
        """Bring these bookings' events in line with Directus. ``action`` is what the caller was told
        (upsert or delete); it only names the intent should the push fail: what happens is decided by what
        Directus holds. ``seen``: rows the caller read before the leases were taken (the repair's scan);
        under the leases only their ``date_updated`` is read again, and a row that changed meanwhile is
        read in full."""
        outcome = PushOutcome()
        held, busy = self.leases.acquire(list(keys))
        outcome.fail(busy, "another delivery of this booking is still being processed", action)
        try:
            if held:
                items, absent = self._read(held, action, outcome, seen or {})
                if absent:
                    outcome.merge(self._delete(absent))
                elsewhere = {k: v for k, v in items.items() if not self.config.serves(v)}
                if elsewhere:
                    outcome.merge(self._release(list(elsewhere)))
                mine = {k: v for k, v in items.items() if k not in elsewhere}
                if mine:
                    outcome.merge(self.push_items(mine))
        finally:
            if self._shared is not None:
                self._shared.release_later(held)  # once their statuses are written
            else:
                self.leases.release(held)
        return outcome

    @contextlib.contextmanager
    def writing_back(self) -> Iterator[None]:
        """Pushes inside share one write-back thread (the import cycle's repairs): a page's statuses are
        still being written to Directus while the next page is read and sent to Google. Each booking's
        lease is kept until its status is written, so no delivery of it can interleave."""
        self._shared = WriteBack(self.ctx, self.leases, background=True)
        try:
            with self._shared:
                yield
        finally:
            self._shared = None

    # -- reading, with proof of absence ---------------------------------------------------------------
    def _read(
        self, keys: list[str], action: OutboxAction, outcome: PushOutcome, seen: dict[str, dict[str, Any]]
    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """(items Directus has, keys it is proven not to have). A key missing from the bulk read is read
        again on its own route: only Directus's "no such item" there counts as absent; anything else (an
        error, an unexpected answer) leaves the booking in the outbox, its event untouched."""
        try:
            items = self._current(keys, seen)
        except DirectusUnavailable as exc:
            self._failure(outcome, keys, exc, action)
            return {}, []
        absent: list[str] = []
        for key in [key for key in keys if key not in items]:
            try:
                item = self.ctx.directus.read_item(key)
            except DirectusError as exc:
                outcome.fail([key], f"could not confirm that the booking is gone: {exc}", "delete")
                continue
            if item is None:
                absent.append(key)
            else:
                items[key] = item  # the bulk read missed it: it exists, so its event stays
        return items, absent

    def _current(self, keys: list[str], seen: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The bookings as Directus holds them now; a row seen earlier stands when its date_updated did not
        move (a light read of that one field), else the row is read again in full."""
        known = [key for key in keys if key in seen]
        if not known:
            return self.ctx.directus.get_items(keys)
        stamps = self.ctx.directus.get_items(known, fields=[FIELDS.date_updated])
        items = {
            key: seen[key]
            for key in known
            if key in stamps and stamps[key].get(FIELDS.date_updated) == seen[key].get(FIELDS.date_updated)
        }
        rest = [key for key in keys if key not in items]
        if rest:
            items.update(self.ctx.directus.get_items(rest))
        return items

    # -- calendar -------------------------------------------------------------------------------------
    def _calendar(self) -> Calendar:
        if self.store.get_status(self.connection).state == "needs_reconnect":
            raise NotConnected("the Google connection needs a new consent")
        calendar = self.ctx.calendar()
        if calendar is None:
            raise NotConnected("no Google account is connected")
        return calendar

    def _failure(
        self, outcome: PushOutcome, keys: Iterable[str], exc: Exception, action: OutboxAction
    ) -> None:
        """Sort a failure: retry later (outbox) or give up on these bookings."""
        if isinstance(exc, GoogleAccessRevoked):
            if mark_needs_reconnect(self.store, self.connection, str(exc)):
                self.ctx.publish_status()
            outcome.fail(keys, "the Google connection needs a new consent", action)
        elif isinstance(exc, NotConnected | GoogleRetryableError | GoogleQuotaExceeded | DirectusUnavailable):
            outcome.fail(keys, str(exc), action)
        elif isinstance(exc, GoogleError):
            for key in keys:
                outcome.dead[key] = f"Google refused the event: {exc}"
                self.store.add_dead_letter(DeadLetter(self.connection, "directus", key, outcome.dead[key]))
        else:
            raise exc

    # -- upsert ---------------------------------------------------------------------------------------
    def push_items(self, items: dict[str, dict[str, Any]]) -> PushOutcome:
        """Push bookings already read from Directus (key -> item), whose leases the caller holds.

        Events are written a batch (BATCH_LIMIT) at a time; each batch's statuses are written back to
        Directus while the next batch is with Google (``WriteBack``): Directus takes longer to record a
        status per booking than Google takes to answer a batch."""
        outcome = PushOutcome()
        plan = plan_upserts(
            self.connection,
            self.config,
            items,
            self.store.get_mappings(self.connection, self.collection, list(items)),
        )
        outcome.skipped.extend(plan.skipped)
        outcome.invalid.update(plan.invalid)
        outcome.read_only.update(plan.read_only)
        outcome.excluded.update(plan.excluded)
        outcome.notes.update(plan.notes)
        calendar: Calendar | None = None
        if plan.writes:
            try:
                calendar = self._calendar()
            except NotConnected as exc:
                self._failure(outcome, [w.key for w in plan.writes], exc, "upsert")
        own = None if self._shared else WriteBack(self.ctx, self.leases, len(plan.writes) > BATCH_LIMIT)
        write_back = self._shared or own
        assert write_back is not None
        with own or contextlib.nullcontext():
            write_back.send(items, outcome, {})  # invalid bookings, and all of them when not connected
            if calendar is not None:
                for start in range(0, len(plan.writes), BATCH_LIMIT):
                    chunk = plan.writes[start : start + BATCH_LIMIT]
                    part = PushOutcome(notes={w.key: plan.notes[w.key] for w in chunk if w.key in plan.notes})
                    self._write_events(calendar, chunk, part)
                    write_back.send(items, part, {w.key: w.event_id for w in chunk})
                    outcome.merge(part)
        return outcome

    def _write_events(self, calendar: Calendar, writes: list[Write], outcome: PushOutcome) -> None:
        """Insert or patch each event: 409 on insert means it exists (patch, which also restores a deleted
        one), 404 on patch means it is gone (insert again)."""
        # A cancelled booking is never inserted: patching finds its event if there is one.
        pending = {
            w.key: ("patch" if w.mapped or w.body.get("status") == CANCELLED else "insert", w) for w in writes
        }
        done: dict[str, dict[str, Any]] = {}
        for _round in range(3):
            if not pending:
                break
            calls = list(pending.items())
            results = self._run(calendar, [self._event_write(verb, w) for _, (verb, w) in calls])
            retry: dict[str, tuple[str, Write]] = {}
            for (key, (verb, write)), result in zip(calls, results, strict=True):
                if isinstance(result, GoogleConflict) and verb == "insert":
                    retry[key] = ("patch", write)
                elif isinstance(result, GoogleNotFound | GoogleGone) and verb == "patch":
                    if write.body.get("status") == CANCELLED:
                        done[key] = {}  # nothing to cancel
                    else:
                        retry[key] = ("insert", write)
                elif isinstance(result, Exception):
                    self._failure(outcome, [key], result, "upsert")
                    if key in outcome.dead:
                        self._refused(write)
                else:
                    done[key] = result
            pending = retry
        outcome.fail(pending, "the event kept changing between insert and patch", "upsert")
        by_key = {w.key: w for w in writes}
        now = self.ctx.clock()
        self.store.put_mappings(
            EventMapping.of_event(
                self.connection,
                self.collection,
                key,
                self.config.calendar_id,
                event or {"id": by_key[key].event_id},
                event_hash(event) if event else by_key[key].content_hash,
                by_key[key].directus_updated,
                now,
                # what Google's answer says of the event's ownership, else what the mapping knew
                read_only=read_only_reason(event) if event.get("organizer") else by_key[key].read_only,
            )
            for key, event in done.items()
        )
        outcome.synced.extend(done)
        if done:
            log.info("pushed bookings to Google", extra=logs.fields(count=len(done), keys=list(done)[:20]))

    def _refused(self, write: Write) -> None:
        """Remember what Google refused for good, so the same content is not sent (nor dead-lettered) again
        until the booking changes. A booking never inserted gets a mapping that holds only the refusal."""
        mapping = self.store.get_mapping(self.connection, self.collection, write.key) or EventMapping(
            self.connection, self.collection, write.key, self.config.calendar_id, write.event_id, ""
        )
        self.store.put_mappings([dataclasses.replace(mapping, refused_hash=write.content_hash)])

    def _event_write(self, verb: str, write: Write) -> EventWrite:
        return EventWrite(
            "insert" if verb == "insert" else "patch",
            write.event_id,
            write.body,
            self.config.send_updates,
        )

    @staticmethod
    def _run(calendar: Calendar, writes: list[EventWrite]) -> list[dict[str, Any] | GoogleError]:
        if len(writes) > BATCH_THRESHOLD:
            return calendar.batch(writes)
        results: list[dict[str, Any] | GoogleError] = []
        for write in writes:
            try:
                results.append(calendar.write(write))
            except GoogleError as exc:
                results.append(exc)
        return results

    # -- delete ---------------------------------------------------------------------------------------
    def _delete(self, keys: list[str]) -> PushOutcome:
        """Delete the events of bookings proven absent from Directus, under the mass-delete guard."""
        outcome = PushOutcome()
        mappings = self.store.get_mappings(self.connection, self.collection, keys)
        targets: list[tuple[str, str]] = []
        for key in keys:
            mapping = mappings.get(key)
            derived = event_id_for(self.connection, self.collection, key)
            if not writable(mapping, derived):
                outcome.left.append(key)  # not the owner's event: it is never deleted nor declined
                continue
            # Without a mapping the event may still exist (an insert whose answer was lost, a crash between
            # insert and mapping): the derived id finds it; 404 then just means there was nothing.
            targets.append((key, mapping.event_id if mapping else derived))
        if outcome.left:
            log.info(
                "deleted bookings of read-only events: the events stay", extra=logs.fields(keys=outcome.left)
            )
            self.store.delete_mappings(self.connection, self.collection, outcome.left)
            for key in outcome.left:
                self.store.discard_outbox(self.connection, self.collection, key)
        if not targets:
            return outcome
        refusal = self._guard(len(targets))
        if refusal:
            log.error("mass deletion refused", extra=logs.fields(count=len(targets), reason=refusal))
            outcome.guard = refusal
            outcome.fail([key for key, _ in targets], refusal, "delete")
            return outcome
        gone = self._delete_events([k for k, _ in targets], [e for _, e in targets], outcome, "delete")
        # The mapping goes only once Google confirmed the event gone: until then it is what finds the event.
        self.store.delete_mappings(self.connection, self.collection, gone)
        for key in gone:
            self.store.discard_outbox(self.connection, self.collection, key)
        outcome.deleted.extend(gone)
        self._deleted += len(gone)
        return outcome

    def _delete_events(
        self, keys: list[str], event_ids: list[str], outcome: PushOutcome, action: OutboxAction
    ) -> list[str]:
        """Delete these bookings' events; the keys whose event is gone now (deleted, or already gone: that
        is the goal). The others are in ``outcome``, to be tried again as ``action``."""
        try:
            calendar = self._calendar()
        except NotConnected as exc:
            self._failure(outcome, keys, exc, action)
            return []
        gone: list[str] = []
        writes = [EventWrite("delete", event_id, None, self.config.send_updates) for event_id in event_ids]
        for key, result in zip(keys, self._run(calendar, writes), strict=True):
            if isinstance(result, GoogleError) and not isinstance(result, GoogleNotFound | GoogleGone):
                self._failure(outcome, [key], result, action)
            else:
                gone.append(key)
        return gone

    # -- moved to another connection ------------------------------------------------------------------
    def _release(self, keys: list[str]) -> PushOutcome:
        """Remove this calendar's events of bookings another connection serves now (a reassignment).

        The proof is the booking itself, just read: it names another staff member. The old event goes only
        once the booking's new calendar has its event (a mapping there): until then it stays and the intent
        waits in this connection's outbox, so a crash or a fault between the two steps loses nothing, and
        the window shows the booking in two calendars rather than in none. A read-only event (another
        organizer's) is never deleted: only its mapping is forgotten. Not under the mass-delete guard: every
        event removed here exists in its new calendar."""
        outcome = PushOutcome()
        here = self.store.get_mappings(self.connection, self.collection, keys)
        if not here:
            return outcome  # nothing of it in this calendar: nothing to do
        homes = self.store.find_mappings(self.collection, list(here))
        ready: list[str] = []
        for key in here:
            if any(m.connection != self.connection for m in homes.get(key, [])):
                ready.append(key)
            else:
                outcome.fail(
                    [key],
                    "moved to another calendar: its event here stays until the new calendar has it",
                    "upsert",
                )
        owned = [k for k in ready if writable(here[k], event_id_for(self.connection, self.collection, k))]
        gone = [k for k in ready if k not in owned]  # read-only here: forgotten, never deleted
        if owned:
            gone.extend(self._delete_events(owned, [here[k].event_id for k in owned], outcome, "upsert"))
        self.store.delete_mappings(self.connection, self.collection, gone)
        for key in gone:
            self.store.discard_outbox(self.connection, self.collection, key)
        outcome.moved.extend(gone)
        if gone:
            log.info("moved bookings' old events removed", extra=logs.fields(count=len(gone), keys=gone[:20]))
        return outcome

    def _guard(self, count: int) -> str | None:
        """Why deleting ``count`` more events would be too many for one cycle or delivery (None: it is not)."""
        if self._delete_limit is None:
            synced = self.store.count_mappings(self.connection, self.config.calendar_id)
            self._delete_limit = guard_limit(self.config.max_delete_share, synced)
        if self._deleted + count <= self._delete_limit:
            return None
        return (
            f"Directus no longer has {self._deleted + count} synced bookings in one go, more than "
            f"MAX_DELETE_SHARE={self.config.max_delete_share:.0%} allows (at most {self._delete_limit}); "
            "no event was deleted for them"
        )
