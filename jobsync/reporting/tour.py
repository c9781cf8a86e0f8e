"""What ``jobsync demo`` shows after its passes: totals, and the history of two example jobs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, func, select

from jobsync.reporting.output import render
from jobsync.reporting.queries import job_history, overview
from jobsync.storage.schema import import_job_progress

__all__ = ["tour_report"]

HISTORY_COLUMNS = ("kind", "from_state", "to_state", "window_start", "observed_at")


def tour_report(engine: Engine, examples: Sequence[tuple[str, str]]) -> str:
    """Jobs per state, transitions per kind, progress samples, and the histories of the
    ``(cluster_id, job_id)`` examples, as text."""
    totals = overview(engine)
    report = ["\nJobs per state:"]
    report += [f"  {state:<10} {n}" for state, n in totals["jobs_by_state"].items()]
    report.append("\nTransitions recorded:")
    report += [f"  {kind:<10} {n}" for kind, n in totals["transitions_by_kind"].items()]
    with engine.connect() as conn:
        samples = conn.execute(select(func.count()).select_from(import_job_progress)).scalar()
    report.append(f"\nProgress samples recorded (import_job_progress): {samples}")
    for cluster_id, job_id in examples:
        report.append(f"\nHistory of job {job_id} ({cluster_id}):")
        rows = job_history(engine, job_id, cluster_ids=[cluster_id])
        report.append(_indent(render(rows, "table", HISTORY_COLUMNS)))
    return "\n".join(report)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
