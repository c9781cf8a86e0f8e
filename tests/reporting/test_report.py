"""``jobsync report``: every report on both databases, against one hand-written history.

The history (times UTC, NOW = 2024-05-10 12:00; "ws" is a transition's window_start):

    c1 j1 alpha  first_seen Pending   ws 05-09 09:00 at 05-09 10:00; Completed ws 11:00 at 12:00
    c1 j2 alpha  first_seen Importing ws 05-09 10:00 at 05-09 11:00; Completed ws 05-10 08:00 at 09:00
    c1 j3 alpha  first_seen Pending   ws 05-10 06:00 at 07:00; Failed ws 08:00 at 09:00 (x1 reason)
    c1 j4 beta   first_seen Pending   ws unknown at 05-01 00:00; Failed ws 05-10 10:00 at 11:00 (y22)
    c1 j5 beta   first_seen Pending   ws 05-10 08:30 at 09:30; still Pending
    c1 j6 alpha  first_seen Importing ws 05-10 10:00 at 11:00; still Importing
    c1 j7 alpha  first_seen Pending   ws 04-20 00:00 at 01:00; Completed ws 02:00 at 03:00 (old)
    c1 j8 beta   first_seen Importing ws 05-10 05:00 at 06:00; vanished at 11:50
    c2 j9 alpha  first_seen Pending   ws 05-10 00:00 at 01:00; Failed ws 02:00 at 03:00 (quoted)
    c2 j10 beta  first_seen Pending   ws 05-09 14:00 at 15:00; Failed ws 22:00 at 23:00 (reason only
                 on the job's row, not on its transition)

Estimated durations (midpoint to midpoint): j1 2h, j2 22h, j3 2h, j4 unknown, j9 2h, j10 8h.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from jobsync.cli import cli
from jobsync.cli import report as cli_report
from jobsync.reporting import report
from jobsync.reporting.report_text import format_seconds, normalise_reason
from jobsync.storage.migrate import upgrade
from jobsync.storage.refacts import rebuild
from jobsync.storage.schema import (
    import_job_transitions,
    sync_runs,
    sync_sources,
)
from jobsync.storage.store import open_engine
from jobsync.storage.views import daily_job_stats
from tests.conftest import insert_job_record

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
DAY = 86400.0
H = 3600.0
X1 = "file s3://b/x1.parquet not found"
Y22 = "file s3://b/y22.parquet not found"
ZZ9 = "File s3://c/ZZ9.parquet not found"
QUOTED = "Collection 'alpha' does not exist"


def at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=UTC)


# One row per transition, job by job, in the order they are written.
# (cluster, job, collection, kind, to_state, window_start, observed_at, transition reason)
TRANSITIONS = [
    ("c1", "j1", "alpha", "first_seen", "Pending", at(5, 9, 9), at(5, 9, 10), None),
    ("c1", "j1", "alpha", "change", "Completed", at(5, 9, 11), at(5, 9, 12), None),
    ("c1", "j2", "alpha", "first_seen", "Importing", at(5, 9, 10), at(5, 9, 11), None),
    ("c1", "j2", "alpha", "change", "Completed", at(5, 10, 8), at(5, 10, 9), None),
    ("c1", "j3", "alpha", "first_seen", "Pending", at(5, 10, 6), at(5, 10, 7), None),
    ("c1", "j3", "alpha", "change", "Failed", at(5, 10, 8), at(5, 10, 9), X1),
    ("c1", "j4", "beta", "first_seen", "Pending", None, at(5, 1, 0), None),
    ("c1", "j4", "beta", "change", "Failed", at(5, 10, 10), at(5, 10, 11), Y22),
    ("c1", "j5", "beta", "first_seen", "Pending", at(5, 10, 8, 30), at(5, 10, 9, 30), None),
    ("c1", "j6", "alpha", "first_seen", "Importing", at(5, 10, 10), at(5, 10, 11), None),
    ("c1", "j7", "alpha", "first_seen", "Pending", at(4, 20, 0), at(4, 20, 1), None),
    ("c1", "j7", "alpha", "change", "Completed", at(4, 20, 2), at(4, 20, 3), None),
    ("c1", "j8", "beta", "first_seen", "Importing", at(5, 10, 5), at(5, 10, 6), None),
    ("c1", "j8", "beta", "vanished", None, at(5, 10, 11, 40), at(5, 10, 11, 50), None),
    ("c2", "j9", "alpha", "first_seen", "Pending", at(5, 10, 0), at(5, 10, 1), None),
    ("c2", "j9", "alpha", "change", "Failed", at(5, 10, 2), at(5, 10, 3), QUOTED),
    ("c2", "j10", "beta", "first_seen", "Pending", at(5, 9, 14), at(5, 9, 15), None),
    ("c2", "j10", "beta", "change", "Failed", at(5, 9, 22), at(5, 9, 23), None),
]
# The reason on the job's row; j10's is only there, not on its transition.
JOB_REASONS = {("c1", "j3"): X1, ("c1", "j4"): Y22, ("c2", "j9"): QUOTED, ("c2", "j10"): ZZ9}


def _history():
    """(cluster, job, collection, [(kind, to_state, window_start, observed_at, reason)], job
    reason) per job, from TRANSITIONS."""
    jobs: dict[tuple[str, str, str], list] = {}
    for cluster, job, collection, *transition in TRANSITIONS:
        jobs.setdefault((cluster, job, collection), []).append(tuple(transition))
    return [
        (cluster, job, collection, transitions, JOB_REASONS.get((cluster, job)))
        for (cluster, job, collection), transitions in jobs.items()
    ]


HISTORY = _history()
LAST_SNAPSHOT = {"c1": at(5, 10, 11, 50), "c2": at(5, 10, 11, 55)}


def write_history(engine) -> None:
    with engine.begin() as conn:
        runs = {}
        for cluster, snapshot in LAST_SNAPSHOT.items():
            runs[cluster] = conn.execute(
                insert(sync_runs)
                .values(
                    cluster_id=cluster,
                    started_at=snapshot - timedelta(seconds=5),
                    finished_at=snapshot,
                    status="succeeded",
                    complete=True,
                )
                .returning(sync_runs.c.id)
            ).scalar_one()
            conn.execute(
                insert(sync_sources).values(
                    cluster_id=cluster,
                    last_run_id=runs[cluster],
                    last_snapshot_started_at=snapshot - timedelta(seconds=5),
                    last_snapshot_at=snapshot,
                    last_complete_run_id=runs[cluster],
                    last_complete_started_at=snapshot - timedelta(seconds=5),
                )
            )
        for cluster, job, collection, transitions, reason in HISTORY:
            state, since, finished, vanished, previous = None, None, None, None, None
            for kind, to_state, window_start, observed, why in transitions:
                conn.execute(
                    insert(import_job_transitions).values(
                        cluster_id=cluster,
                        job_id=job,
                        kind=kind,
                        from_state=previous,
                        to_state=to_state,
                        raw_from_state=previous,
                        raw_to_state=to_state,
                        window_start=window_start,
                        observed_at=observed,
                        sync_run_id=runs[cluster],
                        reason=why,
                    )
                )
                if kind == "vanished":
                    vanished = observed
                    continue
                state, since, previous = to_state, observed, to_state
                if to_state in ("Completed", "Failed"):
                    finished = observed
            listed = vanished is None
            last_seen = LAST_SNAPSHOT[cluster] if listed else at(5, 10, 11, 40)
            insert_job_record(
                conn,
                cluster_id=cluster,
                job_id=job,
                state=state,
                seen_at=last_seen,
                collection_name=collection,
                raw_state=state,
                progress=None,
                reason=reason,
                first_seen_at=transitions[0][3],
                state_since=since,
                last_seen_started_at=last_seen - timedelta(seconds=5),
                finished_at=finished,
                vanished_at=vanished,
                listed=listed,
                missed_snapshots=0 if listed else 2,
            )
        # History written by hand: its facts come from it, as revision 0009 derives them.
        rebuild(conn)


@pytest.fixture
def history(db_url):
    engine = open_engine(db_url)
    upgrade(engine)
    write_history(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def run(monkeypatch, tmp_path):
    for name in ("JOBSYNC_DATABASE_URL", "JOBSYNC_CONFIG", "JOBSYNC_CLUSTER_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_report, "clock", lambda: NOW)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["report", *args], catch_exceptions=False)

    return invoke


def by_key(rows, *keys):
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: row for row in rows}


# -- summary ------------------------------------------------------------------------------


def test_summary_counts_jobs_first_seen_or_finished_in_the_period(history):
    rows = by_key(report.summary(history, since=7 * DAY, now=NOW), "cluster_id", "collection_name")

    assert list(rows) == [("c1", "alpha"), ("c1", "beta"), ("c2", "alpha"), ("c2", "beta")]
    # j7 finished before the period: left out. j4 was first seen before it but failed in it.
    assert rows["c1", "alpha"] == {
        "cluster_id": "c1",
        "collection_name": "alpha",
        "jobs": 4,
        "backlog_jobs": 0,
        "pending": 0,
        "importing": 1,
        "completed": 2,
        "failed": 1,
        "unknown": 0,
        "failure_rate": 0.3333,
        "duration_jobs": 3,
        "p50_seconds": 2 * H,
        "p90_seconds": 22 * H,
        "p95_seconds": 22 * H,
    }
    beta = rows["c1", "beta"]
    assert (beta["jobs"], beta["pending"], beta["importing"], beta["failed"]) == (3, 1, 1, 1)
    assert beta["failure_rate"] == 1.0
    assert beta["p50_seconds"] is None and beta["p90_seconds"] is None  # j4's start is unknown
    assert (beta["backlog_jobs"], beta["duration_jobs"]) == (1, 0)
    assert rows["c2", "beta"]["p50_seconds"] == rows["c2", "beta"]["p90_seconds"] == 8 * H


def test_summary_since_narrows_the_period_and_filters_apply(history):
    rows = report.summary(history, since=20 * H, now=NOW, cluster_ids=["c1"], collections=["alpha"])

    # From 05-09 16:00: j1 (seen 10:00, finished 12:00) drops out; j2 finished in the period.
    assert len(rows) == 1
    row = rows[0]
    assert (row["jobs"], row["importing"], row["completed"], row["failed"]) == (3, 1, 1, 1)
    assert (row["p50_seconds"], row["p90_seconds"]) == (2 * H, 22 * H)
    assert row["failure_rate"] == 0.5


def test_report_summary_command_in_json_csv_and_table(history, db_url, run):
    as_json = run("summary", "--db", db_url, "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.output)
    assert [r["jobs"] for r in rows] == [4, 3, 1, 1]
    assert rows[0]["p90_seconds"] == 79200.0 and rows[0]["failure_rate"] == 0.3333

    as_csv = run("summary", "--db", db_url, "--format", "csv", "--cluster-id", "c2")
    parsed = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [(r["collection_name"], r["failed"], r["p50_seconds"]) for r in parsed] == [
        ("alpha", "1", "7200.0"),
        ("beta", "1", "28800.0"),
    ]
    assert list(parsed[0]) == list(report.SUMMARY_COLUMNS)

    table = run("summary", "--db", db_url, "--since", "7d").output.splitlines()
    assert table[0].split() == [
        "cluster_id",
        "collection_name",
        "jobs",
        "backlog_jobs",
        "pending",
        "importing",
        "completed",
        "failed",
        "unknown",
        "failure_rate",
        "duration_jobs",
        "p50",
        "p90",
        "p95",
    ]
    assert table[2].split() == [
        *("c1", "alpha", "4", "0", "0", "1", "2", "1", "0", "33.3%", "3", "2h", "22h", "22h")
    ]


# -- durations ----------------------------------------------------------------------------


def test_durations_lists_finished_jobs_newest_first_with_bounds(history):
    rows = report.durations(history, since=7 * DAY, now=NOW)

    assert [r["job_id"] for r in rows] == ["j4", "j2", "j3", "j9", "j10", "j1"]
    j1 = rows[-1]
    assert (j1["min_seconds"], j1["estimated_seconds"], j1["max_seconds"]) == (H, 2 * H, 3 * H)
    assert j1["created_at"] == at(5, 9, 10) and j1["finished_at"] == at(5, 9, 12)
    j4 = rows[0]
    assert j4["final_state"] == "Failed"
    assert (j4["min_seconds"], j4["estimated_seconds"], j4["max_seconds"]) == (
        9 * DAY + 10 * H,
        None,
        None,
    )


def test_report_durations_command_filters_and_formats(history, db_url, run):
    out = run(
        "durations",
        "--db",
        db_url,
        "--collection",
        "alpha",
        "--cluster-id",
        "c1",
        "--limit",
        "2",
        "--format",
        "csv",
    ).output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [
        (r["job_id"], r["min_seconds"], r["estimated_seconds"], r["max_seconds"]) for r in rows
    ] == [
        ("j2", "75600.0", "79200.0", "82800.0"),
        ("j3", "3600.0", "7200.0", "10800.0"),
    ]
    assert rows[0]["finished_at"] == "2024-05-10T09:00:00Z"

    table = run("durations", "--db", db_url, "--since", "1d", "--cluster-id", "c1").output
    lines = table.splitlines()
    assert lines[0].split()[-4:] == ["min", "estimated", "max", "backlog"]
    assert lines[3].split()[-4:] == ["21h", "22h", "23h", "no"]  # j2
    assert lines[2].split()[-1] == "yes"  # j4
    assert "9d 10h" in lines[2]  # j4: only a lower bound


# -- failures -----------------------------------------------------------------------------


def test_failures_group_normalised_reasons_and_keep_the_latest_example(history):
    rows = report.failures(history, since=7 * DAY, now=NOW)

    assert rows == [
        {
            "reason": "file <url> not found",
            "jobs": 3,
            "collections": "alpha, beta",
            "last_seen_at": at(5, 10, 11),
            "example": Y22,
        },
        {
            "reason": "collection <str> does not exist",
            "jobs": 1,
            "collections": "alpha",
            "last_seen_at": at(5, 10, 3),
            "example": QUOTED,
        },
    ]


def test_report_failures_command_since_and_json(history, db_url, run):
    rows = json.loads(run("failures", "--db", db_url, "--since", "12h", "--format", "json").output)
    # Since 05-10 00:00: j10 (05-09 23:00) drops out of the file group.
    assert [(r["reason"], r["jobs"], r["last_seen_at"]) for r in rows] == [
        ("file <url> not found", 2, "2024-05-10T11:00:00Z"),
        ("collection <str> does not exist", 1, "2024-05-10T03:00:00Z"),
    ]
    assert (
        len(json.loads(run("failures", "--db", db_url, "--limit", "1", "--format", "json").output))
        == 1
    )


@pytest.mark.parametrize(
    ("raw", "shape"),
    [
        (X1, "file <url> not found"),
        (Y22, "file <url> not found"),
        ("File 'data/part-0001.parquet' not found", "file <path> not found"),
        (
            "failed to read /tmp/a/b.json: row 12 has 3 fields.",
            "failed to read <path>: row <n> has <n> fields",
        ),
        (
            "the dimension of field 'vector' (768) does not match the schema (1024)",
            "the dimension of field <str> (<n>) does not match the schema (<n>)",
        ),
        ("job 448761313698322011 lost segment 4487abc9f1e2", "job <n> lost segment <id>"),
        ("task 123e4567-e89b-12d3-a456-426614174000 died", "task <id> died"),
        ("cluster in01-0123456789abcdef is out of capacity", "cluster <id> is out of capacity"),
        ("Timeout after 30.5s", "timeout after <n>s"),
        ("GET https://x.example.com/a?b=1 returned 503", "get <url> returned <n>"),
        ('bad row in "C:/data/x.csv"', "bad row in <path>"),
        ("access denied on s3 bucket", "access denied on s3 bucket"),
        ("utf-8 decode error", "utf-8 decode error"),
        ("  spaced \t out  ", "spaced out"),
        ("", "(no reason given)"),
        (None, "(no reason given)"),
    ],
)
def test_normalise_reason(raw, shape):
    assert normalise_reason(raw) == shape


# -- trend --------------------------------------------------------------------------------


def test_trend_has_every_day_and_recomputes_percentiles_across_clusters(history):
    rows = report.trend(history, days=3, now=NOW)

    assert rows == [
        {
            "day": "2024-05-08",
            "first_seen": 0,
            "new_jobs": 0,
            "backlog_jobs": 0,
            "completed": 0,
            "failed": 0,
            "backlog_completed": 0,
            "backlog_failed": 0,
            "failure_rate": None,
            "duration_jobs": 0,
            "p50_seconds": None,
            "p90_seconds": None,
            "p95_seconds": None,
        },
        {
            "day": "2024-05-09",
            "first_seen": 3,
            "new_jobs": 3,
            "backlog_jobs": 0,
            "completed": 1,
            "failed": 1,
            "backlog_completed": 0,
            "backlog_failed": 0,
            "failure_rate": 0.5,
            "duration_jobs": 2,
            "p50_seconds": 2 * H,
            "p90_seconds": 8 * H,
            "p95_seconds": 8 * H,
        },
        {
            # j4, first seen with the backlog before these days, failed on this one: a failure
            # of the day, with no duration to count.
            "day": "2024-05-10",
            "first_seen": 5,
            "new_jobs": 5,
            "backlog_jobs": 0,
            "completed": 1,
            "failed": 3,
            "backlog_completed": 0,
            "backlog_failed": 1,
            "failure_rate": 0.75,
            "duration_jobs": 3,
            "p50_seconds": 2 * H,
            "p90_seconds": 22 * H,
            "p95_seconds": 22 * H,
        },
    ]


def test_trend_p50_agrees_with_daily_job_stats_for_one_cluster_and_collection(history):
    rows = report.trend(history, days=2, now=NOW, cluster_ids=["c1"], collections=["alpha"])
    with history.connect() as conn:
        view = {
            r.day.isoformat(): r
            for r in conn.execute(
                select(daily_job_stats).where(
                    daily_job_stats.c.cluster_id == "c1",
                    daily_job_stats.c.collection_name == "alpha",
                )
            )
        }
    for row in rows:
        assert row["p50_seconds"] == view[row["day"]].p50_seconds
        assert row["p90_seconds"] == view[row["day"]].p90_seconds
    assert [r["p50_seconds"] for r in rows] == [2 * H, 2 * H]


def test_report_trend_command_csv_and_table(history, db_url, run):
    out = run("trend", "--db", db_url, "--days", "2", "--cluster-id", "c1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [
        (r["day"], r["first_seen"], r["completed"], r["failed"], r["failure_rate"]) for r in rows
    ] == [
        ("2024-05-09", "2", "1", "0", "0.0"),
        ("2024-05-10", "4", "1", "2", "0.6667"),
    ]
    table = run("trend", "--db", db_url, "--days", "14").output.splitlines()
    assert len(table) == 2 + 14
    assert table[0].split() == [
        *("day", "first_seen", "new_jobs", "backlog_jobs", "completed", "failed"),
        *("backlog_completed", "backlog_failed", "failure_rate", "duration_jobs"),
        *("p50", "p90", "p95"),
    ]
    assert table[-1].split() == [
        *("2024-05-10", "5", "5", "0", "1", "3", "0", "1", "75.0%", "3", "2h", "22h", "22h")
    ]
    assert table[2].split() == ["2024-04-27", "0", "0", "0", "0", "0", "0", "0", "0"]


# -- stuck --------------------------------------------------------------------------------


def test_stuck_measures_time_in_state_to_now(history):
    rows = report.stuck(history, older_than=2 * H, now=NOW)

    assert [(r["cluster_id"], r["job_id"], r["seconds_in_state"]) for r in rows] == [
        ("c1", "j5", 2.5 * H)
    ]
    # "Longer than": exactly two hours in the state is not stuck yet.
    assert report.stuck(history, older_than=2 * H, now=at(5, 10, 11, 30)) == []
    # j8 vanished: no longer active, never stuck.
    later = report.stuck(history, older_than=H, now=at(5, 12, 0))
    assert {r["job_id"] for r in later} == {"j5", "j6"}


def test_report_stuck_exits_3_when_a_job_is_stuck_and_0_otherwise(history, db_url, run):
    stuck = run("stuck", "--db", db_url, "--older-than", "2h", "--format", "json")
    assert stuck.exit_code == 3, stuck.output
    [row] = json.loads(stuck.output)
    assert row["job_id"] == "j5" and row["seconds_in_state"] == 9000.0

    table = run("stuck", "--db", db_url)
    assert table.exit_code == 3
    assert table.output.splitlines()[0].split()[-1] == "in_state"
    assert table.output.splitlines()[2].split()[-1] == "30m"  # "2h 30m"

    fine = run("stuck", "--db", db_url, "--older-than", "3h")
    assert fine.exit_code == 0 and fine.output.strip() == "(no rows)"
    assert run("stuck", "--db", db_url, "--cluster-id", "c2").exit_code == 0


# -- errors -------------------------------------------------------------------------------


def test_a_database_without_schema_is_one_clear_line(db_url, run):
    result = CliRunner().invoke(cli, ["report", "summary", "--db", db_url])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("Error: ") and "no jobsync schema" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "command", [["report", "stuck"], ["jobs"], ["history", "1"]], ids=lambda c: " ".join(c)
)
def test_a_schema_behind_head_names_jobsync_db_upgrade(db_url, run, command):
    engine = open_engine(db_url)
    upgrade(engine, "0003")
    engine.dispose()

    result = CliRunner().invoke(cli, [*command, "--db", db_url])

    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "revision 0003" in result.output and "`jobsync db upgrade`" in result.output


def test_a_bad_duration_is_a_usage_error(run):
    result = CliRunner().invoke(cli, ["report", "summary", "--since", "soon"])

    assert result.exit_code == 2
    assert "--since" in result.output


# -- presentation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (None, ""),
        (0, "0s"),
        (0.256, "0.26s"),
        (45, "45s"),
        (725, "12m 05s"),
        (3720, "1h 02m"),
        (7200, "2h"),
        (86399, "23h 59m"),
        (187200, "2d 04h"),
        (7 * DAY, "7d"),
    ],
)
def test_format_seconds(seconds, shown):
    assert format_seconds(seconds) == shown


def test_nearest_rank_percentiles():
    assert report.nearest_rank([], 50) is None
    assert report.nearest_rank([5.0], 90) == 5.0
    values = [float(v) for v in range(1, 11)]
    assert (report.nearest_rank(values, 50), report.nearest_rank(values, 90)) == (5.0, 9.0)
    assert report.nearest_rank([3.0, 1.0, 2.0], 50) == 2.0
