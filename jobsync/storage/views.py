"""The reporting views (revision 0004) as SQLAlchemy tables, for reading only.

They belong to ``jobsync.storage.schema.view_metadata``, so ``metadata.create_all`` and autogenerate
never treat them as tables: the revision creates them. Their columns are described in
docs/schema.md (and, for Datasette, in ``jobsync.reporting.datasette``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, String, Table, Text

from jobsync.storage.schema import UTCDateTime, import_job_records, view_columns, view_metadata

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
    Column("cluster_id", Text),
    Column("job_id", Text),
    Column("collection_name", Text),
    Column("state", String(16)),
    Column("entered_window_start", UTCDateTime),
    Column("entered_at", UTCDateTime),
    Column("left_window_start", UTCDateTime),
    Column("left_at", UTCDateTime),
    Column("min_seconds", Float),
    Column("max_seconds", Float),
    Column("is_open", Integer),
)

job_durations = Table(
    "job_durations",
    view_metadata,
    *view_columns(import_job_records, "cluster_id", "job_id", "collection_name"),
    Column("final_state", String(16)),
    Column("created_window_start", UTCDateTime),
    Column("created_at", UTCDateTime),
    Column("finished_window_start", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("complete_time", UTCDateTime),
    Column("min_seconds", Float),
    Column("max_seconds", Float),
    Column("estimated_seconds", Float),
    Column("is_finished", Integer),
)

daily_job_stats = Table(
    "daily_job_stats",
    view_metadata,
    Column("day", Text),
    Column("cluster_id", Text),
    Column("collection_name", Text),
    Column("jobs_first_seen", BigInteger),
    Column("completed", BigInteger),
    Column("failed", BigInteger),
    Column("failure_rate", Float),
    Column("p50_seconds", Float),
    Column("p90_seconds", Float),
)

transition_counts = Table(
    "transition_counts",
    view_metadata,
    Column("day", Text),
    Column("cluster_id", Text),
    Column("kind", String(16)),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("transitions", BigInteger),
)

active_jobs = Table(
    "active_jobs",
    view_metadata,
    *view_columns(
        import_job_records,
        "cluster_id",
        "job_id",
        "collection_name",
        "state",
        "raw_state",
        "progress",
        "imported_rows",
        "total_rows",
        "state_since",
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
