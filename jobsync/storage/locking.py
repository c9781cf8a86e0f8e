"""One sync at a time per database, and a dead holder never blocks the next run.

SQLite: an exclusive ``flock`` on ``<database>.lock`` beside the file (never on the database
file itself: closing any descriptor of it would drop SQLite's own POSIX locks). PostgreSQL: a
session-level advisory lock with a stable key, on a connection of its own that is closed, not
returned to the pool, when the lock is released. Either way the operating system or the server
releases the lock when the process dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from jobsync.errors import LockedError, StorageError
from jobsync.observability.redact import redact

__all__ = ["lock_key", "sync_lock"]

_SYNC_LOCK = "jobsync:sync"


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key (Python's hash() differs between processes)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def sync_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's sync lock for the duration of the block, or raise LockedError."""
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine):
            yield
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with _file_lock(Path(f"{database}.lock")):
        yield


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
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
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def _postgres_lock(engine: Engine) -> Iterator[None]:
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
            yield
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
