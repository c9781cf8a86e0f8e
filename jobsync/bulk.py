"""Writing job rows in bulk, at driver speed, on SQLite and PostgreSQL (reading: ``scan``).

A pass can touch 100,000 rows. Through SQLAlchemy's per-value type processing that costs more
than fetching the pages did, so this module speaks to the driver directly with plain tuples:
timestamps are converted once per distinct value (a page's jobs share one). New jobs go to
SQLite as JSON expanded by the database and to PostgreSQL through COPY (see
``insert_new_jobs``); changes are written with ``executemany``; upserts are
``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from jobsync.errors import StorageError
from jobsync.history import JobRow, PassPlan, new_job
from jobsync.records import JobRecord
from jobsync.redact import error_detail

__all__ = [
    "driver_errors",
    "fetchall",
    "insert_new_jobs",
    "insert_transitions",
    "placeholder",
    "update_jobs",
]

TRANSITION_COLUMNS = (
    "cluster_id",
    "job_id",
    "kind",
    "from_state",
    "to_state",
    "raw_from_state",
    "raw_to_state",
    "window_start",
    "observed_at",
    "sync_run_id",
    "reason",
)
JOB_COLUMNS = (
    "cluster_id",
    "job_id",
    "collection_name",
    "state",
    "raw_state",
    "progress",
    "reason",
    "first_seen_at",
    "state_since",
    "last_seen_at",
    "last_seen_started_at",
    "finished_at",
    "vanished_at",
    "listed",
    "missed_snapshots",
    "missing_since",
)
# PostgreSQL types of the columns above, for binary COPY (three times faster than text).
_COPY_TYPES = {
    "cluster_id": "text",
    "job_id": "text",
    "kind": "text",
    "from_state": "text",
    "to_state": "text",
    "raw_from_state": "text",
    "raw_to_state": "text",
    "window_start": "timestamptz",
    "observed_at": "timestamptz",
    "sync_run_id": "int8",
    "reason": "text",
    "collection_name": "text",
    "state": "text",
    "raw_state": "text",
    "progress": "int4",
    "first_seen_at": "timestamptz",
    "state_since": "timestamptz",
    "last_seen_at": "timestamptz",
    "last_seen_started_at": "timestamptz",
    "finished_at": "timestamptz",
    "vanished_at": "timestamptz",
    "listed": "bool",
    "missed_snapshots": "int4",
    "missing_since": "timestamptz",
}
# state_since and finished_at are written only when the pass decided on them (see JobRow).
_UPDATE_SQL = """
UPDATE import_job_records SET
    collection_name = {p}, state = {p}, raw_state = {p}, progress = {p}, reason = {p},
    state_since = COALESCE({p}, state_since), finished_at = COALESCE(finished_at, {p}),
    last_seen_at = {p}, last_seen_started_at = {p}, vanished_at = {p}, listed = {p},
    missed_snapshots = {p}, missing_since = {p}
WHERE cluster_id = {p} AND job_id = {p}
"""

# New jobs, one JSON array per job: [job_id, collection_name, state, raw_state, progress, reason,
# observed_at, finished_at, failure_reason]. The rest of the row is the same for every new job.
_NEW_ROW_COLUMNS = ", ".join(JOB_COLUMNS)
_NEW_SQLITE = (
    f"""
INSERT INTO import_job_records ({_NEW_ROW_COLUMNS})
SELECT ?1, j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4,
       j.value ->> 5, j.value ->> 6, j.value ->> 6, ?2, ?3, j.value ->> 7, NULL, 1, 0, NULL
FROM json_each(?4) AS j
WHERE true  -- SQLite needs a WHERE before ON CONFLICT in INSERT ... SELECT
ON CONFLICT (cluster_id, job_id) DO UPDATE SET
    {", ".join(f"{c} = excluded.{c}" for c in JOB_COLUMNS[2:])}
""",
    f"""
INSERT INTO import_job_transitions ({", ".join(TRANSITION_COLUMNS)})
SELECT ?1, j.value ->> 0, 'first_seen', NULL, j.value ->> 2, NULL, j.value ->> 3, ?2,
       j.value ->> 6, ?3, j.value ->> 8
FROM json_each(?4) AS j
""",
)
# Bounds what a first sync expands at once (on SQLite also the JSON text, ~100 bytes a job).
NEW_JOBS_CHUNK = 20_000


def placeholder(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


class _Times:
    """Converts datetimes to what the driver stores, once per distinct value."""

    def __init__(self, dialect: str) -> None:
        self._sqlite = dialect == "sqlite"
        self._cache: dict[datetime, object] = {}

    def __call__(self, value: datetime | None) -> object:
        if value is None or not self._sqlite:
            return value  # psycopg sends aware datetimes as timestamptz
        cached = self._cache.get(value)
        if cached is None:
            # The text SQLAlchemy's SQLite DateTime type writes and reads: naive UTC.
            cached = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            self._cache[value] = cached
        return cached


def insert_new_jobs(conn: Connection, cluster_id: str, plan: PassPlan) -> None:
    """Write the pass's new jobs and append their ``first_seen`` transitions.

    The rest of a new job's row is the same for all of them, so little travels per job:

    - SQLite: one JSON array per chunk, expanded into both tables by ``json_each`` in an
      ``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, instead of 16 + 11 values bound per job;
    - PostgreSQL: binary COPY straight into both tables, which the server consumes while the
      client is still encoding. There is no ON CONFLICT here: these jobs were loaded as absent
      under the source's transaction lock, so none can exist; if one did, COPY would fail the
      pass and leave the stored history as it was. (An upsert through a staging table cost
      twice as much on the server.)
    """
    if not plan.new:
        return
    # Key order: B-tree inserts append instead of splitting pages all over the index.
    plan.new.sort(key=_job_id)  # in place: no second list of a million references
    jobs = plan.new
    if conn.dialect.name == "postgresql":
        _copy_new_jobs(conn, cluster_id, plan, jobs)
    else:
        _insert_new_jobs_sqlite(conn, cluster_id, plan, jobs)


def _insert_new_jobs_sqlite(
    conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
) -> None:
    t = _Times(conn.dialect.name)
    rows_sql, history_sql = _NEW_SQLITE
    with driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            for start in range(0, len(jobs), NEW_JOBS_CHUNK):
                doc = json.dumps(
                    [
                        (
                            j.job_id,
                            j.collection_name,
                            j.state,
                            j.raw_state,
                            j.progress,
                            j.reason,
                            t(j.observed_at),
                            t(j.finished_at),
                            j.failure_reason,
                        )
                        for j in map(new_job, jobs[start : start + NEW_JOBS_CHUNK])
                    ],
                    ensure_ascii=False,
                    check_circular=False,
                )
                cursor.execute(
                    rows_sql, (cluster_id, t(plan.seen_at), t(plan.seen_started_at), doc)
                )
                cursor.execute(
                    history_sql, (cluster_id, t(plan.first_seen_window), plan.run_id, doc)
                )
        finally:
            cursor.close()


def _copy_new_jobs(
    conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
) -> None:
    seen_at, seen_started_at = plan.seen_at, plan.seen_started_at
    window, run_id = plan.first_seen_window, plan.run_id
    # A chunk at a time, as on SQLite: each job is expanded once for both tables, and a
    # million of them are never expanded at once.
    for start in range(0, len(jobs), NEW_JOBS_CHUNK):
        expanded = list(map(new_job, jobs[start : start + NEW_JOBS_CHUNK]))
        _copy(
            conn,
            "import_job_records",
            JOB_COLUMNS,
            (
                (
                    cluster_id,
                    j.job_id,
                    j.collection_name,
                    j.state,
                    j.raw_state,
                    j.progress,
                    j.reason,
                    j.observed_at,
                    j.observed_at,
                    seen_at,
                    seen_started_at,
                    j.finished_at,
                    None,
                    True,
                    0,
                    None,
                )
                for j in expanded
            ),
        )
        _copy(
            conn,
            "import_job_transitions",
            TRANSITION_COLUMNS,
            (
                (
                    cluster_id,
                    j.job_id,
                    "first_seen",
                    None,
                    j.state,
                    None,
                    j.raw_state,
                    window,
                    j.observed_at,
                    run_id,
                    j.failure_reason,
                )
                for j in expanded
            ),
        )


def update_jobs(conn: Connection, cluster_id: str, rows: Sequence[JobRow]) -> None:
    """Write the planner's decisions about jobs that are already stored."""
    if not rows:
        return
    t = _Times(conn.dialect.name)
    tuples = [
        (
            r.collection_name,
            r.state,
            r.raw_state,
            r.progress,
            r.reason,
            t(r.state_since),
            t(r.finished_at),
            t(r.last_seen_at),
            t(r.last_seen_started_at),
            t(r.vanished_at),
            r.listed,
            r.missed_snapshots,
            t(r.missing_since),
            cluster_id,
            r.job_id,
        )
        for r in rows
    ]
    _executemany(conn, _UPDATE_SQL.format(p=placeholder(conn)), tuples)


def insert_transitions(
    conn: Connection, cluster_id: str, transitions: Iterable[dict[str, Any]]
) -> int:
    """Append history rows; returns how many."""
    t = _Times(conn.dialect.name)
    tuples = [
        (
            cluster_id,
            x["job_id"],
            x["kind"],
            x["from_state"],
            x["to_state"],
            x["raw_from_state"],
            x["raw_to_state"],
            t(x["window_start"]),
            t(x["observed_at"]),
            x["sync_run_id"],
            x["reason"],
        )
        for x in transitions
    ]
    if not tuples:
        return 0
    if conn.dialect.name == "postgresql":
        _copy(conn, "import_job_transitions", TRANSITION_COLUMNS, tuples)
    else:
        marks = ", ".join("?" * len(TRANSITION_COLUMNS))
        _executemany(
            conn,
            f"INSERT INTO import_job_transitions ({', '.join(TRANSITION_COLUMNS)}) "
            f"VALUES ({marks})",
            tuples,
        )
    return len(tuples)


@contextmanager
def driver_errors(conn: Connection) -> Iterator[Any]:
    """The driver's own connection, with its errors turned into StorageError."""
    try:
        yield conn.connection.driver_connection
    except conn.dialect.loaded_dbapi.Error as exc:
        raise StorageError(f"database error: {error_detail(exc)}") from exc


def fetchall(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """All rows of one query, through the driver's cursor: row-by-row fetching through
    SQLAlchemy costs more than the rows themselves."""
    with driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def _executemany(conn: Connection, sql: str, tuples: list[tuple[Any, ...]]) -> None:
    with driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            cursor.executemany(sql, tuples)
        finally:
            cursor.close()


def _copy(
    conn: Connection, table: str, columns: Sequence[str], tuples: Iterable[tuple[Any, ...]]
) -> None:
    with (
        driver_errors(conn) as driver,
        driver.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types([_COPY_TYPES[c] for c in columns])
        write: Callable[[tuple[Any, ...]], None] = copy.write_row
        for row in tuples:
            write(row)


def _job_id(record: JobRecord) -> str:
    return record.job_id
