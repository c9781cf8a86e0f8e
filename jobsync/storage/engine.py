"""Engines and what a database URL says: which backend, which file, how writes queue.

Everything the rest of jobsync needs to know about a database before and around a pass, asked
of the backend the URL names (``jobsync.storage.backends``).
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from jobsync.errors import ConfigError, StorageError
from jobsync.observability.redact import error_detail, redact
from jobsync.storage.backends import backend_for, backend_for_url
from jobsync.storage.boundary import storage_errors

__all__ = [
    "checkpoint",
    "missing_sqlite_file",
    "normalise_url",
    "open_engine",
    "sqlite_file",
    "writes_serialised",
]

log = logging.getLogger(__name__)


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 (SQLAlchemy alone would pick psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _parse_database_url(url: str) -> URL:
    """The URL as SQLAlchemy reads it, or a ConfigError (password masked) saying what is wrong."""
    shown = repr(redact(url))
    try:
        parsed = make_url(normalise_url(url))
    except ArgumentError:
        raise ConfigError(f"database URL {shown} is not a valid SQLAlchemy URL") from None
    except ValueError:
        # SQLAlchemy's parser raises ValueError only when it turns the port into a number.
        raise ConfigError(f"database URL {shown}: the port is not a number") from None
    backend = backend_for_url(parsed)
    if backend is None:
        raise ConfigError(
            f"database URL {shown}: jobsync supports sqlite:// and postgresql:// only"
        )
    backend.check_url(parsed, shown)
    return parsed


def open_engine(url: str, *, readonly: bool = False) -> Engine:
    """An engine configured for jobsync (see ``jobsync.storage.backends``).

    ``readonly`` engines open SQLite files read-only.
    """
    parsed = _parse_database_url(url)
    backend = backend_for_url(parsed)
    assert backend is not None  # _parse_database_url refused the others
    try:
        return backend.create_engine(parsed, readonly=readonly)
    except ArgumentError as exc:
        raise ConfigError(f"database URL {redact(url)!r}: {error_detail(exc)}") from None


def missing_sqlite_file(url: str) -> bool:
    """True for a SQLite URL whose file does not exist (connecting would create it empty).

    Raises ConfigError for a URL that jobsync cannot use at all.
    """
    parsed = _parse_database_url(url)
    backend = backend_for_url(parsed)
    return backend is not None and backend.missing_file(parsed)


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for any other database, or SQLite in memory.

    Raises ConfigError for a URL that jobsync cannot use at all.
    """
    parsed = _parse_database_url(url)
    backend = backend_for_url(parsed)
    return None if backend is None else backend.file_of(parsed)


def checkpoint(engine: Engine) -> None:
    """After a round of passes: let the database give back its write-ahead log where it keeps
    one beside the file (SQLite), without waiting for readers (``Backend.checkpoint``).
    Best effort: the passes are committed whatever happens here."""
    try:
        with storage_errors(engine):
            backend_for(engine).checkpoint(engine)
    except StorageError as exc:
        log.warning("could not checkpoint the database: %s", exc)


def writes_serialised(engine: Engine) -> bool:
    """Whether the database runs one write transaction at a time (SQLite): a process writing
    several sources then queues them itself, so that a long write never runs another source
    into its busy timeout."""
    return backend_for(engine).writes_serialised
