"""The config file: where it is, what it may hold, and its sources."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobsync.config.checks import (
    _check_fields,
    _check_page_size,
    _check_range,
    check_base_url,
    check_positive,
    check_schedule,
)
from jobsync.config.keys import _source_key
from jobsync.config.notify import _check_notify_table
from jobsync.config.retention import parse_retention
from jobsync.config.settings import (
    DEFAULT_CONFIG_FILE,
    MAX_DETAILS_CONCURRENCY,
    MAX_DETAILS_PER_PASS,
    MAX_DETAILS_PER_RUN,
    MAX_PAGE_CONCURRENCY,
    Source,
)
from jobsync.errors import ConfigError


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
    "details_interval": float,
    "requests_per_second": float,
    "notify": dict,
    # A duration or 0; checked by jobsync.config.retention.
    "retention": object,
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
    "requests_per_second": float,
    "every": str,
    "cron": str,
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
    for name in ("requests_per_second", "details_interval"):
        if name in data:
            check_positive(data[name], f"config file {path}: {name}")
    for index, table in enumerate(data.get("sources", [])):
        if not isinstance(table, dict):
            raise ConfigError(f"config file {path}: sources[{index}] must be a table ([[sources]])")
    if "retention" in data:
        parse_retention(data["retention"], f"config file {path}")
    if "notify" in data:
        _check_notify_table(data["notify"], f"config file {path}, [notify]")
    return data


def _source_from_table(
    table: Mapping[str, Any],
    index: int,
    path: Path,
    env: Mapping[str, str],
    need_keys: bool,
    base_url: str,
) -> Source:
    """One ``[[sources]]`` table as a Source. Its API root: its own ``base_url``, else
    ``base_url`` (``--base-url``, ``JOBSYNC_BASE_URL``, the file's top-level one, the default)."""
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
    base_url = table.get("base_url") or base_url
    try:
        base_url = check_base_url(base_url)
    except ConfigError as exc:
        raise ConfigError(f"{where}: field 'base_url': {exc}") from None
    rate = table.get("requests_per_second")
    if rate is not None:
        rate = check_positive(rate, f"{where}: requests_per_second")
    every, cron = check_schedule(table, where)
    return Source(
        name=name,
        requests_per_second=rate,
        every=every,
        cron=cron,
        kind=kind,
        cluster_id=cluster_id,
        project_id=project_id,
        region_id=region_id,
        db_name=table.get("db_name"),
        base_url=base_url,
        api_key=_source_key(table, where, env) if need_keys else None,
    )


def _check_unique_names(sources: Sequence[Source], path: Path) -> None:
    """Names tell sources apart in log lines and metrics; keys, in the database."""
    names: set[str] = set()
    keys: dict[str, str] = {}
    for source in sources:
        if source.name in names:
            raise ConfigError(f"config file {path}: two sources are named {source.name!r}")
        names.add(source.name)
        other = keys.setdefault(source.key, source.name)
        if other != source.name:
            raise ConfigError(
                f"config file {path}: sources {other!r} and {source.name!r} would store their "
                f"jobs under the same cluster_id {source.key!r}: give each its own cluster"
            )


# -- notifications ----------------------------------------------------------------------------
