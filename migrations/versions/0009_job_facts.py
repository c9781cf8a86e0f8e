"""Facts kept by the pass: backlog apart, real types, and views that read stored rows.

``import_job_records`` gets each job's facts (``backlog``, creation and finish windows, final
state, duration bounds and estimate; ``jobsync.domain.facts``) and integer microsecond copies of
its times; ``import_job_transitions`` and ``sync_sources`` get those copies too. Two tables hold
the daily figures, kept current by every pass: ``daily_job_counts`` and
``daily_transition_counts``. The five reporting views are created again over them:

- ``job_durations``, ``daily_job_stats`` and ``transition_counts`` are plain projections of
  stored columns, so every tool reads their types, and reading them costs what reading those
  rows costs, however long the history;
- ``active_jobs`` and ``job_state_intervals`` subtract the microsecond copies in integer
  arithmetic every database (and DuckDB, reading the SQLite file) computes alike;
- every view leads with a time column that is never NULL;
- on SQLite a view column has a declared type only where it is a plain column, so a view that
  computes some of its columns is a ``UNION ALL`` whose first arm selects typed columns of the
  same kinds and no rows (``WHERE 0``): SQLite and SQLAlchemy take the declared types from it,
  DuckDB unifies both arms. PostgreSQL types every expression itself.

Existing databases get the facts from their history (``jobsync.storage.facts.rebuild``), and
``complete_time`` is cleared on jobs that are not finished. The views' SQL is written here, not
imported, as revision 0004 asks; the downgrade creates 0004's views again from that revision.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = (
    "daily_job_stats",
    "job_durations",
    "job_state_intervals",
    "transition_counts",
    "active_jobs",
)
TERMINAL = "('Completed', 'Failed')"
OPEN_JOBS = "state <> 'Completed' AND state <> 'Failed' AND vanished_at IS NULL"

RECORD_COLUMNS = (
    ("backlog", sa.Boolean(), {"nullable": False, "server_default": sa.false()}),
    ("created_window_start", sa.DateTime(timezone=True), {}),
    ("final_state", sa.String(16), {}),
    ("finished_window_start", sa.DateTime(timezone=True), {}),
    ("min_seconds", sa.Float(), {}),
    ("max_seconds", sa.Float(), {}),
    ("estimated_seconds", sa.Float(), {}),
    ("state_since_us", sa.BigInteger(), {}),
    ("last_seen_us", sa.BigInteger(), {}),
)
TRANSITION_COLUMNS = ("window_start_us", "observed_us")


def seconds(us: str) -> str:
    """Seconds from a non-negative integer microseconds column, rounded half up to the
    millisecond without integer division (DuckDB's ``/`` of integers gives a fraction)."""
    return f"CAST({us} + 500 - ({us} + 500) % 1000 AS DOUBLE PRECISION) / 1000000"


def typed(sqlite: bool, columns: str, source: str, body: str) -> str:
    """``body``, preceded on SQLite by an arm with no rows that gives each column the declared
    type of ``columns`` (plain columns of ``source``)."""
    if not sqlite:
        return body
    return f"SELECT {columns} FROM {source} WHERE 0\nUNION ALL\n{body}"


def job_durations(sqlite: bool) -> str:
    head = (
        "first_seen_at AS created_at, cluster_id, job_id, collection_name, final_state, "
        "created_window_start, finished_window_start, finished_at, complete_time, "
        "min_seconds, max_seconds, estimated_seconds"
    )
    body = f"""SELECT {head},
       CASE WHEN final_state IS NULL THEN 0 ELSE 1 END AS is_finished, backlog
FROM import_job_records"""
    return "CREATE VIEW job_durations AS\n" + typed(
        sqlite, f"{head}, missed_snapshots AS is_finished, backlog", "import_job_records", body
    )


DAILY = (
    "day, cluster_id, collection_name, jobs_first_seen, completed, failed, failure_rate, "
    "p50_seconds, p90_seconds, new_jobs, backlog_jobs, backlog_completed, backlog_failed, "
    "duration_jobs, p95_seconds"
)


def daily_job_stats(sqlite: bool) -> str:
    return f"CREATE VIEW daily_job_stats AS SELECT {DAILY} FROM daily_job_counts"


def transition_counts(sqlite: bool) -> str:
    return (
        "CREATE VIEW transition_counts AS SELECT day, cluster_id, kind, from_state, to_state, "
        "transitions FROM daily_transition_counts"
    )


SEEN_US = """CASE WHEN r.listed THEN COALESCE(s.last_snapshot_us, r.last_seen_us)
                 ELSE r.last_seen_us END"""
SEEN_AT = """CASE WHEN r.listed THEN COALESCE(s.last_snapshot_at, r.last_seen_at)
                 ELSE r.last_seen_at END"""


def active_jobs(sqlite: bool) -> str:
    columns = (
        "state_since, cluster_id, job_id, collection_name, state, raw_state, progress, "
        "imported_rows, total_rows"
    )
    body = f"""SELECT {columns}, last_seen_at,
       CASE WHEN in_state_us < 0 THEN 0 ELSE {seconds("in_state_us")} END AS seconds_in_state
FROM (
    SELECT r.state_since, r.cluster_id, r.job_id, r.collection_name, r.state, r.raw_state,
           r.progress, r.imported_rows, r.total_rows,
           {SEEN_AT} AS last_seen_at,
           {SEEN_US} - r.state_since_us AS in_state_us
    FROM import_job_records r
    LEFT JOIN sync_sources s ON s.cluster_id = r.cluster_id
    -- As the partial index on open jobs spells it (a form PostgreSQL keeps as written).
    WHERE r.state <> 'Completed' AND r.state <> 'Failed' AND r.vanished_at IS NULL
) a"""
    return "CREATE VIEW active_jobs AS\n" + typed(
        sqlite,
        f"{columns}, last_seen_at, min_seconds AS seconds_in_state",
        "import_job_records",
        body,
    )


def job_state_intervals(sqlite: bool) -> str:
    after_vanished = "t.kind = 'reappeared' AND LAG(t.kind) OVER job = 'vanished'"
    body = f"""SELECT entered_at, cluster_id, job_id, collection_name, state,
       entered_window_start, left_window_start, left_at,
       {seconds("min_us")} AS min_seconds,
       {seconds("max_us")} AS max_seconds,
       CASE WHEN left_at IS NULL THEN 1 ELSE 0 END AS is_open
FROM (
    SELECT spans.*, CASE WHEN known_us IS NULL OR known_us < 0 THEN 0 ELSE known_us END AS min_us
    FROM (
        SELECT e.*, r.collection_name,
               CASE WHEN e.left_at IS NULL THEN {SEEN_US} ELSE e.left_window_us END
                 - e.entered_us AS known_us,
               e.left_us - e.entered_window_us AS max_us
        FROM (
            SELECT o.cluster_id, o.job_id, o.to_state AS state,
                   o.window_start AS entered_window_start, o.observed_at AS entered_at,
                   o.window_start_us AS entered_window_us, o.observed_us AS entered_us,
                   LEAD(o.window_start) OVER job AS left_window_start,
                   LEAD(o.observed_at) OVER job AS left_at,
                   LEAD(o.window_start_us) OVER job AS left_window_us,
                   LEAD(o.observed_us) OVER job AS left_us
            FROM (
                SELECT t.id, t.cluster_id, t.job_id, t.kind, t.from_state, t.to_state,
                       t.observed_at, t.observed_us,
                       CASE WHEN {after_vanished} THEN LAG(t.window_start) OVER job
                            ELSE t.window_start END AS window_start,
                       CASE WHEN {after_vanished} THEN LAG(t.window_start_us) OVER job
                            ELSE t.window_start_us END AS window_start_us
                FROM import_job_transitions t
                WINDOW job AS (PARTITION BY t.cluster_id, t.job_id ORDER BY t.id)
            ) o
            WHERE o.kind IN ('first_seen', 'change')
               OR (o.kind = 'reappeared' AND o.to_state <> o.from_state)
            WINDOW job AS (PARTITION BY o.cluster_id, o.job_id ORDER BY o.id)
        ) e
        JOIN import_job_records r ON r.cluster_id = e.cluster_id AND r.job_id = e.job_id
        LEFT JOIN sync_sources s ON s.cluster_id = e.cluster_id
    ) spans
) floored"""
    return "CREATE VIEW job_state_intervals AS\n" + typed(
        sqlite,
        "t.observed_at AS entered_at, t.cluster_id, t.job_id, r.collection_name, "
        "t.to_state AS state, t.window_start AS entered_window_start, "
        "t.window_start AS left_window_start, t.observed_at AS left_at, r.min_seconds, "
        "r.max_seconds, r.missed_snapshots AS is_open",
        "import_job_transitions t, import_job_records r",
        body,
    )


CREATE = (job_state_intervals, job_durations, daily_job_stats, transition_counts, active_jobs)


def upgrade() -> None:
    from jobsync.storage.refacts import rebuild

    sqlite = op.get_bind().dialect.name == "sqlite"
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    for name, kind, options in RECORD_COLUMNS:
        op.add_column("import_job_records", sa.Column(name, kind, **options))
    for name in TRANSITION_COLUMNS:
        op.add_column("import_job_transitions", sa.Column(name, sa.BigInteger()))
    op.add_column("sync_sources", sa.Column("last_snapshot_us", sa.BigInteger()))
    op.create_index("ix_import_job_records_finished", "import_job_records", ["finished_at"])
    op.create_index(
        "ix_import_job_records_observed",
        "import_job_records",
        ["finished_at"],
        sqlite_where=sa.text("backlog = 0"),
        postgresql_where=sa.text("NOT backlog"),
    )
    op.create_index(
        "ix_import_job_records_open",
        "import_job_records",
        ["cluster_id", "job_id"],
        sqlite_where=sa.text(OPEN_JOBS),
        postgresql_where=sa.text(OPEN_JOBS),
    )
    op.create_table(
        "daily_job_counts",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("collection_name", sa.Text),
        *(
            sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
            for name in ("jobs_first_seen", "completed", "failed")
        ),
        sa.Column("failure_rate", sa.Float),
        sa.Column("p50_seconds", sa.Float),
        sa.Column("p90_seconds", sa.Float),
        *(
            sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
            for name in (
                "new_jobs",
                "backlog_jobs",
                "backlog_completed",
                "backlog_failed",
                "duration_jobs",
            )
        ),
        sa.Column("p95_seconds", sa.Float),
    )
    op.create_index("ix_daily_job_counts_source_day", "daily_job_counts", ["cluster_id", "day"])
    op.create_table(
        "daily_transition_counts",
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16)),
        sa.Column("transitions", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_daily_transition_counts_source_day", "daily_transition_counts", ["cluster_id", "day"]
    )
    op.execute(f"UPDATE import_job_records SET complete_time = NULL WHERE state NOT IN {TERMINAL}")
    rebuild(op.get_bind())
    for create in CREATE:
        op.execute(create(sqlite))


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
    op.drop_index("ix_daily_transition_counts_source_day", table_name="daily_transition_counts")
    op.drop_table("daily_transition_counts")
    op.drop_index("ix_daily_job_counts_source_day", table_name="daily_job_counts")
    op.drop_table("daily_job_counts")
    op.drop_index("ix_import_job_records_open", table_name="import_job_records")
    op.drop_index("ix_import_job_records_observed", table_name="import_job_records")
    op.drop_index("ix_import_job_records_finished", table_name="import_job_records")
    op.drop_column("sync_sources", "last_snapshot_us")
    for name in TRANSITION_COLUMNS:
        op.drop_column("import_job_transitions", name)
    for name, _kind, _options in reversed(RECORD_COLUMNS):
        op.drop_column("import_job_records", name)
    spec = importlib.util.spec_from_file_location(
        "revision_0004", Path(__file__).with_name("0004_reporting_views.py")
    )
    assert spec is not None
    assert spec.loader is not None
    earlier = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(earlier)
    sql = earlier._Sql(op.get_bind().dialect.name)
    for create in (
        earlier.job_state_intervals,
        earlier.job_durations,
        earlier.daily_job_stats,
        earlier.transition_counts,
        earlier.active_jobs,
    ):
        op.execute(create(sql))
