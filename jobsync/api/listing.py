"""Reading one source's job list into a snapshot: paging, de-duplication, completeness.

The API pages by offset over a list that changes while we read it, so a walk can show a job
twice or skip one. Only a *complete* snapshot may be used to conclude that a job is gone, and
a snapshot is called complete only when it is proven to list every job that was listed both
when its walk began and when it ended: after the walk, the head of the list is read again,
and ``jobsync.domain.completeness`` decides from what the walk and the head showed (the list
stood still, or only new jobs arrived at its head). When the proof fails, the list is walked
again (a bounded number of times); the jobs of every walk are kept, each at its latest
observation, and the run records why the snapshot could not be proven complete.

Stop rules of a walk: stop at the first empty or short page (pages after it are dropped), never
request more pages than page 1's ``count`` implies plus one, never more than a hard cap, fail
when page 2 repeats page 1 (a server that ignores ``currentPage``), and stop, as
incomplete, after :data:`STALE_PAGES` full pages in a row that bring no job new to the walk (a
server that lists the same jobs forever).

Pages are read concurrently within those rules (``HttpSettings.page_concurrency`` at a time, all
under the key's rate limiter): page 1 tells ``count``, page 2 shows that the server honours
``currentPage``, and from page 3 on up to that many pages are in flight, never past the page
``count`` says is the last. Past it, and when there is no ``count``, pages are read one at a
time. Pages are consumed in page order whatever order they arrive in, so a walk yields the same
pages, and a snapshot holds the same jobs, as reading them one by one would.

Reading ahead starts only once two pages in a row took ``HttpSettings.read_ahead_after`` or
longer to come back. It hides the server's time behind ours, which pays when a request takes
tens of milliseconds (the Internet, the rate limiter); a server that answers in a millisecond
leaves nothing to hide, and the threads' hand-offs would cost more CPU than the wait they save.

One short page 1 is the whole list in one answer of the server: a consistent read that needs no
second look, so a source with fewer jobs than a page costs one request.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Collection, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from jobsync.api.client import ApiClient
from jobsync.config import Source
from jobsync.domain.clock import Clock, utcnow
from jobsync.domain.completeness import (
    Head,
    IdOrder,
    counted,
    stood_still_or_grew_at_the_head,
    walk_adds_up,
)
from jobsync.domain.records import JobRecord, ListPage, Snapshot, parse_list_data
from jobsync.errors import ProtocolError

__all__ = [
    "HEAD_PAGES",
    "LIST_PATH",
    "MAX_WALKS",
    "STALE_PAGES",
    "PageHook",
    "fetch_snapshot",
    "iter_pages",
]

log = logging.getLogger(__name__)

LIST_PATH = "/v2/vectordb/jobs/import/list"
MAX_PAGES = 20_000
MAX_WALKS = 3
# Full pages in a row with no job new to the walk, after which the walk stops as incomplete:
# a server that lists the same jobs forever must not keep a pass busy for 20,000 pages.
STALE_PAGES = 50
# Pages of the head read again after a walk, looking for the first job the walk saw.
HEAD_PAGES = 10


# Told the records of each page as it is taken (see fetch_snapshot).
PageHook = Callable[[Sequence[JobRecord]], None]


@dataclass
class _Walk:
    # Counts, not the pages: a walk over a million jobs must not keep its 10,000 pages.
    pages: int = 0
    invalid: int = 0
    first_count: int | None = None
    first_ids: list[str] = field(default_factory=list)
    distinct: int = 0
    # The ids the walk saw (a view of the snapshot's keys on a first walk: no copy).
    ids: Collection[str] = ()
    order: IdOrder = field(default_factory=IdOrder)
    stale_pages: int = 0
    # Why the walk stopped before the end of the list, if it did.
    cut: str | None = None


def iter_pages(
    client: ApiClient,
    source: Source,
    page_size: int,
    *,
    clock: Clock = utcnow,
    max_pages: int = MAX_PAGES,
) -> Generator[ListPage, None, None]:
    """Yield every page of one walk over the list, in page order, by the rules in the module doc.

    The client's ``http.page_concurrency`` pages at most are in flight at once; 1 reads one
    page after the other.
    """
    workers = client.http.page_concurrency
    # Two pages in a row, not one: a page the interpreter lock held back (another thread
    # importing, or writing) is slow once; a slow server or network makes every page slow.
    timer, slow_after = client.monotonic, client.http.read_ahead_after
    began = timer()
    first = _read_page(client, source, page_size, 1, clock)
    took = timer() - began
    slow = False
    yield first
    if first.size < page_size:
        return
    limit, ahead = _bounds(first.count, page_size, max_pages)
    first_ids = [r.job_id for r in first.records]
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
            if slow and workers > 1 and number >= 3 and requested < last_ahead:
                if pool is None:
                    pool = ThreadPoolExecutor(workers, thread_name_prefix="jobsync-page")
                while requested < last_ahead:
                    requested += 1
                    pending[requested] = pool.submit(
                        _read_page, client, source, page_size, requested, clock
                    )
            future = pending.pop(number, None)
            if future is None:
                began = timer()
                page = _read_page(client, source, page_size, number, clock)
                took, before = timer() - began, took
                slow = slow or min(took, before) >= slow_after
                requested = max(requested, number)
            else:
                page = future.result()
            yield page
            if page.size < page_size:
                return  # pages read ahead of this one are dropped, unread
            # Only page 2 is held against page 1: later, a page can repeat the one before it
            # when exactly a page of new jobs arrived between the two (and a server that
            # ignores currentPage shows itself on page 2).
            if number == 2 and page.records and [r.job_id for r in page.records] == first_ids:
                raise ProtocolError(
                    "page 2 repeats page 1: the server seems to ignore 'currentPage'"
                )
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
    on_page: PageHook | None = None,
) -> Snapshot:
    """Walk the list (again only while completeness cannot be proven) and return the
    de-duplicated snapshot, with the reason when it is not complete.

    ``on_page`` is given the records of each page as it is taken into the snapshot (a head
    read again and a second walk included), so that progress requests can start while the list
    is still being read.
    """
    hook = on_page or _no_hook
    if source.kind == "milvus":
        return _fetch_unpaged(client, source, clock, hook)
    snapshot = Snapshot(source_key=source.key, started_at=clock(), finished_at=clock())
    reason: str | None = None
    for walks in range(1, max_walks + 1):
        walk = _walk(client, source, page_size, snapshot, clock, max_pages, hook)
        snapshot.walks += 1
        snapshot.finished_at = clock()
        reason = walk.cut or counted(walk.first_count, walk.pages)
        if reason is not None:
            break  # walking again would meet the same server
        reason = _unproven(client, source, page_size, walk, snapshot, clock, hook)
        if reason is None:
            break
        if walks == max_walks:
            reason = f"{reason} (after {max_walks} walks)"
            break
        log.info("%s: %s; reading the list again", source.name, reason)
    if reason is None and snapshot.invalid:
        reason = f"{snapshot.invalid} record(s) had no usable job id"
    snapshot.complete = reason is None
    snapshot.incomplete_reason = reason
    return snapshot


def _no_hook(records: Sequence[JobRecord]) -> None:
    pass


def _fetch_unpaged(client: ApiClient, source: Source, clock: Clock, hook: PageHook) -> Snapshot:
    # Self-hosted Milvus has no paging: one answer holds every job, so it cannot move under us.
    snapshot = Snapshot(source_key=source.key, started_at=clock(), finished_at=clock())
    page = parse_list_data(client.call(LIST_PATH, source.list_body()), clock())
    snapshot.finished_at = clock()
    snapshot.walks = 1
    _take_page(snapshot, page, None, [r.job_id for r in page.records])
    hook(page.records)
    snapshot.complete = page.invalid == 0
    return snapshot


def _walk(
    client: ApiClient,
    source: Source,
    page_size: int,
    snapshot: Snapshot,
    clock: Clock,
    max_pages: int,
    hook: PageHook,
) -> _Walk:
    walk = _Walk()
    jobs = snapshot.jobs
    # On the first walk the snapshot holds exactly this walk's jobs, so it tells duplicates by
    # itself; a set of a million ids is kept only for a re-walk.
    # A dict, not a set: its keys keep the order in which this walk saw them.
    seen_this_walk: dict[str, None] | None = {} if jobs else None
    pages = iter_pages(client, source, page_size, clock=clock, max_pages=max_pages)
    try:
        for page in pages:
            if not walk.pages:
                walk.first_count = page.count
                walk.first_ids = [r.job_id for r in page.records]
            walk.pages += 1
            walk.invalid += page.invalid
            ids = [r.job_id for r in page.records]
            walk.order.take(ids, jobs if seen_this_walk is None else seen_this_walk)
            fresh = _take_page(snapshot, page, seen_this_walk, ids)
            hook(page.records)
            if fresh or not page.size:
                walk.stale_pages = 0
            else:
                walk.stale_pages += 1
                if walk.stale_pages >= STALE_PAGES:
                    walk.cut = (
                        f"{STALE_PAGES} full pages in a row brought no new job id: the server "
                        "seems to list the same jobs forever"
                    )
                    return walk
    finally:
        pages.close()  # a cut walk drops the pages read ahead
    snapshot.reported_count = walk.first_count
    walk.distinct = len(jobs if seen_this_walk is None else seen_this_walk)
    walk.ids = jobs.keys() if seen_this_walk is None else seen_this_walk.keys()
    # The order the proof is checked in (Snapshot.walk_order): this walk's, if it is not the
    # snapshot's own. A list of the ids, not the dict's keys: the dict (several times the
    # list's size) is freed with the walk.
    snapshot.walk_order = None if seen_this_walk is None else list(seen_this_walk)
    return walk


def _take_page(
    snapshot: Snapshot, page: ListPage, seen: dict[str, None] | None, ids: list[str]
) -> int:
    """Count a page into the snapshot and add its jobs; ``seen``: the ids of this walk so far,
    or None when the snapshot holds exactly those (it began empty); ``ids``: the page's job
    ids. Returns how many of the page's jobs are new to this walk (an id twice on one page is
    new once, then a duplicate)."""
    jobs = snapshot.jobs
    snapshot.pages += 1
    snapshot.records += page.size
    snapshot.invalid += page.invalid
    # Counted from sizes, a page at a time: this runs for every listed job.
    known = jobs if seen is None else seen
    before = len(known)
    if seen is not None:
        seen.update(dict.fromkeys(ids))
    # The later page (or walk) wins. Pages read concurrently may have arrived in another order,
    # but each record is true at its own observed_at; page order keeps the snapshot
    # deterministic.
    jobs.update(zip(ids, page.records, strict=True))
    new = len(known) - before
    snapshot.duplicates += len(ids) - new
    return new


def _unproven(
    client: ApiClient,
    source: Source,
    page_size: int,
    walk: _Walk,
    snapshot: Snapshot,
    clock: Clock,
    hook: PageHook,
) -> str | None:
    """None when the walk is proven complete (``jobsync.domain.completeness``); else why not.
    Reads the head of the list again unless the whole list came in one answer."""
    reason = walk_adds_up(walk.first_count, walk.distinct + walk.invalid)
    if reason is not None:
        return reason
    # iter_pages stops after a short page 1, so one page covers that case too.
    if walk.pages <= 1:
        # One page is one answer of the server, a consistent read: nothing could move between
        # pages, so reading it again would tell us nothing (and would double the requests of
        # every source with fewer jobs than a page).
        return None
    head = _read_head(client, source, page_size, walk, snapshot, clock, hook)
    return stood_still_or_grew_at_the_head(walk.first_count, walk.first_ids, walk.order, head)


def _read_head(
    client: ApiClient,
    source: Source,
    page_size: int,
    walk: _Walk,
    snapshot: Snapshot,
    clock: Clock,
    hook: PageHook,
) -> Head:
    """Read pages from 1 until one shows a job the walk saw (at most HEAD_PAGES of them).

    Each record read here is the latest observation of its job.
    """
    head = Head(known=walk.ids, order=walk.order)
    for number in range(1, HEAD_PAGES + 1):
        body = {**source.list_body(), "pageSize": page_size, "currentPage": number}
        page = parse_list_data(client.call(LIST_PATH, body), clock())
        snapshot.pages += 1
        snapshot.finished_at = clock()
        met = head.take(page.count, [r.job_id for r in page.records], first=number == 1)
        for record in page.records:
            snapshot.jobs[record.job_id] = record
        hook(page.records)
        if met or page.size < page_size:
            break
    else:
        head.new_out_of_place = True  # more new jobs than HEAD_PAGES pages: walk again
    snapshot.arrived_at_head.update(head.new)
    return head
