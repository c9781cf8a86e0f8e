"""Progress details: which jobs to ask the progress endpoint about, and in what order.

The list shows a job's state and little else. The progress endpoint adds row counts, the file
size, the failure reason and the API's own ``completeTime``, one job per request, and has its
own rate budget: so a pass asks while it is still reading the list, and spends that budget where
the answer can be news.

- At once, before the first page: the stored open jobs that are due (never asked about, moved at
  their last ask, or last asked ``details_interval`` ago or more), least recently asked first;
  and the stored finished jobs that were last asked about before they finished (each finished
  job is asked about once after it finishes, never on every pass).
- As each page arrives, ahead of those: jobs new to the database that are open, jobs whose
  listed state (or listed progress) differs from the stored one (a job that finishes on this
  pass among them; if it was already asked about this pass, it is asked once more), and, on a
  source that has had a complete pass, jobs first listed already finished (they started and
  finished between passes). Never the already finished jobs of a source's very first pass: a
  first sync of 100,000 finished jobs must not make 100,000 requests.

At most ``details_cap`` requests per pass; while the list is still being read, the stored open
jobs may take only half of them, so that what the list reveals still finds room. An open job
that did not move is thus asked about once per interval, and a re-sync in which nothing changed
asks about nothing and writes nothing for details.

``DetailsPlan`` decides; ``PassDetails`` is one pass's asking, from the read of what the
database knows before the first page to the wait for the last answer, all of it before the
pass's write transaction. The requests themselves are ``jobsync.api.details``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Engine

from jobsync.api.client import ApiClient
from jobsync.api.details import DetailsFetcher, DetailsOutcome
from jobsync.config import Settings, Source
from jobsync.domain.clock import Clock
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.domain.states import is_terminal
from jobsync.errors import StorageError
from jobsync.storage.samples import KnownJob, KnownJobs
from jobsync.storage.store import load_known_jobs, stored_among

__all__ = ["DetailsPlan", "PassDetails", "due"]

log = logging.getLogger(__name__)

# Priority classes (smaller first): what the list shows is new or changed, then the rest.
NEWS = 0.0
ROUTINE = 1.0


def due(job: KnownJob, now: datetime, interval: float) -> bool:
    """Whether a stored open job is worth asking about before the list shows it changed."""
    return job.asked is None or job.moved or now - job.asked >= timedelta(seconds=interval)


class DetailsPlan:
    """Feeds a ``DetailsFetcher`` by the rules in the module doc, from the list's pages.

    ``stored``: which of some job ids the database holds (asked only about the ids of a page
    that are listed finished and not known otherwise, and only on a source that has had a
    complete pass).
    """

    def __init__(
        self,
        fetcher: DetailsFetcher,
        known: KnownJobs,
        stored: Callable[[Collection[str]], Collection[str]],
    ) -> None:
        self._fetcher = fetcher
        self._known = known
        self._stored = stored
        self._arrivals = 0
        self._offered: set[str] = set()
        # Set once the fetcher refuses news as coming too late for its budget: all later news
        # comes later still, so the pages need no more looking at.
        self._full = False
        for rank, (job_id, _job) in enumerate(known.due):
            if not fetcher.offer(job_id, (ROUTINE, float(rank))):
                break  # the rest were asked about more recently still
        for job_id in sorted(known.owed):
            self._news(job_id)

    def _news(self, job_id: str, *, again: bool = False) -> None:
        # A job the walk shows twice (pages move, a walk is repeated) is news once.
        if self._full or job_id in self._offered:
            return
        self._arrivals += 1
        if self._fetcher.offer(job_id, (NEWS, float(self._arrivals)), again=again):
            self._offered.add(job_id)
        else:
            self._full = True

    def listed(self, records: Sequence[JobRecord]) -> None:
        """A page arrived: queue what it shows to be news."""
        known = self._known
        unknown_finished: list[str] = []
        for record in records:
            if self._full:
                return
            job_id = record.job_id
            as_stored = known.open.get(job_id)
            if as_stored is not None:
                raw_state, progress = as_stored
                if record.raw_state != raw_state:
                    self._news(job_id, again=True)
                elif record.progress is not None and record.progress != progress:
                    self._news(job_id)
            elif job_id in known.owed:
                continue  # queued at once
            elif not is_terminal(record.raw_state):
                self._news(job_id)  # new, or listed open again
            elif known.had_complete:
                unknown_finished.append(job_id)
        if unknown_finished:
            try:
                stored_ids = self._stored(unknown_finished)
            except StorageError as exc:
                # Details never fail a pass: these few go unasked this time.
                log.warning("cannot tell which listed jobs are new: %s", exc)
                return
            for job_id in unknown_finished:
                if job_id not in stored_ids:
                    self._news(job_id)  # started and finished between two passes


# Fewer retries than the list gets: details are extras, and a pass waits for them.
DETAIL_RETRIES = 2


class PassDetails:
    """The progress requests of one pass, running beside its list (``DetailsPlan`` decides).

    Made before the first page is read: it reads what the database knows of the source's open
    jobs and queues the due ones at once; ``plan.listed`` queues what each page shows is news.
    All of it is HTTP and reads: it ends (``finish``) before the pass's write transaction.
    """

    def __init__(
        self,
        engine: Engine,
        source: Source,
        settings: Settings,
        clock: Clock,
        sleep: Callable[[float], None] | None,
        cancel: threading.Event | None,
        rate_limit: Callable[[str], None] | None,
        write_lock: threading.Lock | None,
    ) -> None:
        # Under the write lock: on SQLite even a read begins IMMEDIATE, and must not queue
        # behind another source's long write into the busy timeout.
        now, interval = clock(), settings.details_interval
        limit = settings.details_cap()
        with write_lock or nullcontext():
            known = load_known_jobs(
                engine, source.key, due=lambda job: due(job, now, interval), limit=limit
            )
        http = replace(settings.http, max_retries=min(settings.http.max_retries, DETAIL_RETRIES))
        self.client = ApiClient(
            source.base_url, source.api_key, http, sleep=sleep, cancel=cancel, rate_limit=rate_limit
        )
        self.fetcher = DetailsFetcher(
            self.client,
            source,
            limit=limit,
            concurrency=settings.details_concurrency,
            clock=clock,
            cancel=cancel,
            reserve=limit // 2,
        )

        def stored(job_ids: Collection[str]) -> Collection[str]:
            with write_lock or nullcontext():
                return stored_among(engine, source.key, job_ids)

        self.plan = DetailsPlan(self.fetcher, known, stored)
        self.fetcher.start()

    def abort(self) -> None:
        """The list failed: ask nothing more, and wait for the requests in flight."""
        try:
            self.fetcher.abort()
            self.fetcher.finish()
        finally:
            self.client.close()

    def finish(self, snapshot: Snapshot) -> DetailsOutcome:
        """Wait for the queued requests; keep the details of the jobs the snapshot lists (a
        job asked about before the list showed it may have left the list)."""
        try:
            outcome = self.fetcher.finish()
        finally:
            self.client.close()
        unlisted = [job_id for job_id in outcome.details if job_id not in snapshot.jobs]
        for job_id in unlisted:
            del outcome.details[job_id]
        return outcome
