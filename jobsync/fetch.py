"""Reading one source's job list into a snapshot: paging, de-duplication, completeness.

The API pages by offset over a list that changes while we read it, so a walk can show a job
twice or skip one. A snapshot is therefore only called *complete* when every page came back,
every record was usable, the count added up, and the list was verified stable: page 1 is read
again at the end and must show the same ``count`` and ids. When it moved, the walk is repeated
(a bounded number of times); the jobs of every walk are kept, each at its latest observation.
Only a complete snapshot may be used to conclude that a job is gone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from jobsync.client import ApiClient
from jobsync.config import Source
from jobsync.errors import ProtocolError
from jobsync.records import ListPage, Snapshot, parse_list_data

__all__ = ["LIST_PATH", "fetch_snapshot", "iter_pages"]

log = logging.getLogger(__name__)

LIST_PATH = "/v2/vectordb/jobs/import/list"
MAX_PAGES = 20_000
MAX_WALKS = 3

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Walk:
    pages: list[ListPage] = field(default_factory=list)
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
    """Yield every page of one walk over the list, stopping by the rules in the module doc."""
    previous_ids: list[str] | None = None
    limit = max_pages
    page_number = 1
    while True:
        if page_number > limit:
            if limit == max_pages:
                raise ProtocolError(
                    f"stopped after the hard cap of {max_pages} pages: the server keeps "
                    "returning full pages"
                )
            return  # count said we were done, plus the one extra page we allow
        body = {**source.list_body(), "pageSize": page_size, "currentPage": page_number}
        data = client.call(LIST_PATH, body)
        page = parse_list_data(data, clock())
        yield page
        if page.count is not None and page_number == 1:
            needed = math.ceil(page.count / page_size)
            if needed > max_pages:
                raise ProtocolError(
                    f"the server reports {page.count} jobs, more than the hard cap of "
                    f"{max_pages} pages of {page_size} allows"
                )
            limit = needed + 1
        if page.size < page_size:
            return
        ids = [r.job_id for r in page.records]
        if page_number > 1 and ids and ids == previous_ids:
            raise ProtocolError(
                f"page {page_number} repeats page {page_number - 1}: the server seems to "
                "ignore 'currentPage'"
            )
        previous_ids = ids
        page_number += 1


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
    snapshot.pages = snapshot.walks = 1
    snapshot.records = page.size
    snapshot.invalid = page.invalid
    for record in page.records:
        if record.job_id in snapshot.jobs:
            snapshot.duplicates += 1
        snapshot.jobs[record.job_id] = record
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
    seen_this_walk: set[str] = set()
    for page in iter_pages(client, source, page_size, clock=clock, max_pages=max_pages):
        if not walk.pages:
            walk.first_count = page.count
            walk.first_ids = [r.job_id for r in page.records]
        walk.pages.append(page)
        snapshot.pages += 1
        snapshot.records += page.size
        snapshot.invalid += page.invalid
        for record in page.records:
            if record.job_id in seen_this_walk:
                snapshot.duplicates += 1
            seen_this_walk.add(record.job_id)
            # A later page (or a later walk) is a newer observation of the same job.
            snapshot.jobs[record.job_id] = record
    snapshot.reported_count = walk.first_count
    walk.ended_cleanly = True
    walk_distinct = len(seen_this_walk)
    if walk.first_count is not None and walk_distinct + _invalid_in(walk) != walk.first_count:
        walk.ended_cleanly = False
    return walk


def _invalid_in(walk: _Walk) -> int:
    return sum(p.invalid for p in walk.pages)


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
    if len(walk.pages) <= 1 or walk.pages[0].size < page_size:
        # One page is one atomic answer from the server: nothing could move between pages.
        return True
    body = {**source.list_body(), "pageSize": page_size, "currentPage": 1}
    again = parse_list_data(client.call(LIST_PATH, body), clock())
    snapshot.pages += 1
    snapshot.finished_at = clock()
    for record in again.records:
        snapshot.jobs[record.job_id] = record
    return again.count == walk.first_count and [r.job_id for r in again.records] == walk.first_ids
