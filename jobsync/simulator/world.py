"""The simulated world: one import-job list per cluster, and the mutations tests drive.

Faithful to the Zilliz Cloud / Milvus job model: string ids that look like Milvus int64 ids and
grow with creation time, the state machine Pending -> Importing -> Completed | Failed, integer
progress (a failed job's progress drops to 0, as Milvus reports it), a reason only on failure, and
finished jobs dropping out of the list `retention` after they finish.

Deliberately different: one file per job (the real API allows several); row counts and file
sizes are derived from the job id instead of being stored, to keep a million jobs small; a job
removed by retention or `remove_jobs` is gone from the progress endpoint too; `advance()` moves a
job exactly one state per call, where a real job can skip Importing between two polls.

Performance: each cluster keeps its jobs in one Python list in creation order, so a newest-first
page is an O(page size) reverse slice and a job is found by bisecting on its id (ids are fixed
width and increasing). Retention is applied by a sweep that runs only when the earliest expiry
has passed, so a request costs O(1) for it unless a job actually aged out.
"""

from __future__ import annotations

import bisect
import gc
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from itertools import accumulate

from .model import (
    COMPLETED,
    COMPLETED_LIKE,
    FAILED,
    FAILED_LIKE,
    IMPORTING,
    IMPORTING_LIKE,
    PENDING,
    PENDING_LIKE,
    TERMINAL_STATES,
    SimJob,
    StateChange,
)

DEFAULT_INITIAL_STATES: Mapping[str, float] = {
    PENDING: 20,
    IMPORTING: 30,
    COMPLETED: 40,
    FAILED: 10,
}
FAILURE_RATIO = 0.2

COLLECTIONS = (
    "products",
    "articles_2024",
    "image_embeddings",
    "support_faq",
    "user_profiles",
    "docs_v2",
    "audio_clips",
    "reviews",
)
FAILURE_REASONS = (
    "failed to parse parquet file: unexpected end of file",
    "the dimension of field 'vector' (768) does not match the schema (1024)",
    "the field 'id' is missing from the file",
    "failed to read object: access denied by the storage service",
    "import rejected: the cluster is out of capacity",
)

# Where advance() moves a job; None means it finishes (Failed FAILURE_RATIO of the time).
_STEPS: Mapping[str, str | None] = {PENDING: IMPORTING, IMPORTING: None, "InProgress": None}
_SPACING = timedelta(seconds=10)  # between the creation times of the initial jobs
_DURATIONS = tuple(timedelta(seconds=30 + 29 * i) for i in range(32))  # initial jobs' run times
_ROW_BYTES = 3_100  # a 768-d float32 vector plus an id and a little metadata


class Job:
    """Mutable internal record; `SimJob` is its public snapshot."""

    __slots__ = (
        "collection_name",
        "created_at",
        "finished_at",
        "job_id",
        "progress",
        "reason",
        "state",
    )

    def __init__(self, job_id: str, collection_name: str, created_at: datetime) -> None:
        self.job_id = job_id
        self.collection_name = collection_name
        self.created_at = created_at
        self.state = PENDING
        self.progress = 0
        self.reason = ""
        self.finished_at: datetime | None = None

    @property
    def total_rows(self) -> int:
        return 1_000 + int(self.job_id[-7:]) % 2_000_000

    @property
    def imported_rows(self) -> int:
        return self._imported(self.total_rows)

    def _imported(self, total_rows: int) -> int:
        if self.state in COMPLETED_LIKE:
            return total_rows
        if self.state in FAILED_LIKE:
            return 0
        return total_rows * self.progress // 100

    @property
    def file_size(self) -> int:
        return self.total_rows * _ROW_BYTES

    @property
    def file_name(self) -> str:
        return f"{self.collection_name}/part-{self.job_id[-6:]}.parquet"

    def snapshot(self, cluster_id: str) -> SimJob:
        total_rows = self.total_rows  # derived, and snapshots of a million jobs add up
        return SimJob(
            cluster_id=cluster_id,
            job_id=self.job_id,
            collection_name=self.collection_name,
            state=self.state,
            progress=self.progress,
            reason=self.reason,
            created_at=self.created_at,
            finished_at=self.finished_at,
            file_name=self.file_name,
            file_size=total_rows * _ROW_BYTES,
            total_rows=total_rows,
            imported_rows=self._imported(total_rows),
        )


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Creating a million acyclic objects triggers hundreds of full collections that find
    nothing, so jobs are built and copied with the collector paused (and then left as it was)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _job_id(job: Job) -> str:
    return job.job_id


class Cluster:
    """One cluster's job list, oldest first (so appending a new job keeps it ordered)."""

    __slots__ = ("cluster_id", "held", "jobs", "next_expiry")

    def __init__(self, cluster_id: str) -> None:
        self.cluster_id = cluster_id
        self.jobs: list[Job] = []
        self.held: set[str] = set()  # ids of jobs advance() leaves where they are
        self.next_expiry: datetime | None = None  # earliest finished_at + retention, or None

    def newest_first(self, start: int, stop: int) -> list[Job]:
        """The jobs at newest-first positions [start, stop)."""
        n = len(self.jobs)
        hi, lo = n - start, max(0, n - stop)
        return self.jobs[lo:hi][::-1] if lo < hi else []

    def index_of(self, job_id: str) -> int | None:
        i = bisect.bisect_left(self.jobs, job_id, key=_job_id)
        return i if i < len(self.jobs) and self.jobs[i].job_id == job_id else None

    def find(self, job_id: str) -> Job | None:
        i = self.index_of(job_id)
        return None if i is None else self.jobs[i]

    def note_finished(self, expiry: datetime) -> None:
        if self.next_expiry is None or expiry < self.next_expiry:
            self.next_expiry = expiry

    def sweep(self, now: datetime, retention: timedelta | None) -> None:
        """Drop jobs finished at least `retention` ago; O(1) unless one is due."""
        if retention is None or self.next_expiry is None or now < self.next_expiry:
            return
        cutoff = now - retention
        self.jobs = [j for j in self.jobs if j.finished_at is None or j.finished_at > cutoff]
        earliest = min(
            (j.finished_at for j in self.jobs if j.finished_at is not None), default=None
        )
        self.next_expiry = None if earliest is None else earliest + retention


class World:
    """All clusters plus the deterministic random source; not thread-safe (the Simulator locks)."""

    def __init__(
        self,
        cluster_ids: Sequence[str],
        jobs: int,
        *,
        seed: int,
        now: datetime,
        retention: timedelta | None,
        initial_states: Mapping[str, float] | None,
    ) -> None:
        if not cluster_ids:
            raise ValueError("at least one cluster id is needed")
        if len(set(cluster_ids)) != len(cluster_ids):
            raise ValueError("cluster ids must be unique")
        if jobs < 0:
            raise ValueError("jobs must be >= 0")
        self.rng = random.Random(seed)
        self.retention = retention
        self.failure_ratio = FAILURE_RATIO
        self.clusters = {cid: Cluster(cid) for cid in cluster_ids}
        self.change_log: list[StateChange] = []
        # Milvus takes job ids from its timestamp oracle: 18 digits, growing with creation time.
        self._last_id = 448_000_000_000_000_000 + self.rng.randrange(10**15)
        weights = dict(initial_states if initial_states is not None else DEFAULT_INITIAL_STATES)
        with _collector_paused():
            for cluster in self.clusters.values():
                self._populate(cluster, jobs, now, weights)

    # -- queries ------------------------------------------------------------------------------

    @property
    def first_cluster_id(self) -> str:
        return next(iter(self.clusters))

    def cluster(self, cluster_id: str, now: datetime) -> Cluster:
        """The cluster with retention applied as of `now`; KeyError if not configured."""
        cluster = self.clusters[cluster_id]
        cluster.sweep(now, self.retention)
        return cluster

    def snapshot(self, cluster_id: str, now: datetime) -> list[SimJob]:
        cluster = self.cluster(cluster_id, now)
        with _collector_paused():
            return [job.snapshot(cluster_id) for job in reversed(cluster.jobs)]

    # -- mutations ----------------------------------------------------------------------------

    def advance(
        self, now: datetime, fraction: float | None = None, count: int | None = None
    ) -> list[StateChange]:
        clusters = [self.cluster(cid, now) for cid in self.clusters]
        if fraction is not None and count is None:
            chosen = self._choose_fraction(clusters, fraction)
        elif count is not None and fraction is None:
            chosen = self._choose_count(clusters, count)
        else:
            raise ValueError("give exactly one of fraction and count")
        changes = []
        for cluster, job in chosen:
            target = _STEPS[job.state]
            if target is None:
                target = FAILED if self.rng.random() < self.failure_ratio else COMPLETED
            changes.append(self._change(cluster, job, target, now, None))
        return changes

    def set_state(
        self, cluster_id: str, job_id: str, state: str, reason: str | None, now: datetime
    ) -> StateChange:
        cluster = self.cluster(cluster_id, now)
        job = cluster.find(job_id)
        if job is None:
            raise KeyError(f"no job {job_id!r} in cluster {cluster_id!r}")
        return self._change(cluster, job, state, now, reason)

    def add_jobs(self, n: int, cluster_id: str | None, now: datetime) -> list[SimJob]:
        cluster = self.cluster(cluster_id or self.first_cluster_id, now)
        added = []
        for _ in range(n):
            job = Job(self._new_id(), self._collection(), now)
            cluster.jobs.append(job)
            self.change_log.append(StateChange(cluster.cluster_id, job.job_id, None, PENDING, now))
            added.append(job.snapshot(cluster.cluster_id))
        return added

    def remove_jobs(self, cluster_id: str, job_ids: Iterable[str], now: datetime) -> int:
        return len(self.take_jobs(cluster_id, job_ids, now))

    def take_jobs(self, cluster_id: str, job_ids: Iterable[str], now: datetime) -> list[Job]:
        """Remove jobs from the list and return them (the ones that were there)."""
        cluster = self.cluster(cluster_id, now)
        taken: list[Job] = []
        for job_id in set(job_ids):
            i = cluster.index_of(job_id)
            if i is not None:
                taken.append(cluster.jobs.pop(i))
        return taken

    def put_jobs(self, cluster_id: str, jobs: Iterable[Job], now: datetime) -> None:
        """List jobs again, in their place by id, as they were when taken."""
        cluster = self.cluster(cluster_id, now)
        for job in jobs:
            if cluster.index_of(job.job_id) is None:
                bisect.insort(cluster.jobs, job, key=_job_id)

    # -- internals ----------------------------------------------------------------------------

    def _new_id(self) -> str:
        self._last_id += 1 + int(self.rng.random() * 999)
        return str(self._last_id)

    def _collection(self) -> str:
        return COLLECTIONS[int(self.rng.random() * len(COLLECTIONS))]

    def _choose_fraction(
        self, clusters: list[Cluster], fraction: float
    ) -> list[tuple[Cluster, Job]]:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be within 0..1")
        chosen: list[tuple[Cluster, Job]] = []
        for c in clusters:
            movable = [j for j in c.jobs if j.state in _STEPS and j.job_id not in c.held]
            # Stochastic rounding: rounding 0.4 jobs down on every tick would freeze a small
            # cluster under run_progression.
            wanted = fraction * len(movable)
            k = int(wanted) + (1 if self.rng.random() < wanted - int(wanted) else 0)
            chosen.extend((c, j) for j in self.rng.sample(movable, k))
        return chosen

    def _choose_count(self, clusters: list[Cluster], count: int) -> list[tuple[Cluster, Job]]:
        if count < 0:
            raise ValueError("count must be >= 0")
        pool = [
            (c, j) for c in clusters for j in c.jobs if j.state in _STEPS and j.job_id not in c.held
        ]
        return self.rng.sample(pool, min(count, len(pool)))

    def _populate(
        self, cluster: Cluster, n: int, now: datetime, weights: Mapping[str, float]
    ) -> None:
        states = list(weights)
        if not states or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError("initial_states needs non-negative weights with a positive sum")
        cumulative = list(accumulate(weights.values()))
        total = cumulative[-1]
        # A million jobs must build in seconds: this loop inlines _new_id and _collection and
        # settles the common states by hand instead of calling _settle.
        random_ = self.rng.random
        pick = bisect.bisect_right
        last_id = self._last_id
        jobs = cluster.jobs
        earliest: datetime | None = None
        created = now - _SPACING * n
        for _ in range(n):
            created += _SPACING
            last_id += 1 + int(random_() * 999)
            job = Job(str(last_id), COLLECTIONS[int(random_() * len(COLLECTIONS))], created)
            jobs.append(job)
            state = states[pick(cumulative, random_() * total)]
            if state == PENDING:
                continue
            if state in TERMINAL_STATES:
                finished = created + _DURATIONS[int(random_() * len(_DURATIONS))]
                if finished > now:
                    finished = now
                if earliest is None or finished < earliest:
                    earliest = finished
                if state == COMPLETED:
                    job.state, job.progress, job.finished_at = COMPLETED, 100, finished
                    continue
                self._settle(job, state, finished, None)
            elif state == IMPORTING:
                job.state, job.progress = IMPORTING, 10 + int(random_() * 81)
            else:
                self._settle(job, state, now, None)
        self._last_id = last_id
        if earliest is not None and self.retention is not None:
            cluster.note_finished(earliest + self.retention)

    def _change(
        self, cluster: Cluster, job: Job, state: str, now: datetime, reason: str | None
    ) -> StateChange:
        before = job.state
        change = StateChange(cluster.cluster_id, job.job_id, before, state, now)
        if state == before:
            # A forced no-op is not a change: keep finished_at and the log honest.
            if reason is not None:
                job.reason = reason
            return change
        self._settle(job, state, now, reason)
        if job.finished_at is not None and self.retention is not None:
            cluster.note_finished(job.finished_at + self.retention)
        self.change_log.append(change)
        return change

    def _settle(self, job: Job, state: str, when: datetime, reason: str | None) -> None:
        """Set the state and the fields that follow from it."""
        job.state = state
        job.finished_at = when if state in TERMINAL_STATES else None
        if state in PENDING_LIKE or state in FAILED_LIKE:
            job.progress = 0
        elif state in COMPLETED_LIKE:
            job.progress = 100
        elif state in IMPORTING_LIKE and not 10 <= job.progress <= 90:
            job.progress = 10 + int(self.rng.random() * 81)
        if state in FAILED_LIKE and reason is None:
            reason = FAILURE_REASONS[int(self.rng.random() * len(FAILURE_REASONS))]
        job.reason = reason or ""
