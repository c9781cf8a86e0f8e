"""What a report covers: its period and the clusters and collections it is about; and the
conversions of what the database gives back that every report needs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select

from jobsync.storage.schema import utc_from_db

__all__ = [
    "as_day",
    "as_seconds",
    "as_utc",
    "filtered",
    "last_days",
    "period",
]


def period(since: float, now: datetime | None) -> tuple[datetime, datetime]:
    end = now or datetime.now(UTC)
    return end - timedelta(seconds=since), end


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
