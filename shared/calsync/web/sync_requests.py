"""calendar_import's answer to a Pub/Sub push delivery: run the one connection the message names.

Pub/Sub takes 102, 200, 201, 202 and 204 as an acknowledgement; any other status is a negative one: the
message comes back after the subscription's backoff and, after its maximum delivery attempts, goes to the
dead-letter topic. Each failure also halves how many messages Pub/Sub pushes at once. So:

- a cycle that ran, whatever it found (ok, not connected, a guard that stopped it): 200, the request is done;
- covered (the connection's last cycle succeeded and started after the request was made, e.g. a duplicate
  delivery or the tail of a burst): 200 ``{"status": "covered"}`` without a cycle;
- busy (another cycle of this connection is running): 200 ``{"status": "busy", "collapsed": true}``; the
  running cycle pulls once more, so a burst of notifications never turns into a storm of redeliveries;
- a connection that no longer exists: 200; a retry cannot make it exist;
- trouble a retry can fix (Google or Directus unavailable, the store down, settings missing): 5xx, and
  Pub/Sub's backoff is the retry;
- a malformed envelope: 400 naming the problem. It will never succeed, but acknowledging it would leave
  only a log line: rejected, it reaches the dead-letter topic after a few cheap attempts, where an operator
  can read it whole.

The push subscription authenticates with an OIDC token that Cloud Run checks at its ingress (only the push
service account may invoke calendar_import), so nothing here verifies it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import flask

from calsync import logs
from calsync.directus.errors import DirectusError
from calsync.fanout import SyncRequest, covered
from calsync.fanout.pubsub import MalformedEnvelope, parse_push_envelope
from calsync.web.http import HttpError, json_response, read_json

if TYPE_CHECKING:
    from calsync.bootstrap import App

log = logging.getLogger(__name__)


def push_delivery(request: flask.Request) -> SyncRequest | None:
    """The sync request a Pub/Sub push carries, or None for any other call (the scheduler's tick sends
    ``{}`` or nothing). Raises HttpError 400 for a malformed push."""
    if not request.is_json or request.content_length == 0:
        return None
    try:
        return parse_push_envelope(read_json(request))
    except MalformedEnvelope as exc:
        raise HttpError(400, f"malformed Pub/Sub push: {exc}") from None


def answer(app: App, sync: SyncRequest) -> flask.Response:
    """Run the requested connection's cycle and answer so that Pub/Sub retries only what a retry fixes."""
    from calsync.bootstrap import UnknownConnection

    where = logs.fields(connection=sync.connection, reason=sync.reason, message_id=sync.message_id,
                        delivery_attempt=sync.delivery_attempt)  # fmt: skip
    try:
        store = app.context(sync.connection).store
        if covered(store.get_status(sync.connection), sync.requested_at):
            log.info("sync request already covered by a later cycle", extra=where)
            return json_response(200, {"status": "covered", "connection": sync.connection})
        result = app.run_connection(sync.connection)
    except UnknownConnection:
        log.warning("sync requested for a connection that does not exist; dropped", extra=where)
        return json_response(200, {"status": "unknown_connection", "connection": sync.connection})
    except DirectusError as exc:  # reading the connections: Pub/Sub retries with its backoff
        raise HttpError(503, f"Directus unavailable: {exc}") from None
    if result.http_status == 409:
        log.info("sync request collapsed into the running cycle", extra=where)
        return json_response(200, {"status": "busy", "collapsed": True, "connection": sync.connection})
    return json_response(result.http_status, {**result.body, "connection": sync.connection})
