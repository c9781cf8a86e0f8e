"""PostgreSQL through psycopg 3: advisory locks, COPY, and results read as they arrive.

A pass takes a transaction-level advisory lock per source first thing in its write
transaction, so two writers never interleave on one source; migrations take one of their own.
The sync lock is a session-level advisory lock with a stable key (``lock_key``), on a
connection of its own that is closed, never returned to the pool, when the lock is released:
a session lock outlives a pooled connection's checkout. The server releases it when the
process dies, and ``SyncLock.check`` notices a session that ended while the lock was held.

New jobs and history go in with binary COPY, which the server consumes while the client is
still encoding; a large load drops and rebuilds keys and indexes (``pgload``). Long reads
come in chunks as the server sends them (``stream``).

The dialect package and psycopg are imported where they are used: a SQLite user never loads
them.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    Integer,
    Select,
    String,
    Table,
    create_engine,
    func,
    select,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError

from jobsync.domain.history import PassPlan
from jobsync.domain.records import JobRecord
from jobsync.errors import ConfigError, LockedError
from jobsync.observability.redact import error_detail, redact
from jobsync.storage.backends.base import Backend, LostCheck, Rows
from jobsync.storage.backends.pgcomments import write_comments
from jobsync.storage.backends.pgload import large_load
from jobsync.storage.dictionary import Comments
from jobsync.storage.rows import (
    FIRST_SEEN,
    NEW_JOB,
    first_seen_pass_row,
    first_seen_values,
    new_job_pass_row,
    new_job_values,
)
from jobsync.storage.schema import UTCDateTime, import_job_records, import_job_transitions

__all__ = ["POSTGRESQL", "PostgreSQLBackend", "chunked_reads", "lock_key"]

_SYNC_LOCK = "jobsync:sync"
_MIGRATION_LOCK = "jobsync:migrate"
_CURSORS = itertools.count()


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@cache
def chunked_reads() -> bool:
    """Whether psycopg's libpq can hand over a result in chunks (libpq 17 and later)."""
    from psycopg import capabilities

    return capabilities.has_stream_chunked()


class PostgreSQLBackend(Backend):
    name = "postgresql"
    placeholder = "%s"
    # The index keeps the database's collation, not "C": the server sorts.
    code_point_order = 'ORDER BY {column} COLLATE "C"'
    epoch_seconds_sql = "EXTRACT(EPOCH FROM {column})::float8"

    def check_url(self, url: URL, shown: str) -> None:
        driver = url.get_driver_name()
        if driver != "psycopg":
            raise ConfigError(
                f"database URL {shown}: jobsync talks to PostgreSQL through psycopg 3, not "
                f"{driver}; write postgresql://... (or postgresql+psycopg://...)"
            )

    def create_engine(self, url: URL, *, readonly: bool) -> Engine:
        # Read-only is the role's business on a server: the engine is the same.
        return create_engine(
            url,
            pool_pre_ping=True,
            connect_args={"connect_timeout": 10, "application_name": "jobsync"},
        )

    @contextmanager
    def sync_lock(self, engine: Engine) -> Iterator[LostCheck | None]:
        key = lock_key(_SYNC_LOCK)
        conn = engine.connect()
        try:
            got = conn.execute(select(func.pg_try_advisory_lock(key))).scalar_one()
            conn.commit()
            if not got:
                raise LockedError(
                    "another jobsync sync is running on this database "
                    f"({redact(engine.url.render_as_string(hide_password=True))})"
                )
            try:
                yield lambda: _session_alive(conn)
            finally:
                try:
                    conn.execute(select(func.pg_advisory_unlock(key)))
                    conn.commit()
                except SQLAlchemyError:
                    pass  # the connection is gone, and the server released the lock with it
        finally:
            # Never hand a connection that may still hold a session lock back to the pool.
            conn.invalidate()
            conn.close()

    def lock_source(self, conn: Connection, cluster_id: str) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(lock_key(f"source:{cluster_id}"))))

    def lock_migrations(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(lock_key(_MIGRATION_LOCK))))

    def for_update(self, query: Select[Any]) -> Select[Any]:
        # Another process's abandon_stale_runs then waits for this transaction, and finds
        # the run finished.
        return query.with_for_update()

    def describe(self, conn: Connection, relations: Mapping[str, Comments]) -> int:
        return write_comments(conn, relations)

    def dialect_insert(self, table: Table) -> Any:
        from sqlalchemy.dialects.postgresql import insert

        return insert(table)

    @contextmanager
    def stream(
        self, conn: Connection, sql: str, params: Sequence[Any], *, size: int, to_the_end: bool
    ) -> Iterator[Rows]:
        """Without this, libpq would buffer the whole result.

        Read to the end, the rows come in chunks as the server sends them (libpq 17): the
        server produces the next chunks while the client handles these. A read that may stop
        early goes through a server-side cursor instead (named afresh each time), since
        leaving a chunked read early cancels its query, which aborts the transaction. Either
        way the read is closed when the block ends: an open chunked read holds the
        connection, and a rollback would wait for it forever.
        """
        driver = self.driver(conn)
        rows = _read(driver, sql, params, size, to_the_end and chunked_reads())
        try:
            yield rows
        finally:
            rows.close()

    def insert_rows(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Any]
    ) -> None:
        _copy(self.driver(conn), table, columns, rows)

    def insert_new_jobs(
        self, conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
    ) -> None:
        """One binary COPY per table, straight into both. Each COPY expands the jobs as it
        goes, so that the server stores rows while the client encodes the next ones."""
        driver = self.driver(conn)
        with large_load(conn, len(jobs)):
            head = NEW_JOB.pass_values(new_job_pass_row(cluster_id, plan))
            rows = NEW_JOB.full_rows(head, new_job_values(jobs))
            _copy(driver, import_job_records, NEW_JOB.columns, rows)
            head = FIRST_SEEN.pass_values(first_seen_pass_row(cluster_id, plan))
            rows = FIRST_SEEN.full_rows(head, first_seen_values(jobs))
            _copy(driver, import_job_transitions, FIRST_SEEN.columns, rows)


POSTGRESQL = PostgreSQLBackend()


def _session_alive(conn: Connection) -> str | None:
    """None while the lock's session still answers (a session lock lives as long as it)."""
    try:
        conn.execute(select(1)).scalar_one()
        conn.commit()
    except SQLAlchemyError as exc:
        return f"its database session ended ({error_detail(exc)})"
    return None


def _read(
    driver: Any, sql: str, params: Sequence[Any], size: int, chunked: bool
) -> Generator[tuple[Any, ...], None, None]:
    if chunked:
        with driver.cursor() as cursor:
            yield from cursor.stream(sql, params, size=size)
        return
    with driver.cursor(name=f"jobsync_scan_{next(_CURSORS)}") as cursor:
        cursor.itersize = size
        cursor.execute(sql, params)
        yield from cursor


def _copy_type(column: Column[Any]) -> str:
    """The PostgreSQL type a binary COPY sends for ``column``."""
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return "timestamptz"
    if isinstance(kind, Boolean):
        return "bool"
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Integer):
        return "int4"
    if isinstance(kind, String):
        return "text"
    raise TypeError(f"no COPY type for {column}")


def _copy(driver: Any, table: Table, columns: Sequence[str], rows: Any) -> None:
    """Binary COPY of plain rows (values of ``columns``, in order) into ``table``."""
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([_copy_type(table.c[name]) for name in columns])
        write: Callable[[tuple[Any, ...]], None] = copy.write_row
        for row in rows:
            write(row)
