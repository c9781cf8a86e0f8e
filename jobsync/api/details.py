"""Progress details: asking the progress endpoint about the jobs a pass chose.

Which jobs to ask about, and why only those: ``jobsync.service.details``.

Requests go out from a few threads at once while the list is still being read, under the same
per-key rate limiters as the list (one per endpoint, so details have their own budget): a pass
takes about as long as the larger of the two, not their sum.
Details are extras: a failing request is logged, counted and skipped, never a failed pass; a
rejected key, or three server failures in a row, stop the requests for the rest of the pass
rather than hammer a server that cannot answer; a stop request (SIGTERM) ends them too, and the
pass goes on to write what it has.

Servers name the endpoint differently; which name to try first, and each request's body:
``jobsync.api.progress``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from jobsync.api.client import ApiClient
from jobsync.api.progress import KNOWN_PATHS, PathMemory, progress_request
from jobsync.config import Source
from jobsync.domain.records import JobDetails, parse_progress_data
from jobsync.domain.states import is_terminal
from jobsync.errors import ApiError, ApiStatusError, AuthError, Cancelled, TransportError
from jobsync.observability.redact import redact

__all__ = ["DetailsFetcher", "DetailsOutcome"]

log = logging.getLogger(__name__)

# Server failures in a row after which a pass stops asking for details.
GIVE_UP_AFTER = 3
# Failed requests logged one by one per pass; the rest are summed up in one line.
LOGGED_FAILURES = 5
# The queue is pruned when it grows beyond twice what the last pruning kept, plus this.
PRUNE_SLACK = 64


@dataclass
class DetailsOutcome:
    """The details one pass fetched, and how the asking went."""

    details: dict[str, JobDetails] = field(default_factory=dict)
    requested: int = 0
    failed: int = 0
    # completeTime values without an offset, dropped rather than guessed at.
    ambiguous_times: int = 0
    retries: int = 0
    stopped: str | None = None


class _Pass:
    """Shared state of one pass's detail requests (threads report here under one lock)."""

    def __init__(self, source: Source, memory: PathMemory, clock: Callable[[], datetime]) -> None:
        self.source = source
        self.memory = memory
        self.clock = clock
        self.outcome = DetailsOutcome()
        self.lock = threading.Lock()
        self.server_failures = 0
        self.logged = 0

    @property
    def stopped(self) -> bool:
        return self.outcome.stopped is not None

    def stop(self, why: str) -> None:
        with self.lock:
            if self.outcome.stopped is None:
                self.outcome.stopped = why
                log.warning("%s: no more progress requests this pass: %s", self.source.name, why)

    def succeeded(self, details: JobDetails) -> None:
        with self.lock:
            self.outcome.requested += 1
            known = self.outcome.details.get(details.job_id)
            # A job asked about twice keeps the later answer.
            if known is None or known.sampled_at <= details.sampled_at:
                self.outcome.details[details.job_id] = details
            self.outcome.ambiguous_times += details.ambiguous_time
            self.server_failures = 0

    def failed(self, job_id: str, error: ApiError) -> None:
        with self.lock:
            self.outcome.requested += 1
            self.outcome.failed += 1
            if isinstance(error, TransportError) or (
                isinstance(error, ApiStatusError) and error.http_status >= 429
            ):
                self.server_failures += 1
            give_up = self.server_failures >= GIVE_UP_AFTER
            self.logged += 1
            if self.logged <= LOGGED_FAILURES:
                log.warning(
                    "%s: progress of job %s: %s", self.source.name, job_id, redact(str(error))
                )
        if isinstance(error, AuthError):
            self.stop("the API key was rejected")
        elif give_up:
            self.stop(f"{GIVE_UP_AFTER} progress requests in a row failed")


class DetailsFetcher:
    """Asks about jobs as they are offered, while the pass is still reading its list.

    ``offer`` queues a job with a priority (smaller first; ties by arrival); ``concurrency``
    threads take the best queued job each time one of them is free, so jobs offered late but
    more urgent overtake the ones queued early. At most ``limit`` requests go in all. While the
    list is still being read (before ``close``), jobs of a priority class above 0 may take only
    ``limit - reserve`` of them, so the jobs the list is yet to reveal (class 0: new or changed)
    still find room. A job is asked about once, or twice when ``offer(..., again=True)`` says the
    list showed it change after it was asked. ``finish`` waits for the queue to run dry and
    returns the outcome; it never raises for a failed request.

    Until a source (or another of its API root) has found the progress path, the first request
    goes alone, so that the others do not all meet the 404s. ``client`` serves every thread at
    once, as it does the list's pages.
    """

    def __init__(
        self,
        client: ApiClient,
        source: Source,
        *,
        limit: int,
        concurrency: int,
        clock: Callable[[], datetime],
        cancel: threading.Event | None = None,
        memory: PathMemory = KNOWN_PATHS,
        reserve: int = 0,
    ) -> None:
        self._client = client
        self._state = _Pass(source, memory, clock)
        self._limit = limit
        self._reserve = min(reserve, limit)
        self._workers = max(1, concurrency)
        self._cancel = cancel
        self._queue: list[tuple[tuple[float, ...], int, str, bool]] = []
        self._seq = itertools.count()
        self._taken: set[str] = set()
        self._again: set[str] = set()
        self._in_flight: set[str] = set()
        # Offers to ask again about a job whose first request is still in flight.
        self._deferred: dict[str, tuple[tuple[float, ...], int, str, bool]] = {}
        # Offers of this priority or worse can never be asked about (``_prune``); the queue is
        # pruned when it grows beyond ``_prune_at``, so it holds about twice the budget at most
        # however many jobs a pass could ask about.
        self._cutoff: tuple[float, ...] | None = None
        self._prune_at = 2 * limit + PRUNE_SLACK
        self._started = 0
        self._closed = False
        self._wake = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._retries_before = client.retries
        self._first_done = False
        self._aborted = False

    def offer(self, job_id: str, priority: tuple[float, ...], *, again: bool = False) -> bool:
        """Queue ``job_id``; ``again``: ask about it again if it was already asked about.

        False when it can never be asked about: the queue holds enough better jobs to spend
        what is left of the budget (so will it for any later offer of this priority or worse).
        """
        with self._wake:
            if job_id in self._taken and not (again and job_id not in self._again):
                return True
            if self._cutoff is not None and priority >= self._cutoff:
                return False
            heapq.heappush(self._queue, (priority, next(self._seq), job_id, again))
            if len(self._queue) > self._prune_at:
                self._prune()
            self._wake.notify()
            return True

    def _prune(self) -> None:
        """Drop the queued jobs that can never be asked about (called with the condition held).

        Walking the queue best first: a job not yet asked about, met for the first time, will
        take one request when its turn comes (or took one already, if another of its offers
        came first). Once there are as many of them as requests left, nothing after them can
        ever be asked: that priority becomes the cutoff. Offers that ``_take`` would skip
        (``_asked_enough``, or a second plain offer of one job) go too; offers to ask again
        stay.
        """
        left = self._limit - self._started
        kept: list[tuple[tuple[float, ...], int, str, bool]] = []
        first: set[str] = set()
        if left <= 0:
            self._cutoff = ()  # every priority is at least the empty one
        for entry in sorted(self._queue) if left > 0 else ():
            priority, _, job_id, again = entry
            if job_id in self._taken:
                if not self._asked_enough(job_id, again):
                    kept.append(entry)  # may be asked again, as its first answer decides
                continue
            if job_id in first:
                if again:
                    kept.append(entry)
                continue
            first.add(job_id)
            kept.append(entry)
            left -= 1
            if left == 0:
                # A later offer of this priority comes after this one: never its turn.
                self._cutoff = priority
                break
        heapq.heapify(kept)
        self._queue = kept
        self._prune_at = 2 * len(kept) + PRUNE_SLACK

    def start(self) -> None:
        """Begin asking (after the first offers, so that the first request is the best)."""
        with self._wake:
            if not self._threads:
                if self._state.memory.known(self._state.source) is not None:
                    self._first_done = True  # the path is known: no need to go alone
                    self._spawn(self._workers)
                else:
                    self._spawn(1)

    def abort(self) -> None:
        """Ask about nothing more (the requests in flight end on their own)."""
        with self._wake:
            self._aborted = True
            self._closed = True
            self._wake.notify_all()

    def close(self) -> None:
        """No more offers: the list has been read."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()

    def finish(self) -> DetailsOutcome:
        """Close, wait until every queued job was asked about (or asking stopped), and tell."""
        self.start()  # for the jobs offered after the last page, if none came before
        self.close()
        while True:
            with self._wake:
                threads = list(self._threads)
            for thread in threads:
                thread.join()
            with self._wake:
                if len(self._threads) == len(threads):
                    break
        state = self._state
        state.outcome.retries += self._client.retries - self._retries_before
        name = state.source.name
        if state.logged > LOGGED_FAILURES:
            log.warning(
                "%s: %d more progress requests failed", name, state.logged - LOGGED_FAILURES
            )
        if state.outcome.ambiguous_times:
            log.warning(
                "%s: %d completeTime values had no time zone and were ignored",
                name,
                state.outcome.ambiguous_times,
            )
        return state.outcome

    def _spawn(self, count: int) -> None:
        # Called with the condition held.
        for _ in range(count):
            thread = threading.Thread(
                target=self._work, name=f"jobsync-details-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _done(self) -> bool:
        return (
            self._started >= self._limit
            or self._aborted
            or self._state.stopped
            or (self._cancel is not None and self._cancel.is_set())
        )

    def _asked_enough(self, job_id: str, again: bool) -> bool:
        """Whether a queued job needs no request (called with the condition held)."""
        if job_id not in self._taken:
            return False
        if not again or job_id in self._again:
            return True
        # Asked again only if the first answer did not already show it finished.
        with self._state.lock:
            first = self._state.outcome.details.get(job_id)
        return first is not None and is_terminal(first.raw_state)

    def _take(self) -> str | None:
        """The best job to ask about next; None when there is nothing more to do."""
        with self._wake:
            while True:
                if self._done():
                    self._wake.notify_all()
                    return None
                queue = self._queue
                while queue:
                    _, _, head, again = queue[0]
                    if again and head in self._in_flight and head not in self._again:
                        # Decide once its first answer is in (see _asked_enough).
                        self._deferred[head] = heapq.heappop(queue)
                    elif self._asked_enough(head, again):
                        heapq.heappop(queue)
                    else:
                        break
                held_back = (
                    not self._closed
                    and bool(queue)
                    and queue[0][0][0] > 0
                    and self._started >= self._limit - self._reserve
                )
                if queue and not held_back:
                    _, _, job_id, again = heapq.heappop(queue)
                    if job_id in self._taken and again:
                        self._again.add(job_id)
                    self._taken.add(job_id)
                    self._in_flight.add(job_id)
                    self._started += 1
                    return job_id
                if self._closed and not queue and not self._deferred:
                    return None
                self._wake.wait()

    def _work(self) -> None:
        while (job_id := self._take()) is not None:
            _fetch_one(self._client, self._state, job_id)
            with self._wake:
                self._in_flight.discard(job_id)
                waiting = self._deferred.pop(job_id, None)
                if waiting is not None:
                    heapq.heappush(self._queue, waiting)
                if not self._first_done:
                    self._first_done = True
                    self._spawn(self._workers - 1)
                self._wake.notify_all()


def _fetch_one(client: ApiClient, state: _Pass, job_id: str) -> None:
    source = state.source
    body, headers = progress_request(source, job_id)
    missing: list[str] = []
    for path in state.memory.order(source):
        try:
            data = client.call(path, body, headers)
            details = parse_progress_data(data, job_id, state.clock())
        except Cancelled:
            state.stop("stopped on request")
            return
        except ApiStatusError as exc:
            if exc.http_status == 404 and not isinstance(exc, AuthError):
                missing.append(path)
                continue
            if exc.http_status == 200:
                # An error envelope (e.g. job not found) still shows the endpoint is there.
                state.memory.remember(source, path)
            state.failed(job_id, exc)
            return
        except ApiError as exc:
            state.failed(job_id, exc)
            return
        state.memory.remember(source, path)
        state.succeeded(details)
        return
    error = ApiStatusError(
        f"no progress endpoint answered: {', '.join(missing)} gave HTTP 404", http_status=404
    )
    state.failed(job_id, error)
    state.stop("the server has no progress endpoint")
