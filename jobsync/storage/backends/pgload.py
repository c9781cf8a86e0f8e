"""PostgreSQL: a large load checks the history's key and builds its indexes once, not per row.

PostgreSQL checks a foreign key with a trigger query for every inserted row, and inserts every
row into every index as it goes; when a pass adds many jobs, above all on a first sync, that
is most of the server's work. The manual's advice for bulk loads ("Populating a Database") is
to drop the key and the indexes and create them again afterwards, which checks or sorts every
row in one go. ``large_load`` does that inside the pass's own transaction, only where it is
safe and pays (docs/benchmarks.md has the figures behind each threshold):

- the pass adds at least ``BULK_MIN_ROWS`` jobs;
- the foreign key on ``import_job_transitions.sync_run_id`` is dropped when the new history
  rows are at least 1/``KEY_TABLE_SHARE`` of those already stored: adding it back checks the
  whole table in one join, which costs more than the per-row trigger below that share;
- the indexes ``ix_import_job_transitions_job``, ``_run`` and ``_observed``, and the primary
  key and the other indexes of ``import_job_records``, are rebuilt when the load at least
  doubles their table: a rebuild sorts the whole table. A table whose size the planner does
  not know yet (never analyzed) counts as large unless it has no pages;
- the tables concerned can all be locked at once without waiting (``NOWAIT``), and the role
  may alter them. The exclusive lock is taken only when no other transaction holds any lock
  on them, so it cannot deadlock with another pass; otherwise the pass loads row by row.

After such a load both tables are analyzed, so that the planner's row estimates follow them
even where autovacuum is off.

Until the pass commits, the lock keeps every other reader and writer of those tables waiting:
dashboards, other sources' passes and the daemon's metrics wait those seconds instead of
reading a half-written pass (a hot standby replays the lock, so its readers wait too). A pass
that fails, or a process that dies, rolls it all back, since PostgreSQL's DDL is
transactional. The key and the indexes come back with the names and definitions jobsync's
migrations gave them (storage parameters or a tablespace set on them by hand would not be
kept). A job that is already stored still fails the pass: the primary key, added back,
refuses it. (SQLite checks a key with one index lookup and appends ordered keys cheaply, so it
loads row by row.)
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from jobsync.observability.redact import error_detail

__all__ = ["ANALYZE_TARGET", "BULK_MIN_ROWS", "KEY_TABLE_SHARE", "large_load"]

log = logging.getLogger(__name__)

# The statistics target of the ANALYZE after a large load (PostgreSQL's default: 100).
ANALYZE_TARGET = 10
# Smaller loads save too little to be worth locking readers out.
BULK_MIN_ROWS = 10_000
# The join checks a row for a small fraction of what the trigger's check costs; 16 leaves a
# wide margin below the share where the two cost the same.
KEY_TABLE_SHARE = 16

HISTORY, RECORDS = "import_job_transitions", "import_job_records"
# The planner's row estimate of each table; -1 until its first VACUUM or ANALYZE, when only
# a table without pages is known to be empty.
_ROWS = """
SELECT relname,
       CASE WHEN reltuples >= 0 THEN reltuples
            WHEN pg_relation_size(oid) = 0 THEN 0
            ELSE 'Infinity'::float8 END
FROM pg_class
WHERE oid IN ('import_job_records'::regclass, 'import_job_transitions'::regclass)
"""
# Each query: (name, definition) of what a large load drops and creates again.
_HISTORY_KEYS = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'import_job_transitions'::regclass AND contype = 'f'
  AND confrelid = 'sync_runs'::regclass
ORDER BY conname
"""
_HISTORY_INDEX = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'import_job_transitions'::regclass AND i.indisvalid
  AND c.relname IN (
    'ix_import_job_transitions_job', 'ix_import_job_transitions_run',
    'ix_import_job_transitions_observed'
  )
ORDER BY c.relname
"""
_RECORDS_KEY = """
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'import_job_records'::regclass AND contype = 'p'
"""
_RECORDS_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'import_job_records'::regclass AND i.indisvalid AND NOT i.indisprimary
ORDER BY c.relname
"""
# A definition may hold a literal '%', which psycopg would read as a placeholder.
_VERBATIM = {"no_parameters": True}
# SQLSTATEs that send a load back to row by row: lock_not_available (NOWAIT found a lock
# held), insufficient_privilege (a role that may write the tables but not alter them).
_ROW_BY_ROW = {"55P03", "42501"}


@contextmanager
def large_load(conn: Connection, new_rows: int) -> Iterator[bool]:
    """Around inserting ``new_rows`` jobs and as many history rows (see the module docstring).

    Yields whether the key and indexes were dropped, to be created again after the block
    (tests/storage/test_pgload.py watches the decision through it). Errors rise as the
    database raised them: the caller's storage boundary turns them into StorageError.
    """
    create = _drop_for_load(conn, new_rows) if new_rows >= BULK_MIN_ROWS else []
    yield bool(create)
    for statement in create:
        # A job stored twice, say, fails here: the primary key cannot be created again.
        conn.exec_driver_sql(statement, execution_options=_VERBATIM)
    if create:
        # The load at least doubled a table: what the planner knew of it (if anything: with
        # autovacuum off, nothing analyzes it) is wrong by that much, and a dashboard's plan
        # could turn quadratic. A small sample of each table, in the pass's transaction: row
        # counts and coarse histograms are what the plans need, and the default sample would
        # cost a first sync a tenth of its time.
        conn.exec_driver_sql(f"SET LOCAL default_statistics_target = {ANALYZE_TARGET}")
        conn.exec_driver_sql(f"ANALYZE {RECORDS}, {HISTORY}")
        conn.exec_driver_sql("RESET default_statistics_target")


def _drop_for_load(conn: Connection, new_rows: int) -> list[str]:
    """Drop what this load should build once; returns the statements that create it again
    (none: load row by row)."""
    rows = {name: float(n) for name, n in conn.exec_driver_sql(_ROWS).all()}
    history, records = rows[HISTORY], rows[RECORDS]
    plan = [
        (query, table, kind)
        for query, table, kind, worth in (
            (_HISTORY_KEYS, HISTORY, "foreign key", new_rows * KEY_TABLE_SHARE >= history),
            (_HISTORY_INDEX, HISTORY, "index", new_rows >= history),
            (_RECORDS_KEY, RECORDS, "primary key", new_rows >= records),
            (_RECORDS_INDEXES, RECORDS, "index", new_rows >= records),
        )
        if worth
    ]
    if not plan:
        return []
    tables = {table for _query, table, _kind in plan}
    if any(kind == "foreign key" for _query, _table, kind in plan):
        tables.add("sync_runs")  # dropping a foreign key alters the table it references too
    quote = conn.dialect.identifier_preparer.quote
    savepoint = conn.begin_nested()
    try:
        conn.exec_driver_sql(
            f"LOCK TABLE {', '.join(sorted(tables))} IN ACCESS EXCLUSIVE MODE NOWAIT"
        )
        create: list[str] = []
        for query, table, kind in plan:  # read under the lock: nothing can change them now
            for name, definition in conn.exec_driver_sql(query).all():
                if kind == "index":
                    conn.exec_driver_sql(f"DROP INDEX {quote(name)}")
                    create.append(definition)
                else:
                    conn.exec_driver_sql(f"ALTER TABLE {table} DROP CONSTRAINT {quote(name)}")
                    create.append(f"ALTER TABLE {table} ADD CONSTRAINT {quote(name)} {definition}")
    except DBAPIError as exc:
        savepoint.rollback()
        if getattr(exc.orig, "sqlstate", None) not in _ROW_BY_ROW:
            raise
        log.info("loading %d jobs row by row: %s", new_rows, error_detail(exc))
        return []
    savepoint.commit()
    return create
