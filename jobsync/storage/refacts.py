"""The facts of ``jobsync.storage.facts`` from the history alone: what every job's row and the
daily tables should hold, whatever passes wrote. Revision 0009 fills existing databases with
it, and tests require it to agree with what passes keep.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, delete, select, update

from jobsync.domain.facts import Move, duration_bounds, job_facts, utc_day
from jobsync.storage.backends import backend_for
from jobsync.storage.facts import DayCounts, empty_counts, finished, write_days
from jobsync.storage.schema import (
    daily_job_counts,
    daily_transition_counts,
    import_job_records,
    import_job_transitions,
)

__all__ = ["FACT_COLUMNS", "Recomputed", "rebuild", "recompute"]


# -- from the whole history ----------------------------------------------------------------


class Recomputed(NamedTuple):
    """What the history says every job's facts and the daily tables should hold."""

    jobs: dict[tuple[str, str], dict[str, Any]]
    days: dict[str, DayCounts]


def recompute(conn: Connection) -> Recomputed:
    """Every job's facts and every source's daily counts, from the history alone (and each
    job's collection and ``complete_time``, kept only while it is finished)."""
    r, t = import_job_records.c, import_job_transitions.c
    stored = {
        (row.cluster_id, row.job_id): (row.collection_name, row.complete_time)
        for row in conn.execute(select(r.cluster_id, r.job_id, r.collection_name, r.complete_time))
    }
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    days: dict[str, DayCounts] = defaultdict(empty_counts)
    query = select(
        t.cluster_id, t.job_id, t.kind, t.from_state, t.to_state, t.window_start, t.observed_at
    ).order_by(t.cluster_id, t.job_id, t.id)
    key: tuple[str, str] | None = None
    moves: list[Move] = []
    for row in conn.execute(query):
        if (row.cluster_id, row.job_id) != key:
            _close(key, moves, stored, jobs, days)
            key, moves = (row.cluster_id, row.job_id), []
        moves.append(
            Move(row.kind, row.from_state, row.to_state, row.window_start, row.observed_at)
        )
        days[row.cluster_id].transitions[utc_day(row.observed_at)][
            (row.kind, row.from_state, row.to_state)
        ] += 1
    _close(key, moves, stored, jobs, days)
    return Recomputed(jobs, dict(days))


def _close(
    key: tuple[str, str] | None,
    moves: Sequence[Move],
    stored: Mapping[tuple[str, str], tuple[str | None, datetime | None]],
    jobs: dict[tuple[str, str], dict[str, Any]],
    days: dict[str, DayCounts],
) -> None:
    """Add one job's facts, from its whole history, to ``jobs`` and ``days``."""
    facts = job_facts(moves) if key in stored else None
    if key is None or facts is None:
        return
    collection, complete_time = stored[key]
    if facts.finished_at is None:
        complete_time = None
    durations = duration_bounds(
        facts.created_window_start,
        facts.created_at,
        facts.finished_window_start,
        facts.finished_at,
        complete_time,
    )
    jobs[key] = {**facts._asdict(), **durations._asdict(), "complete_time": complete_time}
    counts = days[key[0]]
    figures = counts.jobs[(utc_day(facts.created_at), collection)]
    figures["jobs_first_seen"] += 1
    figures["backlog_jobs" if facts.backlog else "new_jobs"] += 1
    if facts.final_state is not None and facts.finished_at is not None:
        day = utc_day(facts.finished_at)
        finished(counts, day, collection, facts.final_state, facts.backlog)
        counts.percentile_days.add(day)


# The columns of import_job_records that hold a job's facts (jobsync.domain.facts).
FACT_COLUMNS = (
    "backlog",
    "created_window_start",
    "final_state",
    "finished_window_start",
    "min_seconds",
    "max_seconds",
    "estimated_seconds",
    "complete_time",
)


def rebuild(conn: Connection) -> int:
    """Write what ``recompute`` says: every job's facts, and the daily tables anew. Returns
    the jobs written. For a migration, and for tests that write history by hand."""
    if conn.execute(select(import_job_transitions.c.id).limit(1)).first() is None:
        return 0  # no history (a database being created): nothing to derive
    backend = backend_for(conn)
    for table, pairs in _MICROS.items():
        sets = ", ".join(f"{us} = {backend.epoch_micros(column)}" for us, column in pairs)
        conn.exec_driver_sql(f"UPDATE {table} SET {sets}")
    found = recompute(conn)
    r = import_job_records.c
    rows = [
        {"b_cluster_id": cluster_id, "b_job_id": job_id, **{k: facts[k] for k in FACT_COLUMNS}}
        for (cluster_id, job_id), facts in found.jobs.items()
    ]
    statement = (
        update(import_job_records)
        .where(r.cluster_id == bindparam("b_cluster_id"), r.job_id == bindparam("b_job_id"))
        .values({name: bindparam(name) for name in FACT_COLUMNS})
    )
    for start in range(0, len(rows), 10_000):
        conn.execute(statement, rows[start : start + 10_000])
    conn.execute(delete(daily_job_counts))
    conn.execute(delete(daily_transition_counts))
    for cluster_id, counts in sorted(found.days.items()):
        write_days(conn, cluster_id, counts, replace=True)
    return len(rows)


# The integer microseconds columns, and the time each one holds, per table.
_MICROS = {
    "import_job_records": (("state_since_us", "state_since"), ("last_seen_us", "last_seen_at")),
    "import_job_transitions": (
        ("window_start_us", "window_start"),
        ("observed_us", "observed_at"),
    ),
    "sync_sources": (("last_snapshot_us", "last_snapshot_at"),),
}
