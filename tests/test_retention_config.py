"""``retention`` in the config file: how long the daemon keeps run metadata."""

from __future__ import annotations

import pytest

from jobsync.config import DEFAULT_RETENTION, CliValues, parse_window, resolve_settings
from jobsync.errors import ConfigError


def _settings(tmp_path, line: str | None):
    path = tmp_path / "jobsync.toml"
    path.write_text("" if line is None else line + "\n")
    return resolve_settings(CliValues(config_file=str(path)), {}, need_keys=False)


def test_the_default_is_90_days(tmp_path):
    assert _settings(tmp_path, None).retention == DEFAULT_RETENTION == 90 * 86400


@pytest.mark.parametrize(
    ("line", "seconds"),
    [
        ('retention = "30d"', 30 * 86400),
        ('retention = "2w"', 14 * 86400),
        ('retention = "1d12h"', 36 * 3600),
        ('retention = "never"', None),
        ('retention = "0"', None),
        ("retention = 0", None),
    ],
)
def test_a_window_or_never(tmp_path, line, seconds):
    assert _settings(tmp_path, line).retention == seconds


@pytest.mark.parametrize(
    "line", ['retention = "-5d"', 'retention = "soon"', "retention = 30", "retention = true"]
)
def test_anything_else_is_one_clear_config_error(tmp_path, line):
    with pytest.raises(ConfigError, match="retention"):
        _settings(tmp_path, line)


@pytest.mark.parametrize("text", ["-1d", "0d", "0", "d", "1y", " ", "1d 2h"])
def test_parse_window_refuses_what_is_not_a_positive_duration(text):
    with pytest.raises(ValueError):
        parse_window(text)
