"""The four dashboard questions as SQL that runs unchanged on SQLite and PostgreSQL.

SQL that names jobsync's views lives in storage, although these texts are for people and BI
tools first. They are the one source: docs/sql-and-bi.md shows them word for word (a test
compares the two), the Superset walk-through pastes them as they are, and a test runs each on
both backends over the same history and requires the same rows.

The backlog (jobs whose start no pass observed: ``job_durations.backlog``, the ``backlog_*``
columns of ``daily_job_stats``) is left out of finishes, failure rates and durations, so a first
sync of a long-lived cluster does not swamp its first day.

What keeps them portable: only views and functions both databases share (``SUM``, ``COUNT``,
``MAX``, ``NULLIF``, ``DATE``, ``CAST``, ``ROW_NUMBER``), sums cast back to ``BIGINT``
(PostgreSQL's ``SUM`` of a bigint is a numeric), a nearest rank whose division is exact (the
remainder subtracted first: DuckDB's ``/`` of integers gives a fraction where SQLite and
PostgreSQL truncate, so DuckDB reading either database through its attachment gets the same
rows), and no notion of "now" (SQLite and PostgreSQL have none in common): stuck means
long in its state as of the last pass that listed the job, which is what ``active_jobs`` says.

One condition on PostgreSQL: ``durations_per_day`` takes the day of ``finished_at`` with
``DATE()`` (a ``date`` there, ``YYYY-MM-DD`` text on SQLite), which cuts days in the session's
time zone, so the session's ``TimeZone`` must be UTC (the server default on most installations;
else add ``options=-c timezone=UTC`` to the connection URL, as docs/sql-and-bi.md shows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import Engine, text

from jobsync.storage.boundary import boundary

__all__ = [
    "DASHBOARD_QUERIES",
    "DURATIONS_PER_DAY",
    "FAILURE_RATE_PER_DAY",
    "IMPORTS_PER_DAY",
    "STUCK_AFTER_SECONDS",
    "STUCK_JOBS",
    "DashboardQuery",
    "run_dashboard_query",
]

# The default of ``jobsync report stuck --older-than`` (2h): the dashboard agrees with the report.
STUCK_AFTER_SECONDS = 7200


class DashboardQuery(NamedTuple):
    """One dashboard question: its name, what it answers, and its SQL."""

    name: str
    title: str
    sql: str


IMPORTS_PER_DAY = DashboardQuery(
    "imports_per_day",
    "Imports per day: jobs first seen (new ones and the backlog apart), completed and failed, "
    "per UTC day",
    """\
SELECT day,
       CAST(SUM(new_jobs) AS BIGINT) AS new_jobs,
       CAST(SUM(backlog_jobs) AS BIGINT) AS backlog_jobs,
       CAST(SUM(completed) - SUM(backlog_completed) AS BIGINT) AS completed,
       CAST(SUM(failed) - SUM(backlog_failed) AS BIGINT) AS failed,
       CAST(SUM(backlog_completed) + SUM(backlog_failed) AS BIGINT) AS backlog_finished
FROM daily_job_stats
GROUP BY day
ORDER BY day""",
)

FAILURE_RATE_PER_DAY = DashboardQuery(
    "failure_rate_per_day",
    "Failure rate per day: failed out of finished, per UTC day of finishing, of the jobs "
    "whose start was observed (the backlog left out)",
    """\
SELECT day,
       CAST(SUM(completed) - SUM(backlog_completed) + SUM(failed) - SUM(backlog_failed)
            AS BIGINT) AS finished,
       CAST(SUM(failed) - SUM(backlog_failed) AS BIGINT) AS failed,
       CAST(SUM(failed) - SUM(backlog_failed) AS DOUBLE PRECISION)
         / NULLIF(SUM(completed) - SUM(backlog_completed) + SUM(failed) - SUM(backlog_failed), 0)
         AS failure_rate
FROM daily_job_stats
GROUP BY day
HAVING SUM(completed) - SUM(backlog_completed) + SUM(failed) - SUM(backlog_failed) > 0
ORDER BY day""",
)

DURATIONS_PER_DAY = DashboardQuery(
    "durations_per_day",
    "p50, p90 and p95 import duration per day, of jobs whose start a pass observed",
    """\
WITH finished AS (
    SELECT DATE(finished_at) AS day, estimated_seconds
    FROM job_durations
    WHERE is_finished = 1
      AND NOT backlog
      AND estimated_seconds IS NOT NULL
),
ranked AS (
    SELECT day, estimated_seconds,
           ROW_NUMBER() OVER (PARTITION BY day ORDER BY estimated_seconds) AS rn,
           COUNT(*) OVER (PARTITION BY day) AS jobs
    FROM finished
)
SELECT day,
       CAST(MAX(jobs) AS BIGINT) AS jobs,
       MAX(CASE WHEN rn = (50 * jobs + 99 - (50 * jobs + 99) % 100) / 100
                THEN estimated_seconds END) AS p50_seconds,
       MAX(CASE WHEN rn = (90 * jobs + 99 - (90 * jobs + 99) % 100) / 100
                THEN estimated_seconds END) AS p90_seconds,
       MAX(CASE WHEN rn = (95 * jobs + 99 - (95 * jobs + 99) % 100) / 100
                THEN estimated_seconds END) AS p95_seconds
FROM ranked
GROUP BY day
ORDER BY day""",
)

STUCK_JOBS = DashboardQuery(
    "stuck_jobs",
    f"Stuck jobs now: unfinished jobs in their state for over {STUCK_AFTER_SECONDS} seconds",
    f"""\
SELECT cluster_id, job_id, collection_name, state, state_since, last_seen_at,
       seconds_in_state
FROM active_jobs
WHERE seconds_in_state > {STUCK_AFTER_SECONDS}
ORDER BY seconds_in_state DESC, cluster_id, job_id""",
)

DASHBOARD_QUERIES: tuple[DashboardQuery, ...] = (
    IMPORTS_PER_DAY,
    FAILURE_RATE_PER_DAY,
    DURATIONS_PER_DAY,
    STUCK_JOBS,
)


@boundary
def run_dashboard_query(engine: Engine, query: DashboardQuery) -> list[dict[str, Any]]:
    """The rows of one dashboard query, as a BI tool would get them."""
    with engine.connect() as conn:
        result = conn.execute(text(query.sql))
        columns: Sequence[str] = list(result.keys())
        return [dict(zip(columns, row, strict=True)) for row in result]
