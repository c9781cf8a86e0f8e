"""The update of a stored job: which columns it writes, and which it may leave out.

A pass rewrites what it decided about each stored job it changes, from the planner's
``JobRow`` by name (the columns of ``UPDATED_COLUMNS``, in table order). Values the pass did
not decide on keep what is stored (``_KEEP_STORED``). The columns an index reads are set only
where they change (``INDEXED_UPDATES``, ``unchanged_indexed``): the writer groups the updates
by what they leave out (``jobsync.storage.bulk.update_jobs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from operator import attrgetter
from typing import Any

from jobsync.domain.history import JobRow, StoredJob
from jobsync.storage.rows import TIME_COLUMNS, TimeWriter, in_table_order
from jobsync.storage.schema import import_job_records

__all__ = [
    "DURATIONS",
    "INDEXED_UPDATES",
    "UPDATED_COLUMNS",
    "set_columns",
    "unchanged_indexed",
    "update_sql",
    "update_values",
]

# What an update of a stored job writes, from the planner's JobRow by name. state_since and
# finished_at are None unless this pass decided on them, and then the stored value stays.
DURATIONS = ("min_seconds", "max_seconds", "estimated_seconds")
UPDATED_COLUMNS = in_table_order(
    import_job_records,
    {
        "collection_name",
        "state",
        "raw_state",
        "progress",
        "reason",
        "state_since",
        "last_seen_at",
        "last_seen_started_at",
        "finished_at",
        "vanished_at",
        "listed",
        "missed_snapshots",
        "missing_since",
        "final_state",
        "finished_window_start",
        "state_since_us",
        "last_seen_us",
        *DURATIONS,
    },
)
_KEEP_STORED = {
    "state_since": "COALESCE({p}, state_since)",
    "state_since_us": "COALESCE({p}, state_since_us)",
    "finished_at": "COALESCE(finished_at, {p})",
    "final_state": "COALESCE(final_state, {p})",
    **{name: f"COALESCE({{p}}, {name})" for name in DURATIONS},  # set when the job finishes
    "finished_window_start": "CASE WHEN finished_at IS NULL THEN {p} "
    "ELSE finished_window_start END",
}
# Updated columns that an index of import_job_records reads, in its key or in its WHERE.
# SQLite rewrites every index whose columns an UPDATE sets, changed or not, and each page it
# rewrites goes to the WAL and back into the file. So an update leaves out those it does not
# change (``unchanged_indexed``); tests/storage/test_updates.py holds this list to the indexes
# of both databases.
INDEXED_UPDATES = ("state", "finished_at", "vanished_at", "listed")


@cache
def set_columns(unchanged: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """The columns an update sets: UPDATED_COLUMNS without the indexed ones in ``unchanged``."""
    return tuple(name for name in UPDATED_COLUMNS if name not in unchanged)


@cache
def update_sql(unchanged: frozenset[str] = frozenset()) -> str:
    """The UPDATE of a stored job that sets ``set_columns(unchanged)``; ``{p}``: the driver's
    placeholder (see Backend.sql)."""
    return (
        "UPDATE import_job_records SET "
        + ", ".join(f"{name} = {_KEEP_STORED.get(name, '{p}')}" for name in set_columns(unchanged))
        + " WHERE cluster_id = {p} AND job_id = {p}"
    )


def unchanged_indexed(row: JobRow, stored: StoredJob | None) -> frozenset[str]:
    """The columns of INDEXED_UPDATES that updating ``stored`` with ``row`` leaves as they are
    (none when the stored job is not known)."""
    if stored is None:
        return frozenset()
    same = []
    if row.state == stored.state:
        same.append("state")
    if stored.finished or row.finished_at is None:
        same.append("finished_at")  # the update keeps a stored finished_at (_KEEP_STORED)
    if not stored.vanished and row.vanished_at is None:
        same.append("vanished_at")
    if bool(row.listed) == bool(stored.listed):
        same.append("listed")
    return frozenset(same)


def update_values(
    cluster_id: str,
    rows: Sequence[JobRow],
    time: TimeWriter | None = None,
    unchanged: frozenset[str] = frozenset(),
) -> list[list[Any]]:
    """The parameters of ``update_sql(unchanged)`` for each row."""
    columns = set_columns(unchanged)
    get = attrgetter(*columns)
    timed = [i for i, name in enumerate(columns) if name in TIME_COLUMNS]
    found: list[list[Any]] = []
    for row in rows:
        values = list(get(row))
        if time is not None:
            for i in timed:
                values[i] = time(values[i])
        values += (cluster_id, row.job_id)
        found.append(values)
    return found
