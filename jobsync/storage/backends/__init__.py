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


def _backends() -> dict[str, Backend]:
    if not _BY_NAME:
        from jobsync.storage.backends.postgresql import POSTGRESQL
        from jobsync.storage.backends.sqlite import SQLITE

        _BY_NAME.update((backend.name, backend) for backend in (SQLITE, POSTGRESQL))
    return _BY_NAME


def backend_for(bind: Engine | Connection) -> Backend:
    """The backend of an engine or connection (jobsync opens no others: see open_engine)."""
    return _backends()[bind.dialect.name]


def backend_for_url(url: URL) -> Backend | None:
    """The backend a database URL asks for, or None for a database jobsync does not support."""
    return _backends().get(url.get_backend_name())


def __getattr__(name: str) -> Any:
    if name == "Backend":
        from jobsync.storage.backends.base import Backend

        return Backend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
