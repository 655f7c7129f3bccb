"""Directus -> Google: make each booking's one event match the booking as Directus holds it now.

Used by booking_hook for every delivery and by the import cycle to drain the outbox and repair missed
webhooks. It never trusts a delivery's payload: it reads the bookings from Directus (one call), and the event
id is derived from (connection, collection, key), so retried, duplicated or concurrent deliveries can only
ever address the same event. A per-booking lease serialises deliveries of one booking, so the last one to
run writes what Directus holds last.

``push`` does not queue anything itself: it reports which bookings failed and why, and the caller decides
(the hook enqueues them in the outbox; the cycle records a failed attempt with backoff).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from calsync import logs
from calsync.bootstrap import App
from calsync.directus.client import DirectusError, DirectusUnavailable
from calsync.google.calendar import (
    BATCH_LIMIT,
    GoogleAccessRevoked,
    GoogleCalendar,
    GoogleConflict,
    GoogleError,
    GoogleGone,
    GoogleNotFound,
    GoogleQuotaExceeded,
    GoogleRetryableError,
    event_id_for,
)
from calsync.state.store import DeadLetter, EventMapping, OutboxAction, utcnow
from calsync.sync.booking import PRIVATE_HASH, InvalidBooking, booking_to_event, event_hash
from calsync.sync.connection import mark_needs_reconnect

log = logging.getLogger(__name__)

BATCH_THRESHOLD = 3  # more writes than this go through Google batch requests
LEASE_TTL = timedelta(seconds=60)
LEASE_WAIT_S = 10.0


@dataclasses.dataclass
class PushOutcome:
    synced: list[str] = dataclasses.field(default_factory=list)
    deleted: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # echoes and no-ops
    invalid: dict[str, str] = dataclasses.field(default_factory=dict)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)  # retry later (outbox)
    failed_action: dict[str, OutboxAction] = dataclasses.field(default_factory=dict)
    dead: dict[str, str] = dataclasses.field(default_factory=dict)  # Google refused for good

    def merge(self, other: PushOutcome) -> None:
        for name in ("synced", "deleted", "skipped"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("invalid", "failed", "failed_action", "dead"):
            getattr(self, name).update(getattr(other, name))

    def as_json(self) -> dict[str, Any]:
        return {
            "synced": self.synced,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "invalid": self.invalid,
            "queued": self.failed,
            "rejected": self.dead,
        }


class NotConnected(Exception):
    """No usable Google connection: intents must wait in the outbox."""


@dataclasses.dataclass(frozen=True)
class _Write:
    key: str
    event_id: str
    body: dict[str, Any]
    mapped: bool
    directus_updated: str | None


class Pusher:
    """Pushes bookings of one connection and collection to its calendar."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.settings = app.settings
        self.store = app.store
        self.connection = app.connection
        self.collection = app.settings.directus_collection
        self.calendar_id = app.settings.google_calendar_id
        self.sleep = time.sleep  # waiting for another delivery's lease is real waiting, even in tests
        self.holder = uuid.uuid4().hex
        self._shared: _WriteBack | None = None  # set inside ``writing_back()``

    # -- entry points ---------------------------------------------------------------------------------
    def push(self, action: str, keys: Sequence[str]) -> PushOutcome:
        """Bring these bookings' events in line with Directus (action is upsert or delete)."""
        outcome = PushOutcome()
        held, busy = self._lease(keys)
        for key in busy:
            outcome.failed[key] = "another delivery of this booking is still being processed"
            outcome.failed_action[key] = "delete" if action == "delete" else "upsert"
        try:
            if held:
                if action == "delete":
                    outcome.merge(self._delete(held))
                else:
                    outcome.merge(self._upsert(held))
        finally:
            if self._shared is not None:
                self._shared.release_later(held)  # once their statuses are written
            else:
                self.release(held)
        return outcome

    @contextlib.contextmanager
    def writing_back(self) -> Iterator[None]:
        """Pushes inside share one write-back thread (the import cycle's repairs): a page's statuses are
        still being written to Directus while the next page is read and sent to Google. Each booking's
        lease is kept until its status is written, so no delivery of it can interleave."""
        self._shared = _WriteBack(self, background=True)
        try:
            with self._shared:
                yield
        finally:
            self._shared = None

    # -- leases ---------------------------------------------------------------------------------------
    def _lease_name(self, key: str) -> str:
        return f"{self.connection}/booking/{self.collection}/{key}"

    def release(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.store.release_lease(self._lease_name(key), self.holder)

    def _lease(self, keys: Sequence[str]) -> tuple[list[str], list[str]]:
        held: list[str] = []
        waiting = list(dict.fromkeys(keys))
        deadline = time.monotonic() + LEASE_WAIT_S
        delay = 0.01
        while waiting:
            still: list[str] = []
            for key in waiting:
                if self.store.acquire_lease(self._lease_name(key), self.holder, LEASE_TTL):
                    held.append(key)
                else:
                    still.append(key)
            waiting = still
            if not waiting or time.monotonic() >= deadline:
                break
            self.sleep(delay)
            delay = min(delay * 2, 0.5)
        return held, waiting

    # -- calendar -------------------------------------------------------------------------------------
    def _calendar(self) -> GoogleCalendar:
        status = self.store.get_status(self.connection)
        if status.state == "needs_reconnect":
            raise NotConnected("the Google connection needs a new consent")
        calendar = self.app.calendar()
        if calendar is None:
            raise NotConnected("no Google account is connected")
        return calendar

    def _failure(
        self, outcome: PushOutcome, keys: Iterable[str], exc: Exception, action: OutboxAction
    ) -> None:
        """Sort a Google failure: retry later (outbox) or give up on these bookings."""
        if isinstance(exc, GoogleAccessRevoked):
            if mark_needs_reconnect(self.store, self.connection, str(exc)):
                self.app.publish_status()
            reason = "the Google connection needs a new consent"
        elif isinstance(exc, NotConnected | GoogleRetryableError | GoogleQuotaExceeded | DirectusUnavailable):
            reason = str(exc)
        elif isinstance(exc, GoogleError):
            for key in keys:
                outcome.dead[key] = f"Google refused the event: {exc}"
                self.store.add_dead_letter(DeadLetter(self.connection, "directus", key, outcome.dead[key]))
            return
        else:
            raise exc
        for key in keys:
            outcome.failed[key] = reason
            outcome.failed_action[key] = action

    # -- upsert ---------------------------------------------------------------------------------------
    def _upsert(self, keys: list[str]) -> PushOutcome:
        outcome = PushOutcome()
        try:
            items = self.app.directus.get_items(keys)
        except DirectusUnavailable as exc:
            self._failure(outcome, keys, exc, "upsert")
            return outcome
        gone = [key for key in keys if key not in items]
        if gone:  # deleted in Directus since the delivery was sent: the event must go too
            outcome.merge(self._delete(gone))
        outcome.merge(self.push_items(items))
        return outcome

    def push_items(self, items: dict[str, dict[str, Any]]) -> PushOutcome:
        """Push bookings already read from Directus (key -> item), whose leases the caller holds.

        Events are written a batch (BATCH_LIMIT) at a time; each batch's statuses are written back to
        Directus while the next batch is with Google (``_WriteBack``): Directus takes longer to record a
        status per booking than Google takes to answer a batch."""
        outcome = PushOutcome()
        writes = self._plan(items, outcome)
        calendar: GoogleCalendar | None = None
        if writes:
            try:
                calendar = self._calendar()
            except NotConnected as exc:
                self._failure(outcome, [w.key for w in writes], exc, "upsert")
        own = None if self._shared else _WriteBack(self, background=len(writes) > BATCH_LIMIT)
        write_back = self._shared or own
        assert write_back is not None
        with own or contextlib.nullcontext():
            write_back.send(items, outcome, {})  # invalid bookings, and all of them when not connected
            if calendar is not None:
                for start in range(0, len(writes), BATCH_LIMIT):
                    part = PushOutcome()
                    chunk = writes[start : start + BATCH_LIMIT]
                    self._write_events(calendar, chunk, part)
                    write_back.send(items, part, {w.key: w.event_id for w in chunk})
                    outcome.merge(part)
        return outcome

    def _plan(self, items: dict[str, dict[str, Any]], outcome: PushOutcome) -> list[_Write]:
        """The writes these bookings need; invalid ones and those Google already holds go to ``outcome``."""
        mappings = self.store.get_mappings(self.connection, self.collection, list(items))
        writes: list[_Write] = []
        for key, item in items.items():
            try:
                body = booking_to_event(
                    item,
                    collection=self.collection,
                    key=key,
                    default_timezone=self.settings.timezone,
                    link_base=self.settings.directus_link_base,
                )
            except InvalidBooking as exc:
                outcome.invalid[key] = str(exc)
                continue
            mapping = mappings.get(key)
            if (
                mapping is not None
                and mapping.content_hash == body["extendedProperties"]["private"][PRIVATE_HASH]
            ):
                outcome.skipped.append(key)  # what Google holds is what we last wrote: an echo or a no-op
                continue
            event_id = mapping.event_id if mapping else event_id_for(self.connection, self.collection, key)
            writes.append(_Write(key, event_id, body, mapping is not None, item.get("date_updated")))
        return writes

    def _write_events(self, calendar: GoogleCalendar, writes: list[_Write], outcome: PushOutcome) -> None:
        """Insert or patch each event: 409 on insert means it exists (patch, which also restores a deleted
        one), 404 on patch means it is gone (insert again)."""
        # A cancelled booking is never inserted: patching finds its event if there is one.
        pending = {
            w.key: ("patch" if w.mapped or w.body.get("status") == "cancelled" else "insert", w)
            for w in writes
        }
        done: dict[str, dict[str, Any]] = {}
        for _round in range(3):
            if not pending:
                break
            calls = list(pending.items())
            results = self._run(calendar, [(verb, w) for _, (verb, w) in calls])
            retry: dict[str, tuple[str, _Write]] = {}
            for (key, (verb, write)), result in zip(calls, results, strict=True):
                if isinstance(result, GoogleConflict) and verb == "insert":
                    retry[key] = ("patch", write)
                elif isinstance(result, GoogleNotFound | GoogleGone) and verb == "patch":
                    if write.body.get("status") == "cancelled":
                        done[key] = {}  # nothing to cancel
                    else:
                        retry[key] = ("insert", write)
                elif isinstance(result, Exception):
                    self._failure(outcome, [key], result, "upsert")
                else:
                    done[key] = result
            pending = retry
        for key in pending:
            outcome.failed[key] = "the event kept changing between insert and patch"
        by_key = {w.key: w for w in writes}
        mappings = []
        for key, event in done.items():
            write = by_key[key]
            mappings.append(
                EventMapping(
                    connection=self.connection,
                    collection=self.collection,
                    booking_key=key,
                    calendar_id=self.calendar_id,
                    event_id=write.event_id,
                    content_hash=event_hash(event)
                    if event
                    else write.body["extendedProperties"]["private"][PRIVATE_HASH],
                    google_etag=event.get("etag"),
                    google_updated=event.get("updated"),
                    directus_updated=write.directus_updated,
                    synced_at=utcnow(),
                )
            )
            outcome.synced.append(key)
        self.store.put_mappings(mappings)
        if done:
            log.info("pushed bookings to Google", extra=logs.fields(count=len(done), keys=list(done)[:20]))

    def _run(self, calendar: GoogleCalendar, calls: list[tuple[str, _Write]]) -> list[Any]:
        send_updates = self.settings.send_updates
        if len(calls) <= BATCH_THRESHOLD:
            results: list[Any] = []
            for verb, write in calls:
                try:
                    if verb == "insert":
                        results.append(
                            calendar.insert_event(
                                {**write.body, "id": write.event_id}, send_updates=send_updates
                            )
                        )
                    else:
                        results.append(
                            calendar.patch_event(write.event_id, write.body, send_updates=send_updates)
                        )
                except GoogleError as exc:
                    results.append(exc)
            return results
        requests_ = [
            calendar.insert_request({**write.body, "id": write.event_id}, send_updates=send_updates)
            if verb == "insert"
            else calendar.patch_request(write.event_id, write.body, send_updates=send_updates)
            for verb, write in calls
        ]
        return list(calendar.batch(requests_))

    # -- delete ---------------------------------------------------------------------------------------
    def _delete(self, keys: list[str]) -> PushOutcome:
        outcome = PushOutcome()
        mappings = self.store.get_mappings(self.connection, self.collection, keys)
        targets: list[tuple[str, str]] = []
        for key in keys:
            mapping = mappings.get(key)
            pending = self.store.get_outbox(self.connection, self.collection, key)
            if mapping is None and pending is not None and pending.action == "upsert":
                # created while Google was unreachable and deleted before it ever got there: nothing to do
                self.store.discard_outbox(self.connection, self.collection, key)
                outcome.deleted.append(key)
                continue
            # Without a mapping the event may still exist (a crash between insert and mapping): the
            # derived id finds it; 404 then just means there was nothing.
            targets.append(
                (key, mapping.event_id if mapping else event_id_for(self.connection, self.collection, key))
            )
        if not targets:
            return outcome
        try:
            calendar = self._calendar()
        except NotConnected as exc:
            self._failure(outcome, [key for key, _ in targets], exc, "delete")
            return outcome
        gone: list[str] = []
        for key, event_id in targets:
            try:
                calendar.delete_event(event_id, send_updates=self.settings.send_updates)
            except (GoogleNotFound, GoogleGone):
                pass  # already gone: that is the goal
            except GoogleError as exc:
                self._failure(outcome, [key], exc, "delete")
                continue
            gone.append(key)
        self.store.delete_mappings(self.connection, self.collection, gone)
        for key in gone:
            self.store.discard_outbox(self.connection, self.collection, key)
        outcome.deleted.extend(gone)
        return outcome


@dataclasses.dataclass
class _Sent:
    """One status write: its rows once done, the bookings it marked synced, leases to release after it."""

    rows: Future[list[dict[str, Any]]] | list[dict[str, Any]]
    synced: list[str]
    leases: list[str] = dataclasses.field(default_factory=list)

    def done(self) -> bool:
        return not isinstance(self.rows, Future) or self.rows.done()

    def result(self) -> list[dict[str, Any]]:
        return self.rows.result() if isinstance(self.rows, Future) else self.rows


class _WriteBack:
    """google_event_id, sync_status and sync_error on the bookings, where those fields exist and differ.

    ``send(items, outcome, event_ids)`` writes the statuses of a part of a push in one Directus call; with
    ``background`` the calls run in order on a thread of their own while the caller goes on with Google.
    As each write completes (checked on the caller's thread: the store is not shared with the thread), the
    date_updated it gave each booking is recorded in the booking's mapping, so the next pull does not take
    our own write for a person's edit (the write fires the Flow too; that delivery carries the sync user and
    is skipped as an echo), and the leases handed over with ``release_later`` are released. Leaving the
    ``with`` waits for every write.

    A failed write is logged, never raised: the events are right; only the status shown in Directus lags,
    and the next change of the booking corrects it."""

    def __init__(self, pusher: Pusher, background: bool) -> None:
        self.pusher = pusher
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="write-back") if background else None
        self.sent: collections.deque[_Sent] = collections.deque()

    def __enter__(self) -> _WriteBack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._collect(wait=True)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
            for entry in self.sent:  # only after an error above
                self.pusher.release(entry.leases)

    def send(self, items: dict[str, dict[str, Any]], outcome: PushOutcome, event_ids: dict[str, str]) -> None:
        """``event_ids``: the event of each booking in ``outcome.synced``."""
        updates = self._updates(items, outcome, event_ids)
        if updates:
            rows = (
                self._write(updates) if self.executor is None else self.executor.submit(self._write, updates)
            )
            self.sent.append(_Sent(rows, list(outcome.synced)))
        self._collect(wait=False)

    def release_later(self, keys: list[str]) -> None:
        """Release these leases once the writes sent so far are done (now, if they are)."""
        if self.sent:
            self.sent[-1].leases.extend(keys)
        else:
            self.pusher.release(keys)
        self._collect(wait=False)

    def _collect(self, wait: bool) -> None:
        while self.sent and (wait or self.sent[0].done()):
            entry = self.sent[0]
            self._remember(entry.result(), entry.synced)
            self.sent.popleft()
            self.pusher.release(entry.leases)

    def _updates(
        self, items: dict[str, dict[str, Any]], outcome: PushOutcome, event_ids: dict[str, str]
    ) -> list[dict[str, Any]]:
        pusher = self.pusher
        fields = pusher.app.directus_fields()
        wanted: dict[str, dict[str, Any]] = {}
        for key in outcome.synced:
            wanted[key] = {
                "google_event_id": event_ids[key],
                "sync_status": "synced",
                "sync_error": None,
            }
        for status, reasons in (
            ("error", outcome.invalid),
            ("error", outcome.dead),
            ("queued", outcome.failed),
        ):
            for key, reason in reasons.items():
                wanted[key] = {"sync_status": status, "sync_error": reason}
        updates = []
        for key, values in wanted.items():
            current = items.get(key)
            if current is None:
                continue
            changed = {
                name: value for name, value in values.items() if name in fields and current.get(name) != value
            }
            if changed:
                updates.append({"id": current.get("id", key), **changed})
        return updates

    def _write(self, updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return self.pusher.app.directus.update_items(updates)
        except DirectusError:
            log.warning(
                "could not write the sync status back to Directus",
                exc_info=True,
                extra=logs.fields(count=len(updates)),
            )
            return []

    def _remember(self, rows: list[dict[str, Any]], synced: list[str]) -> None:
        pusher = self.pusher
        stamped = {str(row["id"]): row.get("date_updated") for row in rows}
        mappings = pusher.store.get_mappings(
            pusher.connection, pusher.collection, [key for key in synced if stamped.get(key)]
        )
        if mappings:
            pusher.store.put_mappings(
                dataclasses.replace(m, directus_updated=stamped[key]) for key, m in mappings.items()
            )
