"""Writing job rows in bulk, at driver speed, on SQLite and PostgreSQL (reading: ``scan``).

A pass can touch 100,000 rows. Through SQLAlchemy's per-value type processing that costs more
than fetching the pages did, so this module speaks to the driver directly with plain tuples:
timestamps are converted once per distinct value (a page's jobs share one). New jobs go to
SQLite as multi-row VALUES and to PostgreSQL through COPY (see
``insert_new_jobs``); changes are written with ``executemany``; upserts are
``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection

from jobsync.domain.history import JobRow, PassPlan, first_seen_state, new_job
from jobsync.domain.records import JobRecord
from jobsync.domain.states import FAILED
from jobsync.errors import StorageError
from jobsync.observability.redact import error_detail
from jobsync.storage.pgload import large_load

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

# New jobs on SQLite: multi-row VALUES, NEW_ROWS_PER_STATEMENT rows per statement. ?1-?3 are
# the pass's own values (cluster, seen_at, seen_started_at); then 8 per job, job_id last so that
# each statement's highest parameter number is the last one bound (the sqlite3 module insists
# on an exact count).
_PASS_PARAMS = 3
# Per job: collection, state, raw_state, progress, reason, observed_at, finished_at, job_id.
_JOB_PARAMS = 8
# 50 rows x 8 stays under the 999 parameters of SQLite builds before 3.32; longer statements
# measured no faster (and a thousand rows, slower).
NEW_ROWS_PER_STATEMENT = 50
# OR FAIL, not the default ABORT: to undo just one statement that breaks a constraint, ABORT has
# SQLite copy every existing page a multi-row INSERT touches to a statement journal, a temp
# file, first. A pass undoes its whole transaction on any error, so that copy is never used:
# 296,000 of the 475,000 write calls of a million-job first sync went there.
_NEW_JOBS_INSERT = "INSERT OR FAIL INTO import_job_records"


def _new_job_values(b: int) -> str:
    """One job's VALUES tuple, for the job whose parameters start after ?b."""
    c, st, raw, prog, reason, obs, fin, job = (f"?{b + k}" for k in range(1, _JOB_PARAMS + 1))
    return f"(?1,{job},{c},{st},{raw},{prog},{reason},{obs},{obs},?2,?3,{fin},NULL,1,0,NULL)"


def _new_jobs_sqlite_sql(rows: int) -> str:
    values = (_new_job_values(_PASS_PARAMS + _JOB_PARAMS * k) for k in range(rows))
    return f"{_NEW_JOBS_INSERT} ({', '.join(JOB_COLUMNS)}) VALUES " + ",".join(values)


# Their first_seen transitions, copied inside SQLite from the rows just written: SQLite gives new
# rows rowids above the highest before them (the count is checked), and rowid order is job id
# order, as they were inserted.
_FIRST_SEEN_FROM_NEW_ROWS = f"""
INSERT INTO import_job_transitions ({", ".join(TRANSITION_COLUMNS)})
SELECT cluster_id, job_id, 'first_seen', NULL, state, NULL, raw_state, :window, first_seen_at,
       :run_id, CASE WHEN state = :failed THEN reason END
FROM import_job_records WHERE rowid > :after ORDER BY rowid
"""


def placeholder(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


class _Times:
    """Converts datetimes to what the driver stores, once per distinct value."""

    def __init__(self, dialect: str) -> None:
        self._sqlite = dialect == "sqlite"
        # Read directly by loops over a million values, where a call per value shows.
        self.cache: dict[datetime, object] = {}

    def __call__(self, value: datetime | None) -> object:
        if value is None or not self._sqlite:
            return value  # psycopg sends aware datetimes as timestamptz
        cached = self.cache.get(value)
        if cached is None:
            # The text SQLAlchemy's SQLite DateTime type writes and reads: naive UTC.
            cached = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            self.cache[value] = cached
        return cached


def insert_new_jobs(conn: Connection, cluster_id: str, plan: PassPlan) -> None:
    """Write the pass's new jobs and append their ``first_seen`` transitions.

    The rest of a new job's row is the same for all of them, so little travels per job:

    - SQLite: multi-row ``INSERT ... VALUES`` of 50 jobs, 8 values bound per job, instead of
      16 per job through ``executemany``; then one ``INSERT ... SELECT`` copies their
      ``first_seen`` transitions from those rows without leaving SQLite. (A JSON array expanded
      by ``json_each`` cost twice as much: every ``->>`` re-parsed the job's JSON.)
    - PostgreSQL: binary COPY straight into both tables, which the server consumes while the
      client is still encoding (an upsert through a staging table cost twice as much on the
      server); a large load checks the history's foreign key and builds the job-id indexes
      once, after it (``jobsync.storage.pgload``).

    There is no ON CONFLICT: these jobs were loaded as absent under the source's write lock
    (``BEGIN IMMEDIATE``; the advisory lock on PostgreSQL), so none can exist; if one did, the
    insert would fail the pass and leave the stored history as it was.
    """
    if not plan.new:
        return
    # Key order: B-tree inserts append instead of splitting pages all over the index.
    plan.new.sort(key=attrgetter("job_id"))  # in place: no second list of a million references
    jobs = plan.new
    if conn.dialect.name == "postgresql":
        with large_load(conn, len(jobs)):
            _copy_new_jobs(conn, cluster_id, plan, jobs)
    else:
        _insert_new_jobs_sqlite(conn, cluster_id, plan, jobs)


def _insert_new_jobs_sqlite(
    conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
) -> None:
    t = _Times(conn.dialect.name)
    head = (cluster_id, t(plan.seen_at), t(plan.seen_started_at))
    full = _new_jobs_sqlite_sql(NEW_ROWS_PER_STATEMENT)
    texts = t.cache
    # (state, finished when first seen) per raw state: the API knows a handful.
    kinds: dict[str | None, tuple[str, bool]] = {}
    with driver_errors(conn) as driver:
        cursor = driver.cursor()
        try:
            cursor.execute("SELECT coalesce(max(rowid), 0) FROM import_job_records")
            (after,) = cursor.fetchone()
            for start in range(0, len(jobs), NEW_ROWS_PER_STATEMENT):
                chunk = jobs[start : start + NEW_ROWS_PER_STATEMENT]
                params = list(head)
                # new_job's values, without building a NewJob per job (half this loop's time
                # at a million jobs), and with no call per job where a dict lookup will do (a
                # third of what was left): finished when first seen finished.
                for r in chunk:
                    raw = r.raw_state
                    kind = kinds.get(raw)
                    if kind is None:
                        kind = kinds[raw] = first_seen_state(raw)[:2]
                    seen = texts.get(r.observed_at) or t(r.observed_at)
                    params += (
                        r.collection_name,
                        kind[0],
                        raw,
                        r.progress,
                        r.reason,
                        seen,
                        seen if kind[1] else None,
                        r.job_id,
                    )
                sql = (
                    full
                    if len(chunk) == NEW_ROWS_PER_STATEMENT
                    else _new_jobs_sqlite_sql(len(chunk))
                )
                cursor.execute(sql, params)
            cursor.execute(
                _FIRST_SEEN_FROM_NEW_ROWS,
                {
                    "window": t(plan.first_seen_window),
                    "run_id": plan.run_id,
                    "failed": FAILED,
                    "after": after,
                },
            )
            if cursor.rowcount != len(jobs):
                raise StorageError(
                    f"wrote {len(jobs)} new jobs but found {cursor.rowcount} of them to record "
                    "as first seen"
                )
        finally:
            cursor.close()


def _copy_new_jobs(
    conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
) -> None:
    seen_at, seen_started_at = plan.seen_at, plan.seen_started_at
    window, run_id = plan.first_seen_window, plan.run_id
    # One COPY per table, each expanding every job as it goes: the server stores rows while the
    # client expands and encodes the next ones. Expanding chunks of 20,000 jobs once for both
    # tables left the server idle during each expansion (a million-job apply_pass 10.2 s
    # against 9.6 streamed, for twice the calls to new_job).
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
            for j in map(new_job, jobs)
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
            for j in map(new_job, jobs)
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
