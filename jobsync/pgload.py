"""PostgreSQL: a large load checks the history's key and builds its indexes once, not per row.

PostgreSQL checks a foreign key with a trigger query for every inserted row, and inserts every
row into every index as it goes. When a pass adds many jobs, above all on a first sync, that
is most of the server's work: per 100,000 jobs, 0.4-0.8 s for the key on
``import_job_transitions.sync_run_id`` and about 0.25 s for the two indexes on job ids. The
manual's advice for bulk loads ("Populating a Database") is to drop the key and the indexes
and create them again afterwards, which checks or sorts every row in one go. ``large_load``
does that inside the pass's own transaction, only where it is safe and pays:

- the pass adds at least ``BULK_MIN_ROWS`` jobs;
- the foreign key is dropped when the new history rows are at least 1/``KEY_TABLE_SHARE`` of
  those already stored (adding it back checks the whole table in one join, about 0.2 s per
  million rows here, against 4-8 s per million for the trigger);
- the indexes, ``ix_import_job_transitions_job`` and the primary key of
  ``import_job_records``, are rebuilt when the load at least doubles their table (a rebuild
  sorts the whole table: 0.85 s per million rows, against 2.4 s per million added row by row);
- the tables can all be locked at once without waiting (``NOWAIT``). The exclusive lock is
  taken only when no other transaction holds any lock on them, so it cannot deadlock with
  another pass; otherwise the pass loads row by row as usual.

Until the pass commits, the lock keeps every other reader and writer of those tables waiting
(dashboards and other sources' passes wait those seconds, instead of reading a half-written
pass). A pass that fails, or a process that dies, rolls it all back, since PostgreSQL's DDL is
transactional: the key and the indexes come back as they were, same names and definitions.
A job that is already stored still fails the pass: the primary key, added back, refuses it.
SQLite checks a key with one index lookup and appends ordered keys cheaply, so it loads row
by row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from jobsync.errors import StorageError
from jobsync.redact import error_detail

__all__ = ["BULK_MIN_ROWS", "KEY_TABLE_SHARE", "large_load"]

log = logging.getLogger(__name__)

# Below this a load saves under 0.1 s, not worth locking readers out.
BULK_MIN_ROWS = 10_000
# Checking a row in the join costs about 1/25 of the trigger's check; 16 leaves a margin.
KEY_TABLE_SHARE = 16

_TABLES = ("import_job_records", "import_job_transitions")
# The planner's row estimate of each table (-1 before its first ANALYZE).
_ROWS = """
SELECT relname, greatest(reltuples, 0) FROM pg_class
WHERE oid IN ('import_job_records'::regclass, 'import_job_transitions'::regclass)
"""
# What a large load drops and re-creates: (table, constraint or index, SQL that re-creates it).
_HISTORY_KEYS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'import_job_transitions'::regclass AND contype = 'f'
  AND confrelid = 'sync_runs'::regclass
ORDER BY conname
"""
_RECORDS_KEY = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'import_job_records'::regclass AND contype = 'p'
"""
# Indexes that no constraint owns (the history's primary key on a sequence appends cheaply).
_HISTORY_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid
WHERE i.indrelid = 'import_job_transitions'::regclass AND k.oid IS NULL
ORDER BY c.relname
"""
_LOCK = (
    "LOCK TABLE sync_runs, import_job_records, import_job_transitions "
    "IN ACCESS EXCLUSIVE MODE NOWAIT"
)
# SQLSTATE lock_not_available: NOWAIT found a lock held.
_LOCK_NOT_AVAILABLE = "55P03"


@contextmanager
def large_load(conn: Connection, new_rows: int) -> Iterator[bool]:
    """Around inserting ``new_rows`` jobs and as many history rows: yields whether anything
    was dropped to be re-created after them (see the module docstring for when)."""
    if conn.dialect.name != "postgresql" or new_rows < BULK_MIN_ROWS:
        yield False
        return
    rows = {name: int(n) for name, n in conn.exec_driver_sql(_ROWS).all()}
    quote = conn.dialect.identifier_preparer.quote
    drop: list[str] = []
    create: list[str] = []
    if new_rows * KEY_TABLE_SHARE >= rows["import_job_transitions"]:
        for name, definition in conn.exec_driver_sql(_HISTORY_KEYS).all():
            drop.append(f"ALTER TABLE import_job_transitions DROP CONSTRAINT {quote(name)}")
            create.append(
                f"ALTER TABLE import_job_transitions ADD CONSTRAINT {quote(name)} {definition}"
            )
    if new_rows >= rows["import_job_transitions"]:
        for name, definition in conn.exec_driver_sql(_HISTORY_INDEXES).all():
            drop.append(f"DROP INDEX {quote(name)}")
            create.append(definition)
    if new_rows >= rows["import_job_records"]:
        for name, definition in conn.exec_driver_sql(_RECORDS_KEY).all():
            drop.append(f"ALTER TABLE import_job_records DROP CONSTRAINT {quote(name)}")
            create.append(
                f"ALTER TABLE import_job_records ADD CONSTRAINT {quote(name)} {definition}"
            )
    if not drop:
        yield False
        return
    if not _lock_without_waiting(conn):
        log.info("another transaction is using the job tables: loading row by row")
        yield False
        return
    for statement in drop:
        conn.exec_driver_sql(statement)
    yield True
    try:
        for statement in create:
            conn.exec_driver_sql(statement)
    except SQLAlchemyError as exc:
        # A duplicate job, say: the same error the row-by-row load would have raised.
        raise StorageError(f"database error: {error_detail(exc)}") from exc


def _lock_without_waiting(conn: Connection) -> bool:
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(_LOCK)
    except OperationalError as exc:
        savepoint.rollback()
        if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE:
            raise
        return False
    savepoint.commit()
    return True
