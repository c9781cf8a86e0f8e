"""PostgreSQL: checking the history's foreign key once for a large load, not once per row.

PostgreSQL checks a foreign key with a trigger query for every inserted row. When a pass adds
many jobs, above all a first sync, that check on ``import_job_transitions.sync_run_id`` costs
0.4-0.8 s of server time per 100,000 history rows, about a third of the pass's database work.
PostgreSQL's manual advises dropping such a key for a bulk load and adding it back afterwards
("Populating a Database"); adding it back checks every row in one join, about 0.2 s per
million rows here. ``checked_once`` does that inside the pass's own transaction, and only
where it is safe and pays:

- the pass adds at least ``BULK_MIN_ROWS`` history rows, and at least 1/``TABLE_SHARE`` of
  the rows the table already holds (by the planner's estimate), since adding the key back
  checks the whole table;
- both tables can be locked at once without waiting (``NOWAIT``). The exclusive lock is taken
  only when no other transaction holds any lock on them, so it cannot deadlock with another
  pass. Otherwise the pass writes with the per-row check as usual.

Until the pass commits, the lock keeps every other reader and writer of ``sync_runs`` and
``import_job_transitions`` waiting: dashboards and other sources' passes wait for those
seconds instead of reading a half-written pass. A pass that fails, or a process that dies,
rolls the dropped key back with everything else, since PostgreSQL's DDL is transactional.
The key keeps its name and definition; SQLite's check is an index lookup and stays per row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError

__all__ = ["BULK_MIN_ROWS", "TABLE_SHARE", "checked_once"]

log = logging.getLogger(__name__)

# Below this a load saves under 0.1 s, not worth locking readers out.
BULK_MIN_ROWS = 10_000
# Checking a row in the join costs about 1/25 of the trigger's check; 16 leaves a margin.
TABLE_SHARE = 16

_HISTORY_KEYS = """
SELECT c.conname, pg_get_constraintdef(c.oid), greatest(t.reltuples, 0)
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
WHERE c.conrelid = 'import_job_transitions'::regclass AND c.contype = 'f'
  AND c.confrelid = 'sync_runs'::regclass
ORDER BY c.conname
"""
_LOCK = "LOCK TABLE sync_runs, import_job_transitions IN ACCESS EXCLUSIVE MODE NOWAIT"
# SQLSTATE lock_not_available: NOWAIT found a lock held.
_LOCK_NOT_AVAILABLE = "55P03"


@contextmanager
def checked_once(conn: Connection, new_rows: int) -> Iterator[bool]:
    """Around the insert of ``new_rows`` history rows: yields whether the key is checked once,
    after them, instead of per row (see the module docstring for when)."""
    if conn.dialect.name != "postgresql" or new_rows < BULK_MIN_ROWS:
        yield False
        return
    keys = conn.exec_driver_sql(_HISTORY_KEYS).all()
    table_rows = max((int(k[2]) for k in keys), default=0)
    if not keys or new_rows * TABLE_SHARE < table_rows:
        yield False
        return
    if not _lock_without_waiting(conn):
        log.info("another transaction is using the history tables: checking its key per row")
        yield False
        return
    quote = conn.dialect.identifier_preparer.quote
    for name, _definition, _rows in keys:
        conn.exec_driver_sql(f"ALTER TABLE import_job_transitions DROP CONSTRAINT {quote(name)}")
    yield True
    for name, definition, _rows in keys:
        conn.exec_driver_sql(
            f"ALTER TABLE import_job_transitions ADD CONSTRAINT {quote(name)} {definition}"
        )


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
