"""API keys from files and the environment: printable ASCII, never shown."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobsync.config.settings import (
    CliValues,
)
from jobsync.errors import ConfigError
from jobsync.observability.redact import Secret


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
