"""Reading one source's job list into a snapshot: paging, de-duplication, completeness.

The API pages by offset over a list that changes while we read it, so a walk can show a job
twice or skip one. A snapshot is therefore only called *complete* when every page came back,
every record was usable, the count added up, and the list was verified stable: page 1 is read
again at the end and must show the same ``count`` and ids. When it moved, the walk is repeated
(a bounded number of times); the jobs of every walk are kept, each at its latest observation.
Only a complete snapshot may be used to conclude that a job is gone.

Stop rules of a walk: stop at the first empty or short page (pages after it are dropped), never
request more pages than page 1's ``count`` implies plus one, never more than a hard cap, and
fail when a page repeats the one before it (a server that ignores ``currentPage``).

Pages are read concurrently within those rules (``HttpSettings.page_concurrency`` at a time, all
under the key's rate limiter): page 1 tells ``count``, page 2 shows that the server honours
``currentPage``, and from page 3 on up to that many pages are in flight, never past the page
``count`` says is the last. Past it, and when there is no ``count``, pages are read one at a
time. Pages are consumed in page order whatever order they arrive in, so a walk yields the same
pages, and a snapshot holds the same jobs, as reading them one by one would.

One short page 1 is the whole list in one answer of the server: a consistent read that needs no
second look, so a source with fewer jobs than a page costs one request.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from jobsync.api.client import ApiClient
from jobsync.config import Source
from jobsync.domain.clock import Clock, utcnow
from jobsync.domain.records import ListPage, Snapshot, parse_list_data
from jobsync.errors import ProtocolError

__all__ = ["LIST_PATH", "fetch_snapshot", "iter_pages"]

log = logging.getLogger(__name__)

LIST_PATH = "/v2/vectordb/jobs/import/list"
MAX_PAGES = 20_000
MAX_WALKS = 3


@dataclass
class _Walk:
    # Counts, not the pages: a walk over a million jobs must not keep its 10,000 pages.
    pages: int = 0
    invalid: int = 0
    first_count: int | None = None
    first_ids: list[str] = field(default_factory=list)
    ended_cleanly: bool = False


def iter_pages(
    client: ApiClient,
    source: Source,
    page_size: int,
    *,
    clock: Clock = utcnow,
    max_pages: int = MAX_PAGES,
) -> Iterator[ListPage]:
    """Yield every page of one walk over the list, in page order, by the rules in the module doc.

    The client's ``http.page_concurrency`` pages at most are in flight at once; 1 reads one
    page after the other.
    """
    workers = client.http.page_concurrency
    first = _read_page(client, source, page_size, 1, clock)
    yield first
    if first.size < page_size:
        return
    limit, ahead = _bounds(first.count, page_size, max_pages)
    previous_ids = [r.job_id for r in first.records]
    pending: dict[int, Future[ListPage]] = {}
    pool: ThreadPoolExecutor | None = None
    requested = 1
    try:
        for number in itertools.count(2):
            if number > limit:
                if limit == max_pages:
                    raise ProtocolError(
                        f"stopped after the hard cap of {max_pages} pages: the server keeps "
                        "returning full pages"
                    )
                return  # count said we were done, plus the one extra page we allow
            # Read ahead only from page 3 on (page 2 shows whether the server honours
            # currentPage, before more than two requests are spent on one that does not), and
            # only as far as the page that count says is the last: short, or empty when count
            # is a multiple of the page size. Without a count, pages are read one at a time.
            last_ahead = min(ahead, number + workers - 1)
            if workers > 1 and number >= 3 and requested < last_ahead:
                if pool is None:
                    pool = ThreadPoolExecutor(workers, thread_name_prefix="jobsync-page")
                while requested < last_ahead:
                    requested += 1
                    pending[requested] = pool.submit(
                        _read_page, client, source, page_size, requested, clock
                    )
            future = pending.pop(number, None)
            if future is None:
                page = _read_page(client, source, page_size, number, clock)
                requested = max(requested, number)
            else:
                page = future.result()
            yield page
            if page.size < page_size:
                return  # pages read ahead of this one are dropped, unread
            ids = [r.job_id for r in page.records]
            if ids and ids == previous_ids:
                raise ProtocolError(
                    f"page {number} repeats page {number - 1}: the server seems to "
                    "ignore 'currentPage'"
                )
            previous_ids = ids
    finally:
        if pool is not None:
            # Pages not started are dropped; those in flight end with their request (or at
            # once with Cancelled when a stop was asked), so the client outlives them.
            pool.shutdown(wait=True, cancel_futures=True)


def _read_page(
    client: ApiClient, source: Source, page_size: int, number: int, clock: Clock
) -> ListPage:
    body = {**source.list_body(), "pageSize": page_size, "currentPage": number}
    data = client.call(LIST_PATH, body)
    # Stamped when the page arrived: a record is an observation at that moment.
    return parse_list_data(data, clock())


def _bounds(count: int | None, page_size: int, max_pages: int) -> tuple[int, int]:
    """(the last page we may request, the last page we may request before its predecessor
    came back full), from page 1's ``count``."""
    if count is None:
        return max_pages, 0
    needed = math.ceil(count / page_size)
    if needed > max_pages:
        raise ProtocolError(
            f"the server reports {count} jobs, more than the hard cap of "
            f"{max_pages} pages of {page_size} allows"
        )
    # One page more than count implies (the list may have grown), but never past the cap.
    limit = min(needed + 1, max_pages)
    return limit, limit if count % page_size == 0 else needed


def fetch_snapshot(
    client: ApiClient,
    source: Source,
    page_size: int,
    *,
    clock: Clock = utcnow,
    max_pages: int = MAX_PAGES,
    max_walks: int = MAX_WALKS,
) -> Snapshot:
    """Walk the list (re-walking while it moves) and return the de-duplicated snapshot."""
    if source.kind == "milvus":
        return _fetch_unpaged(client, source, clock)
    snapshot = Snapshot(source_key=source.key, started_at=clock(), finished_at=clock())
    for _ in range(max_walks):
        walk = _walk(client, source, page_size, snapshot, clock, max_pages)
        snapshot.walks += 1
        snapshot.finished_at = clock()
        if _verified(client, source, page_size, walk, snapshot, clock):
            snapshot.complete = snapshot.invalid == 0
            break
        log.info("%s: the job list moved while it was read; reading it again", source.name)
    return snapshot


def _fetch_unpaged(client: ApiClient, source: Source, clock: Clock) -> Snapshot:
    # Self-hosted Milvus has no paging: one answer holds every job, so it cannot move under us.
    snapshot = Snapshot(source_key=source.key, started_at=clock(), finished_at=clock())
    page = parse_list_data(client.call(LIST_PATH, source.list_body()), clock())
    snapshot.finished_at = clock()
    snapshot.walks = 1
    _take_page(snapshot, page, None)
    snapshot.complete = page.invalid == 0
    return snapshot


def _walk(
    client: ApiClient,
    source: Source,
    page_size: int,
    snapshot: Snapshot,
    clock: Clock,
    max_pages: int,
) -> _Walk:
    walk = _Walk()
    jobs = snapshot.jobs
    # On the first walk the snapshot holds exactly this walk's jobs, so it tells duplicates by
    # itself; a set of a million ids is kept only for a re-walk.
    seen_this_walk: set[str] | None = set() if jobs else None
    for page in iter_pages(client, source, page_size, clock=clock, max_pages=max_pages):
        if not walk.pages:
            walk.first_count = page.count
            walk.first_ids = [r.job_id for r in page.records]
        walk.pages += 1
        walk.invalid += page.invalid
        _take_page(snapshot, page, seen_this_walk)
    snapshot.reported_count = walk.first_count
    walk.ended_cleanly = True
    walk_distinct = len(jobs if seen_this_walk is None else seen_this_walk)
    if walk.first_count is not None and walk_distinct + walk.invalid != walk.first_count:
        walk.ended_cleanly = False
    return walk


def _take_page(snapshot: Snapshot, page: ListPage, seen: set[str] | None) -> None:
    """Count a page into the snapshot and add its jobs; ``seen``: the ids of this walk so far,
    or None when the snapshot holds exactly those (it began empty)."""
    jobs = snapshot.jobs
    snapshot.pages += 1
    snapshot.records += page.size
    snapshot.invalid += page.invalid
    for record in page.records:
        job_id = record.job_id
        if seen is None:
            if job_id in jobs:
                snapshot.duplicates += 1
        else:
            if job_id in seen:
                snapshot.duplicates += 1
            seen.add(job_id)
        # The later page (or walk) wins. Pages read concurrently may have arrived in another
        # order, but each record is true at its own observed_at; page order keeps the snapshot
        # deterministic.
        jobs[job_id] = record


def _verified(
    client: ApiClient,
    source: Source,
    page_size: int,
    walk: _Walk,
    snapshot: Snapshot,
    clock: Clock,
) -> bool:
    if not walk.ended_cleanly:
        return False
    # iter_pages stops after a short page 1, so one page covers that case too.
    if walk.pages <= 1:
        # One page is one answer of the server, a consistent read: nothing could move between
        # pages, so reading it again would tell us nothing (and would double the requests of
        # every source with fewer jobs than a page).
        return True
    body = {**source.list_body(), "pageSize": page_size, "currentPage": 1}
    again = parse_list_data(client.call(LIST_PATH, body), clock())
    snapshot.pages += 1
    snapshot.finished_at = clock()
    for record in again.records:
        snapshot.jobs[record.job_id] = record
    return again.count == walk.first_count and [r.job_id for r in again.records] == walk.first_ids
