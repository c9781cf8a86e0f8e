"""Writing a pass's job rows and history in bulk, at driver speed (reading: ``scan``).

A pass can touch every job of a source. Through SQLAlchemy's per-value type processing that
would cost more than fetching the pages did, so these writers hand the driver plain rows:
what the rows hold is spelled once in ``jobsync.storage.rows``, and how each database takes
them in bulk is its backend's business (``jobsync.storage.backends``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection

from jobsync.domain.history import JobRow, PassPlan
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.rows import (
    TRANSITION_COLUMNS,
    UPDATE_SQL,
    transition_values,
    update_values,
)
from jobsync.storage.schema import import_job_transitions

__all__ = ["insert_new_jobs", "insert_transitions", "update_jobs"]


@boundary
def insert_new_jobs(conn: Connection, cluster_id: str, plan: PassPlan) -> None:
    """Write the pass's new jobs and append their ``first_seen`` transitions.

    The jobs are written in key order, so that B-tree inserts append instead of splitting
    pages all over the index. There is no ON CONFLICT: these jobs were loaded as absent under
    the source's write lock, so none can exist; if one did, the insert fails the pass and
    leaves the stored history as it was.
    """
    if not plan.new:
        return
    plan.new.sort(key=attrgetter("job_id"))  # in place: no second list of every job
    backend_for(conn).insert_new_jobs(conn, cluster_id, plan, plan.new)


@boundary
def update_jobs(conn: Connection, cluster_id: str, rows: Sequence[JobRow]) -> None:
    """Write the planner's decisions about jobs that are already stored."""
    if not rows:
        return
    backend = backend_for(conn)
    values = update_values(cluster_id, rows, backend.time_writer())
    backend.executemany(conn, backend.sql(UPDATE_SQL), values)


@boundary
def insert_transitions(
    conn: Connection, cluster_id: str, transitions: Iterable[Mapping[str, Any]]
) -> int:
    """Append history rows (the planner's dicts, by column name); returns how many."""
    backend = backend_for(conn)
    rows = transition_values(cluster_id, transitions, backend.time_writer())
    if rows:
        backend.insert_rows(conn, import_job_transitions, TRANSITION_COLUMNS, rows)
    return len(rows)
