"""The reporting views (revisions 0004 and 0009) as SQLAlchemy tables, for reading only.

They belong to ``jobsync.storage.schema.view_metadata``, so ``metadata.create_all`` and autogenerate
never treat them as tables: the revisions create them. Their columns are described in
docs/schema.md (and, for Datasette, in ``jobsync.reporting.datasette``). Each leads with a time
column that is never NULL.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Integer, String, Table, Text

from jobsync.storage.schema import (
    UTCDateTime,
    daily_job_counts,
    daily_transition_counts,
    import_job_records,
    view_columns,
    view_metadata,
)

__all__ = [
    "REPORTING_VIEWS",
    "active_jobs",
    "daily_job_stats",
    "job_durations",
    "job_state_intervals",
    "transition_counts",
]

job_state_intervals = Table(
    "job_state_intervals",
    view_metadata,
    Column("entered_at", UTCDateTime),
    Column("cluster_id", Text),
    Column("job_id", Text),
    Column("collection_name", Text),
    Column("state", String(16)),
    Column("entered_window_start", UTCDateTime),
    Column("left_window_start", UTCDateTime),
    Column("left_at", UTCDateTime),
    Column("min_seconds", Float),
    Column("max_seconds", Float),
    Column("is_open", Integer),
)

job_durations = Table(
    "job_durations",
    view_metadata,
    Column("created_at", UTCDateTime),
    *view_columns(import_job_records, "cluster_id", "job_id", "collection_name"),
    Column("final_state", String(16)),
    Column("created_window_start", UTCDateTime),
    Column("finished_window_start", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("complete_time", UTCDateTime),
    Column("min_seconds", Float),
    Column("max_seconds", Float),
    Column("estimated_seconds", Float),
    Column("is_finished", Integer),
    Column("backlog", Boolean),
)

# Projections of the tables the passes keep current: the same columns, in the same order.
daily_job_stats = Table(
    "daily_job_stats",
    view_metadata,
    *(Column(c.name, c.type) for c in daily_job_counts.columns),
)

transition_counts = Table(
    "transition_counts",
    view_metadata,
    *(Column(c.name, c.type) for c in daily_transition_counts.columns),
)

active_jobs = Table(
    "active_jobs",
    view_metadata,
    *view_columns(
        import_job_records,
        "state_since",
        "cluster_id",
        "job_id",
        "collection_name",
        "state",
        "raw_state",
        "progress",
        "imported_rows",
        "total_rows",
        "last_seen_at",
    ),
    Column("seconds_in_state", Float),
)

REPORTING_VIEWS: tuple[Table, ...] = (
    job_state_intervals,
    job_durations,
    daily_job_stats,
    transition_counts,
    active_jobs,
)
