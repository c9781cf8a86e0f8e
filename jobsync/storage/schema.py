"""The database schema as SQLAlchemy Core tables (Alembic revisions create the same objects).

``import_jobs`` is a view over ``import_job_records``: it adds the exact ``last_seen_at`` of jobs
that the latest pass listed, from one row per source in ``sync_sources``. That way a pass writes
rows only for jobs that changed, instead of touching every listed job to bump a timestamp.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from jobsync.storage.dictionary import annotate

__all__ = [
    "FACT_COLUMNS",
    "OPEN_JOBS",
    "PRESENT_JOBS",
    "UTCDateTime",
    "daily_job_counts",
    "daily_transition_counts",
    "import_job_progress",
    "import_job_records",
    "import_job_transitions",
    "import_jobs",
    "metadata",
    "notifications",
    "rate_slots",
    "sync_claims",
    "sync_run_days",
    "sync_runs",
    "sync_sources",
    "utc_from_db",
    "view_columns",
    "view_metadata",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out: ``timestamptz`` on PostgreSQL, UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        # In UTC: PostgreSQL keeps the instant whatever the zone, but SQLite's DateTime writes
        # the fields as plain text and drops the zone, so they must be UTC's already.
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return utc_from_db(value)


def utc_from_db(value: Any) -> datetime | None:
    """A time as the database returns it (UTC text on SQLite, even from ``max()`` or a computed
    view column that SQLAlchemy cannot type) as an aware UTC datetime."""
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


metadata = MetaData()

# The jobs active_jobs shows: neither finished nor vanished (a partial index keeps just them;
# PostgreSQL gives back this form of the condition as written, and a large load recreates the
# index from what it gives back).
OPEN_JOBS = "state <> 'Completed' AND state <> 'Failed' AND vanished_at IS NULL"

# The jobs not vanished (revision 0010 keeps a partial index of them). ``listed`` is never
# NULL: its term keeps that index out of the plans for the open jobs, whose own partial index
# SQLite would otherwise pass over for this larger one.
PRESENT_JOBS = "vanished_at IS NULL AND listed IS NOT NULL"

ID = BigInteger().with_variant(Integer(), "sqlite")

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("cluster_id", Text, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("status", String(16), nullable=False),
    Column("complete", Boolean, nullable=False, default=False),
    Column("pages", Integer, nullable=False, default=0),
    Column("records", Integer, nullable=False, default=0),
    Column("distinct_jobs", Integer, nullable=False, default=0),
    Column("duplicates", Integer, nullable=False, default=0),
    Column("invalid_records", Integer, nullable=False, default=0),
    Column("reported_count", BigInteger),
    Column("new_jobs", Integer, nullable=False, default=0),
    Column("changed_jobs", Integer, nullable=False, default=0),
    Column("vanished_jobs", Integer, nullable=False, default=0),
    Column("retries", Integer, nullable=False, default=0),
    Column("rows_written", Integer, nullable=False, default=0),
    Column("snapshot_started_at", UTCDateTime),
    Column("snapshot_finished_at", UTCDateTime),
    Column("error", Text),
    Column("details_requested", Integer, nullable=False, default=0),
    Column("details_failed", Integer, nullable=False, default=0),
    # The source's latest applied pass when this one began (revision 0005): the fence.
    Column("base_run_id", ID),
    Column("incomplete_reason", Text),
    # The process that ran the pass (revision 0007; NULL for older runs).
    Column("host", Text),
    Column("pid", Integer),
    Index("ix_sync_runs_cluster_started", "cluster_id", "started_at"),
)

sync_sources = Table(
    "sync_sources",
    metadata,
    Column("cluster_id", Text, primary_key=True),
    # The latest applied pass: every job listed in it has last_seen_at = last_snapshot_at.
    Column("last_run_id", ID, ForeignKey("sync_runs.id")),
    Column("last_snapshot_started_at", UTCDateTime),
    Column("last_snapshot_at", UTCDateTime),
    # The latest *complete* pass: a job it did not list was not listed at that time.
    Column("last_complete_run_id", ID, ForeignKey("sync_runs.id")),
    Column("last_complete_started_at", UTCDateTime),
    # last_snapshot_at as integer microseconds since the epoch (revision 0009): what the views
    # subtract, in arithmetic every database and DuckDB read alike.
    Column("last_snapshot_us", BigInteger),
)

import_job_records = Table(
    "import_job_records",
    metadata,
    Column("cluster_id", Text, primary_key=True),
    Column("job_id", Text, primary_key=True),
    Column("collection_name", Text),
    Column("state", String(16), nullable=False),
    Column("raw_state", Text),
    Column("progress", Integer),
    Column("reason", Text),
    Column("first_seen_at", UTCDateTime, nullable=False),
    Column("state_since", UTCDateTime, nullable=False),
    # Valid while `listed` is false; while true the view takes sync_sources.last_snapshot_at.
    Column("last_seen_at", UTCDateTime, nullable=False),
    # When the pass that last listed the job began: the safe start of a change window.
    Column("last_seen_started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("vanished_at", UTCDateTime),
    Column("listed", Boolean, nullable=False),
    # Consecutive complete snapshots that did not list the job, and when the first of them ended.
    Column("missed_snapshots", Integer, nullable=False, default=0),
    Column("missing_since", UTCDateTime),
    # From the progress endpoint (revision 0003); NULL until details were fetched.
    Column("total_rows", BigInteger),
    Column("imported_rows", BigInteger),
    Column("file_size", BigInteger),
    # The API's own completeTime, converted to UTC: tighter than the observed finish window.
    Column("complete_time", UTCDateTime),
    Column("details_at", UTCDateTime),
    # The job's facts (revision 0009), written by the same statements as the rest of its row:
    # whether its start was observed, its creation and finish windows and its duration.
    Column("backlog", Boolean, nullable=False, default=False),
    Column("created_window_start", UTCDateTime),
    Column("final_state", String(16)),
    Column("finished_window_start", UTCDateTime),
    Column("min_seconds", Float),
    Column("max_seconds", Float),
    Column("estimated_seconds", Float),
    # state_since and last_seen_at as integer microseconds since the epoch.
    Column("state_since_us", BigInteger),
    Column("last_seen_us", BigInteger),
    Index("ix_import_job_records_finished", "finished_at"),
    # Two partial indexes. Their predicates are in the revision that creates them (0009), one
    # per database: naming them here (sqlite_where=, postgresql_where=) would make every
    # process import both of SQLAlchemy's dialects, PostgreSQL's with all its drivers, which
    # is a tenth of a second of a SQLite sync's start; and Alembic does not compare them.
    # The finishes of jobs whose start was observed (duration statistics): none in a first
    # sync, where every job comes with the backlog.
    Index("ix_import_job_records_observed", "finished_at"),
    # The open jobs (active_jobs), few among a long history.
    Index("ix_import_job_records_open", "cluster_id", "job_id"),
    # The jobs a source still lists, not vanished (revision 0010): what a pass compares with
    # its snapshot, about as many as the API lists however long the history.
    Index("ix_import_job_records_present", "cluster_id", "job_id"),
)

import_job_transitions = Table(
    "import_job_transitions",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("cluster_id", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("raw_from_state", Text),
    Column("raw_to_state", Text),
    Column("window_start", UTCDateTime),
    Column("observed_at", UTCDateTime, nullable=False),
    Column("sync_run_id", ID, ForeignKey("sync_runs.id"), nullable=False),
    Column("reason", Text),
    # window_start and observed_at as integer microseconds since the epoch (revision 0009).
    Column("window_start_us", BigInteger),
    Column("observed_us", BigInteger),
    Index("ix_import_job_transitions_job", "cluster_id", "job_id", "id"),
    # Revision 0008: pruning asks whether a run recorded anything.
    Index("ix_import_job_transitions_run", "sync_run_id"),
    # Revision 0011: the reports of a period read the changes observed in it.
    Index("ix_import_job_transitions_observed", "observed_at"),
)

import_job_progress = Table(
    "import_job_progress",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("cluster_id", Text, nullable=False),
    Column("job_id", Text, nullable=False),
    # When the progress response arrived; a sample is written only when its figures changed.
    Column("sampled_at", UTCDateTime, nullable=False),
    Column("sync_run_id", ID, ForeignKey("sync_runs.id"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("raw_state", Text),
    Column("progress", Integer),
    Column("imported_rows", BigInteger),
    Column("total_rows", BigInteger),
    Column("file_size", BigInteger),
    Column("complete_time", UTCDateTime),
    Column("reason", Text),
    Index("ix_import_job_progress_job", "cluster_id", "job_id", "sampled_at"),
    Index("ix_import_job_progress_run", "sync_run_id"),
)

# Columns of import_job_records that revision 0009 added (the last ones).
FACT_COLUMNS = tuple(import_job_records.c.keys()[import_job_records.c.keys().index("backlog") :])

# The ``import_jobs`` view, for reading only. It lives in its own MetaData so that
# ``metadata.create_all`` and autogenerate never treat it as a table (the revision creates it).
view_metadata = MetaData()


def view_columns(table: Table, *names: str) -> list[Column[Any]]:
    """A view's columns that show ``table``'s columns of these names: the same type and key,
    without the table's constraints."""
    return [
        Column(name, table.c[name].type, primary_key=table.c[name].primary_key) for name in names
    ]


# The view shows every column of import_job_records but the bookkeeping of listing and
# vanishing, in the table's order.
_NOT_IN_IMPORT_JOBS = {
    "last_seen_started_at",
    "listed",
    "missed_snapshots",
    "missing_since",
    # The facts of revision 0009: job_durations and active_jobs show them.
    *FACT_COLUMNS,
}
import_jobs = Table(
    "import_jobs",
    view_metadata,
    *view_columns(
        import_job_records,
        *(c.name for c in import_job_records.columns if c.name not in _NOT_IN_IMPORT_JOBS),
    ),
)

# Notifications (revision 0006): one row per event, decided once, delivered after its commit.
# The latest schedule period a daemon claimed per source (revision 0007): N daemons on one
# database sync each source once per period. One row per source, overwritten: it never grows.
sync_claims = Table(
    "sync_claims",
    metadata,
    Column("cluster_id", Text, primary_key=True),
    Column("period_start", UTCDateTime, nullable=False),
    Column("claimed_at", UTCDateTime, nullable=False),
    Column("host", Text),
    Column("pid", Integer),
)

# The next free request slot per (API key fingerprint, endpoint) (revision 0007): processes that
# share a key share its rate limit. A fingerprint of the key, never the key.
rate_slots = Table(
    "rate_slots",
    metadata,
    Column("key_fingerprint", String(64), primary_key=True),
    Column("endpoint", Text, primary_key=True),
    Column("next_at", UTCDateTime, nullable=False),
    Column("send_at", UTCDateTime, nullable=False),
)

# ``event_key`` is unique: deciding an event again (after a crash, on the next pass) adds nothing.
# No foreign keys: a row must outlive the runs and jobs it speaks of.
notifications = Table(
    "notifications",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("event_key", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("job_id", Text),
    # The pass that decided it.
    Column("sync_run_id", ID),
    # The event's facts as JSON text (times in ISO 8601), scrubbed of secrets.
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # When every target had it; NULL while due.
    Column("sent_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    # Fingerprints of the targets that have it (never their URLs), space-separated.
    Column("delivered_to", Text),
    Index("ux_notifications_event_key", "event_key", unique=True),
    Index("ix_notifications_sent_at", "sent_at"),
    # A job's events: whether a stuck job was already announced for its current stay.
    Index("ix_notifications_job", "cluster_id", "job_id"),
    Index("ix_notifications_run", "sync_run_id"),
)

# The passes pruned from sync_runs (revision 0008), per source and the UTC day they started:
# added to in the transaction that deletes them, so each pass is counted here or there, once.
sync_run_days = Table(
    "sync_run_days",
    metadata,
    Column("cluster_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("passes", Integer, nullable=False, default=0),
    # Passes that did not succeed (failed or abandoned).
    Column("failures", Integer, nullable=False, default=0),
    Column("retries", BigInteger, nullable=False, default=0),
    Column("pages", BigInteger, nullable=False, default=0),
    # The passes' time from start to finish, summed.
    Column("seconds", Float, nullable=False, default=0),
)


# What daily_job_stats shows (revision 0009): per UTC day, source and collection, kept current by
# every pass in its own transaction (jobsync.storage.facts). No key: collection_name may be NULL.
daily_job_counts = Table(
    "daily_job_counts",
    metadata,
    Column("day", Date, nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("collection_name", Text),
    Column("jobs_first_seen", BigInteger, nullable=False, default=0),
    Column("completed", BigInteger, nullable=False, default=0),
    Column("failed", BigInteger, nullable=False, default=0),
    Column("failure_rate", Float),
    Column("p50_seconds", Float),
    Column("p90_seconds", Float),
    Column("new_jobs", BigInteger, nullable=False, default=0),
    Column("backlog_jobs", BigInteger, nullable=False, default=0),
    Column("backlog_completed", BigInteger, nullable=False, default=0),
    Column("backlog_failed", BigInteger, nullable=False, default=0),
    Column("duration_jobs", BigInteger, nullable=False, default=0),
    Column("p95_seconds", Float),
    Index("ix_daily_job_counts_source_day", "cluster_id", "day"),
)

# What transition_counts shows (revision 0009), maintained likewise.
daily_transition_counts = Table(
    "daily_transition_counts",
    metadata,
    Column("day", Date, nullable=False),
    Column("cluster_id", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("transitions", BigInteger, nullable=False, default=0),
    Index("ix_daily_transition_counts_source_day", "cluster_id", "day"),
)

# The descriptions of jobsync.storage.dictionary, as SQLAlchemy comments: migrate.upgrade writes
# them to PostgreSQL after every run, so autogenerate must expect them.
annotate(metadata.tables.values())
