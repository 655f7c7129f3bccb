"""Sync requests: "run this connection's cycle soon", asked by the scheduler tick and by push notifications.

One port, :class:`SyncRequests`, with two adapters chosen by :func:`build_sync_requests`:

- :class:`~calsync.fanout.pubsub.PubSubRequests` (``PUBSUB_TOPIC`` set): one Pub/Sub message per connection;
  a push subscription delivers each to calendar_import, which runs that connection's cycle
  (:mod:`calsync.web.sync_requests`). Pub/Sub's retry, backoff and dead-letter topic are the retries, and the
  number of calendar_import instances bounds how many cycles run at once.
- :class:`~calsync.fanout.inprocess.InProcessRequests` (the embedded default): the cycles run on a small
  thread pool of this process.

Asking never waits for the cycle, and never fails the caller: a request that cannot be made is logged, and
the scheduled tick, which runs every connection anyway, is the safety net.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from calsync.fanout.port import SyncRequest, SyncRequests, covered
from calsync.settings import Settings

__all__ = ["EMULATOR_HOST", "SyncRequest", "SyncRequests", "build_sync_requests", "covered"]

EMULATOR_HOST = "PUBSUB_EMULATOR_HOST"  # the standard variable every Pub/Sub client honours


def build_sync_requests(
    settings: Settings,
    run: Callable[[str], object],
    emulator_host: str | None = None,
) -> SyncRequests:
    """Pub/Sub when ``PUBSUB_TOPIC`` is set, else in-process ``run(connection)`` calls on at most
    ``SYNC_CONCURRENCY`` threads. ``emulator_host`` (default: ``PUBSUB_EMULATOR_HOST``) sends the
    messages to a local Pub/Sub emulator, without credentials."""
    if settings.pubsub_topic:
        from calsync.fanout.pubsub import PubSubRequests

        host = emulator_host or os.environ.get(EMULATOR_HOST) or None
        return PubSubRequests(settings.pubsub_topic, emulator_host=host)
    from calsync.fanout.inprocess import InProcessRequests

    return InProcessRequests(run, workers=settings.sync_concurrency)
