"""`jobsync demo`, the one-command tour, run as a user would."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

from click.testing import CliRunner
from sqlalchemy import text

from jobsync.cli import cli
from jobsync.reporting.tour import tour_report
from jobsync.service.demo import run_demo, simulate_history
from jobsync.storage.dashboard import FAILURE_RATE_PER_DAY, STUCK_JOBS, run_dashboard_query
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine


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


def test_demo_fills_two_weeks_of_days_with_enough_jobs_per_collection(tmp_path):
    # The history ends at a fixed moment: arrivals follow the hour and the weekday, so a demo
    # ending at the real now draws a different history each time it runs.
    now = datetime(2024, 5, 8, 15, 20, tzinfo=UTC)
    db_file = tmp_path / "jobsync-demo.db"

    run_demo(str(db_file), report=tour_report, jobs=60, rounds=28, now=now)

    db = sqlite3.connect(db_file)
    days = [d for (d,) in db.execute("SELECT DISTINCT day FROM daily_job_stats ORDER BY day")]
    assert days == [(now.date() - timedelta(days=13 - n)).isoformat() for n in range(14)]
    runs = db.execute("SELECT count(*) FROM sync_runs").fetchone()[0]
    assert runs == 28 * 2
    # Every collection's durations rest on jobs whose start a pass saw (first seen Pending or
    # Importing after the first pass: with two passes a day, many jobs start and finish
    # between two of them, and count with the backlog).
    observed = dict(
        db.execute(
            "SELECT collection_name, count(*) FROM job_durations"
            " WHERE is_finished = 1 AND backlog = 0 AND estimated_seconds IS NOT NULL"
            " GROUP BY collection_name"
        )
    )
    assert len(observed) == 8 and min(observed.values()) >= 3, observed
    assert sum(observed.values()) >= 40, observed
    # The first day holds the backlog: far more jobs first seen than any later day.
    first_seen = [
        n
        for (n,) in db.execute(
            "SELECT SUM(jobs_first_seen) FROM daily_job_stats GROUP BY day ORDER BY day"
        )
    ]
    assert first_seen[0] > 3 * max(first_seen[1:])


def test_the_simulated_history_has_an_incident_and_stuck_jobs(tmp_path):
    end = datetime(2024, 5, 8, 15, 20, tzinfo=UTC)
    engine = open_engine(f"sqlite:///{tmp_path / 'h.db'}")
    upgrade(engine)
    history = simulate_history(engine, jobs=60, days=7, rounds=7 * 4, end=end)
    rates = run_dashboard_query(engine, FAILURE_RATE_PER_DAY)
    stuck = run_dashboard_query(engine, STUCK_JOBS)
    with engine.connect() as conn:
        started = conn.execute(text("SELECT min(started_at), max(started_at) FROM sync_runs")).one()
        daily = conn.execute(
            text(
                "SELECT day, SUM(completed) + SUM(failed), SUM(failed) FROM daily_job_stats"
                " GROUP BY day HAVING SUM(completed) + SUM(failed) > 0 ORDER BY day"
            )
        ).all()
    engine.dispose()

    assert history.rounds == 28
    assert history.first == datetime(2024, 5, 2, tzinfo=UTC)
    assert started[0].startswith("2024-05-02 00:00") and started[1].startswith("2024-05-08 15:2")
    assert rates and all(0 <= r["failure_rate"] <= 1 for r in rates)
    # The incident, two days before the end's day, in all finishes after the first day (the
    # dashboard's rate leaves out jobs first seen already failed, as most of the incident's are:
    # their start was not observed).
    worst = max(daily[1:], key=lambda r: r[2] / r[1])
    assert worst[0] == "2024-05-06"
    # The three jobs held from 20 h before the end, and perhaps a slow one.
    assert len(stuck) >= 3
    assert all(r["state"] in ("Pending", "Importing") for r in stuck)
