"""The [notify] table and --notify values: targets, registered as secrets, and settings."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jobsync.config.checks import _check_fields, _check_range, duration_seconds
from jobsync.config.settings import (
    DEFAULT_DIGEST_AFTER,
    DEFAULT_FAILING_PASSES,
    DEFAULT_STUCK_AFTER,
    NotifySettings,
    NotifyTarget,
)
from jobsync.errors import ConfigError
from jobsync.observability.redact import Secret

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
    seconds = duration_seconds(text)
    if seconds is None:
        raise ConfigError(
            f"{where}: field 'stuck_after' must be a duration such as 30m, 2h or 1d "
            f'(or "never"), not {value!r:.40}'
        )
    return seconds


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
