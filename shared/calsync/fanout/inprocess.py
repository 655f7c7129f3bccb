"""Sync requests run in this process: the embedded default (a laptop, ``calsync serve``), where there is no
Pub/Sub to spread the work.

A bounded thread pool runs ``run(connection)``. Requests collapse per connection: while a connection's run is
queued, more requests for it are already covered by it (it has not started, so it will see their changes);
while it runs, they mark it to run once more when it ends. A burst of requests for one connection therefore
costs at most one extra cycle, and a connection never occupies two workers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from calsync import logs

log = logging.getLogger(__name__)


class InProcessRequests:
    """``run(connection)`` on at most ``workers`` threads, collapsing requests per connection."""

    def __init__(self, run: Callable[[str], object], workers: int = 4) -> None:
        self._run = run
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sync-request")
        self._lock = threading.Condition()
        # connection -> whether it must run once more after its current run; present: queued or running
        self._again: dict[str, bool] = {}
        self._closed = False

    def request(self, connections: Sequence[str], reason: str) -> None:
        """Queue one run of each connection, or mark its current run to be followed by one more."""
        queued: list[str] = []
        with self._lock:
            if self._closed:
                log.warning("sync requests ignored: shutting down", extra=logs.fields(reason=reason))
                return
            for connection in dict.fromkeys(connections):
                if connection in self._again:
                    self._again[connection] = True
                    continue
                self._again[connection] = False
                queued.append(connection)
        for connection in queued:
            self._pool.submit(self._serve, connection)
        log.info(
            "sync requested",
            extra=logs.fields(connections=len(connections), queued=len(queued), reason=reason),
        )

    def _serve(self, connection: str) -> None:
        while True:
            with self._lock:
                self._again[connection] = False  # this run covers every request made until now
            try:
                self._run(connection)
            except Exception:
                # a cycle reports its own trouble; this is a bug, and must not kill the worker
                log.exception("requested sync failed", extra=logs.fields(connection=connection))
            with self._lock:
                if not self._again[connection] or self._closed:
                    del self._again[connection]
                    self._lock.notify_all()
                    return

    def pending(self) -> list[str]:
        """The connections queued or running."""
        with self._lock:
            return sorted(self._again)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._again, timeout)

    def close(self, wait: bool = True) -> None:
        """Take no more requests, drop the extra runs, and (``wait``) let the running ones finish."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)
        if not wait:
            return
        with self._lock:
            self._again.clear()  # runs cancelled before they started
            self._lock.notify_all()
