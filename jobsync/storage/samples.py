"""The database side of progress details: what choosing jobs needs, and writing what came back.

A job's figures (row counts, file size, ``completeTime``, when details were last fetched) go on
its row in ``import_job_records``; ``import_job_progress`` gets a sample only when the figures
differ from the job's previous ones, so a pass where nothing moved writes no samples. Everything
here runs inside the pass's one transaction, except ``load_detail_candidates``: a read made
before the pass fetches details, long before it writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from itertools import chain
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from jobsync.domain.history import StoredJob
from jobsync.domain.records import DetailCandidates, JobDetails, JobRecord, Snapshot
from jobsync.domain.states import TERMINAL_STATES, canonical_state, is_terminal
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.scan import STORED_IDS_SQL, stream
from jobsync.storage.schema import import_job_progress, import_job_records, sync_sources

__all__ = ["load_detail_candidates", "load_figures", "with_details", "write_details"]

_TERMINAL = sorted(TERMINAL_STATES)


@boundary
def load_detail_candidates(
    engine: Engine, cluster_id: str, listed: Mapping[str, JobRecord], limit: int
) -> DetailCandidates:
    """A read made before the pass fetches details (and long before it writes).

    Memory stays with what changed, however many jobs are stored (a million-job source holds
    its snapshot already): stored open jobs are streamed and kept only when listed terminal
    (finishing) or ever asked about. The listed terminal jobs that are not stored are found by
    walking their sorted ids alongside the stored ids in the same order, instead of holding a
    set of every listed id; the walk stops at the ``limit`` smallest. Before a source's first
    complete pass every listed job is new, and that walk is skipped.
    """
    finishing: list[str] = []
    asked: dict[str, float] = {}
    with engine.connect() as conn:
        backend = backend_for(conn)
        p = backend.placeholder
        had_complete = conn.execute(
            select(sync_sources.c.last_complete_run_id).where(
                sync_sources.c.cluster_id == cluster_id
            )
        ).scalar()
        # When details were last fetched, as a number: ordering it then needs no conversion
        # per row, and a source's stored jobs are many, most of them finished.
        asked_at = backend.epoch_seconds("details_at")
        sql = (
            f"SELECT job_id, {asked_at} FROM import_job_records "
            f"WHERE cluster_id = {p} AND state NOT IN ({', '.join([p] * len(_TERMINAL))})"
        )
        with stream(conn, sql, (cluster_id, *_TERMINAL), to_the_end=True) as rows:
            for job_id, asked_at in rows:
                record = listed.get(job_id)
                if record is None:
                    continue  # one that is not listed is never asked about
                if asked_at is not None:
                    asked[record.job_id] = asked_at  # the snapshot's own id string
                if is_terminal(record.raw_state):
                    finishing.append(record.job_id)
        finished_new = (
            _unstored_finished(conn, cluster_id, listed, limit) if had_complete is not None else []
        )
    return DetailCandidates(finishing, asked, finished_new)


# Listed terminal jobs looked up by key rather than found by walking every stored id.
_LOOKUP = 500


def _unstored_finished(
    conn: Connection, cluster_id: str, listed: Mapping[str, JobRecord], limit: int
) -> list[str]:
    """The ``limit`` smallest ids of the listed terminal jobs that are not stored."""
    wanted = sorted(j for j, record in listed.items() if is_terminal(record.raw_state))
    found: list[str] = []
    i, end = 0, len(wanted)
    backend = backend_for(conn)
    if end <= _LOOKUP:
        # The usual list: few jobs, looked up by key. The walk below would read stored ids up
        # to the largest wanted one, most of a long history, on every pass.
        p = backend.placeholder
        sql = backend.sql(STORED_IDS_SQL) + f"AND job_id IN ({', '.join([p] * end)})"
        stored = (
            {row[0] for row in backend.fetchall(conn, sql, (cluster_id, *wanted)).rows}
            if end
            else set()
        )
        return [job_id for job_id in wanted if job_id not in stored][:limit]
    sql = backend.sql(STORED_IDS_SQL) + backend.order_by_code_points("job_id")
    # Not to_the_end: the walk stops at the limit.
    with stream(conn, sql, (cluster_id,)) as rows:
        for (stored_id,) in rows:
            while i < end and wanted[i] < stored_id:
                found.append(wanted[i])
                i += 1
            if len(found) >= limit or i == end:
                return found[:limit]
            if wanted[i] == stored_id:
                i += 1
    # Past the last stored id: the rest are not stored either.
    return found + wanted[i : i + limit - len(found)]


# What a progress sample records; a new sample is written only when one of them moved.
_FIGURES = ("progress", "imported_rows", "total_rows", "file_size", "complete_time", "reason")


def load_figures(
    conn: Connection, cluster_id: str, job_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The stored figures of the jobs that have details this pass, as before the pass."""
    records = import_job_records.c
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(job_ids), 500):
        rows = conn.execute(
            select(
                records.job_id,
                records.state,
                records.details_at,
                *(records[name] for name in _FIGURES),
            ).where(
                records.cluster_id == cluster_id,
                records.job_id.in_(job_ids[start : start + 500]),
            )
        )
        found.update((row.job_id, dict(row._mapping)) for row in rows)
    return found


def with_details(
    snapshot: Snapshot, stored: Mapping[str, StoredJob], details: Mapping[str, JobDetails]
) -> Snapshot:
    """The snapshot as the planner should see it: progress and reason filled in.

    Details fill in what the list leaves out (the Zilliz list has neither field, and gives
    reasons nowhere), and their progress is the newer reading. A record that shows neither keeps
    the stored values while its state is unchanged: the list leaving a field out is not news,
    and treating it as such would rewrite every detailed job on every pass.
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
        if extra is not None:
            progress = extra.progress if extra.progress is not None else progress
            reason = reason or extra.reason
        if progress is None or reason is None:
            known = stored.get(job_id)
            if known is not None and known.raw_state == record.raw_state:
                progress = known.progress if progress is None else progress
                reason = known.reason if reason is None else reason
        if progress != record.progress or reason != record.reason:
            changed[job_id] = replace(record, progress=progress, reason=reason)
    if not changed:
        return snapshot
    return replace(snapshot, jobs={**jobs, **changed})


def write_details(
    conn: Connection,
    cluster_id: str,
    run_id: int,
    snapshot: Snapshot,
    details: Mapping[str, JobDetails],
    previous: Mapping[str, Mapping[str, Any]],
) -> int:
    """Put the details on their jobs and append the samples that differ; returns rows written."""
    if not details:
        return 0
    updates: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for job_id in sorted(details):
        d = details[job_id]
        listed = snapshot.jobs.get(job_id)
        raw_state = d.raw_state or (listed.raw_state if listed is not None else None)
        figures = {name: getattr(d, name) for name in _FIGURES}
        before = previous.get(job_id)
        # A figure the API left out (or sent as garbage) keeps its last known value.
        kept = {
            name: value if value is not None or before is None else before[name]
            for name, value in figures.items()
        }
        state = canonical_state(raw_state)
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
    records = import_job_records.c
    conn.execute(
        update(import_job_records)
        .where(records.cluster_id == cluster_id, records.job_id == bindparam("b_job_id"))
        .values(
            total_rows=bindparam("total_rows"),
            imported_rows=bindparam("imported_rows"),
            file_size=bindparam("file_size"),
            complete_time=bindparam("complete_time"),
            details_at=bindparam("details_at"),
        ),
        updates,
    )
    if samples:
        conn.execute(insert(import_job_progress), samples)
    return len(updates) + len(samples)
