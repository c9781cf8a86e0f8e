"""PostgreSQL through psycopg 3: advisory locks, COPY, and results read as they arrive.

A pass takes a transaction-level advisory lock per source first thing in its write
transaction, so two writers never interleave on one source; migrations take one of their own.
The pass locks are session-level advisory locks with stable keys (``lock_key``): the
database-wide one (shared by passes, exclusive for upgrades and pruning) and one per source,
all on a connection of their own that is closed, never returned to the pool, when they are
released: a session lock outlives a pooled connection's checkout. The server releases them
when the process dies, and ``SyncLock.check`` notices a session that ended while they were
held. The database-wide key is the one older jobsync versions took exclusive for a whole run,
so they and this version exclude each other as they should.

New jobs and history go in with binary COPY, which the server consumes while the client is
still encoding; a large load drops and rebuilds keys and indexes (``pgload``). Long reads
come in chunks as the server sends them (``stream``).

The dialect package and psycopg are imported where they are used: a SQLite user never loads
them.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
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
    Float,
    Integer,
    Select,
    String,
    Table,
    bindparam,
    create_engine,
    func,
    select,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError, SQLAlchemyError

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

__all__ = ["POSTGRESQL", "PostgreSQLBackend", "chunked_reads", "lock_key", "source_lock_key"]

_SYNC_LOCK = "jobsync:sync"
_MIGRATION_LOCK = "jobsync:migrate"
_LOCK_NOT_AVAILABLE = "55P03"
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
    # EXTRACT gives an exact numeric.
    epoch_micros_sql = "CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)"

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

    shared_by_replicas = True

    @contextmanager
    def database_lock(
        self, engine: Engine, *, shared: bool, wait: float = 0.0
    ) -> Iterator[LostCheck | None]:
        key = lock_key(_SYNC_LOCK)
        with _lock_session(engine) as (conn, alive):
            if shared:
                got = _try_lock(conn, func.pg_try_advisory_lock_shared(key))
            elif wait > 0:
                got = _wait_lock(conn, key, wait)
            else:
                got = _try_lock(conn, func.pg_try_advisory_lock(key))
            if not got:
                raise LockedError(_database_locked(engine))
            yield alive

    @contextmanager
    def source_locks(
        self, engine: Engine, keys: Sequence[str]
    ) -> Iterator[dict[str, LostCheck | None]]:
        # One session holds all the locks of one call (one connection, however many keys).
        with _lock_session(engine) as (conn, alive):
            if not _try_lock(conn, func.pg_try_advisory_lock_shared(lock_key(_SYNC_LOCK))):
                raise LockedError(_database_locked(engine))
            held: dict[str, LostCheck | None] = {}
            for key in keys:
                if _try_lock(conn, func.pg_try_advisory_lock(source_lock_key(key))):
                    held[key] = alive
            yield held

    def reserve_slot(
        self, conn: Connection, fingerprint: str, endpoint: str, interval: float
    ) -> float:
        # clock_timestamp(), not now(): the moment of the statement, not of its transaction.
        result = conn.execute(
            text(
                "INSERT INTO rate_slots (key_fingerprint, endpoint, next_at, send_at) "
                "VALUES (:fp, :endpoint, clock_timestamp() + make_interval(secs => :iv), "
                "clock_timestamp()) "
                "ON CONFLICT (key_fingerprint, endpoint) DO UPDATE SET next_at = "
                "GREATEST(rate_slots.next_at, clock_timestamp()) + make_interval(secs => :iv) "
                "RETURNING EXTRACT(EPOCH FROM next_at - clock_timestamp())::float8 - :iv"
            ),
            {"fp": fingerprint, "endpoint": endpoint, "iv": interval},
        )
        return float(result.scalar_one())

    def take_send(
        self, conn: Connection, fingerprint: str, endpoint: str, interval: float
    ) -> float:
        # A generic cell rate algorithm with no burst: a request goes only when send_at has
        # come, and pushes it one interval past the moment it went.
        result = conn.execute(
            text(
                "WITH taken AS (UPDATE rate_slots SET send_at = GREATEST(send_at, "
                "clock_timestamp()) + make_interval(secs => :iv) "
                "WHERE key_fingerprint = :fp AND endpoint = :endpoint "
                "AND send_at <= clock_timestamp() RETURNING 1) "
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM taken) THEN 0.0 ELSE "
                "(SELECT EXTRACT(EPOCH FROM send_at - clock_timestamp())::float8 "
                "FROM rate_slots WHERE key_fingerprint = :fp AND endpoint = :endpoint) END"
            ),
            {"fp": fingerprint, "endpoint": endpoint, "iv": interval},
        )
        return float(result.scalar_one() or 0.0)

    def reclaim(self, engine: Engine, tables: Sequence[str]) -> None:
        # What autovacuum would do, for servers where it is off: without it the space of the
        # rows a prune deletes is never reused, and a database under retention keeps growing
        # by what it prunes. A plain VACUUM takes no lock that stops passes or readers; it
        # cannot run in a transaction block.
        names = ", ".join(sorted(set(tables)))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"VACUUM (ANALYZE) {names}")

    def lock_source(self, conn: Connection, cluster_id: str) -> None:
        conn.execute(_XACT_LOCK, {"key": lock_key(f"source:{cluster_id}")})

    def lock_migrations(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(lock_key(_MIGRATION_LOCK))))

    def for_update(self, query: Select[Any], of: Table | None = None) -> Select[Any]:
        # Another process's abandon_stale_runs then waits for this transaction, and finds
        # the run finished.
        return query.with_for_update(of=of)

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
            rows = NEW_JOB.full_rows(head, new_job_values(jobs, None, plan.first_seen_window))
            _copy(driver, import_job_records, NEW_JOB.columns, rows)
            head = FIRST_SEEN.pass_values(first_seen_pass_row(cluster_id, plan))
            rows = FIRST_SEEN.full_rows(head, first_seen_values(jobs))
            _copy(driver, import_job_transitions, FIRST_SEEN.columns, rows)


POSTGRESQL = PostgreSQLBackend()
# Built once: every pass takes it.
_XACT_LOCK = select(func.pg_advisory_xact_lock(bindparam("key", type_=BigInteger)))


def source_lock_key(cluster_id: str) -> int:
    """The session lock of a source's passes (not the key of ``lock_source``'s transaction
    lock, which the same process takes on another connection while holding this one)."""
    return lock_key(f"jobsync:source-pass:{cluster_id}")


def _database_locked(engine: Engine) -> str:
    where = redact(engine.url.render_as_string(hide_password=True))
    return (
        f"another jobsync sync is running on this database, or it is being upgraded or "
        f"pruned ({where})"
    )


@contextmanager
def _lock_session(engine: Engine) -> Iterator[tuple[Connection, LostCheck]]:
    """A connection of its own for session locks, and what tells whether its session ended.

    Its locks are released explicitly at the end (closing alone would release them only when
    the server notices, a moment later), and it is closed, never returned to the pool: a
    session lock outlives a pooled connection's checkout.
    """
    conn = engine.connect()
    guard = threading.Lock()  # sources check the lock from their own threads

    def alive() -> str | None:
        with guard:
            return _session_alive(conn)

    try:
        yield conn, alive
    finally:
        with guard:
            try:
                conn.execute(select(func.pg_advisory_unlock_all()))
                conn.commit()
            except SQLAlchemyError:
                pass  # the connection is gone, and the server released the locks with it
            conn.invalidate()
            conn.close()


def _try_lock(conn: Connection, attempt: Any) -> bool:
    got = bool(conn.execute(select(attempt)).scalar_one())
    conn.commit()
    return got


def _wait_lock(conn: Connection, key: int, wait: float) -> bool:
    """Wait up to ``wait`` seconds for the exclusive lock. While it waits, passes that try to
    take the lock shared are refused: a steady stream of passes cannot starve an upgrade."""
    conn.execute(text(f"SET lock_timeout = {max(1, int(wait * 1000))}"))
    try:
        conn.execute(select(func.pg_advisory_lock(key)))
    except OperationalError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            conn.rollback()
            return False
        raise
    conn.execute(text("SET lock_timeout = 0"))
    conn.commit()
    return True


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
    if isinstance(kind, Float):
        return "float8"
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
