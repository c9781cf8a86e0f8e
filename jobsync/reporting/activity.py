"""Reports on what is happening now: the active jobs and the stuck ones among them, and the
jobs first seen each day by the state they have now. Rows out, as in
``jobsync.reporting.report``, which offers them with the others."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, select

from jobsync.domain.states import CANONICAL_STATES
from jobsync.reporting.scope import as_utc, filtered, last_days
from jobsync.storage.schema import import_job_records, import_job_transitions
from jobsync.storage.views import active_jobs

__all__ = ["STUCK_COLUMNS", "active", "states_per_day", "stuck", "stuck_since"]

# fmt: off
STUCK_COLUMNS = (
    "cluster_id", "job_id", "collection_name", "state", "raw_state", "progress", "state_since",
    "last_seen_at", "seconds_in_state",
)
# fmt: on


def stuck(
    engine: Engine,
    *,
    older_than: float,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Active jobs whose time in their current state, measured to ``now``, exceeds older_than."""
    return active(
        engine, now=now, cluster_ids=cluster_ids, collections=collections, older_than=older_than
    )


def stuck_since(now: datetime, older_than: float) -> datetime:
    """A job in its state since before this is stuck: the one rule of every stuck report."""
    return now - timedelta(seconds=older_than)


def active(
    engine: Engine,
    *,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
    older_than: float | None = None,
) -> list[dict[str, Any]]:
    """Jobs of ``active_jobs``, longest in their state first; seconds_in_state runs to ``now``.

    With ``older_than``, only those in their state for longer than that.
    """
    now = now or datetime.now(UTC)
    a = active_jobs
    query = filtered(
        select(*(a.c[c] for c in STUCK_COLUMNS if c != "seconds_in_state")).order_by(
            a.c.state_since, a.c.cluster_id, a.c.job_id
        ),
        a,
        cluster_ids,
        collections,
    )
    if older_than is not None:
        query = query.where(a.c.state_since < stuck_since(now, older_than))
    with engine.connect() as conn:
        rows = []
        for row in conn.execute(query):
            since = as_utc(row.state_since)
            rows.append(
                {
                    **row._mapping,
                    "state_since": since,
                    "last_seen_at": as_utc(row.last_seen_at),
                    "seconds_in_state": round(max(0.0, (now - since).total_seconds()), 3),
                }
            )
    return rows


def states_per_day(
    engine: Engine,
    *,
    days: int,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Jobs first seen on each UTC day of the last ``days`` whose start was observed, by the
    state they have now, and (``backlog``) how many more came with the backlog."""
    day_list = last_days(days, now)
    start = datetime.combine(day_list[0], datetime.min.time(), UTC)
    j, t = import_job_records, import_job_transitions
    counts = {d.isoformat(): {s: 0 for s in (*CANONICAL_STATES, "backlog")} for d in day_list}
    with engine.connect() as conn:
        # The first_seen transitions of the period (the history is indexed by observed_at).
        query = filtered(
            select(j.c.first_seen_at, j.c.state, j.c.backlog)
            .select_from(
                t.join(j, and_(j.c.cluster_id == t.c.cluster_id, j.c.job_id == t.c.job_id))
            )
            .where(
                t.c.kind == "first_seen",
                t.c.observed_at >= start,
            ),
            j,
            cluster_ids,
            collections,
        )
        for row in conn.execute(query):
            day = counts.get(as_utc(row.first_seen_at).date().isoformat())
            if day is not None:
                key = "backlog" if row.backlog else row.state
                day[key] = day.get(key, 0) + 1
    return [{"day": day, **states} for day, states in counts.items()]
