"""jobsync: a durable, queryable history of Zilliz Cloud and Milvus import jobs.

The library API is small on purpose: configure with :class:`Settings` and :class:`Source`,
open a database with :func:`open_engine`, migrate with :func:`upgrade`, and run passes with
:func:`sync_source` / :func:`sync_all`. Errors derive from :class:`JobsyncError`.
"""

from jobsync.config import HttpSettings, Settings, Source
from jobsync.errors import (
    ApiError,
    ApiStatusError,
    AuthError,
    ConfigError,
    JobsyncError,
    LockedError,
    ProtocolError,
    SchemaError,
    StorageError,
    TransportError,
)
from jobsync.migrate import ensure_schema, upgrade
from jobsync.redact import Secret
from jobsync.store import open_engine
from jobsync.sync import PassResult, sync_all, sync_source

__version__ = "0.1.0"

__all__ = [
    "ApiError",
    "ApiStatusError",
    "AuthError",
    "ConfigError",
    "HttpSettings",
    "JobsyncError",
    "LockedError",
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
