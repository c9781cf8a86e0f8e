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

from jobsync.domain.history import JobRow, PassPlan, StoredJob
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.rows import TRANSITION_COLUMNS, transition_values
from jobsync.storage.schema import import_job_transitions
from jobsync.storage.updates import unchanged_indexed, update_sql, update_values

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
def update_jobs(
    conn: Connection, cluster_id: str, rows: Sequence[JobRow], stored: Mapping[str, StoredJob]
) -> None:
    """Write the planner's decisions about jobs that are already stored; ``stored``: the jobs
    as the pass loaded them, so that an update leaves out the indexed columns it does not
    change (``jobsync.storage.updates.INDEXED_UPDATES``): one statement per such set."""
    if not rows:
        return
    backend = backend_for(conn)
    time = backend.time_writer()
    groups: dict[frozenset[str], list[JobRow]] = {}
    for row in rows:
        groups.setdefault(unchanged_indexed(row, stored.get(row.job_id)), []).append(row)
    for unchanged, group in groups.items():
        values = update_values(cluster_id, group, time, unchanged)
        backend.executemany(conn, backend.sql(update_sql(unchanged)), values)


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
