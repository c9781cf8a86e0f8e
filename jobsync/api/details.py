"""Progress details: asking the progress endpoint about the jobs a pass chose.

Which jobs to ask about, and why only those: ``jobsync.service.details``.

Requests go out from a few threads at once, each with its own client, under the same per-key
rate limiter as the list (the limiter counts per endpoint, so details have their own budget).
Details are extras: a failing request is logged, counted and skipped, never a failed pass; a
rejected key, or three server failures in a row, stop the requests for the rest of the pass
rather than hammer a server that cannot answer; a stop request (SIGTERM) ends them too, and the
pass goes on to write what it has.

Servers name the endpoint differently: ``/describe`` (what the SDKs call), ``/getProgress``
(Zilliz Cloud only) and ``/get_progress`` (every Milvus). On HTTP 404 the next name is tried; the
one that answered is remembered per source for the life of the process.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsync.api.client import ApiClient
from jobsync.config import Source
from jobsync.domain.records import JobDetails, parse_progress_data
from jobsync.errors import ApiError, ApiStatusError, AuthError, Cancelled, TransportError
from jobsync.observability.redact import redact

__all__ = [
    "PROGRESS_PATHS",
    "DetailsOutcome",
    "PathMemory",
    "fetch_details",
    "progress_request",
]

log = logging.getLogger(__name__)

_JOBS = "/v2/vectordb/jobs/import"
PROGRESS_PATHS = (f"{_JOBS}/describe", f"{_JOBS}/getProgress", f"{_JOBS}/get_progress")
# Self-hosted Milvus never had getProgress.
MILVUS_PROGRESS_PATHS = (PROGRESS_PATHS[0], PROGRESS_PATHS[2])
# Server failures in a row after which a pass stops asking for details.
GIVE_UP_AFTER = 3
# Failed requests logged one by one per pass; the rest are summed up in one line.
LOGGED_FAILURES = 5


def progress_request(source: Source, job_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Body and extra headers of a progress request about ``job_id`` on ``source``."""
    body = {**source.list_body(), "jobId": job_id}
    # Milvus takes the database from a header; newer servers read the body's dbName too.
    headers = {"DB-Name": source.db_name} if source.kind == "milvus" and source.db_name else {}
    return body, headers


class PathMemory:
    """Which progress path answered, per API root and source, for the life of the process."""

    def __init__(self) -> None:
        self._paths: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def order(self, source: Source) -> tuple[str, ...]:
        """The paths to try for ``source``, the one that answered last time first."""
        paths = MILVUS_PROGRESS_PATHS if source.kind == "milvus" else PROGRESS_PATHS
        with self._lock:
            known = self._paths.get((source.base_url, source.key))
        if known is None:
            return paths
        return (known, *(p for p in paths if p != known))

    def remember(self, source: Source, path: str) -> None:
        with self._lock:
            self._paths[(source.base_url, source.key)] = path


KNOWN_PATHS = PathMemory()


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


def fetch_details(
    client: ApiClient,
    source: Source,
    job_ids: Sequence[str],
    *,
    concurrency: int,
    clock: Callable[[], datetime],
    cancel: threading.Event | None = None,
    memory: PathMemory = KNOWN_PATHS,
) -> DetailsOutcome:
    """Ask the progress endpoint about ``job_ids``; never raises for a failed request.

    ``client`` serves all ``concurrency`` threads at once, as it does the list's pages.
    """
    state = _Pass(source, memory, clock)
    if not job_ids:
        return state.outcome
    workers = max(1, min(concurrency, len(job_ids)))
    retries_before = client.retries

    def one(job_id: str) -> None:
        if state.stopped or (cancel is not None and cancel.is_set()):
            return
        _fetch_one(client, state, job_id)

    try:
        # The first request alone: it finds the path, so the others do not all meet the 404s.
        one(job_ids[0])
        if workers == 1:
            for job_id in job_ids[1:]:
                one(job_id)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="jobsync-details") as pool:
                list(pool.map(one, job_ids[1:]))
    finally:
        state.outcome.retries += client.retries - retries_before
    if state.logged > LOGGED_FAILURES:
        log.warning(
            "%s: %d more progress requests failed", source.name, state.logged - LOGGED_FAILURES
        )
    if state.outcome.ambiguous_times:
        log.warning(
            "%s: %d completeTime values had no time zone and were ignored",
            source.name,
            state.outcome.ambiguous_times,
        )
    return state.outcome


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
