"""File locks beside a SQLite database: ``flock`` on files of their own, never the database.

``flock`` locks belong to an open file, not a process: two blocks of one process exclude each
other too, and the operating system releases them when the process dies. Never on the
database file itself: closing any descriptor of it would drop SQLite's own POSIX locks.

Nothing here needs SQLAlchemy, and nothing may: ``jobsync.storage.early`` takes a pass's locks
with it before SQLAlchemy is imported.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from jobsync.errors import LockedError, StorageError

if TYPE_CHECKING:
    # Only for annotations: this module is imported before SQLAlchemy (jobsync.storage.early).
    from jobsync.storage.backends.base import LostCheck

__all__ = [
    "database_locked",
    "either",
    "file_lock",
    "lock_path",
    "locks_dir",
    "pass_lock",
    "source_lock_path",
]

_LOCK_POLL = 0.05  # seconds between attempts at a file lock that is waited for


def lock_path(database: str) -> Path:
    """The database-wide lock file of a SQLite database: beside its real path, whatever path
    was given (two paths to one file share one lock)."""
    return Path(f"{os.path.realpath(database)}.lock")


def locks_dir(database: str) -> Path:
    """The folder of a database's other lock files (per source, the daemon's)."""
    return Path(f"{os.path.realpath(database)}.locks")


def source_lock_path(database: str, cluster_id: str) -> Path:
    """The lock file of one source's passes: in ``<database>.locks/`` beside the database's
    real path, named by a digest of the source (any text may name a source)."""
    digest = hashlib.sha256(cluster_id.encode("utf-8")).hexdigest()[:32]
    return locks_dir(database) / f"{digest}.lock"


def database_locked(path: Path) -> str:
    return (
        "another jobsync sync is running on this database, or it is being upgraded or "
        f"pruned (lock file {path})"
    )


def either(first: LostCheck | None, second: LostCheck) -> LostCheck:
    def lost() -> str | None:
        return (first() if first is not None else None) or second()

    return lost


@contextmanager
def file_lock(
    path: Path, mode: int, wait: float, refused: Callable[[], str], note: str | None = None
) -> Iterator[LostCheck]:
    """Hold ``flock(mode)`` on ``path`` (created if missing), or raise LockedError(refused()).

    ``wait``: seconds to keep trying (0: once). ``note``: written into the file, for people.
    """
    try:
        if note is not None:
            path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StorageError(f"cannot open lock file {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockedError(refused()) from None
                time.sleep(_LOCK_POLL)
        if mode == fcntl.LOCK_EX:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}{'' if note is None else ' ' + note}\n".encode())
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

        yield lost
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def pass_lock(database: str, key: str) -> Iterator[LostCheck]:
    """What one pass of source ``key`` holds on the SQLite file ``database``: the database-wide
    lock shared, and the source's own exclusive (LockedError when either is held against it)."""
    path = lock_path(database)
    source = source_lock_path(database, key)
    with (
        file_lock(path, fcntl.LOCK_SH, 0.0, lambda: database_locked(path)) as database_lost,
        file_lock(source, fcntl.LOCK_EX, 0.0, lambda: "", note=key) as lost,
    ):
        yield either(database_lost, lost)
