"""Loading and writing job rows in bulk, at driver speed, on SQLite and PostgreSQL.

A pass can touch 100,000 rows. Through SQLAlchemy's per-value type processing that costs more
than fetching the pages did, so this module speaks to the driver directly with plain tuples:
timestamps are converted once per distinct value (a page's jobs share one), and PostgreSQL
receives new rows and transitions through COPY. The SQL is the same on both backends but for
the placeholder; upserts are ``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from jobsync.errors import StorageError
from jobsync.history import JobRow, StoredJob
from jobsync.redact import error_detail

__all__ = ["insert_jobs", "insert_transitions", "load_jobs", "load_vanished", "update_jobs"]

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
_LOAD_SQL = """
SELECT job_id, collection_name, state, raw_state, progress, reason, listed, missed_snapshots,
       vanished_at IS NOT NULL, finished_at IS NOT NULL,
       CASE WHEN listed THEN NULL ELSE last_seen_at END,
       CASE WHEN listed THEN NULL ELSE last_seen_started_at END,
       missing_since
FROM import_job_records WHERE cluster_id = {p}
"""
# state_since and finished_at are written only when the pass decided on them (see JobRow).
_UPDATE_SQL = """
UPDATE import_job_records SET
    collection_name = {p}, state = {p}, raw_state = {p}, progress = {p}, reason = {p},
    state_since = COALESCE({p}, state_since), finished_at = COALESCE(finished_at, {p}),
    last_seen_at = {p}, last_seen_started_at = {p}, vanished_at = {p}, listed = {p},
    missed_snapshots = {p}, missing_since = {p}
WHERE cluster_id = {p} AND job_id = {p}
"""


def _placeholder(conn: Connection) -> str:
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


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a timestamp, got {type(value).__name__}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def load_jobs(conn: Connection, cluster_id: str) -> tuple[dict[str, StoredJob], set[str]]:
    """The source's jobs that are not vanished, for planning, and the ids of those that are.

    Vanished jobs are most of a long history (finished jobs age out of the list), and only a
    job that reappears needs more than its id: see ``load_vanished``.
    """
    p = _placeholder(conn)
    rows = _fetchall(conn, _LOAD_SQL.format(p=p) + " AND vanished_at IS NULL", (cluster_id,))
    vanished = _fetchall(
        conn,
        f"SELECT job_id FROM import_job_records WHERE cluster_id = {p} AND vanished_at IS NOT NULL",
        (cluster_id,),
    )
    return {row[0]: _stored(row) for row in rows}, {row[0] for row in vanished}


def load_vanished(
    conn: Connection, cluster_id: str, job_ids: Sequence[str]
) -> dict[str, StoredJob]:
    """Full planning rows for vanished jobs that a snapshot lists again."""
    p = _placeholder(conn)
    found: dict[str, StoredJob] = {}
    for start in range(0, len(job_ids), 500):
        batch = job_ids[start : start + 500]
        marks = ", ".join([p] * len(batch))
        sql = _LOAD_SQL.format(p=p) + f" AND job_id IN ({marks})"
        for row in _fetchall(conn, sql, (cluster_id, *batch)):
            found[row[0]] = _stored(row)
    return found


def _stored(row: Sequence[Any]) -> StoredJob:
    # Booleans may come back as 0/1 from SQLite; the planner only tests their truth.
    if row[10] is None and row[11] is None and row[12] is None:
        return StoredJob._make(row)  # a listed job: nothing to parse, the common case
    return StoredJob._make(
        (*row[:10], _parse_time(row[10]), _parse_time(row[11]), _parse_time(row[12]))
    )


def _fetchall(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    # fetchall on the driver's cursor: row-by-row fetching through SQLAlchemy costs more than
    # the rows themselves.
    with _driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            cursor.execute(sql, params)
            return list(cursor.fetchall())
        finally:
            cursor.close()


def insert_jobs(conn: Connection, cluster_id: str, rows: Sequence[JobRow]) -> None:
    """Upsert new jobs (INSERT ... ON CONFLICT DO UPDATE)."""
    if not rows:
        return
    t = _Times(conn.dialect.name)
    tuples = [
        (
            cluster_id,
            r.job_id,
            r.collection_name,
            r.state,
            r.raw_state,
            r.progress,
            r.reason,
            t(r.first_seen_at),
            t(r.state_since),
            t(r.last_seen_at),
            t(r.last_seen_started_at),
            t(r.finished_at),
            t(r.vanished_at),
            r.listed,
            r.missed_snapshots,
            t(r.missing_since),
        )
        for r in rows
    ]
    updates = ", ".join(f"{c} = excluded.{c}" for c in JOB_COLUMNS[2:])
    conflict = f"ON CONFLICT (cluster_id, job_id) DO UPDATE SET {updates}"
    if conn.dialect.name == "postgresql":
        # COPY into a scratch table, then one upsert from it: far faster than row by row.
        conn.exec_driver_sql(
            "CREATE TEMPORARY TABLE IF NOT EXISTS jobsync_staged_jobs "
            "(LIKE import_job_records INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        _copy(conn, "jobsync_staged_jobs", JOB_COLUMNS, tuples)
        columns = ", ".join(JOB_COLUMNS)
        conn.exec_driver_sql(
            f"INSERT INTO import_job_records ({columns}) "
            f"SELECT {columns} FROM jobsync_staged_jobs {conflict}"
        )
        conn.exec_driver_sql("TRUNCATE jobsync_staged_jobs")
        return
    marks = ", ".join("?" * len(JOB_COLUMNS))
    _executemany(
        conn,
        f"INSERT INTO import_job_records ({', '.join(JOB_COLUMNS)}) VALUES ({marks}) {conflict}",
        tuples,
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
    _executemany(conn, _UPDATE_SQL.format(p=_placeholder(conn)), tuples)


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
def _driver_errors(conn: Connection) -> Iterator[Any]:
    """The driver's own connection, with its errors turned into StorageError."""
    try:
        yield conn.connection.driver_connection
    except conn.dialect.loaded_dbapi.Error as exc:
        raise StorageError(f"database error: {error_detail(exc)}") from exc


def _executemany(conn: Connection, sql: str, tuples: list[tuple[Any, ...]]) -> None:
    with _driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            cursor.executemany(sql, tuples)
        finally:
            cursor.close()


def _copy(
    conn: Connection, table: str, columns: Sequence[str], tuples: list[tuple[Any, ...]]
) -> None:
    with (
        _driver_errors(conn) as driver,
        driver.cursor() as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types([_COPY_TYPES[c] for c in columns])
        write: Callable[[tuple[Any, ...]], None] = copy.write_row
        for row in tuples:
            write(row)
