"""`jobsync demo`, the one-command tour, run as a user would."""

from __future__ import annotations

import sqlite3

from click.testing import CliRunner

from jobsync.cli import cli


def test_demo_writes_a_sqlite_file_and_prints_a_summary(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(cli, ["demo", "--jobs", "60", "--rounds", "3"])

    assert result.exit_code == 0, result.output
    assert "Jobs per state:" in result.output
    assert "Transitions recorded:" in result.output
    assert result.output.count("History of job") == 2
    db = sqlite3.connect(tmp_path / "jobsync-demo.db")
    kinds = dict(db.execute("SELECT kind, count(*) FROM import_job_transitions GROUP BY kind"))
    jobs = db.execute("SELECT count(*) FROM import_jobs").fetchone()[0]
    assert kinds["first_seen"] == jobs >= 120
    assert kinds["change"] > 0
    # Every change window is a real interval that ends when a later pass saw the change.
    bad = db.execute(
        "SELECT count(*) FROM import_job_transitions WHERE window_start >= observed_at"
    ).fetchone()[0]
    assert bad == 0


def test_demo_starts_over_when_run_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    runner.invoke(cli, ["demo", "--jobs", "20", "--rounds", "2"])
    again = runner.invoke(cli, ["demo", "--jobs", "20", "--rounds", "2"])

    assert again.exit_code == 0, again.output
    db = sqlite3.connect(tmp_path / "jobsync-demo.db")
    assert db.execute("SELECT count(*) FROM sync_runs").fetchone()[0] == 2 * 2
