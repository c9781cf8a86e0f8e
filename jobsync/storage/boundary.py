"""Where the database's errors become :class:`~jobsync.errors.StorageError`: once, here.

Inside ``jobsync.storage`` code lets the database's errors rise as they come: SQLAlchemy's,
the driver's own (code that talks to the driver directly), and ``UnicodeEncodeError``, which
both drivers raise for a lone surrogate and which is no DBAPI error. Every function the other
layers call is wrapped in :func:`boundary`, or runs a block under :func:`storage_errors`;
either turns those errors into one StorageError saying which database (password masked) and
the first line of what it said, with secrets removed. Errors jobsync raises on purpose
(StorageError, SchemaError, LockedError, ...) and bugs pass through as they are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from jobsync.errors import StorageError
from jobsync.observability.redact import error_detail, redact

__all__ = ["boundary", "storage_errors"]

P = ParamSpec("P")
R = TypeVar("R")

# Raised by any database, whatever its driver; each driver's own DBAPI errors are added per
# call (see _failures), so that a SQLite user never imports psycopg.
_ALWAYS: tuple[type[BaseException], ...] = (SQLAlchemyError, UnicodeEncodeError)

Where = str | Engine | Connection | None


def _storage_error(exc: BaseException, where: Where = None) -> StorageError:
    """The StorageError for a database's error: which database, and what it said."""
    error = StorageError(f"database {_database(where) or 'error'}: {error_detail(exc)}")
    error.__cause__ = exc
    return error


@contextmanager
def storage_errors(where: Where = None) -> Iterator[None]:
    """Turn the database's errors raised in the block into StorageError.

    ``where`` names the database in the message: its URL, or an engine or connection on it.
    """
    failures = _failures(where)
    try:
        yield
    except failures as exc:
        raise _storage_error(exc, where) from exc


def boundary(func: Callable[P, R]) -> Callable[P, R]:
    """Wrap a public storage function: the database's errors leave it as StorageError.

    The function's first argument, an engine or a connection, names the database.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        where = args[0] if args and isinstance(args[0], Engine | Connection) else None
        try:
            return func(*args, **kwargs)
        except _failures(where) as exc:
            raise _storage_error(exc, where) from exc

    return wrapper


def _failures(where: Where) -> tuple[type[BaseException], ...]:
    """What counts as the database's error: the common ones, and the driver's DBAPI errors
    when ``where`` says which driver."""
    dbapi: Any = getattr(getattr(where, "dialect", None), "loaded_dbapi", None)
    error = getattr(dbapi, "Error", None)
    return (*_ALWAYS, error) if isinstance(error, type) else _ALWAYS


def _database(where: Where) -> str:
    if where is None:
        return ""
    if isinstance(where, str):
        return redact(where)
    return redact(where.engine.url.render_as_string(hide_password=True))
