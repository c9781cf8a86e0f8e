"""A pass's locks taken from the database URL alone, before SQLAlchemy is loaded.

``jobsync sync`` uses this to start its first list walks while the rest of the storage layer
is imported (``jobsync.service.early``). Only SQLite allows it: its locks are files beside the
database (``backends.filelock``). PostgreSQL's are advisory locks held by a database session,
which needs the engine; there a pass takes its locks the usual way (``locking.source_locks``).

Nothing here may import SQLAlchemy, directly or through another module.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from urllib.parse import quote

from jobsync.storage.backends.filelock import pass_lock
from jobsync.storage.revision import HEAD_REVISION

__all__ = ["early_pass_lock", "ready_for_passes", "same_database", "sqlite_file"]

_PREFIX = "sqlite:///"


def sqlite_file(url: str) -> str | None:
    """The file a ``sqlite:///PATH`` URL names, when the URL is in that plain form (no driver,
    query, escapes, or in-memory database); else None, and the URL waits for SQLAlchemy's own
    reading of it."""
    if not url.startswith(_PREFIX):
        return None
    path = url[len(_PREFIX) :]
    if not path or path == ":memory:" or any(c in path for c in "?#%"):
        return None
    return path


def ready_for_passes(url: str) -> bool:
    """Whether a pass may start before the engine is made: the URL names a SQLite file that
    does not exist yet (the pass creates its schema) or whose schema is this jobsync's. Any
    other file (behind, newer, foreign, unreadable) waits for the engine, which refuses it
    with the usual message before a request is sent."""
    database = sqlite_file(url)
    if database is None:
        return False
    if not os.path.exists(database):
        return True
    try:
        uri = f"file:{quote(os.path.abspath(database))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return rows == [(HEAD_REVISION,)]


def early_pass_lock(url: str, key: str) -> AbstractContextManager[Callable[[], str | None]] | None:
    """The locks a pass of source ``key`` holds, to be taken from ``url`` alone (entering it
    raises LockedError when another pass holds them, StorageError when the lock files cannot be
    made), or None where that needs the engine."""
    database = sqlite_file(url)
    return None if database is None else pass_lock(database, key)


def same_database(url: str, database: str | None) -> bool:
    """Whether the engine's database (``engine.url.database``) is the file ``url`` names."""
    early = sqlite_file(url)
    return (
        early is not None
        and database is not None
        and os.path.realpath(early) == os.path.realpath(database)
    )
