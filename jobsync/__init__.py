"""jobsync: a durable, queryable history of Zilliz Cloud and Milvus import jobs.

The library API is small on purpose: configure with :class:`Settings` and :class:`Source`,
open a database with :func:`open_engine`, migrate with :func:`upgrade`, and run passes with
:func:`sync_source` / :func:`sync_all`. Errors derive from :class:`JobsyncError`.

Names are imported on first use, so ``import jobsync.simulator`` (or the CLI's ``--help``)
does not pay for SQLAlchemy and Alembic. ``__version__`` comes from ``jobsync/_version.py``, the
one place that states it (``pyproject.toml`` reads it too).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "HttpSettings": "jobsync.config",
    "Settings": "jobsync.config",
    "Source": "jobsync.config",
    "ApiError": "jobsync.errors",
    "ApiStatusError": "jobsync.errors",
    "AuthError": "jobsync.errors",
    "Cancelled": "jobsync.errors",
    "ConfigError": "jobsync.errors",
    "JobsyncError": "jobsync.errors",
    "LockedError": "jobsync.errors",
    "ProtocolError": "jobsync.errors",
    "SchemaError": "jobsync.errors",
    "StorageError": "jobsync.errors",
    "TransportError": "jobsync.errors",
    "ensure_schema": "jobsync.storage.migrate",
    "upgrade": "jobsync.storage.migrate",
    "Secret": "jobsync.observability.redact",
    "PassCounts": "jobsync.storage.store",
    "open_engine": "jobsync.storage.store",
    "PassResult": "jobsync.service.sync",
    "sync_all": "jobsync.service.sync",
    "sync_source": "jobsync.service.sync",
}

__all__ = [
    "ApiError",
    "ApiStatusError",
    "AuthError",
    "Cancelled",
    "ConfigError",
    "HttpSettings",
    "JobsyncError",
    "LockedError",
    "PassCounts",
    "PassResult",
    "ProtocolError",
    "SchemaError",
    "Secret",
    "Settings",
    "Source",
    "StorageError",
    "TransportError",
    "__version__",
    "ensure_schema",
    "open_engine",
    "sync_all",
    "sync_source",
    "upgrade",
]

if TYPE_CHECKING:
    __version__: str

    from jobsync.config import HttpSettings, Settings, Source
    from jobsync.errors import (
        ApiError,
        ApiStatusError,
        AuthError,
        Cancelled,
        ConfigError,
        JobsyncError,
        LockedError,
        ProtocolError,
        SchemaError,
        StorageError,
        TransportError,
    )
    from jobsync.observability.redact import Secret
    from jobsync.service.sync import PassResult, sync_all, sync_source
    from jobsync.storage.migrate import ensure_schema, upgrade
    from jobsync.storage.store import PassCounts, open_engine


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from jobsync._version import __version__

        return __version__
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jobsync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
