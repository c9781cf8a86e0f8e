"""One module per database, behind one seam (``base.Backend``), and the lookup that picks one.

This lookup is the only place in jobsync that asks which database an engine talks to.

The backends are imported on the first lookup, not with this package: a pass on SQLite takes
its file locks (``filelock``, through ``jobsync.storage.early``) before SQLAlchemy is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlalchemy.engine import URL

    from jobsync.storage.backends.base import Backend

__all__ = ["Backend", "backend_for", "backend_for_url"]

_BY_NAME: dict[str, Backend] = {}


def _backend(name: str) -> Backend | None:
    # Only the backend asked for is imported: a SQLite process never loads PostgreSQL's.
    if name not in _BY_NAME:
        if name == "sqlite":
            from jobsync.storage.backends.sqlite import SQLITE

            _BY_NAME[name] = SQLITE
        elif name == "postgresql":
            from jobsync.storage.backends.postgresql import POSTGRESQL

            _BY_NAME[name] = POSTGRESQL
        else:
            return None
    return _BY_NAME[name]


def backend_for(bind: Engine | Connection) -> Backend:
    """The backend of an engine or connection (jobsync opens no others: see open_engine)."""
    found = _backend(bind.dialect.name)
    if found is None:
        raise KeyError(bind.dialect.name)
    return found


def backend_for_url(url: URL) -> Backend | None:
    """The backend a database URL asks for, or None for a database jobsync does not support."""
    return _backend(url.get_backend_name())


def __getattr__(name: str) -> Any:
    if name == "Backend":
        from jobsync.storage.backends.base import Backend

        return Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
