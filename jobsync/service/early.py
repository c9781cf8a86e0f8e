"""List walks begun while the storage layer loads: the start-up of ``jobsync sync``, hidden.

A one-shot ``jobsync sync`` spends its first few hundred milliseconds importing SQLAlchemy and
opening the database before a pass can send a request. On SQLite a pass's locks are files that
need none of that (``jobsync.storage.early``), so the command takes the locks of the first
sources it will sync (as many as it syncs at once) from the database URL and starts their list
walks; ``sync_all(early=...)`` then hands each walk to its pass instead of starting one.

Every rule of a pass still holds: no request before its source's lock is held (a source that
another pass holds gets no early walk, and its pass is refused as usual); pages a walk read
before its pass began planning progress details are handed to the plan when it exists
(``PageRelay``); all HTTP ends before the write transaction. On PostgreSQL, whose locks live in
a database session, and for any source without an early walk, a pass starts as usual.

This module must not import SQLAlchemy, directly or through another: it runs before it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime

from jobsync.api.client import ApiClient
from jobsync.api.listing import PageHook, fetch_snapshot
from jobsync.api.ratelimit import RateLimiters
from jobsync.config import Settings, Source
from jobsync.domain.clock import Clock, utcnow
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.errors import LockedError, StorageError
from jobsync.storage.early import pass_lock, ready_database, same_file

__all__ = ["EarlyWalk", "EarlyWalks", "PageRelay", "begin_walks"]


class PageRelay:
    """The page hook of a walk that began before its listener: pages are kept until
    ``attach``, which replays them to the listener in order; later pages go straight to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: list[Sequence[JobRecord]] = []
        self._hook: PageHook | None = None

    def __call__(self, records: Sequence[JobRecord]) -> None:
        with self._lock:
            if self._hook is None:
                self._kept.append(records)
                return
            hook = self._hook
        hook(records)

    def attach(self, hook: PageHook) -> None:
        with self._lock:
            # Under the lock: a page that arrives meanwhile waits, and comes after these.
            for records in self._kept:
                hook(records)
            self._kept = []
            self._hook = hook


@dataclass
class EarlyWalk:
    """One source's list walk, running under the source's lock until its pass takes it."""

    source: Source
    client: ApiClient
    # When the walk began: the pass began then (its run's started_at).
    started_at: datetime
    began: float
    # The held lock's check (``SyncLock``): a reason when it is known to be lost, else None.
    lost: Callable[[], str | None]
    relay: PageRelay
    cancel: threading.Event
    result: Future[Snapshot]
    _locks: ExitStack = field(repr=False)

    def snapshot(self, on_page: PageHook | None) -> Snapshot:
        """Wait for the walk (raising what it raised); ``on_page`` gets every page it read."""
        if on_page is not None:
            self.relay.attach(on_page)
        return self.result.result()

    def release(self, *, wait: bool = True) -> None:
        """Stop the walk if it still runs, close its client and let go of the source's lock.

        ``wait``: first let the walk end (it stops at its next request, or after a backoff it
        is in), so that no request of it is sent without the lock. Not after an interrupt:
        the process is ending, and a request in flight cannot outlive it.
        """
        self.cancel.set()
        try:
            if wait and not self.result.done():
                self.result.exception()
        finally:
            self.client.close()
            self._locks.close()


class EarlyWalks:
    """The walks ``begin_walks`` started, by source key, until their passes take them."""

    def __init__(
        self, database: str | None, limiters: RateLimiters, walks: dict[str, EarlyWalk]
    ) -> None:
        # The SQLite file whose locks the walks hold (None: no walk began).
        self.database = database
        self.limiters = limiters
        self._walks = walks
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._walks)

    def matches(self, database: str | None) -> bool:
        """Whether the engine's database (``engine.url.database``) is the one locked here."""
        return self.database is not None and same_file(self.database, database)

    def take(self, key: str) -> EarlyWalk | None:
        """The walk of source ``key``, now the caller's to release; None if it has none."""
        with self._lock:
            return self._walks.pop(key, None)

    def close(self, *, wait: bool = True) -> None:
        """Stop and release every walk no pass took (``wait``: see ``EarlyWalk.release``)."""
        with self._lock:
            left, self._walks = list(self._walks.values()), {}
        for walk in left:
            walk.release(wait=wait)


def begin_walks(settings: Settings, *, clock: Clock = utcnow) -> EarlyWalks:
    """Start the list walks of the sources ``sync_all`` begins with, each under its lock, where
    the database allows it (SQLite); the walks share one set of rate limiters, which the run
    must use too (``EarlyWalks.limiters``).

    A source whose lock cannot be taken gets no walk: its pass takes or is refused the lock
    later, and says so as it always does.
    """
    limiters = RateLimiters(settings.http.requests_per_second)
    walks: dict[str, EarlyWalk] = {}
    database = ready_database(settings.database_url)
    if database is not None:
        for source in settings.sources[: max(1, settings.http.max_concurrent_sources)]:
            walk = _begin(settings, database, source, limiters, clock)
            if walk is not None:
                walks[source.key] = walk
    return EarlyWalks(database, limiters, walks)


def _begin(
    settings: Settings, database: str, source: Source, limiters: RateLimiters, clock: Clock
) -> EarlyWalk | None:
    locks = ExitStack()
    try:
        lost = locks.enter_context(pass_lock(database, source.key))
    except (LockedError, StorageError):
        locks.close()
        return None
    cancel = threading.Event()
    client = ApiClient(
        source.base_url,
        source.api_key,
        settings.http,
        # Backoffs sleep as a pass's own do (time.sleep, looked up when called); the walk
        # stops at its next request once cancelled.
        sleep=lambda seconds: time.sleep(seconds),
        cancel=cancel,
        rate_limit=limiters.for_key(
            source.api_key, source.base_url, cancel, rate=settings.rate_for(source)
        ),
    )
    relay = PageRelay()
    result: Future[Snapshot] = Future()
    walk = EarlyWalk(
        source=source,
        client=client,
        started_at=clock(),
        began=time.monotonic(),
        lost=lost,
        relay=relay,
        cancel=cancel,
        result=result,
        _locks=locks,
    )

    def run() -> None:
        try:
            result.set_result(
                fetch_snapshot(client, source, settings.page_size, clock=clock, on_page=relay)
            )
        except BaseException as exc:  # handed to the pass, which records or re-raises it
            result.set_exception(exc)

    # A daemon thread: an interrupted command must not wait for a walk nobody will take.
    threading.Thread(target=run, name=f"jobsync-early-{source.name}", daemon=True).start()
    return walk
