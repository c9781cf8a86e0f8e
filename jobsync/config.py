"""Configuration as frozen objects, resolved once at the edge.

Precedence (the contract): command-line option > environment variable > config file > default.
This module never reads ``os.environ`` itself: the CLI hands it the values it was given and a
mapping of the environment, so resolution is a pure function that tests can drive directly.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from jobsync.errors import ConfigError
from jobsync.observability.redact import Secret

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_DETAILS_CONCURRENCY",
    "DEFAULT_DETAILS_MAX_PER_PASS",
    "DEFAULT_PAGE_SIZE",
    "CliValues",
    "HttpSettings",
    "NotifySettings",
    "NotifyTarget",
    "Settings",
    "Source",
    "check_base_url",
    "read_key_file",
    "resolve_settings",
    "split_ids",
]

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

DEFAULT_STUCK_AFTER = 2 * 3600.0
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
    # The documented limit: 20 requests per second per API key per endpoint.
    requests_per_second: float = 20.0
    # Sources synced at once.
    max_concurrent_sources: int = 4
    # List pages of one source in flight at once (all under the key's rate limiter): 4 keep a
    # source at the limit's 20 requests per second while a request takes up to 200 ms.
    page_concurrency: int = 4


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
    notify: NotifySettings = NotifySettings()

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
    # --notify: Apprise URLs for this run, on top of the config file's [notify] targets.
    notify_urls: Sequence[str] = ()


def resolve_settings(
    cli: CliValues,
    env: Mapping[str, str],
    *,
    cwd: Path | None = None,
    need_keys: bool = True,
    need_notify: bool | None = None,
) -> Settings:
    """Apply option > environment > config file > default, and validate the result.

    ``need_keys=False`` is for commands that only read the database (``jobs``, ``status``):
    they must work on a host that has the config file but not the API keys. Notification
    targets, secrets too, are read when ``need_notify`` says so (by default: with the keys).
    """
    config_path = _config_path(cli.config_file, cwd or Path.cwd())
    file_values = _load_config_file(config_path) if config_path else {}

    database_url = cli.database_url or file_values.get("database_url") or DEFAULT_DATABASE_URL
    page_size = cli.page_size if cli.page_size is not None else file_values.get("page_size")
    page_size = _check_page_size(page_size if page_size is not None else DEFAULT_PAGE_SIZE)

    if cli.cluster_ids:
        base_url = cli.base_url or file_values.get("base_url") or DEFAULT_BASE_URL
        key = _key_from_cli(cli, env) if need_keys else None
        sources: tuple[Source, ...] = tuple(
            Source(name=cid, cluster_id=cid, base_url=check_base_url(base_url), api_key=key)
            for cid in split_ids(cli.cluster_ids)
        )
    elif config_path and file_values.get("sources"):
        sources = tuple(
            _source_from_table(table, index, config_path, env, cli, need_keys)
            for index, table in enumerate(file_values["sources"])
        )
        _check_unique_names(sources, config_path)
    else:
        sources = ()
    details = _first(cli.details, file_values.get("details"), True)
    max_per_pass = _check_range(
        _first(cli.details_max_per_pass, file_values.get("details_max_per_pass")),
        "details_max_per_pass",
        DEFAULT_DETAILS_MAX_PER_PASS,
        MAX_DETAILS_PER_PASS,
    )
    max_per_run = _check_range(
        _first(cli.details_max_per_run, file_values.get("details_max_per_run")),
        "details_max_per_run",
        DEFAULT_DETAILS_MAX_PER_RUN,
        MAX_DETAILS_PER_RUN,
    )
    concurrency = _check_range(
        _first(cli.details_concurrency, file_values.get("details_concurrency")),
        "details_concurrency",
        DEFAULT_DETAILS_CONCURRENCY,
        MAX_DETAILS_CONCURRENCY,
    )
    return Settings(
        database_url=database_url,
        sources=sources,
        page_size=page_size,
        http=HttpSettings(
            page_concurrency=file_values.get("page_concurrency", HttpSettings.page_concurrency)
        ),
        config_file=config_path,
        details=bool(details),
        details_max_per_pass=max_per_pass,
        details_max_per_run=max_per_run,
        details_concurrency=concurrency,
        notify=_notify_settings(
            file_values.get("notify", {}),
            config_path,
            env,
            cli.notify_urls,
            read_targets=need_keys if need_notify is None else need_notify,
        ),
    )


def _first(*values: Any) -> Any:
    """The first value that was given (None means not given; False and 0 are answers)."""
    return next((v for v in values if v is not None), None)


def _check_range(value: object, name: str, default: int, most: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{name} must be a whole number from 1 to {most}, not {value!r:.40}")
    return value


def check_base_url(url: str) -> str:
    """Accept https anywhere and plain http only on loopback; drop any trailing slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise ConfigError("base URL must not contain credentials; give the key separately")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"base URL {url!r} uses plain http to a non-loopback host; use https:// "
            "(plain http is accepted only for 127.0.0.1, ::1 and localhost)"
        )
    return url.rstrip("/")


def read_key_file(path: str) -> Secret:
    """Read an API key from a file that only its owner may read.

    A UTF-8 byte order mark and surrounding white space (a trailing CR LF from an editor on
    Windows) are not part of the key.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise ConfigError(
                f"API key file {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
            )
        value = Path(path).read_bytes().decode("utf-8-sig").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read API key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"API key file {path} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"API key file {path} is empty")
    return _checked_key(value, f"API key file {path}")


def _checked_key(value: str, where: str) -> Secret:
    """The key as a Secret if it is printable ASCII, as API keys are; the message never quotes it.

    Anything else (often a no-break space or a typographic quote pasted with the key) would
    fail every request: as a rejected key, or, beyond Latin-1, as a header that cannot be sent.
    """
    for position, char in enumerate(value, 1):
        if not " " <= char <= "~":
            kind = "is not ASCII" if ord(char) > 0x7E else "is a control character"
            raise ConfigError(
                f"{where}: the API key's character {position} (U+{ord(char):04X}) {kind}; "
                "API keys are printable ASCII: check for a character pasted with the key"
            )
    return Secret(value)


def _key_from_cli(cli: CliValues, env: Mapping[str, str]) -> Secret | None:
    if cli.api_key_file:
        return read_key_file(cli.api_key_file)
    return _env_key(env)


def _env_key(env: Mapping[str, str]) -> Secret | None:
    for name in ("JOBSYNC_API_KEY", "ZILLIZ_API_KEY"):
        value = env.get(name, "").strip()
        if value:
            return _checked_key(value, f"environment variable {name}")
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_page_size(value: object, where: str = "page size") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where} must be a whole number from 1 to {MAX_PAGE_SIZE}")
    if not 1 <= value <= MAX_PAGE_SIZE:
        raise ConfigError(
            f"{where} {value} is out of range: the API accepts 1 to {MAX_PAGE_SIZE} jobs per page"
        )
    return value


def split_ids(values: Sequence[str]) -> list[str]:
    """Ids from repeated options and comma-separated lists, stripped, first occurrence kept."""
    seen: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            if part.strip():
                seen.setdefault(part.strip(), None)
    return list(seen)


def _config_path(given: str | None, cwd: Path) -> Path | None:
    if given:
        return Path(given)
    default = cwd / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


_TOP_LEVEL_FIELDS = {
    "database_url": str,
    "page_size": int,
    "base_url": str,
    "sources": list,
    "page_concurrency": int,
    "details": bool,
    "details_max_per_pass": int,
    "details_max_per_run": int,
    "details_concurrency": int,
    "notify": dict,
}
_SOURCE_FIELDS = {
    "name": str,
    "kind": str,
    "cluster_id": str,
    "project_id": str,
    "region_id": str,
    "db_name": str,
    "base_url": str,
    "api_key_env": str,
    "api_key_file": str,
}


def _load_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    _check_fields(data, _TOP_LEVEL_FIELDS, f"config file {path}")
    if "page_size" in data:
        _check_page_size(data["page_size"], f"config file {path}: page_size")
    for name, most in (
        ("page_concurrency", MAX_PAGE_CONCURRENCY),
        ("details_max_per_pass", MAX_DETAILS_PER_PASS),
        ("details_max_per_run", MAX_DETAILS_PER_RUN),
        ("details_concurrency", MAX_DETAILS_CONCURRENCY),
    ):
        if name in data:
            _check_range(data[name], f"config file {path}: {name}", 0, most)
    for index, table in enumerate(data.get("sources", [])):
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: sources[{index}] must be a table ([[sources]])")
    if "notify" in data:
        _check_notify_table(data["notify"], f"config file {path}, [notify]")
    return data


def _check_fields(table: Mapping[str, Any], fields: Mapping[str, type], where: str) -> None:
    for name, value in table.items():
        expected = fields.get(name)
        if expected is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown field {name!r} (known: {known})")
        # bool is an int in Python; only a field meant to be a bool takes true/false.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(
                f"{where}: field {name!r} must be {expected.__name__}, not {type(value).__name__}"
            )


def _source_from_table(
    table: Mapping[str, Any],
    index: int,
    path: Path,
    env: Mapping[str, str],
    cli: CliValues,
    need_keys: bool,
) -> Source:
    label = next(
        (v for v in (table.get("name"), table.get("cluster_id")) if isinstance(v, str) and v),
        f"#{index + 1}",
    )
    where = f"config file {path}, source {label!r}"
    _check_fields(table, _SOURCE_FIELDS, where)
    kind = table.get("kind", "zilliz")
    if kind not in ("zilliz", "milvus"):
        raise ConfigError(f"{where}: field 'kind' must be 'zilliz' or 'milvus', not {kind!r}")
    cluster_id = table.get("cluster_id")
    project_id, region_id = table.get("project_id"), table.get("region_id")
    if kind == "zilliz" and not cluster_id and not (project_id and region_id):
        raise ConfigError(f"{where}: needs 'cluster_id', or 'project_id' and 'region_id'")
    if (project_id is None) != (region_id is None):
        raise ConfigError(f"{where}: 'project_id' and 'region_id' go together")
    name = table.get("name") or cluster_id or (f"{project_id}/{region_id}" if project_id else None)
    if not name:
        raise ConfigError(f"{where}: a milvus source needs a 'name'")
    base_url = table.get("base_url") or cli.base_url or DEFAULT_BASE_URL
    try:
        base_url = check_base_url(base_url)
    except ConfigError as exc:
        raise ConfigError(f"{where}: field 'base_url': {exc}") from None
    return Source(
        name=name,
        kind=kind,
        cluster_id=cluster_id,
        project_id=project_id,
        region_id=region_id,
        db_name=table.get("db_name"),
        base_url=base_url,
        api_key=_source_key(table, where, env) if need_keys else None,
    )


def _source_key(table: Mapping[str, Any], where: str, env: Mapping[str, str]) -> Secret | None:
    if "api_key_env" in table and "api_key_file" in table:
        raise ConfigError(f"{where}: give 'api_key_env' or 'api_key_file', not both")
    if "api_key_file" in table:
        try:
            return read_key_file(table["api_key_file"])
        except ConfigError as exc:
            raise ConfigError(f"{where}: field 'api_key_file': {exc}") from None
    if "api_key_env" in table:
        value = env.get(table["api_key_env"], "").strip()
        if not value:
            raise ConfigError(
                f"{where}: field 'api_key_env': environment variable "
                f"{table['api_key_env']} is not set"
            )
        return _checked_key(value, f"{where}: environment variable {table['api_key_env']}")
    return _env_key(env)


def _check_unique_names(sources: Sequence[Source], path: Path) -> None:
    seen: set[str] = set()
    for source in sources:
        if source.key in seen:
            raise ConfigError(f"config file {path}: two sources are named {source.key!r}")
        seen.add(source.key)


# -- notifications ----------------------------------------------------------------------------

_NOTIFY_FIELDS = {
    "urls_env": list,
    "urls_file": list,
    "stuck_after": str,
    "failing_passes": int,
    "digest_after": int,
}
MAX_FAILING_PASSES = 1000
MAX_DIGEST_AFTER = 10_000
# What an Apprise URL looks like before Apprise reads it (jobsync.service.notify does).
_NOTIFY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d)")
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _check_notify_table(table: object, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    _check_fields(table, _NOTIFY_FIELDS, where)
    for name in ("urls_env", "urls_file"):
        if not all(isinstance(item, str) and item for item in table.get(name, [])):
            raise ConfigError(f"{where}: field {name!r} must be a list of non-empty strings")
    for name, most in (("failing_passes", MAX_FAILING_PASSES), ("digest_after", MAX_DIGEST_AFTER)):
        if name in table:
            _check_range(table[name], f"{where}: {name}", 0, most)
    if "stuck_after" in table:
        _stuck_after(table["stuck_after"], where)


def _stuck_after(value: str, where: str) -> float | None:
    """``2h``, ``90m``, ``1h30m``, ``1d``; ``never`` (or ``0``) turns stuck jobs off."""
    text = value.strip().lower()
    if text in ("never", "0"):
        return None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(
            f"{where}: field 'stuck_after' must be a duration such as 30m, 2h or 1d "
            f'(or "never"), not {value!r:.40}'
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _notify_settings(
    table: Mapping[str, Any],
    path: Path | None,
    env: Mapping[str, str],
    cli_urls: Sequence[str],
    *,
    read_targets: bool,
) -> NotifySettings:
    where = f"config file {path}, [notify]"
    targets: list[NotifyTarget] = []
    if read_targets:
        for name in table.get("urls_env", []):
            value = env.get(name, "")
            if not value.strip():
                raise ConfigError(
                    f"{where}: field 'urls_env': environment variable {name} is not set"
                )
            targets += _targets(value.split(), name)
        for file in table.get("urls_file", []):
            try:
                targets += _targets(_read_urls_file(file), file)
            except ConfigError as exc:
                raise ConfigError(f"{where}: field 'urls_file': {exc}") from None
        targets += _targets(cli_urls, "--notify")
    stuck_after: float | None = DEFAULT_STUCK_AFTER
    if "stuck_after" in table:
        stuck_after = _stuck_after(table["stuck_after"], where)
    return NotifySettings(
        targets=tuple(targets),
        stuck_after=stuck_after,
        failing_passes=table.get("failing_passes", DEFAULT_FAILING_PASSES),
        digest_after=table.get("digest_after", DEFAULT_DIGEST_AFTER),
    )


def _targets(urls: Sequence[str], origin: str) -> list[NotifyTarget]:
    """Targets from ``origin``'s URLs, each registered as a secret before anything can show it."""
    found = []
    for number, url in enumerate(urls, 1):
        secret = Secret(url.strip())
        _register_url_parts(url.strip())
        label = origin if len(urls) == 1 else f"{origin} #{number}"
        if not _NOTIFY_URL.fullmatch(secret.reveal()):
            raise ConfigError(f"{label}: not a notification URL (an Apprise URL: scheme://...)")
        found.append(NotifyTarget(url=secret, origin=label))
    return found


def _register_url_parts(url: str) -> None:
    """Register the parts of a notification URL that may be secret on their own.

    Services put tokens anywhere: ``slack://TokenA/TokenB/TokenC``, ``tgram://bottoken/chat``,
    ``json://user:password@host/path?token=...``. A library may log a part, or the service's
    own URL built from it, without the rest. Registered: the password (whatever its length),
    and the user, a host that is not a network name, each path segment and each query value,
    when at least 8 characters long and not a plain lower-case word (``services``,
    ``localhost``), both as written and URL-decoded.
    """
    try:
        parts = urlsplit(url)
        password = parts.password
        user = parts.username
        host = parts.hostname
    except ValueError:
        return  # not a URL that splits; the whole URL is registered already
    if password:
        Secret(password)
        Secret(unquote(password))
    candidates = [user or ""]
    if host and "." not in host and ":" not in host:
        candidates.append(host)
    candidates += parts.path.split("/")
    candidates += [pair.partition("=")[2] for pair in parts.query.split("&")]
    for candidate in candidates:
        for form in {candidate, unquote(candidate)}:
            if len(form) >= 8 and not re.fullmatch(r"[a-z]+", form):
                Secret(form)


def _read_urls_file(path: str) -> list[str]:
    """Notification URLs from a file only its owner may read: one per line, ``#`` comments."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"file {path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
            )
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    urls = [line.strip() for line in text.splitlines()]
    urls = [url for url in urls if url and not url.startswith("#")]
    if not urls:
        raise ConfigError(f"{path} holds no URL")
    return urls
