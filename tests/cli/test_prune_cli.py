"""``jobsync db prune``: bad ``--keep`` values are usage errors; a prune reports what it removed;
a prune killed half-way (``kill -9``) leaves every pass counted exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from jobsync.cli import cli
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import sync_run_days, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import count_rows, daily_passes
from tests.polling import poll

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # long before the test runs: every pass is old


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _passes(url: str, days: int = 6) -> int:
    daily_passes(url, "c", T0, days)
    return days


@pytest.mark.parametrize("keep", ["-5d", "banana", "0", "0d", "30", "5x", "", "1d-2h"])
def test_a_nonsense_or_negative_keep_is_a_usage_error_and_removes_nothing(tmp_path, keep):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    _passes(url)

    result = _invoke("db", "prune", "--db", url, f"--keep={keep}")

    assert result.exit_code == 2, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1 and "--keep" in error_lines[0]
    assert count_rows(open_engine(url), sync_runs) == 6


def test_prune_says_what_it_removed_and_a_dry_run_removes_nothing(db_url):
    _passes(db_url)
    engine = open_engine(db_url)

    dry = _invoke("db", "prune", "--db", db_url, "--keep", "30d", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("would remove 4 pass(es)")  # the first and the latest stay
    assert count_rows(engine, sync_runs) == 6

    done = _invoke("db", "prune", "--db", db_url, "--keep", "30d")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("removed 4 pass(es) started before ")
    assert "(rolled up into 4 source-day row(s) of sync_run_days) and 0 progress sample(s)" in (
        done.output
    )
    assert count_rows(engine, sync_runs) == 2 and count_rows(engine, sync_run_days) == 4
    engine.dispose()


def test_prune_uses_the_config_files_retention_and_never_means_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'j.db'}"
    _passes(url)
    config = tmp_path / "jobsync.toml"
    config.write_text('retention = "never"\n')

    kept = _invoke("db", "prune", "--db", url, "--config", str(config))
    assert kept.exit_code == 0 and kept.output == "retention is never: nothing pruned\n"
    assert count_rows(open_engine(url), sync_runs) == 6

    config.write_text('retention = "30d"\n')
    assert _invoke("db", "prune", "--db", url, "--config", str(config)).exit_code == 0
    assert count_rows(open_engine(url), sync_runs) == 2


def test_a_missing_database_file_is_refused_and_not_created(tmp_path):
    missing = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["db", "prune", "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 1 and "no such file" in result.output
    assert not missing.exists()


RUNS = 20_000


def _many_old_passes(url: str) -> None:
    """RUNS more passes that recorded nothing, written straight into sync_runs (fast)."""
    engine = open_engine(url)
    upgrade(engine)
    rows = [
        {
            "cluster_id": "c",
            "started_at": T0 + timedelta(minutes=n),
            "finished_at": T0 + timedelta(minutes=n, seconds=1),
            "status": "succeeded",
            "complete": True,
            "pages": 1,
        }
        for n in range(RUNS)
    ]
    with engine.begin() as conn:
        conn.execute(insert(sync_runs), rows)
    engine.dispose()


def test_a_prune_killed_half_way_leaves_every_pass_counted_once(db_url, tmp_path):
    engine = open_engine(db_url)

    def rolled_up() -> int:
        with engine.connect() as conn:
            total = select(func.coalesce(func.sum(sync_run_days.c.passes), 0))
            return int(conn.execute(total).scalar())

    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYNC_")}
    command = [sys.executable, "-m", "jobsync", "db", "prune", "--db", db_url, "--keep", "1d"]
    # One pass a batch: thousands of commits, so the kill lands long before the last.
    command += ["--batch-size", "1"]
    total = 0
    # A loaded machine may let a prune finish before the kill lands: then more passes, again.
    for _attempt in range(3):
        _many_old_passes(db_url)
        total += RUNS
        prune = subprocess.Popen(
            command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        before = rolled_up()
        try:
            poll(lambda: rolled_up() > before, "a batch to commit", 60, interval=0.002)
            prune.send_signal(signal.SIGKILL)
        finally:
            prune.wait(30)
        left, rolled = count_rows(engine, sync_runs), rolled_up()
        assert left + rolled == total  # no pass lost or counted twice, whenever it stopped
        if prune.returncode == -signal.SIGKILL and left > 1:
            break  # stopped half-way
    else:
        pytest.fail("every prune finished before it could be killed")

    again = _invoke("db", "prune", "--db", db_url, "--keep", "1d")
    assert again.exit_code == 0, again.output
    assert count_rows(engine, sync_runs) == 1  # the latest pass stays
    assert rolled_up() == total - 1
    engine.dispose()
