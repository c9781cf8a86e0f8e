"""The ``[notify]`` table and ``--notify``: targets from variables and files, settings, refusals
that never quote a URL."""

from __future__ import annotations

import pytest

from jobsync.config import (
    DEFAULT_DIGEST_AFTER,
    DEFAULT_FAILING_PASSES,
    DEFAULT_STUCK_AFTER,
    CliValues,
    resolve_settings,
)
from jobsync.errors import ConfigError
from jobsync.observability.redact import redact

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7F"
HOOK = "json://user:pw-0123456789@hooks.example.com/incoming/Xq7dKp2mZtR9?token=tok-abcdef123456"


def _config(tmp_path, text: str):
    path = tmp_path / "jobsync.toml"
    path.write_text(text)
    return str(path)


def _urls_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "notify-urls"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_no_notify_table_means_no_targets_and_the_defaults(tmp_path):
    notify = resolve_settings(CliValues(), {}, cwd=tmp_path).notify
    assert notify.targets == ()
    assert (notify.stuck_after, notify.failing_passes, notify.digest_after) == (
        DEFAULT_STUCK_AFTER,
        DEFAULT_FAILING_PASSES,
        DEFAULT_DIGEST_AFTER,
    )
    assert DEFAULT_STUCK_AFTER == 7200


def test_targets_come_from_variables_files_and_the_command_line_in_that_order(tmp_path):
    urls = _urls_file(tmp_path, f"# the on-call webhooks\n\n{HOOK}\r\n  json://127.0.0.1:9/x  \n")
    config = _config(
        tmp_path,
        f"""
[notify]
urls_env = ["NOTIFY_SLACK"]
urls_file = ["{urls}"]
stuck_after = "1h30m"
failing_passes = 5
digest_after = 10
""",
    )
    settings = resolve_settings(
        CliValues(config_file=config, notify_urls=("json://127.0.0.1:8/one",)),
        {"NOTIFY_SLACK": f"  {SLACK}\n"},
    )
    notify = settings.notify
    assert [(t.origin, t.url.reveal()) for t in notify.targets] == [
        ("NOTIFY_SLACK", SLACK),
        (f"{urls} #1", HOOK),
        (f"{urls} #2", "json://127.0.0.1:9/x"),
        ("--notify", "json://127.0.0.1:8/one"),
    ]
    assert (notify.stuck_after, notify.failing_passes, notify.digest_after) == (5400, 5, 10)
    assert SLACK not in repr(settings) and "notify_targets=4" in repr(settings)
    assert "T1JJ3T3L2" not in repr(notify)


def test_a_variable_may_hold_several_urls_and_notify_may_be_repeated(tmp_path):
    config = _config(tmp_path, '[notify]\nurls_env = ["N"]\n')
    settings = resolve_settings(
        CliValues(config_file=config, notify_urls=("json://a/1", "json://b/2")),
        {"N": "json://127.0.0.1:1/a\n json://127.0.0.1:1/b"},
    )
    assert [t.origin for t in settings.notify.targets] == [
        "N #1",
        "N #2",
        "--notify #1",
        "--notify #2",
    ]


@pytest.mark.parametrize("value", ["never", "0", "NEVER"])
def test_stuck_jobs_can_be_left_out(tmp_path, value):
    config = _config(tmp_path, f'[notify]\nstuck_after = "{value}"\n')
    assert resolve_settings(CliValues(config_file=config), {}).notify.stuck_after is None


def test_reading_commands_do_not_need_the_targets(tmp_path):
    config = _config(tmp_path, '[notify]\nurls_env = ["UNSET_VARIABLE"]\n')
    settings = resolve_settings(CliValues(config_file=config), {}, need_keys=False)
    assert settings.notify.targets == ()
    with pytest.raises(ConfigError, match="environment variable UNSET_VARIABLE is not set"):
        resolve_settings(CliValues(config_file=config), {}, need_keys=False, need_notify=True)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'urls_env = ["UNSET_VARIABLE"]',
            r"\[notify\]: field 'urls_env': environment variable UNSET_VARIABLE is not set",
        ),
        ('urls_env = "NOTIFY_SLACK"', r"\[notify\]: field 'urls_env' must be list, not str"),
        ("urls_env = [1]", r"field 'urls_env' must be a list of non-empty strings"),
        ('stuck_after = "soon"', r"field 'stuck_after' must be a duration such as 30m"),
        ("stuck_after = 7200", r"field 'stuck_after' must be str"),
        ("failing_passes = 0", r"failing_passes must be a whole number from 1 to 1000"),
        ("digest_after = true", r"field 'digest_after' must be int"),
        ('url = "json://x"', r"\[notify\]: unknown field 'url'"),
    ],
)
def test_mistakes_in_the_notify_table_are_refused_with_the_field(tmp_path, table, message):
    config = _config(tmp_path, f"[notify]\n{table}\n")
    with pytest.raises(ConfigError, match=message):
        resolve_settings(CliValues(config_file=config), {})


def test_a_urls_file_that_others_can_read_is_refused(tmp_path):
    urls = _urls_file(tmp_path, HOOK, mode=0o644)
    config = _config(tmp_path, f'[notify]\nurls_file = ["{urls}"]\n')
    with pytest.raises(
        ConfigError, match=r"readable by group or others \(mode 644\); run: chmod 600"
    ):
        resolve_settings(CliValues(config_file=config), {})


def test_an_empty_urls_file_is_refused(tmp_path):
    urls = _urls_file(tmp_path, "# nothing yet\n\n")
    config = _config(tmp_path, f'[notify]\nurls_file = ["{urls}"]\n')
    with pytest.raises(ConfigError, match="holds no URL"):
        resolve_settings(CliValues(config_file=config), {})


def test_something_that_is_not_a_url_is_refused_without_being_shown(tmp_path):
    config = _config(tmp_path, '[notify]\nurls_env = ["N"]\n')
    with pytest.raises(ConfigError) as caught:
        resolve_settings(
            CliValues(config_file=config), {"N": "hooks.slack.com/T0SECRET99/B0SECRET99"}
        )
    assert str(caught.value) == "N: not a notification URL (an Apprise URL: scheme://...)"


def test_every_secret_part_of_a_url_is_masked_wherever_it_shows_up():
    resolve_settings(CliValues(notify_urls=(SLACK, HOOK)), {})

    said = redact(
        f"posting to {SLACK} / https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/"
        "TIiajkdnlazkcOXrIdevi7F failed; Xq7dKp2mZtR9 tok-abcdef123456 pw-0123456789 "
        "hooks.example.com incoming services localhost"
    )

    for secret in ("T1JJ3T3L2", "A1BRTD4JD", "TIiajkdnlazkcOXrIdevi7F", "Xq7dKp2mZtR9"):
        assert secret not in said
    for secret in ("tok-abcdef123456", "pw-0123456789"):
        assert secret not in said
    # Names of places are not secrets, and plain words stay readable.
    assert "hooks.example.com incoming services localhost" in said
