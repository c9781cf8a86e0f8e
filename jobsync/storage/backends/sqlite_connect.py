"""How jobsync opens a SQLite file: every connection gets a busy timeout and foreign keys; a
writing one also WAL (``_switch_to_wal``), 8 KiB pages on a new file, ``synchronous =
NORMAL`` and a WAL size limit; every transaction begins ``BEGIN IMMEDIATE`` (``BEGIN`` when
read-only). Read-only engines open the file read-only (``_read_only_target``). A new
database's first large pass is written outside the WAL (``outside_wal``).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, event

__all__ = [
    "FIRST_PASS_WITHOUT_WAL",
    "SQLITE_BUSY_TIMEOUT_MS",
    "SQLITE_JOURNAL_SIZE_LIMIT",
    "SQLITE_PAGE_SIZE",
    "WAL_SWITCH_WAIT",
    "configure",
    "no_busy_wait",
    "outside_wal",
]

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# While a reader holds an old snapshot (a BI tool's open transaction), checkpoints cannot reset
# the WAL and it grows with every commit; once a checkpoint can reset it, it is cut back to
# this size (and to nothing by ``checkpoint`` after the passes, when no reader is in it).
SQLITE_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
# For databases jobsync creates (an existing file keeps its own): larger pages mean fewer page
# splits and WAL frames when a first sync appends its rows in key order.
SQLITE_PAGE_SIZE = 8192


def configure(engine: Engine, *, readonly: bool) -> None:
    """Give every connection of ``engine`` its settings, and every transaction its BEGIN."""
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
            cursor.execute("PRAGMA journal_mode = WAL").fetchall()  # done: no statement left open
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


@contextmanager
def no_busy_wait(cursor: Any) -> Iterator[None]:
    """Statements on ``cursor``'s connection that fail at once where they would wait for
    another connection's lock; then the busy timeout again."""
    cursor.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


# A pass that lists at least this many jobs into a database that holds none is written
# without the WAL (``outside_wal``).
FIRST_PASS_WITHOUT_WAL = 10_000


@contextmanager
def outside_wal(driver: Any) -> Iterator[bool]:
    """Rollback-journal mode for one write transaction, begun inside this block; yields whether
    the file left WAL mode. Then back to WAL.

    In WAL mode every page a transaction writes goes to the WAL, and the checkpoint copies it
    into the database file again; pages added to the end of a file need no rollback journal,
    so a new database's first large pass, nearly all new pages, is written once. Leaving WAL
    mode needs the file to itself: while another connection has it open, the switch is not
    waited for (busy timeout 0) and the pass is written in WAL mode as always. Meanwhile a
    connection that opens the file waits in ``_switch_to_wal`` until the pass has committed.
    FULL synchronous keeps the rollback journal as safe against power loss as the WAL is at
    NORMAL. A process killed in the block leaves a hot journal, which SQLite rolls back when
    the file is next opened, and the next connection switches the file back to WAL.
    """
    cursor = driver.cursor()
    try:
        try:
            with no_busy_wait(cursor):
                ((mode,),) = cursor.execute("PRAGMA journal_mode = DELETE").fetchall()
        except sqlite3.OperationalError:
            mode = "wal"  # another connection holds the file
        left = mode == "delete"
        if left:
            cursor.execute("PRAGMA synchronous = FULL")
        try:
            yield left
        finally:
            if left:
                cursor.execute("PRAGMA synchronous = NORMAL")
                try:
                    _switch_to_wal(cursor)
                    # A read in WAL mode at once: until the connection has read the file in
                    # WAL mode again, a checkpoint on it reports the database locked.
                    cursor.execute("SELECT count(*) FROM sqlite_master").fetchall()
                except sqlite3.OperationalError as exc:
                    # The pass has committed (or rolled back) already: a reader that opened
                    # the file meanwhile keeps it from WAL mode, and the next connection that
                    # jobsync opens switches it.
                    log.warning("the database stays out of WAL mode for now: %s", exc)
    finally:
        cursor.close()


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
