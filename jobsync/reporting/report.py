"""Reports for people, read from the reporting views and the stored facts behind them: one
function per report, rows out.

Every function takes an ``Engine`` and returns a list of plain dicts (their keys, in order, are
the report's columns); ``now`` is injectable so that "the last 7 days" and "stuck for 2 hours"
are testable. Percentiles are nearest-rank and computed here, in Python, so that they are the
same on SQLite and PostgreSQL. Seconds stay raw floats (``jobsync.reporting.report_text.for_people``
turns them into ``1h 02m`` for the table format).

The period of ``since`` is ``[now - since, now]``. In :func:`summary` a job *belongs to the
period* when it was first seen, or finished (its terminal transition was observed), within it;
it is counted under the state it has now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, and_, select

from jobsync.domain.states import CANONICAL_STATES, COMPLETED, FAILED
from jobsync.reporting.activity import (
    STUCK_COLUMNS,
    active,
    states_per_day,
    stuck,
    stuck_since,
)
from jobsync.reporting.report_text import normalise_reason
from jobsync.reporting.scope import (
    as_day,
    as_seconds,
    as_utc,
    filtered,
    last_days,
    period,
)
from jobsync.storage.schema import (
    import_job_records,
    import_job_transitions,
    import_jobs,
)
from jobsync.storage.views import daily_job_stats, job_durations

__all__ = [
    "DURATIONS_COLUMNS",
    "FAILURES_COLUMNS",
    "STUCK_COLUMNS",
    "SUMMARY_COLUMNS",
    "TREND_COLUMNS",
    "active",
    "durations",
    "failures",
    "nearest_rank",
    "states_per_day",
    "stuck",
    "stuck_since",
    "summary",
    "trend",
]

# fmt: off
SUMMARY_COLUMNS = (
    "cluster_id", "collection_name", "jobs", "backlog_jobs", *(s.lower() for s in CANONICAL_STATES),
    "failure_rate", "duration_jobs", "p50_seconds", "p90_seconds", "p95_seconds",
)
DURATIONS_COLUMNS = (
    "cluster_id", "job_id", "collection_name", "final_state", "created_at", "finished_at",
    "min_seconds", "estimated_seconds", "max_seconds", "backlog",
)
FAILURES_COLUMNS = ("reason", "jobs", "collections", "last_seen_at", "example")
TREND_COLUMNS = (
    "day", "first_seen", "new_jobs", "backlog_jobs", "completed", "failed", "backlog_completed",
    "backlog_failed", "failure_rate", "duration_jobs", "p50_seconds", "p90_seconds",
    "p95_seconds",
)
# fmt: on


def summary(
    engine: Engine,
    *,
    since: float,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Per cluster and collection: jobs of the period by state (``backlog_jobs`` of them came
    with the backlog), failure rate, p50/p90/p95 duration.

    Percentiles are over ``job_durations.estimated_seconds`` of the jobs that finished in the
    period (Completed or Failed) whose start was observed (not ``backlog``): ``duration_jobs``
    of them.
    """
    start, end = period(since, now)
    # The jobs' own rows, which hold their facts (what job_durations shows), read twice, each
    # time only the period's: the finished ones through the index on finished_at, and those
    # first seen through the first_seen transitions of the period (the history is indexed by
    # observed_at). One condition with OR would read every job.
    j, t = import_job_records, import_job_transitions
    columns = (
        j.c.job_id,
        j.c.cluster_id,
        j.c.collection_name,
        j.c.state,
        j.c.finished_at,
        j.c.estimated_seconds,
        j.c.backlog,
    )
    same_job = and_(j.c.cluster_id == t.c.cluster_id, j.c.job_id == t.c.job_id)
    groups: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    with engine.connect() as conn:
        queries = [
            filtered(
                select(*columns).where(j.c.finished_at >= start, j.c.finished_at <= end),
                j,
                cluster_ids,
                collections,
            ),
            filtered(
                select(*columns)
                .select_from(t.join(j, same_job))
                .where(
                    t.c.kind == "first_seen",
                    t.c.observed_at >= start,
                    t.c.observed_at <= end,
                ),
                j,
                cluster_ids,
                collections,
            ),
        ]
        for query in queries:
            for row in conn.execute(query):
                if (row.cluster_id, row.job_id) not in seen:
                    seen.add((row.cluster_id, row.job_id))
                    groups[(row.cluster_id, row.collection_name)].append(row)
    rows = []
    for (cluster_id, collection), members in sorted(groups.items(), key=_group_order):
        by_state = {s: 0 for s in CANONICAL_STATES}
        for member in members:
            by_state[member.state] = by_state.get(member.state, 0) + 1
        estimates = [
            float(m.estimated_seconds)
            for m in members
            if m.estimated_seconds is not None
            and not m.backlog
            and m.finished_at is not None
            and start <= as_utc(m.finished_at) <= end
        ]
        rows.append(
            {
                "cluster_id": cluster_id,
                "collection_name": collection,
                "jobs": len(members),
                "backlog_jobs": sum(1 for m in members if m.backlog),
                **{s.lower(): by_state[s] for s in CANONICAL_STATES},
                **_outcome(by_state[FAILED], by_state[COMPLETED], estimates),
            }
        )
    return rows


def durations(
    engine: Engine,
    *,
    since: float,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Finished jobs of the period (newest finish first) with their duration bounds and estimate."""
    start, end = period(since, now)
    d = job_durations
    query = filtered(
        select(*(d.c[c] for c in DURATIONS_COLUMNS))
        .where(d.c.is_finished == 1, d.c.finished_at >= start, d.c.finished_at <= end)
        .order_by(d.c.finished_at.desc(), d.c.cluster_id, d.c.job_id),
        d,
        cluster_ids,
        collections,
    )
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [
            {
                **row._mapping,
                "created_at": None if row.created_at is None else as_utc(row.created_at),
                "finished_at": as_utc(row.finished_at),
                "backlog": bool(row.backlog),
                **{c: as_seconds(row._mapping[c]) for c in DURATIONS_COLUMNS if "seconds" in c},
            }
            for row in conn.execute(query)
        ]


def failures(
    engine: Engine,
    *,
    since: float,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
    limit: int | None = 10,
) -> list[dict[str, Any]]:
    """Top failure reasons of the period, grouped by :func:`normalise_reason`.

    A failure is a transition into ``Failed`` observed in the period; its reason is the one the
    transition recorded, else the job's current ``reason``. ``jobs`` counts distinct jobs;
    ``example`` is the raw text of the latest failure in the group.
    """
    start, end = period(since, now)
    t, j = import_job_transitions, import_jobs
    groups: dict[str, dict[str, Any]] = {}
    with engine.connect() as conn:
        query = filtered(
            select(
                t.c.cluster_id,
                t.c.job_id,
                t.c.reason,
                t.c.observed_at,
                j.c.collection_name,
                j.c.reason.label("job_reason"),
            )
            .select_from(
                t.join(j, and_(j.c.cluster_id == t.c.cluster_id, j.c.job_id == t.c.job_id))
            )
            .where(
                t.c.to_state == FAILED,
                t.c.observed_at >= start,
                t.c.observed_at <= end,
            )
            .order_by(t.c.observed_at, t.c.id),
            j,
            cluster_ids,
            collections,
        )
        for row in conn.execute(query):
            raw = row.reason if row.reason is not None else row.job_reason
            key = normalise_reason(raw)
            group = groups.setdefault(key, {"jobs": set(), "collections": set()})
            group["jobs"].add((row.cluster_id, row.job_id))
            if row.collection_name is not None:
                group["collections"].add(row.collection_name)
            # Rows come oldest first: the last one written is the latest example.
            group["last_seen_at"] = as_utc(row.observed_at)
            group["example"] = raw
    rows = [
        {
            "reason": key,
            "jobs": len(g["jobs"]),
            "collections": ", ".join(sorted(g["collections"])),
            "last_seen_at": g["last_seen_at"],
            "example": g["example"],
        }
        for key, g in groups.items()
    ]
    rows.sort(key=lambda r: (-r["jobs"], -r["last_seen_at"].timestamp(), r["reason"]))
    return rows[:limit] if limit is not None else rows


def trend(
    engine: Engine,
    *,
    days: int,
    now: datetime | None = None,
    cluster_ids: Sequence[str] = (),
    collections: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One row per UTC day of the last ``days`` (today included), days without activity too.

    Counts add up ``daily_job_stats`` over clusters and collections: ``first_seen`` is
    ``new_jobs`` plus ``backlog_jobs``, and ``completed`` and ``failed`` include the backlog's
    (``backlog_completed``, ``backlog_failed``). Medians do not add up, so p50/p90/p95 are
    recomputed from ``job_durations`` of the jobs finished that day whose start was observed
    (``duration_jobs``), as the view does.
    """
    day_list = last_days(days, now)
    first, last = day_list[0], day_list[-1]
    s = daily_job_stats
    counted = (
        ("first_seen", s.c.jobs_first_seen),
        ("new_jobs", s.c.new_jobs),
        ("backlog_jobs", s.c.backlog_jobs),
        ("completed", s.c.completed),
        ("failed", s.c.failed),
        ("backlog_completed", s.c.backlog_completed),
        ("backlog_failed", s.c.backlog_failed),
    )
    query = filtered(
        select(s.c.day, *(column for _name, column in counted)).where(
            s.c.day >= first, s.c.day <= last
        ),
        s,
        cluster_ids,
        collections,
    )
    totals = {day.isoformat(): dict.fromkeys((name for name, _c in counted), 0) for day in day_list}
    with engine.connect() as conn:
        for row in conn.execute(query):
            sums = totals[as_day(row.day)]
            for name, column in counted:
                sums[name] += int(row._mapping[column] or 0)
    start = datetime.combine(day_list[0], datetime.min.time(), UTC)
    estimates = _estimates_by_day(engine, start, cluster_ids, collections)
    return [
        {
            "day": day,
            **sums,
            **_outcome(sums["failed"], sums["completed"], estimates.get(day, [])),
        }
        for day, sums in totals.items()
    ]


def nearest_rank(values: Sequence[float], percent: int) -> float | None:
    """The nearest-rank percentile: the smallest value with ``percent``% of values at or below."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, (percent * len(ordered) + 99) // 100)
    return ordered[rank - 1]


# -- helpers --------------------------------------------------------------------------------


def _estimates_by_day(
    engine: Engine, start: datetime, cluster_ids: Sequence[str], collections: Sequence[str]
) -> dict[str, list[float]]:
    d = job_durations
    query = filtered(
        select(d.c.finished_at, d.c.estimated_seconds).where(
            d.c.finished_at >= start,
            # As the partial index on observed finishes spells it: the backlog is most jobs.
            d.c.backlog == False,  # noqa: E712
            d.c.estimated_seconds.is_not(None),
        ),
        d,
        cluster_ids,
        collections,
    )
    found: dict[str, list[float]] = defaultdict(list)
    with engine.connect() as conn:
        for row in conn.execute(query):
            found[as_utc(row.finished_at).date().isoformat()].append(float(row.estimated_seconds))
    return found


def _outcome(failed: int, completed: int, estimates: Sequence[float]) -> dict[str, Any]:
    """The failure rate of the finished jobs, and how many estimated durations the p50, p90
    and p95 of them rest on."""
    finished = failed + completed
    return {
        "failure_rate": round(failed / finished, 4) if finished else None,
        "duration_jobs": len(estimates),
        "p50_seconds": nearest_rank(estimates, 50),
        "p90_seconds": nearest_rank(estimates, 90),
        "p95_seconds": nearest_rank(estimates, 95),
    }


def _group_order(item: tuple[tuple[str, str | None], Any]) -> tuple[str, bool, str]:
    (cluster_id, collection), _rows = item
    return cluster_id, collection is None, collection or ""
