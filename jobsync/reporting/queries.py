"""Read-only questions the CLI asks of the database: current jobs, one job's history, totals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Engine, func, select

from jobsync.storage.schema import import_job_transitions, import_jobs, sync_run_days, sync_runs

__all__ = ["job_history", "list_jobs", "overview"]


def list_jobs(
    engine: Engine,
    *,
    cluster_ids: Sequence[str] = (),
    states: Sequence[str] = (),
    collections: Sequence[str] = (),
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Current jobs, newest first, optionally filtered."""
    j = import_jobs
    query = select(
        j.c.cluster_id,
        j.c.job_id,
        j.c.collection_name,
        j.c.state,
        j.c.raw_state,
        j.c.first_seen_at,
        j.c.state_since,
        j.c.last_seen_at,
        j.c.finished_at,
        j.c.vanished_at,
        # Last: a failure's reason can be long, and the table pads every column but the last.
        j.c.progress,
        j.c.reason,
    ).order_by(j.c.first_seen_at.desc(), j.c.cluster_id, j.c.job_id)
    if cluster_ids:
        query = query.where(j.c.cluster_id.in_(cluster_ids))
    if states:
        query = query.where(j.c.state.in_(states))
    if collections:
        query = query.where(j.c.collection_name.in_(collections))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def job_history(
    engine: Engine, job_id: str, *, cluster_ids: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Every transition of a job (of every cluster that has that id, unless narrowed)."""
    t = import_job_transitions
    query = (
        select(
            t.c.cluster_id,
            t.c.job_id,
            t.c.kind,
            t.c.from_state,
            t.c.to_state,
            t.c.raw_to_state,
            t.c.window_start,
            t.c.observed_at,
            t.c.sync_run_id,
            t.c.reason,
        )
        .where(t.c.job_id == job_id)
        .order_by(t.c.cluster_id, t.c.id)
    )
    if cluster_ids:
        query = query.where(t.c.cluster_id.in_(cluster_ids))
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def overview(engine: Engine) -> dict[str, dict[str, int]]:
    """Totals for a short summary: jobs per state, transitions per kind, passes per status
    (pruned passes included, from ``sync_run_days``)."""
    with engine.connect() as conn:

        def counts(column: ColumnElement[str]) -> dict[str, int]:
            query = select(column, func.count()).group_by(column).order_by(column)
            return {key: int(n) for key, n in conn.execute(query).all()}

        runs = counts(sync_runs.c.status)
        # Pruned passes live on in sync_run_days (one that did not succeed counts as failed).
        d = sync_run_days.c
        passes, failures = conn.execute(
            select(func.coalesce(func.sum(d.passes), 0), func.coalesce(func.sum(d.failures), 0))
        ).one()
        for status, n in (("succeeded", passes - failures), ("failed", failures)):
            if n:
                runs[status] = runs.get(status, 0) + int(n)
        return {
            "jobs_by_state": counts(import_jobs.c.state),
            "transitions_by_kind": counts(import_job_transitions.c.kind),
            "runs_by_status": dict(sorted(runs.items())),
        }
