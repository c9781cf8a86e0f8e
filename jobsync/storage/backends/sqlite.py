"""SQLite: one writer at a time, and a file beside the database for the sync lock.

Every connection gets WAL, a busy timeout and foreign keys, and every transaction begins
``BEGIN IMMEDIATE``: a read-then-write transaction that began deferred could fail half-way
with "database is locked" when another writer got there first; taking the write lock at BEGIN
makes writers queue instead. That write lock is also the source's write lock of a pass and the
migrations' lock. Read-only engines open the file read-only (``_read_only_target``).

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
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Table, create_engine, event
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

__all__ = [
    "NEW_ROWS_PER_STATEMENT",
    "SQLITE",
    "SQLITE_JOURNAL_SIZE_LIMIT",
    "SQLITE_PAGE_SIZE",
    "SQLiteBackend",
    "lock_path",
    "source_lock_path",
    "utc_text",
]

SQLITE_BUSY_TIMEOUT_MS = 10_000
# While a reader holds an old snapshot (a BI tool's open transaction), checkpoints cannot reset
# the WAL and it grows with every commit; once a checkpoint can reset it, it is cut back to
# this size (and to nothing by ``checkpoint`` after the passes, when no reader is in it).
SQLITE_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# For databases jobsync creates (an existing file keeps its own): larger pages mean fewer page
# splits and WAL frames when a first sync appends its rows in key order.
SQLITE_PAGE_SIZE = 8192

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
        _configure(engine, readonly=readonly)
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
                cursor.execute("PRAGMA busy_timeout = 0")
                cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
                cursor.close()

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


def _configure(engine: Engine, *, readonly: bool) -> None:
    if readonly:

        @event.listens_for(engine, "do_connect")
        def _open_read_only(
            _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
        ) -> None:
            # Decided per connection: whether a -wal file exists changes while a pool lives.
            filename = str(cargs[0]) if cargs else ""
            if filename and filename != ":memory:":
                target = _read_only_target(filename, bool(cparams.get("uri")))
                if target is not None:
                    cargs[0] = target
                    cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            # Takes effect only on a database without tables yet, and only before WAL mode.
            cursor.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            _switch_to_wal(cursor)
            # In WAL mode NORMAL is still safe against a killed process; only power loss can
            # lose the latest commit.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_JOURNAL_SIZE_LIMIT}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


# How long the first connections to a new file wait for each other's switch to WAL.
WAL_SWITCH_WAIT = SQLITE_BUSY_TIMEOUT_MS / 1000


def _switch_to_wal(cursor: Any) -> None:
    """``PRAGMA journal_mode = WAL``, tried again while another connection holds the file.

    Switching needs the file to itself. When another connection is writing to a file still in
    rollback mode (two ``jobsync sync`` processes on a new database, two crontab lines in the
    first minute), SQLite answers "database is locked" at once instead of waiting its busy
    timeout, to avoid a deadlock; the other's lock lasts one transaction. On a file already in
    WAL mode the pragma takes no lock.
    """
    deadline = time.monotonic() + WAL_SWITCH_WAIT
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _read_only_target(filename: str, is_uri: bool) -> str | None:
    """What a read-only connection opens: a ``file:`` URI with ``mode=ro``, or None to open
    ``filename`` as it is (a file that does not exist yet: SQLite cannot open that read-only,
    and readers in the CLI refuse a missing file before they get here).

    A WAL database is read through its ``-shm`` and ``-wal`` files, which SQLite creates when
    they are missing; in a directory we may not write it cannot, and even a read-only open
    fails ("attempt to write a readonly database"). ``immutable=1`` reads the main file alone,
    without those files and without locks, so it is used only there, and only while no
    ``-wal`` file exists: a writer's last connection checkpoints and deletes it on close, so
    then the main file holds every commit. While a ``-wal`` exists, a writer may be connected
    and commits may still be in it; ``mode=ro`` reads them through the existing ``-shm``, where
    ``immutable=1`` would silently skip them. What is left: a writer that starts during the
    read and checkpoints before it ends would not be seen by a reader that takes no locks;
    that is the price of reading where we cannot create the ``-shm``.
    """
    if is_uri:
        # The user's own SQLite URI: kept, but read-only unless it names a mode itself.
        return (
            filename
            if "mode=" in filename
            else f"{filename}{'&' if '?' in filename else '?'}mode=ro"
        )
    path = Path(filename)
    if not path.exists():
        return None
    target = f"file:{quote(str(path))}?mode=ro"
    if not os.access(path.parent, os.W_OK) and not Path(f"{path}-wal").exists():
        target += "&immutable=1"
    return target
