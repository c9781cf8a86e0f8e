"""One sync at a time per database, and a dead holder never blocks the next run.

Each database holds the lock its own way (``Backend.sync_lock``: a file lock beside a SQLite
file, a session-level advisory lock on PostgreSQL); either way the operating system or the
server releases it when the process dies, so a ``kill -9`` never leaves a stale lock behind.

The lock keeps passes from wasting work on each other; it is not what keeps the history true.
A lock can be lost while it is held (an idle-session timeout or ``pg_terminate_backend`` ends
the session, a pooler in transaction mode never keeps session locks, someone removes the lock
file): :meth:`SyncLock.check` notices the first two and the last before a pass writes, and the
fence inside the write transaction (``jobsync.domain.fencing``) holds whatever happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

from sqlalchemy import Engine

from jobsync.errors import SupersededError
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import storage_errors

__all__ = ["SyncLock", "sync_lock"]


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
    """Hold the database's sync lock for the duration of the block, or raise LockedError.

    A storage boundary while the lock is taken: the database's errors leave as StorageError.
    """
    with ExitStack() as held:
        with storage_errors(engine):
            lost = held.enter_context(backend_for(engine).sync_lock(engine))
        yield SyncLock(lost)
