"""One request budget per API key across every process that uses it (PostgreSQL).

The API allows 20 requests per second per key and endpoint, counted across every client. Inside
one process, ``jobsync.api.ratelimit`` paces the requests that share a key; daemons that share a
database and a key (replicas) also reserve each request's slot in the database
(``jobsync.storage.coordination``), spaced a little wider than the limit, wait for it, and then
take the right to go, counted at the moment they go: a request that wakes up late for its slot
(a busy machine) waits a little more instead of bunching up with the next. On SQLite there is no
shared budget: one daemon per database, and the in-process limiter is the budget. A lone
``jobsync sync`` takes no part either (``sync_all(replicas=False)``): two short transactions a
request would cost it more than its pages; crontab lines sharing a key each have their own
limiter.

The database sees a fingerprint of the key (a truncated SHA-256 of a fixed prefix and the
key), never the key itself.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from jobsync.api.ratelimit import RateLimiters, pause
from jobsync.config import Source
from jobsync.storage.coordination import replicas_possible, reserve_slot, take_send

__all__ = ["SharedBudget", "key_fingerprint", "paced", "shared_budget"]

# Requests go at least this much more than 1/limit apart: arrivals, not departures, are what
# the server counts. Any one second then holds at most floor(limit / 1.1) + 1 of them.
MARGIN = 0.1
# Attempts to go once the slot has come; past them a request goes anyway (a machine that busy
# is slow enough to stay under the limit by itself).
MAX_ATTEMPTS = 20


def key_fingerprint(source: Source) -> str:
    """What identifies the key's budget in the database: never the key itself."""
    identity = source.api_key.reveal() if source.api_key is not None else source.base_url
    return hashlib.sha256(b"jobsync rate budget\0" + identity.encode("utf-8")).hexdigest()[:32]


class SharedBudget:
    """Request slots reserved in the database, per key fingerprint and endpoint."""

    def __init__(self, engine: Engine, *, sleep: Callable[[float], None] | None = None) -> None:
        self._engine = engine
        self._sleep = sleep

    def acquire(
        self, fingerprint: str, path: str, rate: float, cancel: threading.Event | None
    ) -> None:
        """Wait for a slot of the key's shared budget (``rate`` requests per second) for
        ``path`` (Cancelled on a stop)."""
        interval = (1 + MARGIN) / rate
        wait = reserve_slot(self._engine, fingerprint, path, interval)
        if wait > 0:
            pause(wait, cancel, self._sleep)
        for _ in range(MAX_ATTEMPTS):
            wait = take_send(self._engine, fingerprint, path, interval)
            if wait <= 0 or self._sleep is not None:
                return
            pause(wait, cancel, self._sleep)


def shared_budget(
    engine: Engine, sleep: Callable[[float], None] | None = None
) -> SharedBudget | None:
    """The shared budget where processes may share the database (PostgreSQL), else None."""
    if not replicas_possible(engine):
        return None
    return SharedBudget(engine, sleep=sleep)


def paced(
    limiters: RateLimiters,
    budget: SharedBudget | None,
    source: Source,
    rate: float,
    cancel: threading.Event | None,
) -> Callable[[str], None]:
    """The ``acquire(path)`` of the source's requests at ``rate`` per second: the process's
    own limiter, then the budget shared with other processes, if any."""
    local = limiters.for_key(source.api_key, source.base_url, cancel, rate=rate)
    if budget is None:
        return local
    fingerprint = key_fingerprint(source)

    def acquire(path: str) -> None:
        local(path)
        budget.acquire(fingerprint, path, rate, cancel)

    return acquire
