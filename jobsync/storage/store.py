"""The database side of a pass: engines, run records, and applying a pass in one transaction.

A pass writes under its source's write lock, taken first thing in the write transaction
(``Backend.lock_source``; on SQLite, ``BEGIN IMMEDIATE`` already holds the database's), so two
writers can never interleave on one source; and only while its run is not fenced off
(``jobsync.domain.fencing``). Everything a pass writes, progress details included
(``jobsync.storage.samples``), is written in that one transaction.

Every public function here that reaches the database is a storage boundary
(``jobsync.storage.boundary``): the database's errors leave it as StorageError.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from itertools import chain
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from jobsync.domain.completeness import proven_as_stored
from jobsync.domain.facts import micros
from jobsync.domain.fencing import check_fence, steady_pass
from jobsync.domain.history import PassPlan, SourceMarks, plan_pass
from jobsync.domain.records import JobDetails, JobRecord, Snapshot
from jobsync.errors import StorageError
from jobsync.observability.redact import redact
from jobsync.storage import bulk, facts, scan
from jobsync.storage.backends import backend_for
from jobsync.storage.backends.base import Backend
from jobsync.storage.boundary import boundary, storage_errors
from jobsync.storage.engine import (
    checkpoint,
    missing_sqlite_file,
    normalise_url,
    open_engine,
    sqlite_file,
    writes_serialised,
)
from jobsync.storage.samples import (
    details_filled,
    load_figures,
    load_known_jobs,
    stored_among,
    write_details,
)
from jobsync.storage.schema import sync_runs, sync_sources

__all__ = [
    "PassCounts",
    "abandon_stale_runs",
    "apply_pass",
    "checkpoint",
    "fail_run",
    "load_known_jobs",
    "missing_sqlite_file",
    "normalise_url",
    "open_engine",
    "process_identity",
    "sqlite_file",
    "start_run",
    "stored_among",
    "writes_serialised",
]

log = logging.getLogger(__name__)


def _finish_run(
    conn: Connection, run_id: int, status: str, finished_at: datetime, **values: Any
) -> None:
    """Record how a pass ended: its status, when, and the other columns given."""
    values.update(status=status, finished_at=finished_at)
    conn.execute(_finish_statement(tuple(values)), {"b_run_id": run_id, **values})


# The statements every pass runs are built once, with bound parameters for their values:
# building one (ON CONFLICT clauses above all) costs more than running it on a local server.


@cache
def _finish_statement(columns: tuple[str, ...]) -> Any:
    return (
        update(sync_runs)
        .where(sync_runs.c.id == bindparam("b_run_id"))
        .values({name: bindparam(name) for name in columns})
    )


@cache
def _start_statement() -> Any:
    base = (
        select(sync_sources.c.last_run_id)
        .where(sync_sources.c.cluster_id == bindparam("cluster_id"))
        .scalar_subquery()
    )
    return (
        insert(sync_runs)
        .values(
            cluster_id=bindparam("cluster_id"),
            started_at=bindparam("started_at"),
            status="running",
            base_run_id=base,
            host=bindparam("host"),
            pid=bindparam("pid"),
        )
        .returning(sync_runs.c.id)
    )


@boundary
def start_run(engine: Engine, cluster_id: str, started_at: datetime) -> int:
    """Record a pass as running, in its own transaction, and return its id.

    The row names this process (``host``, ``pid``): with replicas, which one ran each pass.
    It also takes the source's latest applied pass (``base_run_id``): the fence that
    ``apply_pass`` checks, in the same statement so no pass can be applied in between.
    """
    host, pid = process_identity()
    params = {"cluster_id": cluster_id, "started_at": started_at, "host": host, "pid": pid}
    with engine.begin() as conn:
        return int(conn.execute(_start_statement(), params).scalar_one())


def fail_run(
    engine: Engine, run_id: int, finished_at: datetime, error: str, retries: int = 0
) -> None:
    """Mark a pass failed with a redacted error text. Best effort: never masks the real error.

    A pass marked ``abandoned`` by another process that stands down is recorded ``failed``
    too, with its own reason instead of the other process's guess.
    """
    try:
        with storage_errors(engine), engine.begin() as conn:
            _finish_run(
                conn, run_id, "failed", finished_at, error=redact(error)[:2000], retries=retries
            )
    except StorageError as exc:
        log.warning("could not record the failure of run %s: %s", run_id, exc)


@dataclass(frozen=True)
class PassCounts:
    new_jobs: int
    changed_jobs: int
    vanished_jobs: int
    rows_written: int
    # Whether the snapshot was proven complete, as the run records it: the pass may find it
    # was not, though the walk seemed to prove it (``jobsync.domain.completeness``).
    complete: bool = True


@boundary
def apply_pass(
    engine: Engine,
    cluster_id: str,
    run_id: int,
    snapshot: Snapshot,
    *,
    finished_at: datetime,
    retries: int = 0,
    details: Mapping[str, JobDetails] | None = None,
    details_requested: int = 0,
    details_failed: int = 0,
    decide: Callable[[Connection, PassPlan], None] | None = None,
) -> PassCounts:
    """Write one pass (jobs, history, details, run record, source marks) in one transaction.

    ``details`` are the progress details fetched for some of the snapshot's jobs. ``decide``
    is called last, in the same transaction, with what the pass wrote: notifications record
    the events it decides there (``jobsync.service.notify``), so they commit with the pass.
    """
    details = details or {}
    with (
        _no_gc(),
        engine.connect() as conn,
        backend_for(conn).journal_for_pass(conn, len(snapshot.jobs)),
        conn.begin(),
    ):
        backend_for(conn).lock_source(conn, cluster_id)
        marks = _fenced_marks(conn, cluster_id, run_id)
        snapshot, details, shift = steady_pass(snapshot, details, marks.last_snapshot_at)
        if shift:
            log.warning(
                "%s: the clock reads %.3fs earlier than the last observation; this pass's "
                "times are moved forward to it",
                cluster_id,
                shift.total_seconds(),
            )
        finished_at = max(finished_at + shift, snapshot.finished_at)
        stored, unknown = scan.load_for_pass(conn, cluster_id, snapshot.jobs, details)
        snapshot = proven_as_stored(snapshot, stored, unknown)
        previous = load_figures(conn, cluster_id, sorted(details))
        narrowed = _narrowed(snapshot, stored, unknown)
        del unknown  # every listed id on a first sync, and not needed to write
        with _records_replaced(narrowed.jobs, details_filled(narrowed, stored, details)):
            plan = plan_pass(stored, narrowed, marks, run_id)
        bulk.insert_new_jobs(conn, cluster_id, plan)
        bulk.update_jobs(conn, cluster_id, plan.updates, stored)
        bulk.insert_transitions(
            conn, cluster_id, sorted(plan.transitions, key=itemgetter("job_id"))
        )
        rows_written = plan.rows_written
        written = write_details(conn, cluster_id, run_id, snapshot, details, previous)
        rows_written += written.rows
        facts.after_pass(conn, cluster_id, plan, written.complete_time_changed)
        _save_marks(conn, cluster_id, run_id, snapshot)
        counts = PassCounts(
            new_jobs=plan.new_jobs,
            changed_jobs=plan.changed_jobs,
            vanished_jobs=plan.vanished_jobs,
            rows_written=rows_written + 2,
            complete=snapshot.complete,
        )
        _finish_run(
            conn,
            run_id,
            "succeeded",
            finished_at,
            complete=snapshot.complete,
            pages=snapshot.pages,
            records=snapshot.records,
            distinct_jobs=snapshot.distinct_jobs,
            duplicates=snapshot.duplicates,
            invalid_records=snapshot.invalid,
            reported_count=snapshot.reported_count,
            new_jobs=counts.new_jobs,
            changed_jobs=counts.changed_jobs,
            vanished_jobs=counts.vanished_jobs,
            retries=retries,
            rows_written=counts.rows_written,
            snapshot_started_at=snapshot.started_at,
            snapshot_finished_at=snapshot.finished_at,
            details_requested=details_requested,
            details_failed=details_failed,
            incomplete_reason=None if snapshot.complete else snapshot.incomplete_reason,
        )
        if decide is not None:
            decide(conn, plan)
    return counts


@contextmanager
def _records_replaced(
    jobs: dict[str, JobRecord], records: Mapping[str, JobRecord]
) -> Iterator[None]:
    """``records`` in place of theirs in ``jobs`` for the block, the listed ones back after it.

    In place, not in a copy: on a first sync ``jobs`` is the snapshot's own dict, the one copy of
    every listed record, and a second dict of every job would raise the pass's peak memory
    (docs/benchmarks.md). The plan keeps the records it took, not the dict.
    """
    listed = {job_id: jobs[job_id] for job_id in records}
    jobs.update(records)
    try:
        yield
    finally:
        jobs.update(listed)


def _narrowed(snapshot: Snapshot, stored: Mapping[str, Any], unknown: list[str]) -> Snapshot:
    """The snapshot with only the jobs that may need writing (see ``jobsync.domain.triage``)."""
    listed = snapshot.jobs
    if len(unknown) == len(listed):
        return snapshot  # nothing stored yet: every job is new
    jobs = {job_id: listed[job_id] for job_id in chain(unknown, stored) if job_id in listed}
    return replace(snapshot, jobs=jobs)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a pass builds and writes its rows.

    A pass allocates a few objects per job and frees them all at the end; none form cycles.
    With the collector on, every few hundred allocations it would walk every live object
    again, a cost that grows with the square of the jobs in the pass.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@boundary
def abandon_stale_runs(engine: Engine, finished_at: datetime, cluster_ids: Sequence[str]) -> int:
    """Mark runs of ``cluster_ids`` left 'running' by a process that died or lost its lock.

    Call only while holding those sources' locks: then no other pass of them is running, and
    a run still marked running is one whose process will never finish it (a pass that lost
    its lock and still runs is fenced off: it finds its run abandoned and writes nothing).
    Runs of other sources are left alone: other processes may be running them right now.
    """
    if not cluster_ids:
        return 0
    abandoned = 0
    with engine.begin() as conn:
        for at in range(0, len(cluster_ids), 500):
            chunk = cluster_ids[at : at + 500]
            result = conn.execute(
                update(sync_runs)
                .where(sync_runs.c.status == "running", sync_runs.c.cluster_id.in_(chunk))
                .values(
                    status="abandoned",
                    finished_at=finished_at,
                    error="the process running this pass stopped before it finished",
                )
            )
            abandoned += int(result.rowcount or 0)
    return abandoned


@cache
def process_identity() -> tuple[str, int]:
    """This process's host name and pid, as ``sync_runs`` records them."""
    return socket.gethostname()[:255], os.getpid()


@cache
def _marks_and_fence(backend: Backend) -> Any:
    # The run's row (the fence) and the source's marks in one statement: a left join, for a
    # source's first pass has no marks yet.
    runs, sources = sync_runs.c, sync_sources.c
    query = (
        select(
            runs.status,
            runs.base_run_id,
            sources.last_snapshot_started_at,
            sources.last_snapshot_at,
            sources.last_complete_started_at,
            sources.last_run_id,
        )
        .select_from(sync_runs.outerjoin(sync_sources, sources.cluster_id == bindparam("source")))
        .where(runs.id == bindparam("run_id"))
    )
    return backend.for_update(query, of=sync_runs)


def _fenced_marks(conn: Connection, cluster_id: str, run_id: int) -> SourceMarks:
    """The source's marks, after raising SupersededError unless this run may still write
    (``jobsync.domain.fencing``).

    The run's row stays as read until the commit (``Backend.for_update``): another process's
    ``abandon_stale_runs`` waits for this transaction, and then finds the run finished.
    """
    query = _marks_and_fence(backend_for(conn))
    row = conn.execute(query, {"source": cluster_id, "run_id": run_id}).first()
    check_fence(
        run_id,
        None if row is None else row.status,
        None if row is None else row.base_run_id,
        None if row is None else row.last_run_id,
    )
    assert row is not None  # check_fence refused a missing run
    return SourceMarks(
        last_snapshot_started_at=row.last_snapshot_started_at,
        last_snapshot_at=row.last_snapshot_at,
        last_complete_started_at=row.last_complete_started_at,
        last_run_id=row.last_run_id,
    )


def _save_marks(conn: Connection, cluster_id: str, run_id: int, snapshot: Snapshot) -> None:
    values: dict[str, Any] = {
        "cluster_id": cluster_id,
        "last_run_id": run_id,
        "last_snapshot_started_at": snapshot.started_at,
        "last_snapshot_at": snapshot.finished_at,
        "last_snapshot_us": micros(snapshot.finished_at),
    }
    if snapshot.complete:
        values["last_complete_run_id"] = run_id
        values["last_complete_started_at"] = snapshot.started_at
    upsert = backend_for(conn).upsert(sync_sources, tuple(k for k in values if k != "cluster_id"))
    conn.execute(upsert, values)
