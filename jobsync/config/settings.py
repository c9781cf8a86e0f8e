"""The frozen settings objects and their defaults."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jobsync.observability.redact import Secret

DEFAULT_DATABASE_URL = "sqlite:///jobsync.db"
DEFAULT_BASE_URL = "https://api.cloud.zilliz.com"
DEFAULT_PAGE_SIZE = 100
DEFAULT_CONFIG_FILE = "jobsync.toml"
MAX_PAGE_SIZE = 100
# The client's connection pool holds 16 connections per host.
MAX_PAGE_CONCURRENCY = 16
DEFAULT_DETAILS_MAX_PER_PASS = 200
MAX_DETAILS_PER_PASS = 10_000
DEFAULT_DETAILS_MAX_PER_RUN = 400
MAX_DETAILS_PER_RUN = 100_000
DEFAULT_DETAILS_CONCURRENCY = 4
MAX_DETAILS_CONCURRENCY = 16
# The documented limit of Zilliz Cloud: 20 requests per second per API key per endpoint.
DEFAULT_REQUESTS_PER_SECOND = 20.0
# An open job whose figures did not move is asked about again only this often (seconds).
DEFAULT_DETAILS_INTERVAL = 300.0

DEFAULT_STUCK_AFTER = 2 * 3600.0
DEFAULT_RETENTION = 90 * 86400.0  # seconds; jobsync.config.retention reads the setting
DEFAULT_FAILING_PASSES = 3
DEFAULT_DIGEST_AFTER = 5

SourceKind = Literal["zilliz", "milvus"]


@dataclass(frozen=True)
class HttpSettings:
    """Timeouts and retry policy for every API request."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    # Wall-clock budget for one attempt, body included: read timeouts alone never fire on a
    # server that trickles a byte at a time.
    request_deadline: float = 60.0
    max_retries: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    retry_after_cap: float = 60.0
    max_body_bytes: int = 16 * 1024 * 1024
    # Per API key per endpoint (``requests_per_second``); a source may set its own
    # (``Source.requests_per_second``, see ``Settings.rate_for``).
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND
    # Sources synced at once.
    max_concurrent_sources: int = 4
    # List pages of one source in flight at once (all under the key's rate limiter): 4 keep a
    # source at the limit's 20 requests per second while a request takes up to 200 ms.
    page_concurrency: int = 4
    # Seconds a list page must take to come back before the walk reads pages ahead (see
    # jobsync.api.listing); 0 reads ahead from page 3 whatever the server's speed.
    read_ahead_after: float = 0.02


@dataclass(frozen=True)
class Source:
    """One job list to sync: a Zilliz cluster (or project), or a self-hosted Milvus server."""

    name: str
    base_url: str
    api_key: Secret | None = field(default=None, repr=False)
    kind: SourceKind = "zilliz"
    cluster_id: str | None = None
    project_id: str | None = None
    region_id: str | None = None
    db_name: str | None = None
    # This source's own rate (``requests_per_second`` in its table); None: the run's.
    requests_per_second: float | None = None
    # The source's own schedule in a daemon (seconds, or a crontab expression in UTC); None
    # for both: the daemon's --every/--cron.
    every: float | None = None
    cron: str | None = None

    @property
    def key(self) -> str:
        """The value stored in the ``cluster_id`` column for this source's jobs."""
        return self.cluster_id or self.name

    def list_body(self) -> dict[str, Any]:
        """The fields that select this source's jobs in a list or progress request."""
        body: dict[str, Any] = {}
        if self.cluster_id:
            body["clusterId"] = self.cluster_id
        if self.project_id:
            body["projectId"] = self.project_id
            body["regionId"] = self.region_id
        if self.db_name:
            body["dbName"] = self.db_name
        return body


@dataclass(frozen=True)
class NotifyTarget:
    """One notification target: an Apprise URL, which is secret, and where it was given
    (an environment variable's name, a file and line, ``--notify``), which is not."""

    url: Secret = field(repr=False)
    origin: str


@dataclass(frozen=True)
class NotifySettings:
    """When notifications are due and where they go (``[notify]`` and ``--notify``).

    ``stuck_after`` is in seconds; None never announces stuck jobs. Nothing is decided or sent
    without targets.
    """

    targets: tuple[NotifyTarget, ...] = ()
    stuck_after: float | None = DEFAULT_STUCK_AFTER
    failing_passes: int = DEFAULT_FAILING_PASSES
    digest_after: int = DEFAULT_DIGEST_AFTER


@dataclass(frozen=True)
class Settings:
    """Everything a command needs, after precedence has been applied."""

    database_url: str = DEFAULT_DATABASE_URL
    sources: tuple[Source, ...] = ()
    page_size: int = DEFAULT_PAGE_SIZE
    http: HttpSettings = HttpSettings()
    config_file: Path | None = None
    # Progress details (the progress endpoint, per job): on, in code as for every command;
    # ``--no-details``, ``details = false`` or ``details=False`` here turn them off.
    details: bool = True
    details_max_per_pass: int = DEFAULT_DETAILS_MAX_PER_PASS
    # Shared by all sources of one run (``sync_all``), so that many sources do not multiply
    # the progress requests: each source gets an even share, at least one job.
    details_max_per_run: int = DEFAULT_DETAILS_MAX_PER_RUN
    details_concurrency: int = DEFAULT_DETAILS_CONCURRENCY
    # Seconds before an open job whose figures did not move at its last ask is asked again.
    details_interval: float = DEFAULT_DETAILS_INTERVAL
    notify: NotifySettings = NotifySettings()
    # Seconds of run metadata the daemon keeps (``retention``); None keeps everything.
    retention: float | None = DEFAULT_RETENTION

    def rate_for(self, source: Source) -> float:
        """Requests per second per endpoint for ``source``'s API key.

        The limit belongs to the key, so sources that share a key share one budget; when they
        give different rates the smallest holds, whichever source's pass comes first.
        """
        identity = _key_identity(source)
        sharing = [s for s in self.sources if _key_identity(s) == identity] or [source]
        return min(s.requests_per_second or self.http.requests_per_second for s in sharing)

    def details_cap(self) -> int:
        """Jobs each source may ask about in one run: its own cap, within its share of the run's."""
        share = self.details_max_per_run // max(1, len(self.sources))
        return max(1, min(self.details_max_per_pass, share))

    def __repr__(self) -> str:
        from jobsync.observability.redact import redact_url

        names = ", ".join(s.name for s in self.sources)
        return (
            f"Settings(database_url={redact_url(self.database_url)!r}, sources=[{names}], "
            f"page_size={self.page_size}, details={self.details}, "
            f"notify_targets={len(self.notify.targets)})"
        )


def _key_identity(source: Source) -> object:
    # As the rate limiters tell keys apart: by the key, or by the API root without one.
    return source.api_key if source.api_key is not None else source.base_url


@dataclass(frozen=True)
class CliValues:
    """What the command line (including click's ``envvar=`` options) supplied; None = not given."""

    database_url: str | None = None
    base_url: str | None = None
    cluster_ids: Sequence[str] = ()
    api_key_file: str | None = None
    page_size: int | None = None
    config_file: str | None = None
    details: bool | None = None
    details_max_per_pass: int | None = None
    details_max_per_run: int | None = None
    details_concurrency: int | None = None
    requests_per_second: float | None = None
    details_interval: float | None = None
    # --notify: Apprise URLs for this run, on top of the config file's [notify] targets.
    notify_urls: Sequence[str] = ()
