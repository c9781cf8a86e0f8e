"""The one exception tree of jobsync.

Every error jobsync raises on purpose derives from :class:`JobsyncError`; the CLI turns them
into one ``Error: ...`` line and an exit code in exactly one place
(``jobsync.cli.common.JobsyncGroup``).

    JobsyncError
    ├── ConfigError            bad option, environment variable or config file   (exit 2)
    ├── ApiError               the import-job API could not give us a page        (exit 1)
    │   ├── TransportError     connection refused, timeout, deadline, retries used up
    │   ├── ApiStatusError     an error envelope or HTTP status: carries status, code, message
    │   │   └── AuthError      the API key was rejected (80001, 80002, 21119, HTTP 401/403)
    │   └── ProtocolError      a body we cannot trust: not JSON, wrong shape, too big, a
    │                          server that ignores paging
    ├── StorageError           the database refused                               (exit 1)
    │   ├── SchemaError        the schema is missing or behind: run ``jobsync db upgrade``
    │   └── LockedError        another sync holds the lock                        (exit 75)
    │       └── SupersededError  another pass of the source was applied while this one
    │                            fetched (its lock was lost): it wrote nothing
    ├── ClockError             the clock reads earlier than the source's last observation
    └── Cancelled              a stop was requested (SIGTERM) before the pass could finish

Messages never contain the API key: errors are built from what the server said, and that text
goes through :func:`jobsync.observability.redact.redact` before it reaches a message.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ApiStatusError",
    "AuthError",
    "Cancelled",
    "ClockError",
    "ConfigError",
    "JobsyncError",
    "LockedError",
    "ProtocolError",
    "SchemaError",
    "StorageError",
    "SupersededError",
    "TransportError",
]


class JobsyncError(Exception):
    """Base class of every error jobsync raises on purpose."""

    exit_code = 1


class ConfigError(JobsyncError):
    """A command-line option, environment variable or config file is wrong."""

    exit_code = 2


class ApiError(JobsyncError):
    """The import-job API did not give us a usable answer."""


class TransportError(ApiError):
    """The request never produced a response we could read (network, timeouts, retries)."""


class ApiStatusError(ApiError):
    """The API answered with an error: a non-200 HTTP status or a non-success ``code``."""

    def __init__(self, message: str, *, http_status: int, code: object = None) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class AuthError(ApiStatusError):
    """The API key was rejected. Never retried: retrying cannot make it valid."""


class ProtocolError(ApiError):
    """The response cannot be trusted: not JSON, the wrong shape, too large, or inconsistent."""


class StorageError(JobsyncError):
    """The database could not be read or written."""


class SchemaError(StorageError):
    """The database schema is missing, foreign, or behind this version of jobsync."""


class LockedError(StorageError):
    """Another jobsync process is syncing the same database."""

    exit_code = 75


class SupersededError(LockedError):
    """This pass may not write: the source moved on without it.

    Either another pass of the same source was applied after this one began (it read the
    source's state before that pass wrote, so its snapshot is older), or another process
    marked this pass abandoned, which it does only when it holds the lock this pass thought
    it held. Nothing was written; the run is recorded ``failed`` with this reason.
    """


class ClockError(JobsyncError):
    """The clock reads earlier than the source's last observation, by more than a tolerance.

    Writing would record windows that end before they start; the pass writes nothing.
    """


class Cancelled(JobsyncError):
    """A stop was requested (SIGTERM, SIGINT) while a pass was fetching; nothing was written."""

    def __init__(
        self, message: str = "stopped on request before the pass finished; nothing was written"
    ) -> None:
        super().__init__(message)
