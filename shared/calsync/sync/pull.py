"""Google -> Directus: apply a calendar's changes to the bookings, page by page.

Incremental sync with Google's sync token; a first run (or a 410 fullSyncRequired) lists the window from
IMPORT_WINDOW_DAYS back with ``singleEvents=true``. Each page is applied with one bulk read of mappings,
one bulk read, create and update in Directus, and one batch of stamping patches in Google; the new sync token
is saved only after the last page is committed, so a crash repeats work and never drops any.

Nothing is ever cancelled because it is absent from a listing (an event outside the window is simply not
seen): only an explicit ``status: cancelled`` from Google cancels a booking. Cancellations are held until
the end of the cycle and applied only if they stay under the mass-cancel guard.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from calsync import logs
from calsync.directus.errors import DirectusValidationError
from calsync.directus.limits import body_chunks
from calsync.google.errors import GoogleError, GoogleGone
from calsync.state.store import Cursor, DeadLetter, EventMapping, event_zone
from calsync.sync.booking import (
    CANCELLED,
    FIELDS,
    PRIVATE_COLLECTION,
    PRIVATE_HASH,
    PRIVATE_KEY,
    event_hash,
    event_to_booking,
    parse_instant,
    private_properties,
)
from calsync.sync.guards import guard_limit
from calsync.sync.ids import event_id_for
from calsync.sync.ownership import (
    ends_booking,
    excluded_mark,
    excluded_message,
    not_imported,
    read_only_reason,
    writable,
)
from calsync.sync.plan import booking_hash
from calsync.sync.ports import Calendar, EventsPage, EventWrite, SyncContext

log = logging.getLogger(__name__)

STAMP_BATCH = 50
PAGE_SIZE = 2500  # Google's maximum: the fewest list requests


class MassCancelRefused(Exception):
    """The cycle would cancel an unusual share of the bookings; nothing was cancelled."""


@dataclasses.dataclass
class PullSummary:
    created: int = 0
    updated: int = 0
    cancelled: int = 0
    skipped_echoes: int = 0
    conflicts_directus_won: int = 0
    dead_letters: int = 0
    pages: int = 0
    full_sync: bool = False
    excluded: int = 0


@dataclasses.dataclass(frozen=True)
class _Cancel:
    mapping: EventMapping
    event: dict[str, Any]


def _instant(value: Any) -> datetime | None:
    """A timestamp from either side as an aware datetime (naive ones are UTC, as Directus sends them)."""
    if not value:
        return None
    try:
        return parse_instant(value, ZoneInfo("UTC"), "time")
    except ValueError:
        return None


class Puller:
    """Pulls one connection's calendar into its bookings."""

    def __init__(self, ctx: SyncContext, calendar: Calendar) -> None:
        self.ctx = ctx
        self.calendar = calendar
        self.store = ctx.store
        self.directus = ctx.directus
        self.config = ctx.config
        self.connection = ctx.connection
        self.collection = ctx.config.collection
        self.calendar_id = ctx.config.calendar_id
        self.fields = ctx.booking_fields
        self.summary = PullSummary()
        self._cancels: list[_Cancel] = []

    # -- the whole pull -------------------------------------------------------------------------------
    def run(self, now: datetime | None = None) -> PullSummary:
        now = now or self.ctx.clock()
        cursor = self.store.cursor(self.connection, self.calendar_id)
        if cursor.sync_token and cursor.list_filter != self.config.list_filter:
            # IMPORT_EVENT_TYPES or IMPORT_INVITATIONS changed: every event is looked at again (and Google
            # wants the same eventTypes on every incremental sync of a token), so a full sync
            log.warning(
                "import settings changed: full sync",
                extra=logs.fields(was=cursor.list_filter, now=self.config.list_filter),
            )
            cursor = dataclasses.replace(cursor, sync_token=None, window_start=None)
        try:
            next_token, window = self._apply_pages(cursor, now)
        except GoogleGone as exc:
            if not exc.full_sync_required:
                raise
            log.warning("sync token expired: full sync", extra=logs.fields(calendar=self.calendar_id))
            cursor = dataclasses.replace(cursor, sync_token=None, window_start=None)
            self._cancels.clear()
            next_token, window = self._apply_pages(cursor, now)
        self._apply_cancellations()  # raises MassCancelRefused before the token moves on
        self.store.update_cursor(
            self.connection,
            self.calendar_id,
            sync_token=next_token,
            window_start=window,
            list_filter=self.config.list_filter,
        )
        return self.summary

    def _pages(self, cursor: Cursor, window: datetime | None) -> Iterator[EventsPage]:
        """Every page of the changes since the sync token, or, without one, of the window."""
        page_token: str | None = None
        while True:
            types = self.config.event_types
            if cursor.sync_token:
                page = self.calendar.list_events(
                    sync_token=cursor.sync_token,
                    page_token=page_token,
                    max_results=PAGE_SIZE,
                    event_types=types,
                )
            else:
                page = self.calendar.list_events(
                    time_min=window, page_token=page_token, max_results=PAGE_SIZE, event_types=types
                )
            yield page
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def _apply_pages(self, cursor: Cursor, now: datetime) -> tuple[str | None, datetime | None]:
        """Apply every page; (the new sync token, the window it belongs to)."""
        if cursor.sync_token:
            window = cursor.window_start
        else:
            self.summary.full_sync = True
            window = now - timedelta(days=self.config.import_window_days)
        next_token: str | None = None
        for page in self._pages(cursor, window):
            self.summary.pages += 1
            self._apply_page(page.items)
            next_token = page.next_sync_token or next_token
            if page.items:  # progress, for long imports (the CLI shows it)
                log.info(
                    "applied a page of Google's changes",
                    extra=logs.fields(
                        page=self.summary.pages, events=len(page.items), created=self.summary.created
                    ),
                )
        return next_token, window

    # -- one page -------------------------------------------------------------------------------------
    def _apply_page(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        mappings = self.store.get_mappings_by_event(
            self.connection, self.calendar_id, [e["id"] for e in events]
        )
        # Ours but unmapped (a crash between insert and mapping): find the mapping through the stamped key.
        stamped = {
            private_properties(e).get(PRIVATE_KEY): e["id"]
            for e in events
            if e["id"] not in mappings and private_properties(e).get(PRIVATE_COLLECTION) == self.collection
        }
        stamped.pop(None, None)
        if stamped:
            by_key = self.store.get_mappings(self.connection, self.collection, [k for k in stamped if k])
            for key, found in by_key.items():
                mappings[stamped[key]] = found

        creates: list[dict[str, Any]] = []
        updates: list[tuple[EventMapping, dict[str, Any], str]] = []
        refreshed: list[EventMapping] = []
        excluded: dict[str, tuple[EventMapping, str]] = {}
        for event in events:
            mapping = mappings.get(event["id"])
            if event.get("status") == CANCELLED or ends_booking(event):
                # gone, declined, or the owner taken off the guest list: the booking ends
                if mapping is not None:
                    self._cancels.append(_Cancel(mapping, event))
                continue  # an unknown event that is gone: nothing to do
            reason = not_imported(self.config, event)
            if reason is not None:
                if mapping is not None:  # a booking from an earlier policy: kept, marked, no longer synced
                    excluded[mapping.booking_key] = (mapping, reason)
                continue
            digest = event_hash(event)
            if mapping is not None and mapping.content_hash == digest:
                self.summary.skipped_echoes += 1
                fresh = self._with_event_facts(mapping, event)
                if fresh != mapping:
                    refreshed.append(fresh)  # who organizes it, its zone: learnt once, no write anywhere
                continue
            if mapping is not None:
                updates.append((mapping, event, digest))
            else:
                creates.append(event)
        self.store.put_mappings(refreshed)
        if excluded:
            self._exclude(excluded)
        if updates:
            self._update_bookings(updates)
        if creates:
            self._create_bookings(creates)

    @staticmethod
    def _with_event_facts(mapping: EventMapping, event: dict[str, Any]) -> EventMapping:
        """The mapping with what the event says of itself (read-only or not, its zone); a cancelled event's
        minimal shape says neither, so the mapping keeps what it knew."""
        if "start" not in event:
            return mapping
        return dataclasses.replace(mapping, read_only=read_only_reason(event), time_zone=event_zone(event))

    def _exclude(self, excluded: dict[str, tuple[EventMapping, str]]) -> None:
        """Bookings whose events the settings no longer import: marked in Directus, never deleted, and
        read-only toward Google from now on."""
        rows = self.directus.get_items(list(excluded), fields=[FIELDS.sync_status, FIELDS.sync_error])
        marks = []
        for key, (_, reason) in excluded.items():
            message = excluded_message(excluded_mark(reason))
            row = rows.get(key)
            current = (row or {}).get(FIELDS.sync_status), (row or {}).get(FIELDS.sync_error)
            if row is not None and current != ("excluded", message):
                marks.append(
                    {"id": row.get("id", key), FIELDS.sync_status: "excluded", FIELDS.sync_error: message}
                )
        if {FIELDS.sync_status, FIELDS.sync_error} <= self.fields:
            self._write_updates(marks)
        self.store.put_mappings(
            dataclasses.replace(mapping, read_only=excluded_mark(reason))
            for mapping, reason in excluded.values()
            if mapping.read_only != excluded_mark(reason)
        )
        self.summary.excluded += len(excluded)

    def _booking_values(self, event: dict[str, Any]) -> dict[str, Any] | None:
        try:
            values = event_to_booking(event, default_timezone=self.config.timezone)
        except (KeyError, ValueError) as exc:
            self._dead(event, f"cannot read the event's times: {exc}")
            return None
        return {name: value for name, value in values.items() if name in self.fields}

    def _dead(self, event: dict[str, Any], reason: str) -> None:
        self.summary.dead_letters += 1
        self.store.add_dead_letter(
            DeadLetter(
                self.connection,
                "google",
                str(event.get("id")),
                reason,
                payload={k: event.get(k) for k in ("summary", "start", "end", "status", "updated")},
            )
        )
        log.warning("event skipped", extra=logs.fields(event_id=event.get("id"), reason=reason))

    # -- updates --------------------------------------------------------------------------------------
    def _update_bookings(self, updates: list[tuple[EventMapping, dict[str, Any], str]]) -> None:
        current = self.directus.get_items([m.booking_key for m, _, _ in updates])
        patches: list[dict[str, Any]] = []
        applied: list[tuple[EventMapping, dict[str, Any], str]] = []
        for mapping, event, digest in updates:
            booking = current.get(mapping.booking_key)
            if booking is None:
                continue  # deleted in Directus; the delete delivery (or the outbox) removes the event
            if self._directus_wins(mapping, booking, event):
                # Google holds something else now: say so in the mapping, and the booking's push (queued
                # here, drained later in this cycle) writes the Directus version over it.
                self.store.put_mappings([dataclasses.replace(mapping, content_hash=digest)])
                self.store.enqueue(self.connection, self.collection, mapping.booking_key, "upsert")
                continue
            values = self._booking_values(event)
            if values is None:
                continue
            changed = self._changed_fields(booking, values)
            if changed:
                patches.append({"id": booking.get("id", mapping.booking_key), **changed})
            applied.append((mapping, event, digest))
        rows = self._write_updates(patches)
        self._remember(applied, rows)
        self.summary.updated += len(patches)

    def _directus_wins(self, mapping: EventMapping, booking: dict[str, Any], event: dict[str, Any]) -> bool:
        """Changed on both sides since the last sync: the later change wins; the loser is logged."""
        booking_changed = booking.get(FIELDS.date_updated)
        if not booking_changed or booking_changed == mapping.directus_updated:
            return False
        if booking.get(FIELDS.user_updated) and booking.get(FIELDS.user_updated) == self.ctx.sync_user_id:
            return False  # the last Directus change was our own write-back, not a person's edit
        if (
            booking_hash(self.connection, self.config, mapping.booking_key, booking, mapping)
            == mapping.content_hash
        ):
            return False  # a Directus edit that changed nothing the event holds is no conflict
        if not writable(mapping, event_id_for(self.connection, self.collection, mapping.booking_key)):
            return False  # a read-only event: Google's version is the only one
        directus_at, google_at = _instant(booking_changed), _instant(event.get("updated"))
        directus_wins = directus_at is not None and google_at is not None and directus_at > google_at
        log.info(
            f"conflict: the {'Directus' if directus_wins else 'Google'} change is later and wins",
            extra=logs.fields(
                booking=mapping.booking_key,
                event_id=event["id"],
                directus_updated=booking_changed,
                google_updated=event.get("updated"),
                lost=self._brief_event(event) if directus_wins else self._brief(booking),
            ),
        )
        self.summary.conflicts_directus_won += directus_wins
        return directus_wins

    @staticmethod
    def _brief(booking: dict[str, Any]) -> dict[str, Any]:
        return {k: booking.get(k) for k in (FIELDS.title, FIELDS.start, FIELDS.end, FIELDS.status)}

    @staticmethod
    def _brief_event(event: dict[str, Any]) -> dict[str, Any]:
        return {k: event.get(k) for k in ("summary", "start", "end", "status")}

    def _changed_fields(self, booking: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        changed: dict[str, Any] = {}
        for name, value in values.items():
            old = booking.get(name)
            if name == FIELDS.status:
                # Only cancelled-ness comes from Google; a booking's own "pending" etc. stays as it is.
                if (str(old or "").lower() == CANCELLED) != (value == CANCELLED):
                    changed[name] = value
            elif name in (FIELDS.start, FIELDS.end):
                if _instant(old) != _instant(value):
                    changed[name] = value
            elif (old or "") != (value or "") and not (isinstance(value, bool) and bool(old) == value):
                changed[name] = value
        return changed

    def _write_updates(self, patches: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        if not patches:
            return {}
        rows = self.directus.update_items(patches)
        return {str(row["id"]): row for row in rows}

    def _remember(
        self, applied: list[tuple[EventMapping, dict[str, Any], str]], rows: dict[str, dict[str, Any]]
    ) -> None:
        now = self.ctx.clock()
        self.store.put_mappings(
            self._with_event_facts(
                dataclasses.replace(
                    mapping,
                    event_id=event["id"],
                    content_hash=digest,
                    google_etag=event.get("etag"),
                    google_updated=event.get("updated"),
                    directus_updated=(rows.get(mapping.booking_key) or {}).get(
                        FIELDS.date_updated, mapping.directus_updated
                    ),
                    synced_at=now,
                ),
                event,
            )
            for mapping, event, digest in applied
        )

    # -- creates --------------------------------------------------------------------------------------
    def _create_bookings(self, events: list[dict[str, Any]]) -> None:
        """A booking per new event, in bodies Directus accepts; each part is mapped before the next is sent,
        so a failure leaves at most one part created but unmapped (``_relink`` finds it). The events are
        stamped together at the end, in full batches."""
        ready: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for event in self._adopt_our_own(self._relink(events)):
            values = self._booking_values(event)
            if values is not None:
                extra = {FIELDS.google_event_id: event["id"], FIELDS.sync_status: "synced"}
                if self.config.route_field is not None and self.config.route_value is not None:
                    extra[self.config.route_field] = self.config.route_value  # the staff member's booking
                ready.append((event, {**values, **{k: v for k, v in extra.items() if k in self.fields}}))
        offset = 0
        mappings: list[EventMapping] = []
        for part in body_chunks([values for _, values in ready]):
            mappings.extend(self._create_part(ready[offset : offset + len(part)]))
            offset += len(part)
        self._stamp(mappings)

    def _create_part(self, ready: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[EventMapping]:
        created: list[tuple[dict[str, Any], dict[str, Any]]] = []
        try:
            rows = self.directus.create_items([values for _, values in ready])
            created = list(zip([event for event, _ in ready], rows, strict=True))
        except DirectusValidationError:
            # One bad row fails the whole bulk call: find it one by one, dead-letter it, keep the rest.
            for event, values in ready:
                try:
                    created.extend(zip([event], self.directus.create_items([values]), strict=True))
                except DirectusValidationError as exc:
                    self._dead(event, f"Directus refused the booking: {exc}")
        mappings = [self._mapping(event, row, event_hash(event)) for event, row in created]
        self.store.put_mappings(mappings)
        self.summary.created += len(mappings)
        return mappings

    def _mapping(self, event: dict[str, Any], row: dict[str, Any], content_hash: str) -> EventMapping:
        """This event mapped to the booking row Directus answered with."""
        return EventMapping.of_event(
            self.connection,
            self.collection,
            str(row["id"]),
            self.calendar_id,
            event,
            content_hash,
            row.get(FIELDS.date_updated),
            self.ctx.clock(),
            read_only=read_only_reason(event),
        )

    def _adopt_our_own(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of these unmapped, unlinked events, those this sync inserted for a booking (its derived id, its key
        stamped) are not new bookings: the insert's answer was lost before the mapping was written. Their
        booking's push settles them (it exists: the event is mapped to it; proven gone: the event goes), so
        each gets an outbox intent; the rest are returned, to be created."""
        ours: list[str] = []
        rest: list[dict[str, Any]] = []
        for event in events:
            key = private_properties(event).get(PRIVATE_KEY)
            if key and event["id"] == event_id_for(self.connection, self.collection, key):
                ours.append(key)
            else:
                rest.append(event)
        for key in ours:
            self.store.enqueue(
                self.connection, self.collection, key, "upsert", error="the event exists unmapped"
            )
        if ours:
            log.info(
                "events of our own without a mapping; their bookings are pushed",
                extra=logs.fields(keys=ours[:20]),
            )
        return rest

    def _relink(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Of these unmapped events, those whose booking exists already (its google_event_id says so) are
        mapped to it and brought up to date like any update; the rest are returned, to be created.

        Such a booking is one this sync created whose answer never came back (the create is not repeated
        blindly, or the next cycle would create it twice), or one whose mapping was lost with the state
        store: a rebuilt store then relinks every booking instead of duplicating the calendar."""
        if FIELDS.google_event_id not in self.fields:
            return events
        found = self.directus.find_items(
            FIELDS.google_event_id, [e["id"] for e in events], [FIELDS.date_updated]
        )
        if not found:
            return events
        relinked = [(e, found[e["id"]]) for e in events if e["id"] in found]
        log.info(
            "bookings already existed for new events; relinked",
            extra=logs.fields(count=len(relinked), event_ids=[e["id"] for e, _ in relinked][:20]),
        )
        # The booking counts as unchanged since (its own date_updated): Google's version of it applies.
        self._update_bookings(
            [(self._mapping(event, row, ""), event, event_hash(event)) for event, row in relinked]
        )
        keys = {str(row["id"]): event for event, row in relinked}
        unstamped = [
            mapping
            for key, mapping in self.store.get_mappings(self.connection, self.collection, list(keys)).items()
            if private_properties(keys[key]).get(PRIVATE_KEY) != key
        ]
        self._stamp(unstamped)
        return [e for e in events if e["id"] not in found]

    def _stamp(self, mappings: list[EventMapping]) -> None:
        """Write the booking key into each new event so later cycles (and a lost mapping) recognise it."""
        requests_ = [
            EventWrite(
                "patch",
                m.event_id,
                {
                    "extendedProperties": {
                        "private": {
                            PRIVATE_KEY: m.booking_key,
                            PRIVATE_COLLECTION: self.collection,
                            PRIVATE_HASH: m.content_hash,
                        }
                    }
                },
            )
            for m in mappings
            if not m.read_only  # someone else's copy: nothing of ours is written to it, not even a stamp
        ]
        mappings = [m for m in mappings if not m.read_only]
        for start in range(0, len(requests_), STAMP_BATCH):
            results = self.calendar.batch(requests_[start : start + STAMP_BATCH])
            stamped: list[EventMapping] = []
            for mapping, result in zip(mappings[start : start + STAMP_BATCH], results, strict=True):
                if isinstance(result, GoogleError):
                    # The booking and mapping exist; only the stamp is missing, which the mapping makes up for.
                    log.warning(
                        "could not stamp the booking key into the event",
                        extra=logs.fields(event_id=mapping.event_id, error=str(result)),
                    )
                elif isinstance(result, dict):
                    stamped.append(
                        dataclasses.replace(
                            mapping, google_etag=result.get("etag"), google_updated=result.get("updated")
                        )
                    )
            self.store.put_mappings(stamped)  # one write per batch, not one per event

    # -- cancellations --------------------------------------------------------------------------------
    def _cancelled_hash(self, cancel: _Cancel, booking: dict[str, Any]) -> str:
        cancelled = {**booking, FIELDS.status: CANCELLED}
        known = booking_hash(
            self.connection, self.config, cancel.mapping.booking_key, cancelled, cancel.mapping
        )
        return known or event_hash(cancel.event)

    def _still_cancelled(self, cancels: list[_Cancel]) -> list[_Cancel]:
        """Those cancellations that are still the event's latest state, by the mappings as they are now: a
        push since the listing may have put the event back (a booking moved away and back restores its old
        event) or moved the booking elsewhere (its mapping gone). A listing older than what a push learnt
        of the event must not end the booking."""
        fresh = self.store.get_mappings(
            self.connection, self.collection, [c.mapping.booking_key for c in cancels]
        )
        kept = []
        for cancel in cancels:
            mapping = fresh.get(cancel.mapping.booking_key)
            if mapping is None or mapping.event_id != cancel.event["id"]:
                continue  # released or re-linked meanwhile: this event is no longer the booking's
            known, listed = _instant(mapping.google_updated), _instant(cancel.event.get("updated"))
            if known is not None and listed is not None and known > listed:
                log.info("a stale cancellation ignored", extra=logs.fields(key=mapping.booking_key))
                continue
            kept.append(_Cancel(mapping, cancel.event))
        return kept

    def _apply_cancellations(self) -> None:
        if not self._cancels:
            return
        self._cancels = self._still_cancelled(self._cancels)
        if not self._cancels:
            return
        current = self.directus.get_items([c.mapping.booking_key for c in self._cancels])
        moved = [
            c.mapping.booking_key
            for c in self._cancels
            if c.mapping.booking_key in current and not self.config.serves(current[c.mapping.booking_key])
        ]
        if moved:
            # Another connection serves these bookings now: the event gone here is the old one of a move
            # (removed by the sync, or by hand), not a cancellation of the booking.
            log.info("moved bookings' old events gone", extra=logs.fields(keys=moved[:20]))
            self.store.delete_mappings(self.connection, self.collection, moved)
            self._cancels = [c for c in self._cancels if c.mapping.booking_key not in moved]
            if not self._cancels:
                return
        mapped = self.store.count_mappings(self.connection, self.calendar_id)
        if len(self._cancels) > guard_limit(self.config.max_cancel_share, mapped):
            raise MassCancelRefused(
                f"Google reports {len(self._cancels)} cancelled events out of {mapped} synced bookings, more than "
                f"MAX_CANCEL_SHARE={self.config.max_cancel_share:.0%} (at least 10); nothing was cancelled"
            )
        keys = [c.mapping.booking_key for c in self._cancels]
        if self.config.on_google_delete == "delete":
            self.directus.delete_items(keys)
            self.store.delete_mappings(self.connection, self.collection, keys)
        else:
            patches = [
                {"id": current[k].get("id", k), FIELDS.status: CANCELLED}
                for k in keys
                if k in current and str(current[k].get(FIELDS.status) or "").lower() != CANCELLED
            ]
            rows = self._write_updates(patches)
            # What the cancelled booking's push would send: remembered as what Google holds, so the repair
            # sends nothing back (Google's minimal cancelled shape hashes like no booking at all).
            self._remember(
                [
                    (c.mapping, c.event, self._cancelled_hash(c, current[c.mapping.booking_key]))
                    for c in self._cancels
                    if c.mapping.booking_key in current
                ],
                rows,
            )
        self.summary.cancelled += len(self._cancels)
