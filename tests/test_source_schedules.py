"""Per-source schedules in the config file: ``every``/``cron`` parsed, checked, and used by the
daemon in place of its ``--every``/``--cron``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsync.config import CliValues, Source, resolve_settings
from jobsync.errors import ConfigError
from jobsync.service.schedule import cron, every, source_schedule

ENV = {"JOBSYNC_API_KEY": "k"}


def _settings(tmp_path, sources: str):
    path = tmp_path / "jobsync.toml"
    path.write_text(sources, encoding="utf-8")
    return resolve_settings(CliValues(config_file=str(path)), ENV)


def test_sources_keep_their_own_every_or_cron(tmp_path):
    settings = _settings(
        tmp_path,
        '[[sources]]\ncluster_id = "in01-a"\nevery = "1m"\n'
        '[[sources]]\ncluster_id = "in01-b"\ncron = "*/5 * * * *"\n'
        '[[sources]]\ncluster_id = "in01-c"\n',
    )
    a, b, c = settings.sources
    assert (a.every, a.cron) == (60.0, None)
    assert (b.every, b.cron) == (None, "*/5 * * * *")
    assert (c.every, c.cron) == (None, None)
    default = every(30)
    assert source_schedule(a, default).interval == 60
    assert source_schedule(b, default).interval == 300
    assert source_schedule(c, default) is default


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('every = "1m"\ncron = "* * * * *"', "give 'every' or 'cron', not both"),
        ('every = "soon"', "field 'every' must be a duration"),
        ('every = "0s"', "must be longer than zero"),
        ("every = 60", "field 'every'"),
        ('cron = ""', "field 'cron' is empty"),
    ],
    ids=["both", "not-a-duration", "zero", "not-a-string", "empty-cron"],
)
def test_a_bad_schedule_names_the_file_and_source(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message) as raised:
        _settings(tmp_path, f'[[sources]]\ncluster_id = "in01-a"\n{fields}\n')
    assert "in01-a" in str(raised.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (Source(name="s", base_url="https://x", cron="61 * * * *"), "source 's': cron"),
        (Source(name="s", base_url="https://x", every=0.01), "source 's': every must be at"),
        (Source(name="s", base_url="https://x"), "no schedule of its own"),
    ],
)
def test_a_schedule_the_daemon_cannot_use_is_a_config_error(source, message):
    with pytest.raises(ConfigError, match=message):
        source_schedule(source, None)


def test_interval_periods_are_aligned_whatever_the_start():
    schedule = every(10)
    at = datetime(2026, 12, 6, 12, 0, 7, 500_000, tzinfo=UTC)
    assert schedule.period_start(at) == datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    assert schedule.period_start(at + timedelta(seconds=3)) == at + timedelta(seconds=2.5)
    fire = schedule.trigger.get_next_fire_time(None, at)
    assert fire is not None
    # The next period begins on the next multiple of 10 s, give or take the jitter.
    assert (
        timedelta(0) <= fire - datetime(2026, 12, 6, 12, 0, 10, tzinfo=UTC) <= timedelta(seconds=1)
    )
    assert schedule.period_start(fire) == datetime(2026, 12, 6, 12, 0, 10, tzinfo=UTC)


def test_a_cron_period_starts_at_its_latest_fire_time():
    schedule = cron("*/5 * * * *")
    at = datetime(2026, 12, 6, 12, 7, 30, tzinfo=UTC)
    assert schedule.period_start(at) == datetime(2026, 12, 6, 12, 5, tzinfo=UTC)
    assert schedule.period_start(datetime(2026, 12, 6, 12, 10, tzinfo=UTC)) == datetime(
        2026, 12, 6, 12, 10, tzinfo=UTC
    )
