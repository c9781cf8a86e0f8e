"""The example queries: documented in docs/schema.md, saved in Datasette, run by the tests.

Each is written once here. ``sqlite`` is the query for SQLite; ``postgresql`` the one for
PostgreSQL, or None when the SQLite one runs unchanged on both. The page is generated from
these (``jobsync.reporting.schema_doc``), Datasette gets the SQLite ones as saved queries
(``jobsync.reporting.datasette``), and tests/reporting/test_schema_docs.py runs every one on its
backend against a synced database.
"""

from __future__ import annotations

from typing import NamedTuple

from jobsync.storage.dashboard import FAILURE_RATE_PER_DAY

__all__ = ["EXAMPLES", "EXAMPLE_MOMENT", "Example"]

# The moment the point-in-time example names (UTC); replace it with yours.
EXAMPLE_MOMENT = "2024-05-01 12:00:00"


class Example(NamedTuple):
    """A documented query: a name for Datasette's URL, a title, what it answers, its SQL."""

    name: str
    title: str
    description: str
    sqlite: str
    postgresql: str | None = None


# The passes of each source and day, kept and rolled up; {day} and {failures} are what differ
# between the databases.
_PASSES_PER_DAY = """\
SELECT cluster_id, day, SUM(passes) AS passes, SUM(failures) AS failures
FROM (
    SELECT cluster_id, {day} AS day, COUNT(*) AS passes,
           {failures} AS failures
    FROM sync_runs
    WHERE status <> 'running'
    GROUP BY 1, 2
    UNION ALL
    SELECT cluster_id, day, passes, failures FROM sync_run_days
) AS every_pass
GROUP BY 1, 2
ORDER BY 1, 2;
"""

EXAMPLES: tuple[Example, ...] = (
    Example(
        "median_duration_last_week",
        "Median duration per collection, last week",
        "Completed jobs that finished in the last seven days, with the nearest-rank median of "
        "their estimated duration (use `min_seconds` and `max_seconds` the same way for the "
        "bounds).",
        """\
WITH finished AS (
    SELECT cluster_id, collection_name, estimated_seconds,
           ROW_NUMBER() OVER (PARTITION BY cluster_id, collection_name
                              ORDER BY estimated_seconds) AS rn,
           COUNT(*) OVER (PARTITION BY cluster_id, collection_name) AS jobs
    FROM job_durations
    WHERE final_state = 'Completed'
      AND estimated_seconds IS NOT NULL
      AND finished_at >= datetime('now', '-7 days')
)
SELECT cluster_id, collection_name, jobs, estimated_seconds AS median_seconds
FROM finished
WHERE rn = (jobs + 1) / 2
ORDER BY cluster_id, collection_name;
""",
        """\
SELECT cluster_id, collection_name, count(*) AS jobs,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY estimated_seconds) AS median_seconds
FROM job_durations
WHERE final_state = 'Completed'
  AND estimated_seconds IS NOT NULL
  AND finished_at >= now() - interval '7 days'
GROUP BY cluster_id, collection_name
ORDER BY cluster_id, collection_name;
""",
    ),
    Example(
        "failure_rate_per_day",
        "Failure rate per day",
        "Failed out of finished, per UTC day, of the jobs whose start a pass saw: the dashboard "
        "query of the same name (SQL and BI tools), which leaves out the backlog a first sync "
        "brings. `daily_job_stats` has the figures per cluster and collection, the backlog's "
        "apart (`backlog_completed`, `backlog_failed`); its `failure_rate` includes the backlog.",
        FAILURE_RATE_PER_DAY.sql + ";\n",
    ),
    Example(
        "passes_per_day",
        "Passes and failed passes per source and day",
        "Every pass, pruned or not: the passes `sync_runs` still holds, and those retention "
        "rolled up into `sync_run_days` (a pass that did not succeed counts as failed).",
        _PASSES_PER_DAY.format(day="date(started_at)", failures="SUM(status <> 'succeeded')"),
        _PASSES_PER_DAY.format(
            day="(started_at AT TIME ZONE 'UTC')::date",
            failures="COUNT(*) FILTER (WHERE status <> 'succeeded')",
        ),
    ),
    Example(
        "stuck_jobs",
        "Stuck jobs",
        "Jobs that have been `Pending` or `Importing` (or in a state jobsync does not know) for "
        "more than an hour, as of now, longest first. `seconds_so_far` counts to now; "
        "`active_jobs.seconds_in_state` counts to the last sync. If syncs stopped, every job "
        "looks stuck: check `jobsync status` too.",
        """\
SELECT cluster_id, job_id, collection_name, state, progress, state_since, last_seen_at,
       ROUND((julianday('now') - julianday(state_since)) * 86400) AS seconds_so_far
FROM active_jobs
WHERE state_since < datetime('now', '-1 hour')
ORDER BY state_since;
""",
        """\
SELECT cluster_id, job_id, collection_name, state, progress, state_since, last_seen_at,
       ROUND(EXTRACT(EPOCH FROM now() - state_since)) AS seconds_so_far
FROM active_jobs
WHERE state_since < now() - interval '1 hour'
ORDER BY state_since;
""",
    ),
    Example(
        "state_at_a_moment",
        "State of every job at a point in time",
        "The state each job was last seen in at or before a moment, for the jobs on the list "
        "then (first seen by then, not yet vanished). When the moment is after "
        "`left_window_start`, the job may already have been in its next state: the change "
        f"happened somewhere in that window. Replace `{EXAMPLE_MOMENT}` with your moment (UTC).",
        f"""\
SELECT i.cluster_id, i.job_id, i.collection_name, i.state, i.entered_at, i.left_window_start
FROM job_state_intervals i
JOIN import_jobs j ON j.cluster_id = i.cluster_id AND j.job_id = i.job_id
WHERE i.entered_at <= '{EXAMPLE_MOMENT}'
  AND (i.left_at IS NULL OR i.left_at > '{EXAMPLE_MOMENT}')
  AND (j.vanished_at IS NULL OR j.vanished_at > '{EXAMPLE_MOMENT}')
ORDER BY i.cluster_id, i.job_id;
""",
        f"""\
SELECT i.cluster_id, i.job_id, i.collection_name, i.state, i.entered_at, i.left_window_start
FROM job_state_intervals i
JOIN import_jobs j ON j.cluster_id = i.cluster_id AND j.job_id = i.job_id
WHERE i.entered_at <= TIMESTAMPTZ '{EXAMPLE_MOMENT}+00'
  AND (i.left_at IS NULL OR i.left_at > TIMESTAMPTZ '{EXAMPLE_MOMENT}+00')
  AND (j.vanished_at IS NULL OR j.vanished_at > TIMESTAMPTZ '{EXAMPLE_MOMENT}+00')
ORDER BY i.cluster_id, i.job_id;
""",
    ),
)
