"""``jobsync status``: per source, the last pass, its outcome and age, and whether it is overdue.

Made for monitoring (a Nagios-style check, a cron ``MAILTO``, a Kubernetes probe of a CronJob
deployment): a source is *overdue* when its last **succeeded** pass finished longer ago than the
threshold, or when it has never had one. Failed passes do not reset the clock, so a source that
keeps failing becomes overdue even though passes keep running.

It also shows each source's notifications that are not delivered yet: still being retried, or
given up after ``MAX_ATTEMPTS`` failed attempts, with the last error.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from jobsync.domain.notifications import MAX_ATTEMPTS, duration
from jobsync.storage.notifications import delivery_status
from jobsync.storage.schema import sync_runs, utc_from_db

__all__ = ["format_age", "source_status"]


def source_status(
    engine: Engine,
    *,
    overdue_after: float,
    sources: Sequence[str] = (),
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """One row per source (those in ``sync_runs``, plus ``sources``): source, last_status,
    last_started_at, age, age_seconds, last_success_at, overdue, error, notify_pending,
    notify_failed, notify_error.

    ``age`` is measured from the end of the last pass (its start while it is still running);
    ``overdue`` is true when the last succeeded pass finished more than ``overdue_after``
    seconds before ``now``, or there is none. ``notify_pending`` counts notifications still to
    be delivered (retried on the next pass), ``notify_failed`` those given up; ``notify_error``
    is the last delivery error of the newest of them.
    """
    now = now or datetime.now(UTC)
    r = sync_runs
    latest = select(func.max(r.c.id)).group_by(r.c.cluster_id).scalar_subquery()
    last_runs = select(
        r.c.cluster_id, r.c.status, r.c.started_at, r.c.finished_at, r.c.error
    ).where(r.c.id.in_(latest))
    last_success = (
        select(r.c.cluster_id, func.max(r.c.finished_at))
        .where(r.c.status == "succeeded")
        .group_by(r.c.cluster_id)
    )
    with engine.connect() as conn:
        runs = {row.cluster_id: row for row in conn.execute(last_runs)}
        succeeded: dict[str, datetime | None] = {
            cluster_id: utc_from_db(moment)
            for cluster_id, moment in conn.execute(last_success).all()
        }
        undelivered = delivery_status(conn, MAX_ATTEMPTS)
    rows = []
    for source in sorted(set(runs) | set(sources)):
        run = runs.get(source)
        ended = utc_from_db(run.finished_at or run.started_at) if run is not None else None
        age = (now - ended).total_seconds() if ended is not None else None
        success = succeeded.get(source)
        rows.append(
            {
                "source": source,
                "last_status": run.status if run is not None else None,
                "last_started_at": utc_from_db(run.started_at) if run is not None else None,
                "age": format_age(age) if age is not None else None,
                "age_seconds": int(age) if age is not None else None,
                "last_success_at": success,
                "overdue": success is None or (now - success).total_seconds() > overdue_after,
                "error": run.error if run is not None else None,
                **_notifications(undelivered.get(source)),
            }
        )
    return rows


def _notifications(undelivered: dict[str, Any] | None) -> dict[str, Any]:
    found = undelivered or {}
    return {
        "notify_pending": found.get("pending", 0),
        "notify_failed": found.get("failed", 0),
        "notify_error": found.get("error"),
    }


def format_age(seconds: float) -> str:
    """``42s``, ``12m05s``, ``3h02m``, ``2d04h``: short enough for a table column."""
    return duration(seconds, bare_minutes=False)
