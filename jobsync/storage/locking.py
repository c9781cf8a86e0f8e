"""One sync at a time per database, and a dead holder never blocks the next run.

SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the database file's real path
(symbolic links resolved, so two paths to one file share one lock; never on the database file
itself: closing any descriptor of it would drop SQLite's own POSIX locks). PostgreSQL: a
session-level advisory lock with a stable key, on a connection of its own that is closed, not
returned to the pool, when the lock is released. Either way the operating system or the server
releases the lock when the process dies, so a ``kill -9`` never leaves a stale lock behind.

The lock keeps passes from wasting work on each other; it is not what keeps the history true.
A lock can be lost while it is held (an idle-session timeout or ``pg_terminate_backend`` ends
the session, a pooler in transaction mode never keeps session locks, someone removes the lock
file): :meth:`SyncLock.check` notices the first two and the last before a pass writes, and the
fence inside the write transaction (``jobsync.domain.fencing``) holds whatever happened.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from jobsync.errors import LockedError, StorageError, SupersededError
from jobsync.observability.redact import error_detail, redact

__all__ = ["SyncLock", "lock_key", "sync_lock"]

_SYNC_LOCK = "jobsync:sync"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class SyncLock:
    """A held sync lock. ``check()`` raises SupersededError if it is known to be lost."""

    def __init__(self, check: Callable[[], str | None] | None = None) -> None:
        self._check = check
        self._guard = threading.Lock()  # sources check from their own threads

    def check(self) -> None:
        if self._check is None:
            return
        with self._guard:
            lost = self._check()
        if lost is not None:
            raise SupersededError(
                f"superseded: the sync lock was lost before this pass wrote: {lost}"
            )


@contextmanager
def sync_lock(engine: Engine) -> Iterator[SyncLock]:
    """Hold the database's sync lock for the duration of the block, or raise LockedError."""
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine) as lock:
            yield lock
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield SyncLock()
        return
    with _file_lock(lock_path(database)) as lock:
        yield lock


def lock_path(database: str) -> Path:
    """The lock file of a SQLite database: beside its real path, whatever path was given."""
    return Path(f"{os.path.realpath(database)}.lock")


@contextmanager
def _file_lock(path: Path) -> Iterator[SyncLock]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockedError(
                f"another jobsync sync is running on this database (lock file {path})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        held = os.fstat(fd)

        def lost() -> str | None:
            # Someone removed or replaced the file: the next process locks another inode.
            try:
                now = os.stat(path)
            except FileNotFoundError:
                return f"lock file {path} was removed"
            if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
                return f"lock file {path} was replaced"
            return None

        yield SyncLock(lost)
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _session_alive(conn: Connection) -> str | None:
    """None while the lock's session still answers (a session lock lives as long as it)."""
    try:
        conn.execute(select(1)).scalar_one()
        conn.commit()
    except SQLAlchemyError as exc:
        return f"its database session ended ({error_detail(exc)})"
    return None


@contextmanager
def _postgres_lock(engine: Engine) -> Iterator[SyncLock]:
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
            yield SyncLock(lambda: _session_alive(conn))
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
