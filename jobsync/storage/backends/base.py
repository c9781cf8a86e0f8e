"""What jobsync asks of a database: the one seam between storage and each database's ways.

``Backend`` holds what is the same everywhere and names everything that is not; each
database has one subclass, in a module of its own (``sqlite``, ``postgresql``), and nothing
else in ``jobsync.storage`` asks which database it is talking to:
``jobsync.storage.backends.backend_for`` finds the backend of an engine or connection.

Three ways of reaching the database meet here:

- SQLAlchemy Core, for most statements (upserts, run records, locks);
- SQL sent to the driver with plain tuples, where a pass handles every job (SQLAlchemy's
  per-value processing would cost more than the work): ``{p}`` in such SQL stands for the
  driver's placeholder (``sql``), and times go through ``time_writer``;
- PostgreSQL's catalog, for large loads (``jobsync.storage.backends.pgload``).

Backends hold no state: one instance of each serves every engine.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache, partial
from itertools import chain
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import Connection, Engine, Select, Table, text
from sqlalchemy.engine import URL

from jobsync.domain.history import PassPlan
from jobsync.domain.records import JobRecord
from jobsync.storage.dictionary import Comments
from jobsync.storage.rows import TimeWriter

__all__ = ["Backend", "Fetched", "LostCheck", "Rows"]

# Says why a held sync lock is known to be lost, or None while it is not (see SyncLock).
LostCheck = Callable[[], str | None]
Rows = Iterator[tuple[Any, ...]]


class Fetched(NamedTuple):
    """The rows of one query, and the names of its columns (rows are plain tuples)."""

    columns: list[str]
    rows: list[tuple[Any, ...]]


class Backend:
    """One database's way of doing what jobsync needs."""

    # The dialect name SQLAlchemy gives the database, and how the URL spells it.
    name: ClassVar[str]
    # The driver's placeholder, for SQL sent to the driver (``{p}`` in jobsync's SQL).
    placeholder: ClassVar[str]
    # One write transaction at a time, database-wide: a process that writes several sources
    # queues them itself rather than let one wait out the busy timeout behind another.
    writes_serialised: ClassVar[bool] = False
    # Reading job ids in Python's str order (code points) costs no sort: the primary key's
    # index keeps that order, so walking stored ids beside sorted listed ones pays.
    key_order_is_code_point_order: ClassVar[bool] = False

    # -- URLs and engines -----------------------------------------------------------------

    def check_url(self, url: URL, shown: str) -> None:
        """Raise ConfigError (naming the URL as ``shown``) for a URL jobsync cannot use."""

    def create_engine(self, url: URL, *, readonly: bool) -> Engine:
        """An engine set up for jobsync (see the backend's module docstring)."""
        raise NotImplementedError

    def file_of(self, url: URL) -> str | None:
        """The database file the URL names (None: a server, or a database in memory)."""
        return None

    def missing_file(self, url: URL) -> bool:
        """Whether connecting would create an empty database file (a reader refuses that)."""
        return False

    def checkpoint(self, engine: Engine) -> None:
        """After passes: give back what a write-ahead log holds where the database keeps one
        beside its file (SQLite), without waiting for readers. Nothing elsewhere."""

    def reclaim(self, engine: Engine, tables: Sequence[str]) -> None:
        """After a prune deleted rows of ``tables``: make their space reusable where the
        database does not do it by itself (PostgreSQL without autovacuum). Nothing elsewhere:
        SQLite reuses a freed page at once."""

    # -- locks --------------------------------------------------------------------------------

    # Processes of several hosts may share the database: a daemon then claims each source's
    # schedule period (``jobsync.storage.coordination``) and shares the key's request budget.
    # Without that (SQLite), one daemon per database, and a second one is refused at start.
    shared_by_replicas: ClassVar[bool] = False

    def database_lock(
        self, engine: Engine, *, shared: bool, wait: float = 0.0
    ) -> AbstractContextManager[LostCheck | None]:
        """Hold the database-wide lock for the block, or raise LockedError.

        Passes hold it shared, beside each other; schema upgrades and pruning hold it
        exclusive, so no pass runs meanwhile. ``wait``: seconds to wait for it (0: fail at
        once). Yields what tells whether the lock was lost while held (None: it cannot be).
        """
        raise NotImplementedError

    def source_locks(
        self, engine: Engine, keys: Sequence[str]
    ) -> AbstractContextManager[dict[str, LostCheck | None]]:
        """Hold the database-wide lock shared (LockedError if that fails) and, of ``keys``,
        each source lock that no other pass holds; yield those taken, each with what tells
        whether it (or the database-wide lock) was lost. A source lock taken here excludes
        every other process and every other ``source_locks`` block of this one."""
        raise NotImplementedError

    def daemon_lock(self, engine: Engine) -> AbstractContextManager[None]:
        """Held for a daemon's life where only one daemon may use the database (SQLite):
        LockedError if another holds it. Where replicas may share it, holds nothing."""
        return nullcontext()

    def reserve_slot(
        self, conn: Connection, fingerprint: str, endpoint: str, interval: float
    ) -> float:
        """Advance the shared request slot of ``(fingerprint, endpoint)`` by ``interval``
        seconds; return how long until the slot taken begins, on the server's clock
        (``jobsync.storage.coordination``). Only where ``shared_by_replicas``."""
        raise NotImplementedError

    def take_send(
        self, conn: Connection, fingerprint: str, endpoint: str, interval: float
    ) -> float:
        """Take the right to send a request now if ``send_at`` of ``(fingerprint, endpoint)``
        has come (0.0; it moves one interval on), else say how long until it comes. The row
        exists: ``reserve_slot`` made it. Only where ``shared_by_replicas``."""
        raise NotImplementedError

    def journal_for_pass(self, conn: Connection, listed: int) -> AbstractContextManager[None]:
        """Around the write transaction of a pass that lists ``listed`` jobs, which begins on
        ``conn`` inside this block (SQLite: a new database's first large pass is written
        without the WAL)."""
        return nullcontext()

    def lock_source(self, conn: Connection, cluster_id: str) -> None:
        """First thing in a pass's write transaction: no other pass of the source may write
        until this transaction ends."""
        raise NotImplementedError

    def lock_migrations(self, conn: Connection) -> None:
        """First thing in a migration's transaction: concurrent migrations queue."""
        raise NotImplementedError

    # The module that holds the script of the newest schema (``REVISION``, ``STATEMENTS``:
    # scripts/sqlite_schema.py writes SQLite's), or None where the revisions are run.
    head_schema: str | None = None

    def create_head_schema(self, conn: Connection) -> str | None:
        """Create the newest schema in an empty database from ``head_schema`` and return its
        revision; None where the backend keeps no script (then the revisions are run)."""
        if self.head_schema is None:
            return None
        script = importlib.import_module(self.head_schema)
        for statement in script.STATEMENTS:
            conn.exec_driver_sql(statement)
        conn.execute(
            text("INSERT INTO alembic_version (version_num) VALUES (:revision)"),
            {"revision": script.REVISION},
        )
        return str(script.REVISION)

    def for_update(self, query: Select[Any], of: Table | None = None) -> Select[Any]:
        """``query``, locking the rows it reads (of ``of`` only, if given) until the
        transaction ends, where that is needed for them to stay as read (the fence:
        ``jobsync.domain.fencing``)."""
        return query

    # -- descriptions -------------------------------------------------------------------------

    def describe(self, conn: Connection, relations: Mapping[str, Comments]) -> int:
        """Give the tables, views and columns that exist the descriptions ``relations`` has
        for them, where the database keeps such things for tools; return how many changed.
        SQLite keeps none (Datasette's metadata carries them there)."""
        return 0

    # -- SQL ----------------------------------------------------------------------------------

    def sql(self, template: str) -> str:
        """SQL for the driver: ``{p}`` in ``template`` becomes the driver's placeholder."""
        return template.format(p=self.placeholder)

    def dialect_insert(self, table: Table) -> Any:
        """The dialect's own INSERT into ``table``, the one that knows ON CONFLICT."""
        raise NotImplementedError

    def upsert(self, table: Table, update_columns: Sequence[str]) -> Any:
        """``INSERT ... ON CONFLICT (primary key) DO UPDATE SET`` the given columns."""
        return _upsert(self, table, tuple(update_columns))

    # SQL templates, ``{column}`` standing for a column: see the two methods below.
    code_point_order: ClassVar[str]
    epoch_seconds_sql: ClassVar[str]

    def order_by_code_points(self, column: str) -> str:
        """An ORDER BY clause that sorts ``column`` as Python compares str (code points)."""
        return self.code_point_order.format(column=column)

    epoch_micros_sql: ClassVar[str]

    def epoch_micros(self, column: str) -> str:
        """A time column as integer microseconds since the epoch (NULL stays NULL), exactly."""
        return self.epoch_micros_sql.format(column=column)

    def epoch_seconds(self, column: str) -> str:
        """A time column as seconds (float) since some fixed moment, for ordering without
        converting each row's time in Python."""
        return self.epoch_seconds_sql.format(column=column)

    def time_writer(self) -> TimeWriter | None:
        """What turns a time into the value the driver stores; None: the driver takes aware
        datetimes as they are. A new one per batch: it may remember what it converted."""
        return None

    # -- the driver ---------------------------------------------------------------------------

    def driver(self, conn: Connection) -> Any:
        """The driver's own connection, inside ``conn``'s transaction."""
        return conn.connection.driver_connection

    def fetchall(self, conn: Connection, sql: str, params: Sequence[Any]) -> Fetched:
        """Every row of one query, straight from the driver's cursor, with the names of its
        columns."""
        cursor = self.driver(conn).cursor()
        try:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            return Fetched([column[0] for column in cursor.description], rows)
        finally:
            cursor.close()

    def executemany(self, conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        cursor = self.driver(conn).cursor()
        try:
            cursor.executemany(sql, rows)
        finally:
            cursor.close()

    def stream(
        self, conn: Connection, sql: str, params: Sequence[Any], *, size: int, to_the_end: bool
    ) -> AbstractContextManager[Rows]:
        """The rows of one query, ``size`` at a time: a million never sit in memory at once.

        A caller that may stop reading early says so (``to_the_end=False``). The read ends
        when the block does, however it ends. Yields the same rows as ``fetchall``, which a
        test proves for every way of streaming.
        """
        return _fetch_in_chunks(self.driver(conn), sql, params, size)

    # -- writing a pass -----------------------------------------------------------------------

    def insert_rows(
        self, conn: Connection, table: Table, columns: Sequence[str], rows: Sequence[Any]
    ) -> None:
        """Append plain rows (values of ``columns``, in order) to ``table``."""
        names = ", ".join(columns)
        marks = ", ".join([self.placeholder] * len(columns))
        self.executemany(conn, f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)

    def insert_new_jobs(
        self, conn: Connection, cluster_id: str, plan: PassPlan, jobs: list[JobRecord]
    ) -> None:
        """Write the rows of jobs stored for the first time (``jobsync.storage.rows.NEW_JOB``,
        in job id order) and their ``first_seen`` transitions (``FIRST_SEEN``)."""
        raise NotImplementedError


@contextmanager
def _fetch_in_chunks(driver: Any, sql: str, params: Sequence[Any], size: int) -> Iterator[Rows]:
    cursor = driver.cursor()
    try:
        cursor.execute(sql, params)
        # Chunks until an empty one, flattened in C: a re-sync reads every stored job, and a
        # generator would be resumed once per row.
        yield chain.from_iterable(iter(partial(cursor.fetchmany, size), []))
    finally:
        cursor.close()


@cache
def _upsert(backend: Backend, table: Table, update_columns: tuple[str, ...]) -> Any:
    # Built once per table and columns: passes run the same few, and building one costs more
    # than running it.
    stmt = backend.dialect_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={name: stmt.excluded[name] for name in update_columns},
    )
