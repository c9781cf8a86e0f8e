"""Configuration as frozen objects, resolved once at the edge.

Precedence (the contract): command-line option > environment variable > config file > default.
This package never reads ``os.environ`` itself: the CLI hands it the values it was given and a
mapping of the environment, so resolution is a pure function that tests can drive directly.

``settings`` holds the frozen objects and their defaults, ``checks`` the shared checks,
``keys`` the API keys, ``files`` the config file and its sources, ``notify`` the ``[notify]``
table, ``retention`` how long run metadata is kept; :func:`resolve_settings` here puts them
together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from jobsync.config.checks import (
    _check_page_size,
    _check_range,
    _first,
    check_base_url,
    check_positive,
    duration_seconds,
    split_ids,
)
from jobsync.config.files import (
    _check_unique_names,
    _config_path,
    _load_config_file,
    _source_from_table,
)
from jobsync.config.keys import _key_from_cli, read_key_file
from jobsync.config.notify import _notify_settings
from jobsync.config.retention import parse_retention, parse_window
from jobsync.config.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_DATABASE_URL,
    DEFAULT_DETAILS_CONCURRENCY,
    DEFAULT_DETAILS_INTERVAL,
    DEFAULT_DETAILS_MAX_PER_PASS,
    DEFAULT_DETAILS_MAX_PER_RUN,
    DEFAULT_DIGEST_AFTER,
    DEFAULT_FAILING_PASSES,
    DEFAULT_PAGE_SIZE,
    DEFAULT_REQUESTS_PER_SECOND,
    DEFAULT_RETENTION,
    DEFAULT_STUCK_AFTER,
    MAX_DETAILS_CONCURRENCY,
    MAX_DETAILS_PER_PASS,
    MAX_DETAILS_PER_RUN,
    CliValues,
    HttpSettings,
    NotifySettings,
    NotifyTarget,
    Settings,
    Source,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_DATABASE_URL",
    "DEFAULT_DETAILS_CONCURRENCY",
    "DEFAULT_DETAILS_INTERVAL",
    "DEFAULT_DETAILS_MAX_PER_PASS",
    "DEFAULT_DIGEST_AFTER",
    "DEFAULT_FAILING_PASSES",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_REQUESTS_PER_SECOND",
    "DEFAULT_RETENTION",
    "DEFAULT_STUCK_AFTER",
    "CliValues",
    "HttpSettings",
    "NotifySettings",
    "NotifyTarget",
    "Settings",
    "Source",
    "check_base_url",
    "duration_seconds",
    "parse_window",
    "read_key_file",
    "resolve_settings",
    "split_ids",
]


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

    # The API root of a source that names none (a config file source may name its own).
    base_url = cli.base_url or file_values.get("base_url") or DEFAULT_BASE_URL
    if cli.cluster_ids:
        key = _key_from_cli(cli, env) if need_keys else None
        sources: tuple[Source, ...] = tuple(
            Source(name=cid, cluster_id=cid, base_url=check_base_url(base_url), api_key=key)
            for cid in split_ids(cli.cluster_ids)
        )
    elif config_path and file_values.get("sources"):
        sources = tuple(
            _source_from_table(table, index, config_path, env, need_keys, base_url)
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
    # The command line and the environment set the rate of every source; the file's top-level
    # value is the default of its sources, each of which may set its own.
    if cli.requests_per_second is not None:
        rate = check_positive(cli.requests_per_second, "requests per second")
        sources = tuple(replace(s, requests_per_second=None) for s in sources)
    else:
        rate = float(file_values.get("requests_per_second", DEFAULT_REQUESTS_PER_SECOND))
    interval = _first(cli.details_interval, file_values.get("details_interval"))
    return Settings(
        database_url=database_url,
        sources=sources,
        page_size=page_size,
        http=HttpSettings(
            page_concurrency=file_values.get("page_concurrency", HttpSettings.page_concurrency),
            requests_per_second=rate,
        ),
        config_file=config_path,
        details=bool(details),
        details_max_per_pass=max_per_pass,
        details_max_per_run=max_per_run,
        details_concurrency=concurrency,
        details_interval=(
            DEFAULT_DETAILS_INTERVAL
            if interval is None
            else check_positive(interval, "details interval")
        ),
        retention=(
            parse_retention(file_values["retention"], f"config file {config_path}")
            if "retention" in file_values
            else DEFAULT_RETENTION
        ),
        notify=_notify_settings(
            file_values.get("notify", {}),
            config_path,
            env,
            cli.notify_urls,
            read_targets=need_keys if need_notify is None else need_notify,
        ),
    )
