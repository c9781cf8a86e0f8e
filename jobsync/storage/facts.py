"""The facts dashboards read, kept current by every pass in its own transaction.

What a job's row holds since revision 0009 (``jobsync.domain.facts``): most of it is written by
the statements that write the row anyway (``jobsync.storage.rows``); what depends on a job's
creation as well as its finish (the duration bounds and estimate) is computed here, after the
pass wrote its rows, for the few jobs that finished or got a new ``complete_time`` in it.

``daily_job_counts`` (shown by ``daily_job_stats``) and ``daily_transition_counts`` (shown by
``transition_counts``) hold one row per UTC day, source and group. A pass adds what it observed
to the rows of the days it touched, read and written again whole (a handful of rows); the
percentiles of a day are recomputed from the stored estimates of that day's observed jobs when
a pass finished such a job or changed its estimate, through the index on ``finished_at``, with
the day's bounds bound as values: no date function of either database is needed.

``jobsync.storage.refacts`` derives all of it from the history instead (revision 0009 fills
existing databases with it; tests require the two ways to agree).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from operator import attrgetter
from typing import Any, NamedTuple

from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update

from jobsync.domain.facts import (
    Durations,
    duration_bounds,
    is_backlog,
    nearest_rank,
    utc_day,
)
from jobsync.domain.history import PassPlan, first_seen_state
from jobsync.domain.states import COMPLETED, FAILED
from jobsync.storage.schema import (
    daily_job_counts,
    daily_transition_counts,
    import_job_records,
)

__all__ = ["DayCounts", "after_pass", "empty_counts", "finished", "refresh_durations", "write_days"]

PERCENTILES = (50, 90, 95)
_NEW_KEY = attrgetter("observed_at", "collection_name", "raw_state")
_NEW_GROUP = attrgetter("collection_name", "raw_state")
_BATCH = 500
# A day's figures per group: collection_name for jobs; (kind, from, to) for transitions.
JobDays = dict[tuple[date, str | None], Counter[str]]
TransitionDays = dict[date, Counter[tuple[str, str | None, str | None]]]


class DayCounts(NamedTuple):
    """What a pass (or the whole history) adds to the daily tables of one source."""

    jobs: JobDays
    transitions: TransitionDays
    # Days whose percentiles must be computed again from the stored estimates.
    percentile_days: set[date]


def empty_counts() -> DayCounts:
    return DayCounts(defaultdict(Counter), defaultdict(Counter), set())


def _first_seen(
    counts: DayCounts, day: date, collection: str | None, state: str, backlog: bool, n: int = 1
) -> None:
    _first_seen_job(counts, day, collection, backlog, n)
    counts.transitions[day][("first_seen", None, state)] += n


def _first_seen_job(
    counts: DayCounts, day: date, collection: str | None, backlog: bool, n: int
) -> None:
    """A job first seen that day, without its transition (which is not per collection)."""
    figures = counts.jobs[(day, collection)]
    figures["jobs_first_seen"] += n
    figures["backlog_jobs" if backlog else "new_jobs"] += n


def finished(
    counts: DayCounts, day: date, collection: str | None, state: str, backlog: bool, n: int = 1
) -> None:
    figures = counts.jobs[(day, collection)]
    if state == COMPLETED:
        figures["completed"] += n
        if backlog:
            figures["backlog_completed"] += n
    elif state == FAILED:
        figures["failed"] += n
        if backlog:
            figures["backlog_failed"] += n


def after_pass(conn: Connection, cluster_id: str, plan: PassPlan, detailed: Iterable[str]) -> None:
    """Everything the pass's rows imply for the facts: durations of new jobs first seen
    finished and of jobs that got a new ``complete_time`` (``detailed``; the planner computed
    those of the jobs that finished), and the daily tables."""
    counts = empty_counts()
    window = plan.first_seen_window
    # New jobs share a few collections and states: count those in C first. A pass within one
    # UTC day (nearly all) saw them all on that day.
    by_day: Counter[tuple[date, str | None, str | None]] = Counter()
    if utc_day(plan.seen_started_at) == utc_day(plan.seen_at):
        day = utc_day(plan.seen_at)
        for (collection, raw), n in Counter(map(_NEW_GROUP, plan.new)).items():
            by_day[(day, collection, raw)] = n
    else:
        for (seen, collection, raw), n in Counter(map(_NEW_KEY, plan.new)).items():
            by_day[(utc_day(seen), collection, raw)] += n
    kinds: dict[str | None, tuple[str, bool, bool]] = {}
    for (day, collection, raw), n in by_day.items():
        kind = kinds.get(raw)
        if kind is None:
            state, done, _failed = first_seen_state(raw)
            kind = kinds[raw] = (state, done, is_backlog(state, window))
        _first_seen(counts, day, collection, kind[0], kind[2], n)
        if kind[1]:
            finished(counts, day, collection, kind[0], kind[2], n)
    finished_new: list[str] = []
    if window is not None and any(kind[1] for kind in kinds.values()):
        # Their upper bound needs the window: none on a source's first passes.
        finished_new = [r.job_id for r in plan.new if kinds[r.raw_state][1]]
    for t in plan.transitions:
        counts.transitions[utc_day(t["observed_at"])][
            (t["kind"], t["from_state"], t["to_state"])
        ] += 1
    # Jobs that finished in this pass: the planner wrote their durations with their rows.
    for row in plan.updates:
        if row.final_state is not None and row.finished_at is not None:
            day = utc_day(row.finished_at)
            finished(counts, day, row.collection_name, row.final_state, row.backlog)
            if not row.backlog:
                counts.percentile_days.add(day)
    for job in refresh_durations(conn, cluster_id, sorted(set(finished_new).union(detailed))):
        if not job.backlog:
            counts.percentile_days.add(utc_day(job.finished_at))
    if plan.recollected:
        finished_now = {row.job_id for row in plan.updates if row.final_state is not None}
        _move_collections(conn, cluster_id, plan.recollected, finished_now, counts)
    write_days(conn, cluster_id, counts)


def _move_collections(
    conn: Connection,
    cluster_id: str,
    recollected: Sequence[tuple[str, str | None]],
    finished_now: set[str],
    counts: DayCounts,
) -> None:
    """Move the figures of jobs whose collection changed to their new collection: those of the
    day they were first seen, and those of the day they finished, unless they finished in this
    pass (``finished_now``: then the pass counted them under the new one already). The daily
    tables then say what a recomputation from the history would, which counts every job under
    the collection it has now."""
    r = import_job_records.c
    before = dict(recollected)
    for start in range(0, len(recollected), _BATCH):
        chunk = [job_id for job_id, _old in recollected[start : start + _BATCH]]
        rows = conn.execute(
            select(
                r.job_id,
                r.collection_name,
                r.backlog,
                r.first_seen_at,
                r.final_state,
                r.finished_at,
            ).where(r.cluster_id == cluster_id, r.job_id.in_(chunk))
        )
        for row in rows:
            first_day = utc_day(row.first_seen_at)
            moves = ((before[row.job_id], -1), (row.collection_name, 1))
            for collection, n in moves:
                _first_seen_job(counts, first_day, collection, row.backlog, n)
            if row.final_state is None or row.finished_at is None:
                continue
            day = utc_day(row.finished_at)
            counts.percentile_days.add(day)
            if row.job_id not in finished_now:
                for collection, n in moves:
                    finished(counts, day, collection, row.final_state, row.backlog, n)


class _Finished(NamedTuple):
    job_id: str
    collection_name: str | None
    backlog: bool
    final_state: str
    finished_at: datetime


def refresh_durations(conn: Connection, cluster_id: str, job_ids: Sequence[str]) -> list[_Finished]:
    """Compute the duration bounds of these jobs from their stored facts and write them;
    returns those that are finished."""
    r = import_job_records.c
    found: list[_Finished] = []
    updates: list[dict[str, Any]] = []
    for start in range(0, len(job_ids), _BATCH):
        rows = conn.execute(
            select(
                r.job_id,
                r.collection_name,
                r.backlog,
                r.first_seen_at,
                r.created_window_start,
                r.final_state,
                r.finished_window_start,
                r.finished_at,
                r.complete_time,
                r.min_seconds,
                r.max_seconds,
                r.estimated_seconds,
            ).where(r.cluster_id == cluster_id, r.job_id.in_(job_ids[start : start + _BATCH]))
        )
        for row in rows:
            durations = duration_bounds(
                row.created_window_start,
                row.first_seen_at,
                row.finished_window_start,
                row.finished_at,
                row.complete_time,
            )
            stored = Durations(row.min_seconds, row.max_seconds, row.estimated_seconds)
            if durations != stored:
                updates.append({"b_job_id": row.job_id, **durations._asdict()})
            if row.finished_at is not None and row.final_state is not None:
                found.append(
                    _Finished(
                        row.job_id,
                        row.collection_name,
                        bool(row.backlog),
                        row.final_state,
                        row.finished_at,
                    )
                )
    if updates:
        conn.execute(
            update(import_job_records)
            .where(r.cluster_id == cluster_id, r.job_id == bindparam("b_job_id"))
            .values(
                min_seconds=bindparam("min_seconds"),
                max_seconds=bindparam("max_seconds"),
                estimated_seconds=bindparam("estimated_seconds"),
            ),
            updates,
        )
    return found


def _bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)


def _percentiles(conn: Connection, cluster_id: str, day: date) -> dict[str | None, list[float]]:
    """The estimates of the day's finished jobs whose start was observed, per collection."""
    r = import_job_records.c
    start, end = _bounds(day)
    rows = conn.execute(
        select(r.collection_name, r.estimated_seconds).where(
            r.finished_at >= start,
            r.finished_at < end,
            r.cluster_id == cluster_id,
            # As the partial index on observed finishes spells it.
            r.backlog == False,  # noqa: E712
            r.estimated_seconds.is_not(None),
        )
    )
    found: dict[str | None, list[float]] = defaultdict(list)
    for collection, estimate in rows:
        found[collection].append(float(estimate))
    return found


_JOB_COUNTS = (
    "jobs_first_seen",
    "completed",
    "failed",
    "new_jobs",
    "backlog_jobs",
    "backlog_completed",
    "backlog_failed",
)


def write_days(
    conn: Connection, cluster_id: str, counts: DayCounts, *, replace: bool = False
) -> None:
    """Add ``counts`` to the source's rows of the days they touch (``replace``: write them
    instead of what is stored)."""
    days = {day for day, _collection in counts.jobs} | counts.percentile_days
    for day in sorted(days):
        _write_job_day(conn, cluster_id, day, counts, replace)
    for day, added in sorted(counts.transitions.items()):
        _write_transition_day(conn, cluster_id, day, added, replace)


def _write_job_day(
    conn: Connection, cluster_id: str, day: date, counts: DayCounts, replace: bool
) -> None:
    d = daily_job_counts.c
    where = and_(d.cluster_id == cluster_id, d.day == day)
    rows: dict[str | None, dict[str, Any]] = {}
    if not replace:
        for stored in conn.execute(select(daily_job_counts).where(where)):
            rows[stored.collection_name] = dict(stored._mapping)
    for (at, collection), added in counts.jobs.items():
        if at != day:
            continue
        row = rows.setdefault(collection, _new_day_row(day, cluster_id, collection))
        for name in _JOB_COUNTS:
            row[name] += added[name]
    if day in counts.percentile_days:
        estimates = _percentiles(conn, cluster_id, day)
        for collection in estimates:
            rows.setdefault(collection, _new_day_row(day, cluster_id, collection))
        for collection, row in rows.items():
            values = estimates.get(collection, [])
            row["duration_jobs"] = len(values)
            for p in PERCENTILES:
                row[f"p{p}_seconds"] = nearest_rank(values, p)
    for collection, row in list(rows.items()):
        if not any(row[name] for name in _JOB_COUNTS) and not row["duration_jobs"]:
            del rows[collection]  # every job it counted moved to another collection
            continue
        done = row["completed"] + row["failed"]
        row["failure_rate"] = row["failed"] / done if done else None
    conn.execute(delete(daily_job_counts).where(where))
    if rows:
        conn.execute(insert(daily_job_counts), list(rows.values()))


def _write_transition_day(
    conn: Connection,
    cluster_id: str,
    day: date,
    added: Counter[tuple[str, str | None, str | None]],
    replace: bool,
) -> None:
    tc = daily_transition_counts.c
    where = and_(tc.cluster_id == cluster_id, tc.day == day)
    totals: Counter[tuple[str, str | None, str | None]] = Counter()
    if not replace:
        for stored in conn.execute(select(daily_transition_counts).where(where)):
            totals[(stored.kind, stored.from_state, stored.to_state)] += stored.transitions
    totals.update(added)
    conn.execute(delete(daily_transition_counts).where(where))
    conn.execute(
        insert(daily_transition_counts),
        [
            {
                "day": day,
                "cluster_id": cluster_id,
                "kind": kind,
                "from_state": from_state,
                "to_state": to_state,
                "transitions": n,
            }
            for (kind, from_state, to_state), n in sorted(totals.items(), key=_key_order)
        ],
    )


def _key_order(item: tuple[tuple[str, str | None, str | None], int]) -> tuple[str, str, str]:
    (kind, from_state, to_state), _n = item
    return kind, from_state or "", to_state or ""


def _new_day_row(day: date, cluster_id: str, collection: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"day": day, "cluster_id": cluster_id, "collection_name": collection}
    row.update(dict.fromkeys(_JOB_COUNTS, 0))
    row.update(failure_rate=None, duration_jobs=0, p50_seconds=None, p90_seconds=None)
    row["p95_seconds"] = None
    return row
