"""The database side of a pass: engines, run records, and applying a pass in one transaction.

SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for every write transaction, so two
writers queue instead of failing half-way. PostgreSQL takes a transaction-level advisory lock
per source first thing in the write transaction, so two writers can never interleave on one
source. Upserts are the dialect's ``INSERT ... ON CONFLICT``.

Progress details fetched for the pass are written in the same transaction
(``jobsync.storage.samples``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, func, insert, select, update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from jobsync.domain.fencing import check_fence, clock_shift, shift_pass
from jobsync.domain.history import PassPlan, SourceMarks, plan_pass
from jobsync.domain.records import JobDetails, Snapshot
from jobsync.errors import ConfigError, StorageError
from jobsync.observability.redact import error_detail, redact
from jobsync.storage import bulk, scan
from jobsync.storage.locking import lock_key
from jobsync.storage.samples import (
    load_detail_candidates,
    load_figures,
    with_details,
    write_details,
)
from jobsync.storage.schema import sync_runs, sync_sources

__all__ = [
    "PassCounts",
    "abandon_stale_runs",
    "apply_pass",
    "fail_run",
    "load_detail_candidates",
    "normalise_url",
    "open_engine",
    "start_run",
    "storage_errors",
]

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# For databases jobsync creates (an existing file keeps its own). Against the default 4 KiB, a
# 1,000,000-job first sync writes its rows 10% faster (fewer pages to split, fewer WAL frames
# to checkpoint); a re-sync's scattered updates take as long, in more WAL bytes.
SQLITE_PAGE_SIZE = 8192


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy alone would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _parse_database_url(url: str) -> URL:
    """The URL as SQLAlchemy reads it, or a ConfigError (password masked) saying what is wrong."""
    shown = repr(redact(url))
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError(f"database URL {shown} is not a valid SQLAlchemy URL") from None
    except ValueError:
        # SQLAlchemy's parser raises ValueError only when it turns the port into a number.
        raise ConfigError(f"database URL {shown}: the port is not a number") from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "postgresql":
        if driver != "psycopg":
            raise ConfigError(
                f"database URL {shown}: jobsync talks to PostgreSQL through psycopg 3, not "
                f"{driver}; write postgresql://... (or postgresql+psycopg://...)"
            )
    elif backend == "sqlite":
        if driver != "pysqlite":
            raise ConfigError(
                f"database URL {shown}: jobsync opens SQLite with Python's sqlite3, not "
                f"{driver}; write sqlite:///..."
            )
        if parsed.username or parsed.password or parsed.host or parsed.port:
            raise ConfigError(
                f"database URL {shown}: a SQLite URL names a file and takes no user, password "
                "or host; write sqlite:///relative/path.db or sqlite:////absolute/path.db"
            )
    else:
        raise ConfigError(
            f"database URL {shown}: jobsync supports sqlite:// and postgresql:// only"
        )
    return parsed


def open_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine configured for jobsync: see the module docstring for what that means.

    ``readonly`` engines open SQLite files read-only (see ``_read_only_target``).
    """
    parsed = _parse_database_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed)
            _configure_sqlite(engine, readonly=readonly)
        else:
            engine = create_engine(
                parsed,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 10, "application_name": "jobsync"},
            )
    except ArgumentError as exc:
        raise ConfigError(f"database URL {redact(url)!r}: {error_detail(exc)}") from None
    return engine


def missing_sqlite_file(url: str) -> bool:
    """True for a SQLite URL whose file does not exist (connecting would create it empty).

    Raises ConfigError for a URL that jobsync cannot use at all.
    """
    parsed = _parse_database_url(url)
    path = parsed.database
    return (
        parsed.get_backend_name() == "sqlite"
        and not parsed.query.get("uri")
        and bool(path)
        and path != ":memory:"
        and not Path(str(path)).exists()
    )


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
    import os
    from urllib.parse import quote

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


def _configure_sqlite(engine: Engine, *, readonly: bool) -> None:
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
            cursor.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL is still safe against a killed process; only power loss can
            # lose the latest commit.
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


@contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors into StorageError with the database URL's secrets removed."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(f"database {redact(url)}: {error_detail(exc)}") from exc


def start_run(engine: Engine, cluster_id: str, started_at: datetime) -> int:
    """Record a pass as running, in its own transaction, and return its id.

    The row also takes the source's latest applied pass (``base_run_id``): the fence that
    ``apply_pass`` checks, in the same statement so no pass can be applied in between.
    """
    base = (
        select(sync_sources.c.last_run_id)
        .where(sync_sources.c.cluster_id == cluster_id)
        .scalar_subquery()
    )
    with engine.begin() as conn:
        result = conn.execute(
            insert(sync_runs)
            .values(
                cluster_id=cluster_id, started_at=started_at, status="running", base_run_id=base
            )
            .returning(sync_runs.c.id)
        )
        return int(result.scalar_one())


def fail_run(
    engine: Engine, run_id: int, finished_at: datetime, error: str, retries: int = 0
) -> None:
    """Mark a pass failed with a redacted error text. Best effort: never masks the real error.

    A pass marked ``abandoned`` by another process that stands down is recorded ``failed``
    too, with its own reason instead of the other process's guess.
    """
    try:
        with engine.begin() as conn:
            conn.execute(
                update(sync_runs)
                .where(sync_runs.c.id == run_id)
                .values(
                    status="failed",
                    finished_at=finished_at,
                    error=redact(error)[:2000],
                    retries=retries,
                )
            )
    except SQLAlchemyError as exc:
        log.warning("could not record the failure of run %s: %s", run_id, redact(str(exc)))


@dataclass(frozen=True)
class PassCounts:
    new_jobs: int
    changed_jobs: int
    vanished_jobs: int
    rows_written: int


def apply_pass(
    engine: Engine,
    cluster_id: str,
    run_id: int,
    snapshot: Snapshot,
    *,
    finished_at: datetime,
    retries: int = 0,
    details: Mapping[str, JobDetails] | None = None,
    details_requested: int = 0,
    details_failed: int = 0,
    decide: Callable[[Connection, PassPlan], None] | None = None,
) -> PassCounts:
    """Write one pass (jobs, history, details, run record, source marks) in one transaction.

    ``details`` are the progress details fetched for some of the snapshot's jobs. ``decide``
    is called last, in the same transaction, with what the pass wrote: notifications record
    the events it decides there (``jobsync.service.notify``), so they commit with the pass.
    """
    details = details or {}
    with _no_gc(), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(lock_key(f"source:{cluster_id}"))))
        marks = _load_marks(conn, cluster_id)
        _fence(conn, run_id, marks)
        shift = clock_shift(snapshot.started_at, marks.last_snapshot_at)
        if shift:
            log.warning(
                "%s: the clock reads %.3fs earlier than the last observation; this pass's "
                "times are moved forward to it",
                cluster_id,
                shift.total_seconds(),
            )
            snapshot, details = shift_pass(snapshot, details, shift)
            finished_at = max(finished_at + shift, snapshot.finished_at)
        stored, unknown = scan.load_for_pass(conn, cluster_id, snapshot.jobs, details)
        previous = load_figures(conn, cluster_id, sorted(details))
        narrowed = _narrowed(snapshot, stored, unknown)
        del unknown  # every listed id on a first sync: 8 MB at a million, not needed to write
        plan = plan_pass(stored, with_details(narrowed, stored, details), marks, run_id)
        bulk.insert_new_jobs(conn, cluster_id, plan)
        bulk.update_jobs(conn, cluster_id, plan.updates)
        bulk.insert_transitions(
            conn, cluster_id, sorted(plan.transitions, key=itemgetter("job_id"))
        )
        rows_written = plan.rows_written
        rows_written += write_details(conn, cluster_id, run_id, snapshot, details, previous)
        _save_marks(conn, cluster_id, run_id, snapshot)
        counts = PassCounts(
            new_jobs=plan.new_jobs,
            changed_jobs=plan.changed_jobs,
            vanished_jobs=plan.vanished_jobs,
            rows_written=rows_written + 2,
        )
        conn.execute(
            update(sync_runs)
            .where(sync_runs.c.id == run_id)
            .values(
                status="succeeded",
                finished_at=finished_at,
                complete=snapshot.complete,
                pages=snapshot.pages,
                records=snapshot.records,
                distinct_jobs=snapshot.distinct_jobs,
                duplicates=snapshot.duplicates,
                invalid_records=snapshot.invalid,
                reported_count=snapshot.reported_count,
                new_jobs=counts.new_jobs,
                changed_jobs=counts.changed_jobs,
                vanished_jobs=counts.vanished_jobs,
                retries=retries,
                rows_written=counts.rows_written,
                snapshot_started_at=snapshot.started_at,
                snapshot_finished_at=snapshot.finished_at,
                details_requested=details_requested,
                details_failed=details_failed,
                incomplete_reason=None if snapshot.complete else snapshot.incomplete_reason,
            )
        )
        if decide is not None:
            decide(conn, plan)
    return counts


def _narrowed(snapshot: Snapshot, stored: Mapping[str, Any], unknown: list[str]) -> Snapshot:
    """The snapshot with only the jobs that may need writing (see ``jobsync.domain.triage``)."""
    listed = snapshot.jobs
    if len(unknown) == len(listed):
        return snapshot  # nothing stored yet: every job is new
    jobs = {job_id: listed[job_id] for job_id in chain(unknown, stored) if job_id in listed}
    return replace(snapshot, jobs=jobs)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while a pass builds and writes its rows.

    A pass allocates a few objects per job and frees them all at the end; none form cycles.
    With the collector on, every few hundred allocations it walks every live object again,
    which on a 100,000-job pass cost more than a second.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def abandon_stale_runs(engine: Engine, finished_at: datetime) -> int:
    """Mark runs left 'running' by a process that died. Call only while holding the sync lock."""
    with engine.begin() as conn:
        result = conn.execute(
            update(sync_runs)
            .where(sync_runs.c.status == "running")
            .values(
                status="abandoned",
                finished_at=finished_at,
                error="the process running this pass stopped before it finished",
            )
        )
    return int(result.rowcount or 0)


def _load_marks(conn: Connection, cluster_id: str) -> SourceMarks:
    row = conn.execute(
        select(
            sync_sources.c.last_snapshot_started_at,
            sync_sources.c.last_snapshot_at,
            sync_sources.c.last_complete_started_at,
            sync_sources.c.last_run_id,
        ).where(sync_sources.c.cluster_id == cluster_id)
    ).first()
    if row is None:
        return SourceMarks()
    return SourceMarks(
        last_snapshot_started_at=row.last_snapshot_started_at,
        last_snapshot_at=row.last_snapshot_at,
        last_complete_started_at=row.last_complete_started_at,
        last_run_id=row.last_run_id,
    )


def _fence(conn: Connection, run_id: int, marks: SourceMarks) -> None:
    """Raise SupersededError unless this run may still write (``jobsync.domain.fencing``).

    On PostgreSQL the run's row is locked until the commit, so another process's
    ``abandon_stale_runs`` waits for this transaction and then finds the run finished.
    """
    query = select(sync_runs.c.status, sync_runs.c.base_run_id).where(sync_runs.c.id == run_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    check_fence(
        run_id,
        None if row is None else row.status,
        None if row is None else row.base_run_id,
        marks.last_run_id,
    )


def _upsert(conn: Connection, table: Table, update_columns: Iterable[str]) -> Any:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET the given columns."""
    # Imported here: the PostgreSQL dialect package costs 35 ms of start-up to SQLite users.
    stmt: Any
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={name: stmt.excluded[name] for name in update_columns},
    )


def _save_marks(conn: Connection, cluster_id: str, run_id: int, snapshot: Snapshot) -> None:
    values: dict[str, Any] = {
        "cluster_id": cluster_id,
        "last_run_id": run_id,
        "last_snapshot_started_at": snapshot.started_at,
        "last_snapshot_at": snapshot.finished_at,
    }
    if snapshot.complete:
        values["last_complete_run_id"] = run_id
        values["last_complete_started_at"] = snapshot.started_at
    conn.execute(_upsert(conn, sync_sources, [k for k in values if k != "cluster_id"]), values)
