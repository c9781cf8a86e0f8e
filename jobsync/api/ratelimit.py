"""Staying under the API's rate limit: by default 20 requests per second per key per endpoint.

Requests that share a key share a limiter, whichever source or thread sends them: the sources of
a pass run concurrently, and so do the pages of one source. Each endpoint has its own limiter,
so the list and the progress requests of a pass run side by side, each on its own budget. The
rate is a setting (``requests_per_second``): Zilliz Cloud documents 20, a self-hosted Milvus or
a larger quota allows more.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

from jobsync.errors import Cancelled
from jobsync.observability.redact import Secret

__all__ = ["RateLimiter", "RateLimiters", "pause"]

# Bound at import, as a default argument would be: tests that replace time.sleep to count the
# client's backoffs must not count the pacing too.
_real_sleep = time.sleep


class RateLimiter:
    """Spaces requests evenly: at most ``limit`` in any ``period`` seconds, with a small margin.

    Even spacing rather than a window that admits a burst: requests sent in a burst can arrive
    bunched up by the network, and the server counts arrivals, not departures.

    Each caller reserves the next free slot under a lock (so callers are served in the order
    they came) and then waits for it without the lock, so a stop request can end that wait.
    A thread can wake up late on a busy machine, and a late request bunches up with the ones
    after it; so a request also goes only once fewer than ``limit`` went in the last ``period``
    (plus the margin), counted at the moment each actually went. ``clock`` and ``sleep`` are
    injectable: tests check the pacing without waiting in real time.
    """

    MARGIN = 0.02

    def __init__(
        self,
        limit: float,
        period: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        if not (limit > 0 and period > 0):
            raise ValueError("a rate limit must be positive")
        self.limit = limit
        self.interval = period / limit * (1 + self.MARGIN)
        self.window = period * (1 + self.MARGIN)
        self._clock = clock
        self._sleep = sleep
        self._next = float("-inf")
        # When the last ``limit`` requests went (a fractional limit rounds down).
        self._sent: deque[float] = deque(maxlen=max(1, math.floor(limit)))
        self._lock = threading.Lock()

    def acquire(self, cancel: threading.Event | None = None) -> float:
        """Wait until a request may go and return that moment (a time on ``clock``).

        Raises Cancelled if ``cancel`` is set before or while waiting; the slot is then left
        unused, which only ever makes the pacing more conservative.
        """
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        while True:
            if slot > now:
                self._wait(slot - now, cancel)
            with self._lock:
                now = self._clock()
                sent = self._sent
                if len(sent) < (sent.maxlen or 1) or now >= sent[0] + self.window:
                    sent.append(now)
                    return now
                slot = sent[0] + self.window

    def _wait(self, seconds: float, cancel: threading.Event | None) -> None:
        pause(seconds, cancel, self._sleep)


def pause(
    seconds: float, cancel: threading.Event | None, sleep: Callable[[float], None] | None
) -> None:
    """Wait (with ``sleep`` if given, else until ``cancel`` is set); Cancelled if a stop came."""
    if sleep is not None:
        sleep(seconds)
    elif cancel is not None:
        cancel.wait(seconds)
    else:
        _real_sleep(seconds)
    if cancel is not None and cancel.is_set():
        raise Cancelled()


class RateLimiters:
    """One limiter per (API key, endpoint), created on first use; shared by every source."""

    def __init__(
        self,
        limit: float,
        period: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._limit = limit
        self._period = period
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[tuple[object, str], RateLimiter] = {}
        self._lock = threading.Lock()

    def limiter(
        self, key: Secret | None, base_url: str, path: str, rate: float | None = None
    ) -> RateLimiter:
        """The limiter for requests to ``path`` made with ``key``, at ``rate`` requests per
        period (None: the limit these limiters were made with).

        A limiter is made on first use at the rate its first user asks for; the caller gives
        every user of one key the same rate (``Settings.rate_for``).
        """
        # The limit is per user, so the key (not the base URL) is what is shared.
        identity: object = key if key is not None else base_url
        limit = self._limit if rate is None else rate
        with self._lock:
            found = self._limiters.get((identity, path))
            if found is None or found.limit != limit:
                found = RateLimiter(limit, self._period, clock=self._clock, sleep=self._sleep)
                self._limiters[(identity, path)] = found
        return found

    def for_key(
        self,
        key: Secret | None,
        base_url: str,
        cancel: threading.Event | None = None,
        *,
        rate: float | None = None,
    ) -> Callable[[str], None]:
        """The ``acquire(path)`` function for requests made with ``key`` (at ``rate``).

        With ``cancel``, a request waiting for its slot stops (Cancelled) when a stop is asked.
        """

        def acquire(path: str) -> None:
            self.limiter(key, base_url, path, rate).acquire(cancel)

        return acquire
