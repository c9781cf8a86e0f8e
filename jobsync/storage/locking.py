"""Passes lock their source, not the database; upgrades and pruning lock the database.

Two locks, each held its own way by each database (``Backend.database_lock`` and
``Backend.source_locks``: ``flock`` on files beside a SQLite file, session-level advisory locks
on PostgreSQL):

- the *database-wide* lock: every pass holds it shared, so passes of different sources run
  beside each other; a schema upgrade or pruning holds it exclusive (:func:`maintenance_lock`),
  so no pass runs meanwhile;
- one lock per *source*: two passes of one source never run at once; the second is refused
  (LockedError, exit 75) before it sends a request.

Either way the operating system or the server releases them when the process dies, so a
``kill -9`` never leaves a stale lock behind.

The locks keep passes from wasting work on each other; they are not what keeps the history
true. A lock can be lost while it is held (an idle-session timeout or ``pg_terminate_backend``
ends the session, a pooler in transaction mode never keeps session locks, someone removes a
lock file): :meth:`SyncLock.check` notices the first two and the last before a pass writes,
and the fence inside the write transaction (``jobsync.domain.fencing``) holds whatever happened.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine

from jobsync.errors import SupersededError
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import storage_errors

__all__ = [
    "SourceLocks",
    "SyncLock",
    "daemon_lock",
    "maintenance_lock",
    "source_locks",
    "sync_lock",
]


class SyncLock:
    """A held pass lock. ``check()`` raises SupersededError if it is known to be lost."""

    def __init__(self, check: Callable[[], str | None] | None = None) -> None:
        self._check = check  # thread-safe: the backends guard what they share

    def check(self) -> None:
        if self._check is None:
            return
        lost = self._check()
        if lost is not None:
            raise SupersededError(
                f"superseded: the sync lock was lost before this pass wrote: {lost}"
            )


@dataclass(frozen=True)
class SourceLocks:
    """The source locks a run holds (by source key), and the sources another pass holds."""

    held: dict[str, SyncLock] = field(default_factory=dict)
    refused: tuple[str, ...] = ()


@contextmanager
def source_locks(engine: Engine, keys: Sequence[str]) -> Iterator[SourceLocks]:
    """Hold the lock of each source in ``keys`` that no other pass holds, for the block.

    Raises LockedError (and takes nothing) while the database is being upgraded or pruned, or
    an older jobsync holds it for a whole run. A storage boundary while the locks are taken.
    """
    with ExitStack() as stack:
        with storage_errors(engine):
            held = stack.enter_context(backend_for(engine).source_locks(engine, keys))
        yield SourceLocks(
            held={key: SyncLock(lost) for key, lost in held.items()},
            refused=tuple(key for key in keys if key not in held),
        )


@contextmanager
def daemon_lock(engine: Engine) -> Iterator[None]:
    """Hold for a daemon's life: on SQLite a second daemon on the same file is refused
    (LockedError); on PostgreSQL replicas share the database, and this holds nothing."""
    with ExitStack() as stack:
        with storage_errors(engine):
            stack.enter_context(backend_for(engine).daemon_lock(engine))
        yield


@contextmanager
def maintenance_lock(engine: Engine, *, wait: float = 0.0) -> Iterator[SyncLock]:
    """Hold the database-wide lock exclusive: no pass runs during the block (schema upgrades,
    pruning). ``wait``: seconds to wait for passes in flight to end; LockedError after that.
    On PostgreSQL, passes starting while it waits are refused (LockedError), so a steady
    stream of passes cannot starve it.
    """
    with ExitStack() as stack:
        with storage_errors(engine):
            lost = stack.enter_context(
                backend_for(engine).database_lock(engine, shared=False, wait=wait)
            )
        yield SyncLock(lost)


def sync_lock(engine: Engine) -> AbstractContextManager[SyncLock]:
    """The database-wide lock, exclusive, without waiting: what a whole run held before
    passes locked their sources. Kept for callers that want every pass to stand still."""
    return maintenance_lock(engine)
