"""The push's status write-back: google_event_id, sync_status and sync_error on the bookings, where those
fields exist and differ from what Directus holds."""

from __future__ import annotations

import collections
import dataclasses
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from calsync import logs
from calsync.directus.errors import DirectusError
from calsync.sync.booking import FIELDS
from calsync.sync.leases import BookingLeases
from calsync.sync.outcome import PushOutcome
from calsync.sync.ports import SyncContext

log = logging.getLogger(__name__)


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


class WriteBack:
    """``send(items, outcome, event_ids)`` writes the statuses of a part of a push in one Directus call; with
    ``background`` the calls run in order on a thread of their own while the caller goes on with Google.

    As each write completes (checked on the caller's thread: the store is not shared with the thread), the
    date_updated it gave each booking is recorded in the booking's mapping, so the next pull does not take
    our own write for a person's edit (the write fires the Flow too; that delivery carries the sync user and
    is skipped as an echo), and the leases handed over with ``release_later`` are released. Leaving the
    ``with`` waits for every write.

    A failed write is logged, never raised: the events are right; only the status shown in Directus lags,
    and the next change of the booking corrects it."""

    def __init__(self, ctx: SyncContext, leases: BookingLeases, background: bool) -> None:
        self.ctx = ctx
        self.leases = leases
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="write-back") if background else None
        self.sent: collections.deque[_Sent] = collections.deque()

    def __enter__(self) -> WriteBack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._collect(wait=True)
        finally:
            if self.executor is not None:
                self.executor.shutdown(wait=True)
            for entry in self.sent:  # only after an error above
                self.leases.release(entry.leases)

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
            self.leases.release(keys)
        self._collect(wait=False)

    def _collect(self, wait: bool) -> None:
        while self.sent and (wait or self.sent[0].done()):
            entry = self.sent[0]
            self._remember(entry.result(), entry.synced)
            self.sent.popleft()
            self.leases.release(entry.leases)

    def _updates(
        self, items: dict[str, dict[str, Any]], outcome: PushOutcome, event_ids: dict[str, str]
    ) -> list[dict[str, Any]]:
        fields = self.ctx.booking_fields
        wanted: dict[str, dict[str, Any]] = {}
        for key in outcome.synced:
            wanted[key] = {
                FIELDS.google_event_id: event_ids[key],
                FIELDS.sync_status: "synced",
                FIELDS.sync_error: outcome.notes.get(key),
            }
        for status, reasons in (
            ("error", outcome.invalid),
            ("error", outcome.dead),
            ("queued", outcome.failed),
            ("read_only", outcome.read_only),
            ("excluded", outcome.excluded),
        ):
            for key, reason in reasons.items():
                wanted[key] = {FIELDS.sync_status: status, FIELDS.sync_error: reason}
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
            return self.ctx.directus.update_items(updates)
        except DirectusError:
            log.warning(
                "could not write the sync status back to Directus",
                exc_info=True,
                extra=logs.fields(count=len(updates)),
            )
            return []

    def _remember(self, rows: list[dict[str, Any]], synced: list[str]) -> None:
        stamped = {str(row["id"]): row.get(FIELDS.date_updated) for row in rows}
        store, connection, collection = self.ctx.store, self.ctx.connection, self.ctx.config.collection
        mappings = store.get_mappings(connection, collection, [key for key in synced if stamped.get(key)])
        if mappings:
            store.put_mappings(
                dataclasses.replace(m, directus_updated=stamped[key]) for key, m in mappings.items()
            )
