"""``jobsync status``: last pass, outcome, age, overdue (exit 1), on both databases."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from jobsync.cli import cli
from jobsync.reporting.status import format_age, source_status
from jobsync.service.sync import sync_all
from jobsync.simulator import Fault
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import CLUSTER, settings_for

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def status(monkeypatch, tmp_path):
    for name in ("JOBSYNC_DATABASE_URL", "JOBSYNC_CONFIG", "JOBSYNC_API_KEY", "ZILLIZ_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["status", *args], catch_exceptions=False)

    return invoke


def add_run(engine, cluster_id, status, ago, error=None, now=None):
    """A finished pass that ended ``ago`` before ``now`` (default: now) and took a second."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(sync_runs).values(
                cluster_id=cluster_id,
                status=status,
                started_at=now - ago - timedelta(seconds=1),
                finished_at=now - ago,
                error=error,
            )
        )


def test_a_source_synced_just_now_is_not_overdue_and_exits_0(status, engine, sim, db_url):
    [result] = sync_all(engine, settings_for(sim, db_url))
    assert result.ok

    shown = status("--db", db_url)

    assert shown.exit_code == 0, shown.output
    assert CLUSTER in shown.output and "succeeded" in shown.output
    [row] = json.loads(status("--db", db_url, "--format", "json").output)
    assert row["source"] == CLUSTER and row["last_status"] == "succeeded"
    assert row["overdue"] is False and 0 <= row["age_seconds"] < 60


def test_a_source_whose_last_success_is_old_is_overdue_and_exits_1(status, engine, db_url):
    add_run(engine, "old-cluster", "succeeded", timedelta(hours=2))
    add_run(engine, "fresh-cluster", "succeeded", timedelta(seconds=0))

    result = status("--db", db_url, "--format", "csv")

    assert result.exit_code == 1
    rows = {r["source"]: r for r in csv.DictReader(io.StringIO(result.output))}
    assert rows["old-cluster"]["overdue"] == "True"
    assert rows["old-cluster"]["age"] in ("2h00m", "2h01m")
    assert rows["fresh-cluster"]["overdue"] == "False"
    # A longer threshold makes the same database healthy.
    assert status("--db", db_url, "--overdue-after", "1d").exit_code == 0


def test_failing_passes_do_not_reset_the_clock(engine, sim, db_url):
    sync_all(engine, settings_for(sim, db_url))
    sim.add_fault(Fault(status=200, code=80001))
    [failed] = sync_all(engine, settings_for(sim, db_url))
    assert not failed.ok
    later = datetime.now(UTC) + timedelta(minutes=20)

    [row] = source_status(engine, overdue_after=15 * 60, now=later)

    assert row["last_status"] == "failed" and "rejected" in row["error"]
    assert row["overdue"] is True  # the last *success* is 20 minutes old
    [row] = source_status(engine, overdue_after=30 * 60, now=later)
    assert row["overdue"] is False


def test_a_configured_source_that_never_synced_is_overdue(status, engine, db_url, tmp_path):
    add_run(engine, CLUSTER, "succeeded", timedelta(seconds=0))
    config = tmp_path / "jobsync.toml"
    config.write_text(
        f'[[sources]]\ncluster_id = "{CLUSTER}"\n\n[[sources]]\ncluster_id = "in01-never"\n'
    )

    result = status("--db", db_url, "--config", str(config), "--format", "json")

    assert result.exit_code == 1
    rows = {r["source"]: r for r in json.loads(result.output)}
    assert rows["in01-never"] == {
        "source": "in01-never",
        "last_status": None,
        "last_started_at": None,
        "age": None,
        "age_seconds": None,
        "last_success_at": None,
        "overdue": True,
        "error": None,
        "notify_pending": 0,
        "notify_failed": 0,
        "notify_error": None,
    }
    assert rows[CLUSTER]["overdue"] is False


def test_the_latest_pass_is_the_one_shown(engine):
    add_run(engine, CLUSTER, "succeeded", timedelta(minutes=10), now=NOW)
    add_run(engine, CLUSTER, "failed", timedelta(minutes=5), error="boom", now=NOW)

    [row] = source_status(engine, overdue_after=3600, now=NOW)

    assert (row["last_status"], row["age"], row["age_seconds"], row["error"]) == (
        "failed",
        "5m00s",
        300,
        "boom",
    )
    assert row["last_success_at"] == NOW - timedelta(minutes=10)
    assert row["overdue"] is False


def test_a_database_without_passes_exits_1_with_one_line(status, db_url):
    engine = open_engine(db_url)
    upgrade(engine)
    engine.dispose()

    result = status("--db", db_url)

    assert result.exit_code == 1
    assert result.output.startswith("Error: no sync passes recorded")


def test_a_database_without_schema_exits_1(status, tmp_path):
    result = status("--db", f"sqlite:///{tmp_path / 'empty.db'}")
    assert result.exit_code == 1
    assert "no jobsync schema" in result.output


@pytest.mark.parametrize("bad", ["15", "fast", "-5m", "0s"])
def test_a_bad_threshold_is_a_usage_error(status, tmp_path, bad):
    result = status("--db", f"sqlite:///{tmp_path / 'x.db'}", "--overdue-after", bad)
    assert result.exit_code == 2
    assert "--overdue-after" in result.output


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0, "0s"), (59.9, "59s"), (60, "1m00s"), (3599, "59m59s"), (7260, "2h01m"), (90000, "1d01h")],
)
def test_ages_are_short(seconds, shown):
    assert format_age(seconds) == shown
