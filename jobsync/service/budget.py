"""One request budget per API key across every process that uses it (PostgreSQL).

The API allows 20 requests per second per key and endpoint, counted across every client.
Inside one process, ``jobsync.api.ratelimit`` paces the requests that share a key; processes
that share a database and a key (replicas, crontab lines) also reserve each request's slot in
the database (``jobsync.storage.coordination.reserve_slot``), spaced a little wider than the
limit, and wait for it. A request that wakes up late for its slot (a busy machine) takes a
new one instead of bunching up with the requests after it. On SQLite there is no shared
budget: one daemon per database, and the in-process limiter is the budget.

The database sees a fingerprint of the key (a truncated SHA-256 of a fixed prefix and the
key), never the key itself.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from jobsync.api.ratelimit import RateLimiters, pause
from jobsync.config import Source
from jobsync.storage.coordination import replicas_possible, reserve_slot

__all__ = ["SharedBudget", "key_fingerprint", "paced", "shared_budget"]

# Slots are this much wider than the limit: arrivals, not departures, are what is counted.
MARGIN = 0.1
# A request that starts later than this share of an interval after its slot takes a new slot.
# With slots 1.1/limit apart and no request more than one interval late, any one second holds
# at most (1 + 1.1/limit) / (1.1/limit) slots' requests: under the limit.
LATE = 1.0
# Past that many late wake-ups in a row, a request goes anyway (a machine that busy is slow
# enough to stay under the limit by itself).
MAX_ATTEMPTS = 8


def key_fingerprint(source: Source) -> str:
    """What identifies the key's budget in the database: never the key itself."""
    identity = source.api_key.reveal() if source.api_key is not None else source.base_url
    return hashlib.sha256(b"jobsync rate budget\0" + identity.encode("utf-8")).hexdigest()[:32]


class SharedBudget:
    """Request slots reserved in the database, per key fingerprint and endpoint."""

    def __init__(
        self,
        engine: Engine,
        requests_per_second: float,
        *,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self.interval = (1 + MARGIN) / requests_per_second
        self._sleep = sleep
        self._clock = clock

    def acquire(self, fingerprint: str, path: str, cancel: threading.Event | None) -> None:
        """Wait for a slot of the key's shared budget for ``path`` (Cancelled on a stop)."""
        for _ in range(MAX_ATTEMPTS):
            wait = reserve_slot(self._engine, fingerprint, path, self.interval)
            due = self._clock() + wait
            if wait > 0:
                pause(wait, cancel, self._sleep)
            if self._sleep is not None or self._clock() - due <= LATE * self.interval:
                return


def shared_budget(
    engine: Engine, requests_per_second: float, sleep: Callable[[float], None] | None = None
) -> SharedBudget | None:
    """The shared budget where processes may share the database (PostgreSQL), else None."""
    if not replicas_possible(engine):
        return None
    return SharedBudget(engine, requests_per_second, sleep=sleep)


def paced(
    limiters: RateLimiters,
    budget: SharedBudget | None,
    source: Source,
    cancel: threading.Event | None,
) -> Callable[[str], None]:
    """The ``acquire(path)`` of the source's requests: the process's own limiter, then the
    budget shared with other processes, if any."""
    local = limiters.for_key(source.api_key, source.base_url, cancel)
    if budget is None:
        return local
    fingerprint = key_fingerprint(source)

    def acquire(path: str) -> None:
        local(path)
        budget.acquire(fingerprint, path, cancel)

    return acquire
