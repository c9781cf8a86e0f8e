"""Staying under the API's rate limit: 20 requests per second per key per endpoint.

Requests that share a key share a limiter, whichever source or thread sends them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from jobsync.redact import Secret

__all__ = ["RateLimiter", "RateLimiters"]


class RateLimiter:
    """Spaces requests evenly: at most ``limit`` in any ``period`` seconds, with a small margin.

    Even spacing rather than a window that admits a burst: requests sent in a burst can arrive
    bunched up by the network, and the server counts arrivals, not departures.
    """

    MARGIN = 0.02

    def __init__(
        self,
        limit: float,
        period: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if limit <= 0:
            raise ValueError("a rate limit must be positive")
        self.interval = period / limit * (1 + self.MARGIN)
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()

    def acquire(self) -> None:
        # Waiting while holding the lock queues the callers in arrival order.
        with self._lock:
            now = self._clock()
            if now < self._next:
                self._sleep(self._next - now)
                now = self._next
            self._next = now + self.interval


class RateLimiters:
    """One limiter per (API key, endpoint), created on first use; shared by every source."""

    def __init__(self, limit: float, period: float = 1.0) -> None:
        self._limit = limit
        self._period = period
        self._limiters: dict[tuple[object, str], RateLimiter] = {}
        self._lock = threading.Lock()

    def for_key(self, key: Secret | None, base_url: str) -> Callable[[str], None]:
        """The ``acquire(path)`` function for requests made with ``key``."""

        def acquire(path: str) -> None:
            # The limit is per user, so the key (not the base URL) is what is shared.
            identity: object = key if key is not None else base_url
            with self._lock:
                limiter = self._limiters.get((identity, path))
                if limiter is None:
                    limiter = RateLimiter(self._limit, self._period)
                    self._limiters[(identity, path)] = limiter
            limiter.acquire()

        return acquire
