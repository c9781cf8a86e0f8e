"""Reading a source's stored jobs for a pass, a chunk at a time (writing: ``bulk``).

``load_for_pass`` streams every stored job once and compares it with the snapshot in place
(``jobsync.domain.triage``); full rows (``StoredJob``) are read only for the few a pass may
change.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection

from jobsync.domain.history import StoredJob
from jobsync.domain.records import JobRecord
from jobsync.domain.triage import triage, triage_in_order
from jobsync.storage.backends import backend_for
from jobsync.storage.schema import PRESENT_JOBS, utc_from_db

__all__ = [
    "STORED_IDS_SQL",
    "STREAM_CHUNK",
    "TRIAGE_SQL",
    "load_for_pass",
    "load_rows",
    "stored_jobs",
    "stream",
]

# {p}: the driver's placeholder (Backend.sql).
# Every stored id of a source, to walk beside sorted listed ids (add
# Backend.order_by_code_points).
STORED_IDS_SQL = "SELECT job_id FROM import_job_records WHERE cluster_id = {p} "
_VANISHED_SQL = STORED_IDS_SQL + "AND vanished_at IS NOT NULL"
# A quiet job: listed by the latest pass, nothing pending (see jobsync.domain.triage).
_QUIET = "vanished_at IS NULL AND listed AND missed_snapshots = 0 AND missing_since IS NULL"
# What triage compares, of every stored job that has not vanished: the columns in the order
# in which triage unpacks each row.
TRIAGE_SQL = f"""
SELECT job_id, raw_state, collection_name, progress, reason, CASE WHEN {_QUIET} THEN 1 ELSE 0 END
FROM import_job_records WHERE cluster_id = {{p}} AND {PRESENT_JOBS}
"""
# Rows per round trip. The chunk is alive at a pass's peak memory, beside the snapshot and
# what triage holds.
STREAM_CHUNK = 5_000
# Full planning rows, each column named as its StoredJob field: timestamps only where the job
# is not listed (see JobRow).
_LOAD_SQL = """
SELECT job_id, collection_name, state, raw_state, progress, reason, listed, missed_snapshots,
       vanished_at IS NOT NULL AS vanished, finished_at IS NOT NULL AS finished,
       CASE WHEN listed THEN NULL ELSE last_seen_at END AS last_seen_at,
       CASE WHEN listed THEN NULL ELSE last_seen_started_at END AS last_seen_started_at,
       missing_since, first_seen_at, created_window_start, backlog
FROM import_job_records WHERE cluster_id = {p}
"""
_TIMES = (
    "last_seen_at",
    "last_seen_started_at",
    "missing_since",
    "first_seen_at",
    "created_window_start",
)
# Ids per query of full rows.
_BATCH = 500


def load_for_pass(
    conn: Connection, cluster_id: str, jobs: Mapping[str, JobRecord], detailed: Container[str]
) -> tuple[dict[str, StoredJob], list[str]]:
    """Full rows of the stored jobs this snapshot may change, and the listed jobs not stored.

    One streamed read of every stored, non-vanished job (see ``jobsync.domain.triage``), then
    full rows for the few it picks and for vanished jobs listed again. Vanished jobs are most
    of a long history (finished jobs age out of the list), so only their ids are read.
    """
    backend = backend_for(conn)
    sql = backend.sql(TRIAGE_SQL)
    if backend.key_order_is_code_point_order:
        # The rows come in the order of the snapshot's sorted ids at no cost, so the two are
        # walked side by side. Elsewhere that order makes the server sort every row, which
        # costs what the walk saves: triage looks each row up instead.
        sql, walk = sql + backend.order_by_code_points("job_id"), triage_in_order
    else:
        walk = triage
    with stream(conn, sql, (cluster_id,), to_the_end=True) as rows:
        found = walk(rows, jobs, detailed)
    # A listed job that is stored but vanished is never among the rows triage read, so it is
    # one of the unknown ones: no unknown jobs (a re-sync without new jobs), no vanished read.
    back: list[str] = []
    if len(found.unknown) <= _BATCH:
        # The usual pass: a few new ids, looked up by key. Reading every vanished id instead
        # would cost each pass the source's whole history.
        p = backend.placeholder
        if found.unknown:
            sql = (
                backend.sql(_VANISHED_SQL)
                + f" AND job_id IN ({', '.join([p] * len(found.unknown))})"
            )
            back = [
                job_id
                for (job_id,) in backend.fetchall(conn, sql, (cluster_id, *found.unknown)).rows
            ]
    else:
        vanished = backend.sql(_VANISHED_SQL)
        with stream(conn, vanished, (cluster_id,), to_the_end=True) as rows:
            back = [job_id for (job_id,) in rows if job_id in jobs]
    return load_rows(conn, cluster_id, found.load + back), found.unknown


def load_rows(conn: Connection, cluster_id: str, job_ids: Sequence[str]) -> dict[str, StoredJob]:
    """Full planning rows of the given jobs."""
    backend = backend_for(conn)
    p = backend.placeholder
    found: dict[str, StoredJob] = {}
    for start in range(0, len(job_ids), _BATCH):
        batch = job_ids[start : start + _BATCH]
        sql = backend.sql(_LOAD_SQL) + f" AND job_id IN ({', '.join([p] * len(batch))})"
        columns, rows = backend.fetchall(conn, sql, (cluster_id, *batch))
        found.update((job.job_id, job) for job in stored_jobs(columns, rows))
    return found


def stored_jobs(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[StoredJob]:
    """Rows as StoredJob, each field from the column of its name (looked up once per query).

    Booleans may come back as 0 and 1 from SQLite: the planner only tests their truth.
    """
    pick = itemgetter(*(columns.index(field) for field in StoredJob._fields))
    timed = [StoredJob._fields.index(name) for name in _TIMES]
    for row in rows:
        parsed = list(pick(row))
        for i in timed:
            if parsed[i] is not None:
                parsed[i] = utc_from_db(parsed[i])
        yield StoredJob._make(parsed)


@contextmanager
def stream(
    conn: Connection, sql: str, params: Sequence[Any], *, to_the_end: bool = False
) -> Iterator[Iterator[tuple[Any, ...]]]:
    """The rows of one driver query, ``STREAM_CHUNK`` at a time (``Backend.stream``).

    Say ``to_the_end`` only when every row will be read: some ways of streaming cannot be left
    early without aborting the transaction.
    """
    with backend_for(conn).stream(
        conn, sql, params, size=STREAM_CHUNK, to_the_end=to_the_end
    ) as rows:
        yield rows
