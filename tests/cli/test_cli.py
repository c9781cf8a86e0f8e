"""The command line: exit codes, one-line errors, precedence, on both databases."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from jobsync.cli import cli
from jobsync.cli.common import GC_THRESHOLD
from jobsync.simulator import Fault
from jobsync.storage.migrate import head_revision, upgrade
from jobsync.storage.schema import import_job_records, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, sync_args


@pytest.fixture
def run(monkeypatch, tmp_path):
    for name in (
        "JOBSYNC_DATABASE_URL",
        "JOBSYNC_API_KEY",
        "ZILLIZ_API_KEY",
        "JOBSYNC_API_KEY_FILE",
        "JOBSYNC_BASE_URL",
        "JOBSYNC_CLUSTER_ID",
        "JOBSYNC_CONFIG",
        "JOBSYNC_PAGE_SIZE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def test_sync_creates_the_database_and_exits_0(run, sim, db_url):
    result = run(*sync_args(sim, db_url), env={"JOBSYNC_API_KEY": API_KEY})

    assert result.exit_code == 0, result.output
    assert f"{CLUSTER}: 50 jobs" in result.output
    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_job_records)).scalar() == 50
    engine.dispose()


def test_page_size_500_is_a_usage_error_before_any_request(run, sim, db_url):
    result = run(*sync_args(sim, db_url), "--page-size", "500", env={"JOBSYNC_API_KEY": API_KEY})

    assert result.exit_code == 2
    assert "--page-size" in result.output and "500" in result.output
    assert sim.request_count == 0


def test_page_size_from_the_environment_is_checked_too(run, sim, db_url):
    result = run(
        *sync_args(sim, db_url), env={"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_PAGE_SIZE": "0"}
    )

    assert result.exit_code == 2
    assert sim.request_count == 0


def test_rejected_key_exits_1_with_one_clear_line_and_one_request(run, sim, db_url):
    sim.add_fault(Fault(status=200, code=80001))

    result = run(*sync_args(sim, db_url), env={"JOBSYNC_API_KEY": "wrong-key-123"})

    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1
    assert "API key was rejected" in errors[0]
    assert "wrong-key-123" not in result.output
    assert sim.request_count == 1


def test_503_forever_exits_1_and_records_a_failed_run(run, sim, db_url, monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("jobsync.api.client.time.sleep", slept.append)
    sim.add_fault(Fault(status=503))
    env = {"JOBSYNC_API_KEY": API_KEY}

    result = run(*sync_args(sim, db_url), env=env)

    assert result.exit_code == 1
    assert "503" in result.output
    assert len(slept) == 5 and all(0 <= s <= 60 for s in slept)  # bounded retries, backed off
    assert sim.request_count == 6
    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalars().all() == ["failed"]
        assert conn.execute(select(func.count()).select_from(import_job_records)).scalar() == 0
    engine.dispose()


def test_sync_refuses_a_database_whose_schema_is_behind(run, sim, db_url):
    engine = open_engine(db_url)
    upgrade(engine, "0001")
    engine.dispose()

    result = run(*sync_args(sim, db_url), env={"JOBSYNC_API_KEY": API_KEY})

    assert result.exit_code == 1
    assert "jobsync db upgrade" in result.output
    assert sim.request_count == 0


def test_db_upgrade_then_current_reports_head(run, db_url):
    first = run("db", "upgrade", "--db", db_url)
    again = run("db", "upgrade", "--db", db_url)
    current = run("db", "current", "--db", db_url)

    assert first.exit_code == 0 and "upgraded" in first.output
    assert again.exit_code == 0 and "already" in again.output
    assert current.output.strip() == f"{head_revision()} (head)"


def test_missing_api_key_is_a_config_error(run, sim, db_url):
    result = run(*sync_args(sim, db_url))

    assert result.exit_code == 2
    assert "JOBSYNC_API_KEY" in result.output
    assert sim.request_count == 0


def test_plain_http_to_a_remote_host_is_refused(run, db_url):
    result = run(
        "sync",
        "--db",
        db_url,
        "--base-url",
        "http://api.example.com",
        "--cluster-id",
        CLUSTER,
        env={"JOBSYNC_API_KEY": API_KEY},
    )
    assert result.exit_code == 2
    assert "https://" in result.output


def test_zilliz_api_key_is_the_fallback_variable(run, sim, db_url):
    result = run(*sync_args(sim, db_url), env={"ZILLIZ_API_KEY": API_KEY})
    assert result.exit_code == 0, result.output


def test_cluster_ids_from_the_environment_are_comma_separated(run, sim, db_url):
    env = {"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CLUSTER_ID": f"{CLUSTER}, {CLUSTER}"}
    result = run("sync", "--db", db_url, "--base-url", sim.url, env=env)
    assert result.exit_code == 0, result.output
    assert result.output.count(f"{CLUSTER}:") == 1


def test_option_beats_environment_beats_config_file(run, sim, tmp_path, db_url):
    other = tmp_path / "from-file.db"
    (tmp_path / "jobsync.toml").write_text(f'database_url = "sqlite:///{other}"\npage_size = 7\n')
    env = {"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_DATABASE_URL": db_url}

    result = run("sync", "--base-url", sim.url, "--cluster-id", CLUSTER, env=env)

    assert result.exit_code == 0, result.output
    assert not other.exists()  # the environment beat the file
    lists = [r for r in sim.requests if r.path.endswith("/list")]  # not the progress requests
    assert {r.body.get("pageSize") for r in lists} == {7}  # the file beat the default
    result = run(*sync_args(sim, db_url), "--page-size", "9", env=env)
    lists = [r for r in sim.requests if r.path.endswith("/list")]
    assert {r.body.get("pageSize") for r in lists[-1:]} == {9}


def test_jobs_and_history_print_what_sync_stored(run, sim, db_url):
    run(*sync_args(sim, db_url), env={"JOBSYNC_API_KEY": API_KEY})
    job = sim.jobs(CLUSTER)[0]

    as_csv = run("jobs", "--db", db_url, "--format", "csv")
    as_json = run("jobs", "--db", db_url, "--format", "json", "--state", "Completed")
    table = run("history", job.job_id, "--db", db_url)

    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(rows) == 50 and {r["cluster_id"] for r in rows} == {CLUSTER}
    completed = json.loads(as_json.output)
    assert completed and {r["state"] for r in completed} == {"Completed"}
    assert table.exit_code == 0 and "first_seen" in table.output
    assert list(rows[0])[-2:] == ["progress", "reason"]


def test_jobs_show_why_a_job_failed(run, sim, db_url):
    # The list gives no reasons: the progress request a job's failure prompts does.
    env = {"JOBSYNC_API_KEY": API_KEY}
    run(*sync_args(sim, db_url), env=env)
    failed = next(job for job in sim.jobs(CLUSTER) if job.state not in ("Completed", "Failed"))
    sim.set_state(CLUSTER, failed.job_id, "Failed", reason="file not found: part-7.parquet")
    run(*sync_args(sim, db_url), env=env)

    shown = json.loads(run("jobs", "--db", db_url, "--format", "json", "--state", "Failed").output)

    assert {r["job_id"]: r["reason"] for r in shown}[failed.job_id] == (
        "file not found: part-7.parquet"
    )


def test_history_of_an_unknown_job_exits_1(run, sim, db_url):
    run(*sync_args(sim, db_url), env={"JOBSYNC_API_KEY": API_KEY})
    result = run("history", "no-such-job", "--db", db_url)
    assert result.exit_code == 1
    assert result.output.startswith("Error: no job 'no-such-job'")


def test_errors_are_one_line_without_traceback(run, tmp_path):
    result = run(
        "sync", "--db", "mysql://nope", "--cluster-id", CLUSTER, env={"JOBSYNC_API_KEY": "k"}
    )
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and result.output.startswith("Error:")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["sync", "--page-size", "abc"], "jobsync sync"),
        (["--bogus"], "jobsync"),
        (["nosuch"], "jobsync"),
        (["db", "nosuch"], "jobsync db"),
        (["db", "prune", "--keep", "-5d"], "jobsync db prune"),
        (["daemon", "--every", "1s", "--cron", "* * * * *", "--cluster-id", "x"], "jobsync daemon"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_usage_errors_are_one_line_naming_where_help_is(run, args, where):
    result = CliRunner().invoke(cli, args, env={"JOBSYNC_API_KEY": "k"}, prog_name="jobsync")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert result.output.rstrip().endswith(f"(see '{where} --help')")


def test_a_group_without_its_command_still_shows_its_help(run):
    result = run("report")
    assert result.exit_code in (0, 2)  # click 8.2 on: 2
    assert "Commands:" in result.output and "summary" in result.output


@pytest.mark.parametrize(
    "command",
    [["jobs"], ["history", "1"], ["status"], ["report", "summary"], ["report", "html", "-o", "-"]],
    ids=lambda c: " ".join(c),
)
def test_reading_a_missing_sqlite_file_is_one_line_and_creates_nothing(tmp_path, command):
    missing = tmp_path / "typo.db"

    result = CliRunner().invoke(cli, [*command, "--db", f"sqlite:///{missing}"])

    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1
    assert "no such file" in result.output and "`jobsync sync`" in result.output
    assert not missing.exists()


def test_starting_the_cli_imports_no_http_client():
    # Commands that only read the database should not pay for requests and urllib3.
    script = "import sys, jobsync.cli; print(sorted({'requests', 'urllib3'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_console_script_collects_garbage_less_often_and_freezes_the_imports(tmp_path, sim):
    # Only the console script owns its process: commands invoked in a caller's process (the
    # tests' CliRunner) leave its collector as it was.
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count() > 0))\n"
        "from jobsync.cli import main\n"
        "sys.argv = ['jobsync', *sys.argv[1:]]\n"
        "main()\n"
    )
    db = tmp_path / "jobsync.db"
    env = {"PATH": "/usr/bin:/bin", "JOBSYNC_API_KEY": API_KEY}
    args = ["sync", "--db", f"sqlite:///{db}", "--base-url", sim.url, "--cluster-id", CLUSTER]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"{GC_THRESHOLD} True"
    assert not (tmp_path / "jobsync.db-wal").exists()  # the connections were closed


def test_sync_writes_json_lines_one_per_source_when_asked(tmp_path, sim):
    # A process of its own: --log-format sets up the process's logging.
    db = tmp_path / "jobsync.db"
    base = {"PATH": "/usr/bin:/bin", "JOBSYNC_API_KEY": API_KEY}
    args = ["-m", "jobsync", *sync_args(sim, f"sqlite:///{db}"), "--no-details"]
    ok = subprocess.run(
        [sys.executable, *args, "--log-format", "json"], capture_output=True, text=True, env=base
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == ""
    (line,) = [json.loads(text) for text in ok.stderr.splitlines()]
    assert (line["event"], line["source"], line["status"]) == ("pass", CLUSTER, "succeeded")
    assert line["counts"] == {"new": 50, "changed": 0, "vanished": 0}

    sim.add_fault(Fault(status=200, code=80001))
    bad = subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env={**base, "JOBSYNC_LOG_FORMAT": "json", "JOBSYNC_API_KEY": "wrong-key-123"},
    )
    assert bad.returncode == 1
    (line,) = [json.loads(text) for text in bad.stderr.splitlines()]
    assert (line["level"], line["status"], line["error_kind"]) == ("ERROR", "failed", "AuthError")
    assert "wrong-key-123" not in bad.stderr
