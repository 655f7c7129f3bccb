"""One retry policy for every client: truncated exponential backoff with jitter, bounded in attempts and time.

The Directus client, the Calendar client (single calls and batch parts), the Secret Manager token store and
the Firestore store's contention loop all wait through :class:`Backoff`, so "how long do we wait before
trying again" has one answer in the code base.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_jitter = random.Random()  # noqa: S311 - backoff jitter, not a secret


@dataclasses.dataclass(frozen=True)
class Backoff:
    """``retries`` more attempts after the first, waiting ``base_s * 2**n`` (capped at ``cap_s``), each wait
    drawn in its upper half so that callers retrying together spread out; none once ``budget_s`` would be
    exceeded."""

    base_s: float = 0.5
    cap_s: float = 8.0
    retries: int = 5
    budget_s: float | None = None

    def delay(self, attempt: int) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0**attempt)
        return ceiling * (0.5 + _jitter.random() / 2)

    def wait(self, attempt: int, elapsed_s: float, at_least: float = 0.0) -> float | None:
        """How long to wait before attempt ``attempt + 1`` (0-based), or None: give up."""
        if attempt >= self.retries:
            return None
        delay = max(self.delay(attempt), at_least)
        if self.budget_s is not None and elapsed_s + delay > self.budget_s:
            return None
        return delay


class Retry(Exception):
    """Raised by an attempt to say "this failure may pass": ``error`` is raised if no attempt is left."""

    def __init__(self, error: Exception, at_least: float = 0.0) -> None:
        super().__init__(str(error))
        self.error = error
        self.at_least = at_least


def retrying(
    attempt: Callable[[], T],
    policy: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """``attempt()`` until it returns; it raises :class:`Retry` for what may pass, anything else at once."""
    started = clock()
    number = 0
    while True:
        try:
            return attempt()
        except Retry as retry:
            delay = policy.wait(number, clock() - started, retry.at_least)
            if delay is None:
                raise retry.error from None
            if on_retry is not None:
                on_retry(retry.error, delay)
            sleep(delay)
            number += 1
