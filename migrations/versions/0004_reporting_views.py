"""Reporting views: job_state_intervals, job_durations, daily_job_stats, transition_counts,
active_jobs (their columns are described in docs/schema.md).

They give the same rows on SQLite and PostgreSQL. Durations are computed from each time's
integer microseconds since the epoch (``EXTRACT(EPOCH ...)`` on PostgreSQL, the stored
``YYYY-MM-DD HH:MM:SS.ffffff`` text on SQLite) and rounded to whole milliseconds in integer
arithmetic before the one division that makes them seconds: SQLite's ``julianday()`` rounds
every time to the millisecond and its ``round()`` goes through printf, so float arithmetic
disagreed with PostgreSQL's exact numerics in the last digit for times on half milliseconds.
Days are ``YYYY-MM-DD`` text of the UTC date on both.

A ``reappeared`` transition whose state differs from the one the job vanished in is a state
change, but its own ``window_start`` (the latest complete snapshot that did not list the job)
says nothing about when the state changed: that happened after the last pass that listed the
job in the old state began, which is the ``window_start`` of the ``vanished`` transition before
it. The views use that one, so every bound stays a bound.

Dependencies: these views read ``import_job_records``, ``import_job_transitions`` and
``sync_sources`` (and each other), never the ``import_jobs`` view, so a revision can drop and
recreate ``import_jobs`` without PostgreSQL refusing because of them. They repeat its
``last_seen_at`` rule, though: a revision that recreates ``import_jobs`` with a different rule,
or that drops, recreates (SQLite batch copy) or drops columns of a table these views read, must
drop these five views first (daily_job_stats, job_durations, job_state_intervals,
transition_counts, active_jobs: dependants first) and create them again afterwards, copying
their SQL into the new revision rather than importing it from here.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TERMINAL = "('Completed', 'Failed')"

# Dependants first: the order in which the views are dropped.
VIEWS = (
    "daily_job_stats",
    "job_durations",
    "job_state_intervals",
    "transition_counts",
    "active_jobs",
)


class _Sql:
    """The dialect-specific fragments; everything else is SQL both backends share."""

    def __init__(self, dialect: str) -> None:
        self.postgresql = dialect == "postgresql"

    def us(self, column: str) -> str:
        """Integer microseconds since the epoch (NULL stays NULL)."""
        if self.postgresql:
            return f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)"
        return (
            f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
            f" + CASE WHEN substr({column}, 20, 1) = '.'"
            f" THEN CAST(substr(substr({column}, 21, 6) || '000000', 1, 6) AS INTEGER)"
            " ELSE 0 END)"
        )

    def day(self, column: str) -> str:
        if self.postgresql:
            return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        return f"strftime('%Y-%m-%d', {column})"


def seconds(microseconds: str, per: int = 1) -> str:
    """Seconds, rounded half away from zero to the millisecond, from an integer expression in
    units of 1/``per`` microsecond. The expression must be a plain column: it appears thrice."""
    half, whole = 500 * per, 1000 * per
    milliseconds = (
        f"CASE WHEN {microseconds} >= 0 THEN ({microseconds} + {half}) / {whole}"
        f" ELSE -(({half} - {microseconds}) / {whole}) END"
    )
    return f"CAST({milliseconds} AS DOUBLE PRECISION) / 1000"


def floor0(expression: str) -> str:
    return f"CASE WHEN {expression} < 0 THEN 0 ELSE {expression} END"


LAST_SEEN_AT = """CASE WHEN r.listed THEN COALESCE(s.last_snapshot_at, r.last_seen_at)
                 ELSE r.last_seen_at END"""


def job_state_intervals(sql: _Sql) -> str:
    return f"""
        CREATE VIEW job_state_intervals AS
        WITH ordered AS (
            SELECT
                t.id, t.cluster_id, t.job_id, t.kind, t.from_state, t.to_state, t.observed_at,
                CASE WHEN t.kind = 'reappeared' AND LAG(t.kind) OVER job = 'vanished'
                     THEN LAG(t.window_start) OVER job
                     ELSE t.window_start END AS window_start
            FROM import_job_transitions t
            WINDOW job AS (PARTITION BY t.cluster_id, t.job_id ORDER BY t.id)
        ),
        entries AS (
            SELECT
                o.cluster_id, o.job_id, o.to_state AS state,
                o.window_start AS entered_window_start,
                o.observed_at AS entered_at,
                LEAD(o.window_start) OVER job AS left_window_start,
                LEAD(o.observed_at) OVER job AS left_at
            FROM ordered o
            WHERE o.kind IN ('first_seen', 'change')
               OR (o.kind = 'reappeared' AND o.to_state <> o.from_state)
            WINDOW job AS (PARTITION BY o.cluster_id, o.job_id ORDER BY o.id)
        ),
        located AS (
            SELECT e.*, r.collection_name, {LAST_SEEN_AT} AS last_seen_at
            FROM entries e
            JOIN import_job_records r ON r.cluster_id = e.cluster_id AND r.job_id = e.job_id
            LEFT JOIN sync_sources s ON s.cluster_id = e.cluster_id
        ),
        spans AS (
            SELECT
                located.*,
                CASE WHEN left_at IS NULL THEN {sql.us("last_seen_at")}
                     ELSE {sql.us("left_window_start")} END
                  - {sql.us("entered_at")} AS known_us,
                {sql.us("left_at")} - {sql.us("entered_window_start")} AS max_us
            FROM located
        ),
        floored AS (
            SELECT spans.*,
                   CASE WHEN known_us IS NULL OR known_us < 0 THEN 0 ELSE known_us END AS min_us
            FROM spans
        )
        SELECT
            cluster_id, job_id, collection_name, state,
            entered_window_start, entered_at, left_window_start, left_at,
            {seconds("min_us")} AS min_seconds,
            {seconds("max_us")} AS max_seconds,
            CASE WHEN left_at IS NULL THEN 1 ELSE 0 END AS is_open
        FROM floored
    """


def job_durations(sql: _Sql) -> str:
    return f"""
        CREATE VIEW job_durations AS
        WITH created AS (
            SELECT cluster_id, job_id, window_start, observed_at,
                   ROW_NUMBER() OVER (PARTITION BY cluster_id, job_id ORDER BY id) AS n
            FROM import_job_transitions
            WHERE kind = 'first_seen'
        ),
        finished AS (
            SELECT cluster_id, job_id, state, entered_window_start, entered_at
            FROM job_state_intervals
            WHERE is_open = 1 AND state IN {TERMINAL}
        ),
        joined AS (
            SELECT
                r.cluster_id, r.job_id, r.collection_name,
                f.state AS final_state,
                c.window_start AS created_window_start,
                c.observed_at AS created_at,
                f.entered_window_start AS finished_window_start,
                f.entered_at AS finished_at,
                r.complete_time,
                {sql.us("c.window_start")} AS cws,
                {sql.us("c.observed_at")} AS cat,
                {sql.us("f.entered_window_start")} AS fws,
                {sql.us("f.entered_at")} AS fat,
                {sql.us("r.complete_time")} AS ct
            FROM import_job_records r
            LEFT JOIN created c
              ON c.cluster_id = r.cluster_id AND c.job_id = r.job_id AND c.n = 1
            LEFT JOIN finished f ON f.cluster_id = r.cluster_id AND f.job_id = r.job_id
        ),
        bounds AS (
            -- The finish moment: complete_time exactly when it lies in the observed window.
            SELECT joined.*,
                   CASE WHEN ct IS NOT NULL AND ct <= fat AND (fws IS NULL OR ct >= fws)
                        THEN ct ELSE fws END AS f_lo,
                   CASE WHEN ct IS NOT NULL AND ct <= fat AND (fws IS NULL OR ct >= fws)
                        THEN ct ELSE fat END AS f_hi
            FROM joined
        ),
        spans AS (
            SELECT bounds.*,
                   CASE WHEN fat IS NULL THEN NULL
                        WHEN f_lo IS NULL THEN 0
                        ELSE {floor0("f_lo - cat")} END AS min_us,
                   CASE WHEN fat IS NULL THEN NULL ELSE f_hi - cws END AS max_us,
                   -- Twice the difference of the midpoints, so it stays an integer.
                   CASE WHEN fat IS NULL THEN NULL
                        ELSE {floor0("(f_lo + f_hi) - (cws + cat)")} END AS estimated_2us
            FROM bounds
        )
        SELECT
            cluster_id, job_id, collection_name, final_state,
            created_window_start, created_at, finished_window_start, finished_at, complete_time,
            {seconds("min_us")} AS min_seconds,
            {seconds("max_us")} AS max_seconds,
            {seconds("estimated_2us", per=2)} AS estimated_seconds,
            CASE WHEN final_state IS NULL THEN 0 ELSE 1 END AS is_finished
        FROM spans
    """


def daily_job_stats(sql: _Sql) -> str:
    return f"""
        CREATE VIEW daily_job_stats AS
        WITH done AS (
            SELECT {sql.day("finished_at")} AS day, cluster_id, collection_name,
                   final_state, estimated_seconds
            FROM job_durations
            WHERE is_finished = 1
        ),
        ranked AS (
            SELECT done.*,
                   ROW_NUMBER() OVER (
                       PARTITION BY day, cluster_id, collection_name,
                                    CASE WHEN estimated_seconds IS NULL THEN 1 ELSE 0 END
                       ORDER BY estimated_seconds
                   ) AS rn,
                   COUNT(estimated_seconds) OVER (
                       PARTITION BY day, cluster_id, collection_name
                   ) AS known
            FROM done
        ),
        events AS (
            SELECT {sql.day("t.observed_at")} AS day, t.cluster_id, r.collection_name,
                   1 AS first_seen, 0 AS completed, 0 AS failed,
                   CAST(NULL AS DOUBLE PRECISION) AS p50,
                   CAST(NULL AS DOUBLE PRECISION) AS p90
            FROM import_job_transitions t
            JOIN import_job_records r ON r.cluster_id = t.cluster_id AND r.job_id = t.job_id
            WHERE t.kind = 'first_seen'
            UNION ALL
            SELECT day, cluster_id, collection_name,
                   0,
                   CASE WHEN final_state = 'Completed' THEN 1 ELSE 0 END,
                   CASE WHEN final_state = 'Failed' THEN 1 ELSE 0 END,
                   -- Nearest rank: the ceil(p * n / 100)-th smallest known estimate.
                   CASE WHEN estimated_seconds IS NOT NULL AND rn = (50 * known + 99) / 100
                        THEN estimated_seconds END,
                   CASE WHEN estimated_seconds IS NOT NULL AND rn = (90 * known + 99) / 100
                        THEN estimated_seconds END
            FROM ranked
        )
        SELECT
            day, cluster_id, collection_name,
            SUM(first_seen) AS jobs_first_seen,
            SUM(completed) AS completed,
            SUM(failed) AS failed,
            CASE WHEN SUM(completed) + SUM(failed) = 0 THEN NULL
                 ELSE CAST(SUM(failed) AS DOUBLE PRECISION) / (SUM(completed) + SUM(failed))
            END AS failure_rate,
            MAX(p50) AS p50_seconds,
            MAX(p90) AS p90_seconds
        FROM events
        GROUP BY day, cluster_id, collection_name
    """


def transition_counts(sql: _Sql) -> str:
    return f"""
        CREATE VIEW transition_counts AS
        SELECT day, cluster_id, kind, from_state, to_state, COUNT(*) AS transitions
        FROM (
            SELECT {sql.day("observed_at")} AS day, cluster_id, kind, from_state, to_state
            FROM import_job_transitions
        ) t
        GROUP BY day, cluster_id, kind, from_state, to_state
    """


def active_jobs(sql: _Sql) -> str:
    return f"""
        CREATE VIEW active_jobs AS
        WITH active AS (
            SELECT
                r.cluster_id, r.job_id, r.collection_name, r.state, r.raw_state, r.progress,
                r.imported_rows, r.total_rows, r.state_since,
                {LAST_SEEN_AT} AS last_seen_at
            FROM import_job_records r
            LEFT JOIN sync_sources s ON s.cluster_id = r.cluster_id
            WHERE r.state NOT IN {TERMINAL} AND r.vanished_at IS NULL
        ),
        spans AS (
            SELECT active.*,
                   {sql.us("last_seen_at")} - {sql.us("state_since")} AS in_state_us
            FROM active
        )
        SELECT
            cluster_id, job_id, collection_name, state, raw_state, progress,
            imported_rows, total_rows, state_since, last_seen_at,
            {seconds("in_state_us")} AS seconds_in_state
        FROM spans
    """


def upgrade() -> None:
    sql = _Sql(op.get_bind().dialect.name)
    # Each view only reads views created before it.
    for create in (
        job_state_intervals,
        job_durations,
        daily_job_stats,
        transition_counts,
        active_jobs,
    ):
        op.execute(create(sql))


def downgrade() -> None:
    for name in VIEWS:
        op.execute(f"DROP VIEW {name}")
