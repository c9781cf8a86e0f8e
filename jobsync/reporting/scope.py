"""What a report covers: its period, the clusters and collections it is about, and the
history of that period; and the conversions of what the database gives back that every report
needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, false, func, select

from jobsync.storage.schema import import_job_transitions, sync_runs, utc_from_db

__all__ = [
    "as_day",
    "as_seconds",
    "as_utc",
    "filtered",
    "last_days",
    "period",
    "recorded_between",
]


def period(since: float, now: datetime | None) -> tuple[datetime, datetime]:
    end = now or datetime.now(UTC)
    return end - timedelta(seconds=since), end


def recorded_between(conn: Connection, start: datetime, end: datetime) -> ColumnElement[bool]:
    """A condition on the history that holds for every row observed in [start, end], for the
    planner to read only the period's passes through the history's index by pass.

    A row's ``observed_at`` lies between its pass's start and finish, so only passes that
    overlap the period can have recorded it, and their ids bound its ``sync_run_id``. The ids
    are looked up first and given as a range: with stale statistics (autovacuum off, a bulk
    load analyzed when every row was one moment) PostgreSQL estimates a recent
    ``observed_at`` range at one row and scans the whole history in parallel instead; a range
    of run ids it estimates from the ids' own statistics, and reads through the index."""
    r = sync_runs
    lo, hi = conn.execute(
        select(func.min(r.c.id), func.max(r.c.id)).where(
            r.c.started_at <= end, r.c.finished_at >= start
        )
    ).one()
    if lo is None:
        return false()
    return import_job_transitions.c.sync_run_id.between(lo, hi)


def last_days(days: int, now: datetime | None) -> list[date]:
    if days < 1:
        raise ValueError("days must be at least 1")
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def filtered(
    query: Select[Any], table: Any, cluster_ids: Sequence[str], collections: Sequence[str]
) -> Select[Any]:
    if cluster_ids:
        query = query.where(table.c.cluster_id.in_(cluster_ids))
    if collections:
        query = query.where(table.c.collection_name.in_(collections))
    return query


def as_day(value: Any) -> str:
    """A day as ``YYYY-MM-DD`` (a date, or text from an older database)."""
    return value.isoformat() if isinstance(value, date) else str(value)


def as_seconds(value: Any) -> float | None:
    return None if value is None else float(value)


def as_utc(moment: Any) -> datetime:
    # The views declare UTC columns, but a computed column can come back as text on SQLite.
    value = utc_from_db(moment)
    if value is None:
        raise TypeError("expected a datetime from the database, got None")
    return value
