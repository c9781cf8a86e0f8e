"""SQLite: one writer at a time, and a file beside the database for the sync lock.

Every connection gets WAL, a busy timeout and foreign keys, and every transaction begins
``BEGIN IMMEDIATE``: a read-then-write transaction that began deferred could fail half-way
with "database is locked" when another writer got there first; taking the write lock at BEGIN
makes writers queue instead. That write lock is also the source's write lock of a pass and the
migrations' lock. How a connection is opened is ``jobsync.storage.backends.sqlite_connect``.

The database-wide lock is a ``flock`` on ``<database>.lock`` beside the database file's real
path (symbolic links resolved, so two paths to one file share one lock; never on the database
file itself: closing any descriptor of it would drop SQLite's own POSIX locks): shared by
passes, exclusive for upgrades and pruning (and for a whole run of older jobsync versions).
Each source's passes also take an exclusive ``flock`` on a file of their own in
``<database>.locks/``. ``flock`` locks belong to an open file, not a process, so two blocks of
one process exclude each other too; the operating system releases them when the process dies.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.engine import URL

from jobsync.domain.history import PassPlan
from jobsync.domain.records import JobRecord
from jobsync.domain.states import FAILED
from jobsync.errors import ConfigError, LockedError, StorageError
from jobsync.storage.backends.base import Backend, LostCheck
from jobsync.storage.backends.filelock import (
    database_locked,
    either,
    file_lock,
    lock_path,
    locks_dir,
    source_lock_path,
)
from jobsync.storage.backends.sqlite_connect import (
    FIRST_PASS_WITHOUT_WAL,
    configure,
    no_busy_wait,
    outside_wal,
)
from jobsync.storage.rows import (
    DERIVED_SQL,
    FIRST_SEEN,
    NEW_JOB,
    NEW_JOB_BOUND,
    TimeWriter,
    first_seen_pass_row,
    new_job_pass_row,
    new_job_values,
)

log = logging.getLogger(__name__)

__all__ = [
    "NEW_ROWS_PER_STATEMENT",
    "SQLITE",
    "SQLiteBackend",
    "lock_path",
    "source_lock_path",
    "utc_text",
]

# New jobs per multi-row INSERT: its parameters (the pass's values, then each job's) must stay
# under the 999 of SQLite builds before 3.32.
NEW_ROWS_PER_STATEMENT = 50
_PASS_PARAMS = len(NEW_JOB.from_pass)
_JOB_PARAMS = len(NEW_JOB_BOUND)
if _PASS_PARAMS + _JOB_PARAMS * NEW_ROWS_PER_STATEMENT >= 999:
    raise RuntimeError("a multi-row INSERT of new jobs would bind too many parameters")

# OR FAIL, not the default ABORT: ABORT undoes just the failing statement, for which SQLite
# first copies every page a multi-row INSERT touches to a statement journal. A pass undoes its
# whole transaction on any error, so that copy would only ever cost time.
_NEW_JOBS_INSERT = "INSERT OR FAIL INTO import_job_records"

# Each column of a first_seen transition (rows.FIRST_SEEN), from the new job's row just
# written: the same values as rows.first_seen_row, computed inside SQLite.
_FIRST_SEEN_FROM_ROW = {
    "cluster_id": "cluster_id",
    "window_start": ":window_start",
    "sync_run_id": ":sync_run_id",
    "job_id": "job_id",
    "to_state": "state",
    "raw_to_state": "raw_state",
    "observed_at": "first_seen_at",
    "reason": "CASE WHEN state = :failed THEN reason END",
    "kind": ":kind",
    "from_state": ":from_state",
    "raw_from_state": ":raw_from_state",
    "window_start_us": ":window_start_us",
    "observed_us": "state_since_us",
}
# SQLite gives new rows rowids above the highest before them (the count is checked), and
# rowid order is job id order, as they were inserted.
_FIRST_SEEN_FROM_NEW_ROWS = (
    f"INSERT INTO import_job_transitions ({', '.join(FIRST_SEEN.columns)}) "
    f"SELECT {', '.join(_FIRST_SEEN_FROM_ROW[name] for name in FIRST_SEEN.columns)} "
    "FROM import_job_records WHERE rowid > :after ORDER BY rowid"
)


def _new_jobs_sql(rows: int) -> str:
    """A multi-row INSERT of ``rows`` new jobs, columns in the table's order: ?1.. are the
    pass's values, bound once per statement; then each job's own (``new_job_values``), so that
    each statement's highest parameter number is the last one bound (the sqlite3 module
    insists on an exact count); fixed values are written out, which SQLite stores a little
    faster than bound ones, and the columns of ``DERIVED_SQL`` are computed from the others."""
    shared = {name: f"?{k}" for k, name in enumerate(NEW_JOB.from_pass, start=1)}
    fixed = {name: _literal(value) for name, value in NEW_JOB.fixed.items()}

    def one(before: int) -> str:
        own = {name: f"?{before + k}" for k, name in enumerate(NEW_JOB_BOUND, start=1)}
        same = {name: own[source] for name, source in NEW_JOB.same_as.items()}
        bound = {**shared, **own, **same, **fixed}
        derived = {name: sql.format(**bound) for name, sql in DERIVED_SQL.items()}
        values = {**bound, **derived}
        return f"({','.join(values[name] for name in NEW_JOB.in_table_order)})"

    values = ",".join(one(_PASS_PARAMS + _JOB_PARAMS * n) for n in range(rows))
    return f"{_NEW_JOBS_INSERT} ({', '.join(NEW_JOB.in_table_order)}) VALUES {values}"


def _literal(value: object) -> str:
    """A fixed value of a new job's row as SQLite SQL (booleans are stored as 1 and 0)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return str(int(value))
    raise TypeError(f"no SQLite literal for {value!r}")


def utc_text(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DateTime type writes and reads: naive UTC."""
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class SQLiteBackend(Backend):
    name = "sqlite"
    placeholder = "?"
    writes_serialised = True
    # BINARY collation compares UTF-8 bytes, which order as code points do.
    key_order_is_code_point_order = True
    # The primary key's index keeps this order: nothing is sorted.
    code_point_order = "ORDER BY {column}"
    epoch_seconds_sql = "julianday({column}) * 86400.0"
    head_schema = "jobsync.storage.backends.sqlite_schema"
    # From the stored text (utc_text), in integer arithmetic: julianday() rounds to the
    # millisecond.
    epoch_micros_sql = (
        "(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
        " + CASE WHEN substr({column}, 20, 1) = '.'"
        " THEN CAST(substr(substr({column}, 21, 6) || '000000', 1, 6) AS INTEGER) ELSE 0 END)"
    )

    def check_url(self, url: URL, shown: str) -> None:
        driver = url.get_driver_name()
        if driver != "pysqlite":
            raise ConfigError(
                f"database URL {shown}: jobsync opens SQLite with Python's sqlite3, not "
                f"{driver}; write sqlite:///..."
            )
        if url.username or url.password or url.host or url.port:
            raise ConfigError(
                f"database URL {shown}: a SQLite URL names a file and takes no user, password "
                "or host; write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )

    def create_engine(self, url: URL, *, readonly: bool) -> Engine:
        engine = create_engine(url)
        configure(engine, readonly=readonly)
        return engine

    def file_of(self, url: URL) -> str | None:
        path = url.database
        return None if path in (None, "", ":memory:") else str(path)

    def missing_file(self, url: URL) -> bool:
        path = self.file_of(url)
        return not url.query.get("uri") and path is not None and not Path(path).exists()

    def checkpoint(self, engine: Engine) -> None:
        """``wal_checkpoint(TRUNCATE)`` with no busy timeout: copies the WAL into the database
        and empties the file when no reader is using it; while one is, it copies what it can
        and returns at once instead of waiting for the reader (for up to the busy timeout)."""
        if not engine.url.database or engine.url.database == ":memory:":
            return
        with engine.connect() as conn:
            cursor = self.driver(conn).cursor()
            try:
                with no_busy_wait(cursor):
                    cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                cursor.close()

    @contextmanager
    def journal_for_pass(self, conn: Connection, listed: int) -> Iterator[None]:
        """A pass that lists many jobs into a database that holds none is written outside the
        WAL (``sqlite_connect.outside_wal``); every other pass in WAL mode."""
        if (
            listed < FIRST_PASS_WITHOUT_WAL
            or self.fetchall(conn, "SELECT 1 FROM import_job_records LIMIT 1", ()).rows
        ):
            yield
            return
        with outside_wal(self.driver(conn)) as left:
            if left:
                log.debug("writing the first pass of a new database without the WAL")
            yield

    def lock_source(self, conn: Connection, cluster_id: str) -> None:
        pass  # BEGIN IMMEDIATE took the database's write lock: one writer at a time already

    def lock_migrations(self, conn: Connection) -> None:
        pass  # likewise

    @contextmanager
    def database_lock(
        self, engine: Engine, *, shared: bool, wait: float = 0.0
    ) -> Iterator[LostCheck | None]:
        database = engine.url.database
        if not database or database == ":memory:":
            yield None
            return
        path = lock_path(database)
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        with file_lock(path, mode, wait, lambda: database_locked(path)) as lost:
            yield lost

    @contextmanager
    def source_locks(
        self, engine: Engine, keys: Sequence[str]
    ) -> Iterator[dict[str, LostCheck | None]]:
        database = engine.url.database
        if not database or database == ":memory:":
            yield dict.fromkeys(keys)
            return
        with self.database_lock(engine, shared=True) as database_lost, ExitStack() as held:
            taken: dict[str, LostCheck | None] = {}
            for key in keys:
                path = source_lock_path(database, key)
                try:
                    lost = held.enter_context(
                        file_lock(path, fcntl.LOCK_EX, 0.0, lambda: "", note=key)
                    )
                except LockedError:
                    continue
                taken[key] = either(database_lost, lost)
            yield taken

    @contextmanager
    def daemon_lock(self, engine: Engine) -> Iterator[None]:
        database = engine.url.database
        if not database or database == ":memory:":
            yield None
            return
        path = locks_dir(database) / "daemon.lock"

        def refused() -> str:
            return (
                "another jobsync daemon is already running on this SQLite database "
                f"(lock file {path}): run one daemon per SQLite file, or use PostgreSQL "
                "to run several"
            )

        with file_lock(path, fcntl.LOCK_EX, 0.0, refused, note="daemon"):
            yield None

    def dialect_insert(self, table: Table) -> Any:
        from sqlalchemy.dialects.sqlite import insert

        return insert(table)

    def time_writer(self) -> TimeWriter:
        texts: dict[datetime, str | None] = {}

        def write(value: datetime | None) -> str | None:
            if value is None:
                return None
            text = texts.get(value)
            if text is None:
                text = texts[value] = utc_text(value)
            return text

        return write

    def insert_new_jobs(
        self, conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
    ) -> None:
        """Multi-row INSERTs that bind only each job's own values; then one INSERT ... SELECT
        copies their first_seen transitions from those rows without leaving SQLite."""
        time = self.time_writer()
        shared = [
            time(value) if isinstance(value, datetime) else value
            for value in NEW_JOB.pass_values(new_job_pass_row(cluster_id, plan))
        ]
        full = _new_jobs_sql(NEW_ROWS_PER_STATEMENT)
        values = new_job_values(jobs, time, plan.first_seen_window, derived=False)
        cursor = self.driver(conn).cursor()
        try:
            cursor.execute("SELECT coalesce(max(rowid), 0) FROM import_job_records")
            (after,) = cursor.fetchone()
            for start in range(0, len(jobs), NEW_ROWS_PER_STATEMENT):
                rows = min(NEW_ROWS_PER_STATEMENT, len(jobs) - start)
                params = [*shared, *chain.from_iterable(islice(values, rows))]
                sql = full if rows == NEW_ROWS_PER_STATEMENT else _new_jobs_sql(rows)
                cursor.execute(sql, params)
            first_seen = first_seen_pass_row(cluster_id, plan)
            cursor.execute(
                _FIRST_SEEN_FROM_NEW_ROWS,
                {
                    "window_start": time(first_seen["window_start"]),
                    "window_start_us": first_seen["window_start_us"],
                    "sync_run_id": first_seen["sync_run_id"],
                    **FIRST_SEEN.fixed,
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


SQLITE = SQLiteBackend()
