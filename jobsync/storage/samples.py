"""The database side of progress details: what choosing jobs needs, and writing what came back.

A job's figures (row counts, file size, ``completeTime``, when details were last fetched) go on
its row in ``import_job_records``; ``import_job_progress`` gets a sample only when the figures
differ from the job's previous ones, so a pass where nothing moved writes no samples. Everything
here runs inside the pass's one transaction, except ``load_known_jobs`` and ``stored_among``:
reads made while the pass reads the list and fetches details, long before it writes.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from itertools import chain
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    exists,
    insert,
    select,
    text,
    union_all,
    update,
)

from jobsync.domain.history import StoredJob
from jobsync.domain.known import LeastRecentlyAsked, OpenJobs
from jobsync.domain.records import JobDetails, JobRecord, Snapshot
from jobsync.domain.states import TERMINAL_STATES, canonical_state
from jobsync.storage.boundary import boundary
from jobsync.storage.schema import (
    OPEN_JOBS,
    PRESENT_JOBS,
    import_job_progress,
    import_job_records,
    sync_sources,
)

__all__ = [
    "KnownJob",
    "KnownJobs",
    "Written",
    "details_filled",
    "load_figures",
    "load_known_jobs",
    "stored_among",
    "write_details",
]

_TERMINAL = sorted(TERMINAL_STATES)


@dataclass(frozen=True, slots=True)
class KnownJob:
    """A stored job that a pass may ask about before the list has shown it.

    ``asked``: when details were last fetched (None: never). ``moved``: the figures changed at
    that last ask (it wrote a sample, and an earlier sample exists): such a job is worth asking
    about again at once, one that did not move only after the details interval.
    """

    state: str
    raw_state: str | None
    progress: int | None
    asked: datetime | None
    moved: bool


@dataclass(frozen=True)
class KnownJobs:
    """What the database knew of a source before a pass, for choosing jobs to ask about.

    ``open``: the listed state and progress of the stored jobs in a non-terminal state;
    ``due``: those of them worth asking about before the list shows them, best first (see
    ``load_known_jobs``); ``owed``: the stored finished jobs last asked about before they
    finished (each is asked once after it finishes); ``had_complete``: the source has had a
    complete pass (before it, every listed job is new, and the finished ones are never asked
    about). Nothing here grows with the finished jobs a source keeps, and nothing but ``open``,
    at 18 bytes a job, with its open ones.
    """

    open: OpenJobs = field(default_factory=OpenJobs)
    due: tuple[tuple[str, KnownJob], ...] = ()
    owed: frozenset[str] = frozenset()
    had_complete: bool = False


# Rows per fetch of the read of the known jobs.
_KNOWN_BATCH = 5_000


@cache
def _known_jobs_query() -> Any:
    # Built once (with the source as a parameter): a pass runs it each time, and building it
    # costs about what running it does.
    r = import_job_records.c
    p = import_job_progress.c
    same_job = (p.cluster_id == r.cluster_id, p.job_id == r.job_id)
    moved = and_(
        exists().where(*same_job, p.sampled_at == r.details_at),
        exists().where(*same_job, p.sampled_at < r.details_at),
    )
    columns = (
        r.job_id,
        r.state,
        r.raw_state,
        r.progress,
        r.details_at,
        case((moved, True), else_=False).label("moved"),
    )
    # A job the latest pass did not list is not asked about before the list shows it.
    mine = (r.cluster_id == bindparam("source"), r.listed.is_(True))
    # Two reads, each with the very condition of a partial index (OPEN_JOBS, PRESENT_JOBS),
    # so that each reads only the jobs the source still lists: one condition with OR would
    # read every job the source ever had, on every pass. Owed: finished, and last asked
    # about before it finished (each is asked once more).
    owed = and_(r.state.in_(_TERMINAL), r.details_at < r.finished_at)
    return union_all(
        select(*columns).where(*mine, text(OPEN_JOBS)),
        select(*columns).where(*mine, text(PRESENT_JOBS), owed),
    )


@cache
def _had_complete_query() -> Any:
    return select(sync_sources.c.last_complete_run_id).where(
        sync_sources.c.cluster_id == bindparam("source")
    )


@boundary
def load_known_jobs(
    engine: Engine,
    cluster_id: str,
    *,
    due: Callable[[KnownJob], bool] | None = None,
    limit: int | None = None,
) -> KnownJobs:
    """A read made before the pass's list is read (and long before it writes).

    ``due``: which open jobs are worth asking about before the list shows them (all when
    None); of those, the ``limit`` asked about longest ago are kept (all when None), never
    asked first: a pass can ask about no more than its cap.
    """
    params = {"source": cluster_id}
    chosen = LeastRecentlyAsked[tuple[str, KnownJob]](limit)
    owed_ids: set[str] = set()

    def open_jobs(rows: Iterable[Any]) -> Iterator[tuple[str, str | None, int | None]]:
        # Rows unpacked, not read by name: this runs once per open job, before the first page.
        for job_id, state, raw_state, progress, asked, moved in rows:
            if state in TERMINAL_STATES:
                owed_ids.add(job_id)
                continue
            job = KnownJob(state, raw_state, progress, asked, bool(moved))
            if due is None or due(job):
                chosen.add((job_id, job), asked)
            yield job_id, raw_state, progress

    with engine.connect() as conn:
        had_complete = conn.execute(_had_complete_query(), params).scalar()
        # In batches: one driver call per row would cost more than the rest of the loop, and
        # PostgreSQL's driver would hold the whole result at once.
        rows = conn.execution_options(yield_per=_KNOWN_BATCH).execute(_known_jobs_query(), params)
        known_open = OpenJobs(chain.from_iterable(map(open_jobs, rows.partitions())))
    return KnownJobs(
        known_open, tuple(chosen.best()), frozenset(owed_ids), had_complete is not None
    )


@boundary
def stored_among(engine: Engine, cluster_id: str, job_ids: Collection[str]) -> set[str]:
    """Which of ``job_ids`` (a page's worth) are stored for the source."""
    if not job_ids:
        return set()
    r = import_job_records.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(r.job_id).where(r.cluster_id == cluster_id, r.job_id.in_(list(job_ids)))
        )
        return {job_id for (job_id,) in rows}


# What a progress sample records; a new sample is written only when one of them moved.
_FIGURES = ("progress", "imported_rows", "total_rows", "file_size", "complete_time", "reason")


def load_figures(
    conn: Connection, cluster_id: str, job_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The stored figures of the jobs that have details this pass, as before the pass."""
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 500):
        params = {"source": cluster_id, "ids": job_ids[start : start + 500]}
        rows = conn.execute(_figures_query(), params)
        found.update((row.job_id, dict(row._mapping)) for row in rows)
    return found


@cache
def _figures_query() -> Any:
    records = import_job_records.c
    return select(
        records.job_id,
        records.state,
        records.details_at,
        *(records[name] for name in _FIGURES),
    ).where(
        records.cluster_id == bindparam("source"),
        records.job_id.in_(bindparam("ids", expanding=True)),
    )


def details_filled(
    snapshot: Snapshot, stored: Mapping[str, StoredJob], details: Mapping[str, JobDetails]
) -> dict[str, JobRecord]:
    """The records of the snapshot that the planner should see otherwise, with progress and
    reason filled in (the others stand as listed).

    Details fill in what the list leaves out (the Zilliz list has neither field, and gives
    reasons nowhere), and their progress is the newer reading, when they read the job in the
    state the record shows (or, naming no state, no earlier than the record): a reading of
    another state, such as one taken before the list was walked again, belongs to that state.
    A record that shows neither keeps the stored values while its state is unchanged: the list
    leaving a field out is not news, and treating it as such would rewrite every detailed job
    on every pass.
    """
    jobs = snapshot.jobs
    changed: dict[str, JobRecord] = {}
    # Only a detailed or a stored job can change here, and after triage ``stored`` holds the
    # few a pass may change: a first sync or a re-sync need not walk a million listed jobs.
    for job_id in dict.fromkeys(chain(details, stored)):
        record = jobs.get(job_id)
        if record is None:
            continue
        progress, reason = record.progress, record.reason
        extra = details.get(job_id)
        if extra is not None and _reads(extra, record):
            progress = extra.progress if extra.progress is not None else progress
            reason = reason or extra.reason
        if progress is None or reason is None:
            known = stored.get(job_id)
            if known is not None and known.raw_state == record.raw_state:
                progress = known.progress if progress is None else progress
                reason = known.reason if reason is None else reason
        if progress != record.progress or reason != record.reason:
            changed[job_id] = record._replace(progress=progress, reason=reason)
    return changed


def _reads(sample: JobDetails, record: JobRecord) -> bool:
    """Whether a progress answer speaks of the job as the record shows it."""
    if sample.raw_state is None:
        return sample.sampled_at >= record.observed_at
    return canonical_state(sample.raw_state) == canonical_state(record.raw_state)


class Written(NamedTuple):
    rows: int
    # Jobs whose complete_time changed: their durations must be computed again.
    complete_time_changed: list[str]


def write_details(
    conn: Connection,
    cluster_id: str,
    run_id: int,
    snapshot: Snapshot,
    details: Mapping[str, JobDetails],
    previous: Mapping[str, Mapping[str, Any]],
) -> Written:
    """Put the details on their jobs and append the samples that differ.

    A ``complete_time`` is kept only on a finished job: what the API sends for an open one is
    no finish moment.
    """
    if not details:
        return Written(0, [])
    updates: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    changed: list[str] = []
    for job_id in sorted(details):
        d = details[job_id]
        listed = snapshot.jobs.get(job_id)
        raw_state = d.raw_state or (listed.raw_state if listed is not None else None)
        state = canonical_state(raw_state)
        figures = {name: getattr(d, name) for name in _FIGURES}
        before = previous.get(job_id)
        # A figure the API left out (or sent as garbage) keeps its last known value.
        kept = {
            name: value if value is not None or before is None else before[name]
            for name, value in figures.items()
        }
        if state not in TERMINAL_STATES or (listed is not None and not _finished(listed)):
            figures["complete_time"] = kept["complete_time"] = None
        if kept["complete_time"] != (None if before is None else before["complete_time"]):
            changed.append(job_id)
        if (
            before is None
            or before["details_at"] is None
            or before["state"] != state
            or any(kept[name] != before[name] for name in _FIGURES)
        ):
            samples.append(
                {
                    "cluster_id": cluster_id,
                    "job_id": job_id,
                    "sampled_at": d.sampled_at,
                    "sync_run_id": run_id,
                    "state": state,
                    "raw_state": raw_state,
                    **figures,
                }
            )
        updates.append(
            {
                "b_job_id": job_id,
                "total_rows": kept["total_rows"],
                "imported_rows": kept["imported_rows"],
                "file_size": kept["file_size"],
                "complete_time": kept["complete_time"],
                "details_at": d.sampled_at,
            }
        )
    for update_ in updates:
        update_["b_source"] = cluster_id
    conn.execute(_details_update(), updates)
    if samples:
        conn.execute(_SAMPLE_INSERT, samples)
    return Written(len(updates) + len(samples), changed)


_SAMPLE_INSERT = insert(import_job_progress)


@cache
def _details_update() -> Any:
    records = import_job_records.c
    return (
        update(import_job_records)
        .where(records.cluster_id == bindparam("b_source"), records.job_id == bindparam("b_job_id"))
        .values(
            total_rows=bindparam("total_rows"),
            imported_rows=bindparam("imported_rows"),
            file_size=bindparam("file_size"),
            complete_time=bindparam("complete_time"),
            details_at=bindparam("details_at"),
        )
    )


def _finished(record: JobRecord) -> bool:
    return canonical_state(record.raw_state) in TERMINAL_STATES
