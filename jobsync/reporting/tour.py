"""What ``jobsync demo`` shows after its passes: totals, and the history of two example jobs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, func, select

from jobsync.reporting.output import render
from jobsync.reporting.queries import job_history, overview
from jobsync.storage.dashboard import FAILURE_RATE_PER_DAY, IMPORTS_PER_DAY, run_dashboard_query
from jobsync.storage.schema import import_job_progress

__all__ = ["tour_report"]

HISTORY_COLUMNS = ("kind", "from_state", "to_state", "window_start", "observed_at")
PER_DAY_COLUMNS = ("day", "new_jobs", "backlog_jobs", "completed", "failed", "failure_rate")


def tour_report(engine: Engine, examples: Sequence[tuple[str, str]]) -> str:
    """Jobs per state, transitions per kind, progress samples, figures per day, and the
    histories of the ``(cluster_id, job_id)`` examples, as text."""
    totals = overview(engine)
    report = ["\nJobs per state:"]
    report += [f"  {state:<10} {n}" for state, n in totals["jobs_by_state"].items()]
    report.append("\nTransitions recorded:")
    report += [f"  {kind:<10} {n}" for kind, n in totals["transitions_by_kind"].items()]
    with engine.connect() as conn:
        samples = conn.execute(select(func.count()).select_from(import_job_progress)).scalar()
    report.append(f"\nProgress samples recorded (import_job_progress): {samples}")
    report.append(
        "\nPer UTC day. backlog_jobs were first seen in the first pass or already finished, so"
        "\nno pass saw them start; completed, failed and failure_rate count the new jobs only:"
    )
    report.append(_indent(render(_per_day(engine), "table", PER_DAY_COLUMNS)))
    for cluster_id, job_id in examples:
        report.append(f"\nHistory of job {job_id} ({cluster_id}):")
        rows = job_history(engine, job_id, cluster_ids=[cluster_id])
        report.append(_indent(render(rows, "table", HISTORY_COLUMNS)))
    return "\n".join(report)


def _per_day(engine: Engine) -> list[dict[str, object]]:
    """Two of the dashboard queries side by side: what the daily charts of a BI tool show."""
    rates = {r["day"]: r["failure_rate"] for r in run_dashboard_query(engine, FAILURE_RATE_PER_DAY)}
    return [
        {
            **row,
            "failure_rate": None if rates.get(row["day"]) is None else f"{rates[row['day']]:.0%}",
        }
        for row in run_dashboard_query(engine, IMPORTS_PER_DAY)
    ]


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
