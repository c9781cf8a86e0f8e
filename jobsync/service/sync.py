"""One pass over each source: fetch a snapshot over HTTP, then write it in one transaction.

Fetching and storing meet here (and, for the progress requests beside the list, in
``jobsync.service.details``). All HTTP happens before the write
transaction opens, so a slow or failing API never holds a database lock; a pass that fails
leaves nothing behind but its ``sync_runs`` row (status ``failed``, redacted error text).
Progress details (``jobsync.api.details``) are fetched while the list is read, after a short
read of what the source's stored jobs need (``jobsync.service.details``); they never fail a
pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import Engine

from jobsync.api.client import ApiClient
from jobsync.api.details import DetailsOutcome
from jobsync.api.listing import fetch_snapshot
from jobsync.api.ratelimit import RateLimiters
from jobsync.config import Settings, Source
from jobsync.domain.clock import Clock, utcnow
from jobsync.errors import JobsyncError, LockedError, StorageError
from jobsync.service.budget import paced, shared_budget
from jobsync.service.details import PassDetails
from jobsync.service.early import EarlyWalk, EarlyWalks
from jobsync.service.notify import Notifier
from jobsync.storage.locking import SourceLocks, SyncLock, source_locks
from jobsync.storage.store import (
    PassCounts,
    abandon_stale_runs,
    apply_pass,
    checkpoint,
    fail_run,
    start_run,
    writes_serialised,
)

__all__ = ["PassResult", "sync_all", "sync_source"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PassResult:
    """How one pass over one source went."""

    source: str
    run_id: int | None  # None: the pass failed before its run could be recorded
    ok: bool
    complete: bool = False
    pages: int = 0
    jobs: int = 0
    counts: PassCounts | None = None
    retries: int = 0
    seconds: float = 0.0
    # Of ``seconds``, reading the job list (fetch_snapshot); the rest is mostly the write.
    fetch_seconds: float = 0.0
    error: JobsyncError | None = None
    details_requested: int = 0
    details_failed: int = 0

    def summary(self) -> str:
        if not self.ok:
            return f"{self.source}: failed: {self.error}"
        c = self.counts
        assert c is not None
        note = "" if self.complete else " (snapshot incomplete: nothing marked vanished)"
        details = ""
        if self.details_requested:
            failed = f" ({self.details_failed} failed)" if self.details_failed else ""
            details = f"{self.details_requested} details{failed}, "
        return (
            f"{self.source}: {self.jobs} jobs in {self.pages} pages, {c.new_jobs} new, "
            f"{c.changed_jobs} changed, {c.vanished_jobs} vanished, {self.retries} retries, "
            f"{details}{self.seconds:.1f}s{note}"
        )


def sync_source(
    engine: Engine,
    source: Source,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    sleep: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    rate_limit: Callable[[str], None] | None = None,
    write_lock: threading.Lock | None = None,
    lock: SyncLock | None = None,
    notifier: Notifier | None = None,
    early: EarlyWalk | None = None,
) -> PassResult:
    """Sync one source. API and storage errors are returned in the result, not raised.

    Setting ``cancel`` stops the pass before its next request; a pass already writing finishes.
    ``lock``: the sync lock the caller holds, checked once more before writing (a pass that
    finds it lost writes nothing: SupersededError). ``notifier`` decides the pass's
    notification events (``jobsync.service.notify``); delivering them is the caller's.
    ``early``: the source's list walk, begun before the pass (``jobsync.service.early``): the
    pass takes it over, with its client, instead of walking the list itself.
    """
    began = time.monotonic() if early is None else early.began
    try:
        run_id = start_run(engine, source.key, clock() if early is None else early.started_at)
    except StorageError as exc:
        return _failed(engine, source, None, exc, 0, began, clock)
    client = (
        ApiClient(
            source.base_url,
            source.api_key,
            settings.http,
            sleep=sleep,
            cancel=cancel,
            rate_limit=rate_limit,
        )
        if early is None
        else early.client
    )
    details = DetailsOutcome()

    def retries() -> int:
        """The list's retries and, once fetched, the details' (a failure records both)."""
        return client.retries + details.retries

    asking: PassDetails | None = None
    try:
        if settings.details:
            asking = PassDetails(
                engine, source, settings, clock, sleep, cancel, rate_limit, write_lock
            )
        fetch_began = time.monotonic() if early is None else early.began
        on_page = asking.plan.listed if asking is not None else None
        try:
            snapshot = (
                fetch_snapshot(client, source, settings.page_size, clock=clock, on_page=on_page)
                if early is None
                else early.snapshot(on_page)
            )
        except BaseException:
            if asking is not None:
                asking.abort()
            raise
        fetch_seconds = time.monotonic() - fetch_began
        if asking is not None:
            details = asking.finish(snapshot)
            # What chose the requests (each stored open job's state, the queue) is no help in
            # writing them: let it go before the write's own peak.
            asking = on_page = None
        if lock is not None:
            lock.check()
        with write_lock or nullcontext():
            counts = apply_pass(
                engine,
                source.key,
                run_id,
                snapshot,
                finished_at=clock(),
                retries=retries(),
                details=details.details,
                details_requested=details.requested,
                details_failed=details.failed,
                decide=notifier.pass_hook(source.key) if notifier is not None else None,
            )
    except JobsyncError as exc:
        failed = _failed(engine, source, run_id, exc, retries(), began, clock)
        _after_failure(engine, source, notifier, write_lock)
        return failed
    except BaseException as exc:
        # A bug or an interrupt: still leave a visible failed run, then let it propagate.
        fail_run(engine, run_id, clock(), f"{type(exc).__name__}: {exc}", retries())
        raise
    finally:
        client.close()
    result = PassResult(
        source=source.name,
        run_id=run_id,
        ok=True,
        complete=counts.complete,
        pages=snapshot.pages,
        jobs=snapshot.distinct_jobs,
        counts=counts,
        retries=retries(),
        seconds=time.monotonic() - began,
        fetch_seconds=fetch_seconds,
        details_requested=details.requested,
        details_failed=details.failed,
    )
    log.debug("%s", result.summary())
    return result


def _failed(
    engine: Engine,
    source: Source,
    run_id: int | None,
    error: JobsyncError,
    retries: int,
    began: float,
    clock: Clock,
) -> PassResult:
    if run_id is not None:
        fail_run(engine, run_id, clock(), str(error), retries)
    result = PassResult(
        source=source.name,
        run_id=run_id,
        ok=False,
        retries=retries,
        seconds=time.monotonic() - began,
        error=error,
    )
    log.debug("%s", result.summary())
    return result


def _after_failure(
    engine: Engine,
    source: Source,
    notifier: Notifier | None,
    write_lock: threading.Lock | None,
) -> None:
    """A failed pass may complete a streak worth telling (its own transaction, after fail_run)."""
    if notifier is not None:
        with write_lock or nullcontext():
            notifier.after_failure(engine, source.key)


def sync_all(
    engine: Engine,
    settings: Settings,
    *,
    sources: Sequence[Source] | None = None,
    clock: Clock = utcnow,
    sleep: Callable[[float], None] | None = None,
    cancel: threading.Event | None = None,
    limiters: RateLimiters | None = None,
    notifier: Notifier | None = None,
    replicas: bool = False,
    early: EarlyWalks | None = None,
) -> list[PassResult]:
    """One pass over every configured source (or over ``sources``); one failing never stops
    the others.

    Sources are synced concurrently (``http.max_concurrent_sources`` at a time) and requests
    that share an API key share one rate limiter. With ``replicas`` (daemons that share the
    database), they also share one budget per key with every other such process, through the
    database where it can hold one (PostgreSQL: ``jobsync.service.budget``); that costs two
    short transactions a request, which a lone ``jobsync sync`` does not pay. Each pass holds
    its source's lock (``jobsync.storage.locking``): a source whose lock another pass holds
    fails with LockedError, without a request; when that is every source, LockedError is raised.
    Results come back in the order of the sources. A long-lived caller passes its own
    ``limiters``, so that back-to-back passes share them.

    With notification targets (``settings.notify``, or a long-lived caller's ``notifier``), the
    passes decide notification events and, once they have all committed, what is due is
    delivered, by one process at a time; not after a stop was requested (the next run delivers).

    ``early``: list walks begun before the run, under their sources' locks (``begin_walks``);
    their passes take them over, and the run uses their rate limiters. The caller closes it.
    """
    chosen = list(settings.sources if sources is None else sources)
    if notifier is None and settings.notify.targets:
        notifier = Notifier(settings.notify, clock=clock)
    if early is not None and not early.matches(engine.url.database):
        early.close()  # they locked another file than the engine opens: not this run's
        early = None
    limiters = limiters or (
        early.limiters if early is not None else RateLimiters(settings.http.requests_per_second)
    )
    budget = shared_budget(engine, sleep) if replicas else None
    # SQLite has one writer at a time anyway; queueing here keeps a long write from running
    # another source into its busy timeout.
    write_lock = threading.Lock() if writes_serialised(engine) else None

    def one(source: Source) -> PassResult:
        walk = early.take(source.key) if early is not None else None
        if walk is None:
            return locked(source, None)
        try:
            return locked(source, walk)
        finally:
            walk.release()

    def locked(source: Source, walk: EarlyWalk | None) -> PassResult:
        # The source's lock for its own pass only: a run of a thousand sources holds at most
        # ``workers`` locks (and, on SQLite, lock files) at a time. An early walk holds it.
        try:
            with (
                source_locks(engine, [source.key])
                if walk is None
                else nullcontext(SourceLocks(held={source.key: SyncLock(walk.lost)}))
            ) as locks:
                lock = locks.held.get(source.key)
                if lock is None:
                    return _locked_out(source, _source_locked([source]))
                abandoned = abandon_stale_runs(engine, clock(), [source.key])
                if abandoned:
                    log.warning(
                        "%s: marked %d run(s) of a stopped process as abandoned",
                        source.name,
                        abandoned,
                    )
                return sync_source(
                    engine,
                    source,
                    settings,
                    clock=clock,
                    sleep=sleep,
                    cancel=cancel,
                    # With cancel, a request waiting for its slot is not sent after a stop.
                    rate_limit=paced(limiters, budget, source, settings.rate_for(source), cancel),
                    write_lock=write_lock,
                    lock=lock,
                    notifier=notifier,
                    early=walk,
                )
        except LockedError as exc:  # the database is being upgraded or pruned
            return _locked_out(source, str(exc))
        except StorageError as exc:
            return PassResult(source=source.name, run_id=None, ok=False, error=exc)

    workers = max(1, min(settings.http.max_concurrent_sources, len(chosen)))
    if workers == 1:
        results = [one(s) for s in chosen]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="jobsync-source") as pool:
            results = list(pool.map(one, chosen))
    refused = [r for r in results if r.run_id is None and isinstance(r.error, LockedError)]
    if chosen and len(refused) == len(results):
        # Nothing was synced: one line says why, as when the database was locked as a whole.
        first = str(refused[0].error)
        raise LockedError(
            first if len(chosen) == 1 or "upgraded" in first else _source_locked(chosen)
        )
    if notifier is not None and not (cancel is not None and cancel.is_set()):
        notifier.deliver_alone(engine, cancel)
    # The WAL back into the database file while no reader holds it (SQLite; see
    # docs/deployment.md): it must not keep growing beside readers that come and go.
    checkpoint(engine)
    return results


def _source_locked(sources: Sequence[Source]) -> str:
    names = ", ".join(repr(s.name) for s in sources)
    return (
        f"another jobsync sync is running on this database (it holds the lock of "
        f"{'source' if len(sources) == 1 else 'sources'} {names})"
    )


def _locked_out(source: Source, why: str) -> PassResult:
    return PassResult(source=source.name, run_id=None, ok=False, error=LockedError(why))
