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
from contextlib import closing
from urllib.parse import quote

from jobsync.storage.backends.filelock import pass_lock
from jobsync.storage.revision import HEAD_REVISION

__all__ = ["pass_lock", "ready_database", "same_file", "sqlite_file"]

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


def ready_database(url: str) -> str | None:
    """The SQLite file a pass may start on before the engine is made: one the URL names that
    does not exist yet (the pass creates its schema) or whose schema is this jobsync's. None
    for anything else (not a plain SQLite URL; a file behind, newer, foreign, unreadable),
    which waits for the engine, and the engine refuses it with the usual message before a
    request is sent."""
    database = sqlite_file(url)
    if database is None or not os.path.exists(database):
        return database
    try:
        uri = f"file:{quote(os.path.abspath(database))}?mode=ro"
        with closing(sqlite3.connect(uri, uri=True)) as conn:
            rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return None
    return database if rows == [(HEAD_REVISION,)] else None


def same_file(early: str, database: str | None) -> bool:
    """Whether the engine's database (``engine.url.database``) is the file ``early``."""
    return database is not None and os.path.realpath(early) == os.path.realpath(database)
