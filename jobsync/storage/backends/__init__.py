"""One module per database, behind one seam (``base.Backend``), and the lookup that picks one.

This lookup is the only place in jobsync that asks which database an engine talks to.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine
from sqlalchemy.engine import URL

from jobsync.storage.backends.base import Backend
from jobsync.storage.backends.postgresql import POSTGRESQL
from jobsync.storage.backends.sqlite import SQLITE

__all__ = ["Backend", "backend_for", "backend_for_url"]

_BY_NAME: dict[str, Backend] = {backend.name: backend for backend in (SQLITE, POSTGRESQL)}


def backend_for(bind: Engine | Connection) -> Backend:
    """The backend of an engine or connection (jobsync opens no others: see open_engine)."""
    return _BY_NAME[bind.dialect.name]


def backend_for_url(url: URL) -> Backend | None:
    """The backend a database URL asks for, or None for a database jobsync does not support."""
    return _BY_NAME.get(url.get_backend_name())
