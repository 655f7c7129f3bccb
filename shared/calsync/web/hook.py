"""booking_hook: one Directus delivery in, the bookings' events written (or queued), a JSON answer out."""

from __future__ import annotations

import logging

import flask

from calsync import logs
from calsync.bootstrap import App
from calsync.sync.routing import push_routed, queue_routed
from calsync.web.delivery import INLINE_KEYS, Delivery, parse_delivery
from calsync.web.http import json_response, read_json

log = logging.getLogger(__name__)


def handle_delivery(app: App, request: flask.Request) -> flask.Response:
    """200 when every booking is settled (synced, unchanged or invalid), 202 when some wait in the outbox."""
    delivery = parse_delivery(read_json(request), app.settings.directus_collection)
    if delivery.user is not None and delivery.user == app.sync_user_id():
        # Our own write-back (or import) fired the Flow again: nothing to send to Google. The Flow that
        # `calsync directus setup` makes filters these out; a Flow made by hand may not.
        log.info("delivery skipped: written by the sync itself", extra=logs.fields(keys=len(delivery.keys)))
        return json_response(200, {"skipped": list(delivery.keys), "reason": "written by the sync itself"})
    if len(delivery.keys) > INLINE_KEYS:
        return _queue_all(app, delivery)
    outcome = push_routed(app.fleet(fresh=False), delivery.action, delivery.keys)
    body = {"action": delivery.action, **outcome.as_json()}
    log.info(
        "delivery handled",
        extra=logs.fields(
            action=delivery.action,
            keys=len(delivery.keys),
            synced=len(outcome.synced),
            deleted=len(outcome.deleted),
            skipped=len(outcome.skipped),
            invalid=len(outcome.invalid),
            queued=len(outcome.failed),
        ),
    )
    if outcome.failed:
        _show_pending(app)
    return json_response(202 if outcome.failed else 200, body)


def _show_pending(app: App) -> None:
    """Something waits in the outbox: show the new ``pending_changes`` in Directus now rather than at the
    next cycle. Best effort: the delivery's answer never depends on it."""
    try:
        app.publish_statuses(app.roster().ids)  # one write, whichever connections the intents wait in
    except Exception:
        log.warning("could not show the queued changes in Directus", exc_info=True)


def _queue_all(app: App, delivery: Delivery) -> flask.Response:
    """A large delivery goes to the outbox whole, without calling Google; the import cycle drains it."""
    queue_routed(app.fleet(fresh=False), delivery.action, delivery.keys)
    log.info(
        "large delivery queued for the next cycle",
        extra=logs.fields(action=delivery.action, keys=len(delivery.keys), inline_limit=INLINE_KEYS),
    )
    _show_pending(app)
    return json_response(
        202,
        {
            "action": delivery.action,
            "queued": len(delivery.keys),
            "reason": f"more than {INLINE_KEYS} keys: queued for the next import cycle",
        },
    )
