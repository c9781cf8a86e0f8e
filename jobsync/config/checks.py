"""Checks shared by every part of the configuration: ranges, URLs, page sizes, ids."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from jobsync.config.settings import (
    MAX_PAGE_SIZE,
)
from jobsync.errors import ConfigError


def _first(*values: Any) -> Any:
    """The first value that was given (None means not given; False and 0 are answers)."""
    return next((v for v in values if v is not None), None)


# Every duration jobsync reads (--every, every, stuck_after, retention, --keep, ...) is written
# this one way.
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def duration_seconds(value: str) -> float | None:
    """``30s``, ``5m``, ``1h``, ``1h30m``, ``0.5s``, ``2d``, ``2w`` -> seconds; None if not a
    duration."""
    text = value.strip().lower()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def check_schedule(table: Mapping[str, Any], where: str) -> tuple[float | None, str | None]:
    """A source's own schedule: ``every`` (a duration) or ``cron`` (checked by the daemon)."""
    every, cron = table.get("every"), table.get("cron")
    if every is not None and cron is not None:
        raise ConfigError(f"{where}: give 'every' or 'cron', not both")
    if every is None:
        if cron is not None and not cron.strip():
            raise ConfigError(f"{where}: field 'cron' is empty")
        return None, cron
    seconds = duration_seconds(every)
    if seconds is None:
        raise ConfigError(
            f"{where}: field 'every' must be a duration (e.g. 30s, 5m, 1h), not {every!r:.40}"
        )
    if seconds <= 0:
        raise ConfigError(f"{where}: field 'every' must be longer than zero")
    return seconds, None


def _check_range(value: object, name: str, default: int, most: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise ConfigError(f"{name} must be a whole number from 1 to {most}, not {value!r:.40}")
    return value


def check_positive(value: object, name: str) -> float:
    """A positive, finite number (a rate, an interval); ``name`` says where it came from."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigError(f"{name} must be a positive number, not {value!r:.40}")
    return float(value)


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


def _check_fields(table: Mapping[str, Any], fields: Mapping[str, type], where: str) -> None:
    for name, value in table.items():
        expected = fields.get(name)
        if expected is None:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{where}: unknown field {name!r} (known: {known})")
        # bool is an int in Python; only a field meant to be a bool takes true/false. A field
        # meant to be a number (float) takes a whole number too.
        if expected is float and isinstance(value, int):
            expected = int
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ConfigError(
                f"{where}: field {name!r} must be {expected.__name__}, not {type(value).__name__}"
            )
